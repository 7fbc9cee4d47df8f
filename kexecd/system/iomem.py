# SPDX-License-Identifier: GPL-2.0-or-later
"""/proc/iomem: its resources, and the memory ranges kexec-tools collects from it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from kexecd import core
from kexecd.core import IomemFault, IomemRules, RangeTable
from kexecd.errors import SystemStateError
from kexecd.model import MemRange, RangeType
from kexecd.system.kexectools import HeaderRules, rules_for
from kexecd.system.root import Root

__all__ = [
    "CrashRanges",
    "Resource",
    "crash_ranges",
    "kernel_code_start",
    "parse_iomem",
    "read_iomem",
    "read_iomem_text",
]


@dataclass(frozen=True)
class Resource:
    """One line of /proc/iomem. ``end`` is inclusive; ``depth`` is the nesting."""

    start: int
    end: int
    name: str
    depth: int


@dataclass(frozen=True)
class CrashRanges:
    """What kexec-tools makes of /proc/iomem for a crash kernel.

    :ivar ranges: every collected range (RAM, ACPI, NVS, reserved, PMEM), in
        /proc/iomem order, with the crash kernel's reservation (and a GART
        aperture) cut out; held by the C core (a :class:`kexecd.core.RangeTable`),
        a :class:`~kexecd.model.MemRange` made only for a range looked at.
    :ivar crash_reserved: the "Crash kernel" ranges.
    """

    ranges: Sequence[MemRange]
    crash_reserved: tuple[MemRange, ...]

    @property
    def ram(self) -> list[MemRange]:
        if isinstance(self.ranges, RangeTable):
            return self.ranges.of_type(RangeType.RAM)
        return [r for r in self.ranges if r.type is RangeType.RAM]


def _text(text: str | bytes) -> bytes:
    return text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text


def _fault(e: IomemFault, text: bytes, path: str) -> SystemStateError:
    # The C core found it (iomem.c); the message is the same as ever.
    line = text[e.off : e.off + e.length].decode("utf-8", errors="replace")[:120]
    where = f"{path}:{e.line}"
    if e.fault == IomemFault.MALFORMED:
        return SystemStateError(
            f"{where}: cannot parse {line!r}: expected 'start-end : name' "
            "with hex addresses; pass the kernel's /proc/iomem"
        )
    if e.fault == IomemFault.PAST_64:
        return SystemStateError(
            f"{where}: address past 64 bits in {line!r}; pass the kernel's /proc/iomem"
        )
    if e.fault == IomemFault.BACKWARDS:
        return SystemStateError(
            f"{where}: range ends before it starts: {line!r}; pass the kernel's /proc/iomem"
        )
    if e.fault == IomemFault.EMPTY:
        return SystemStateError(f"{path}: empty; pass the kernel's /proc/iomem")
    return SystemStateError(
        f"{path}: every address is zero, which is what non-root users see; run as root"
    )


def parse_iomem(text: str | bytes, path: str = "/proc/iomem") -> list[Resource]:
    """Parse /proc/iomem text (lines end where ``str.splitlines()`` ends them).

    :raises SystemStateError: a line is malformed, or every address reads as
        zero (what non-root users see).
    """
    data = _text(text)
    try:
        lines = core.parse_iomem_lines(data)
    except IomemFault as e:
        raise _fault(e, data, path) from None
    return [
        Resource(start, end, data[off : off + n].decode("utf-8", errors="replace"), depth)
        for start, end, off, n, depth in lines
    ]


def read_iomem_text(root: Root) -> bytes:
    """The bytes of ``proc/iomem`` under ``root``."""
    return root.read_bytes("proc/iomem")


def read_iomem(root: Root) -> list[Resource]:
    """Read and parse ``proc/iomem`` under ``root``."""
    return parse_iomem(read_iomem_text(root), str(root.path("proc/iomem")))


@lru_cache(maxsize=16)
def _c_rules(rules: HeaderRules) -> IomemRules:
    facts = rules.facts
    limits = (rules.max_ranges, facts.max_crash_reserved)
    return IomemRules(rules.ram_exact, limits, facts.sort_ranges, facts.range_types, facts.skipped)


def crash_ranges(
    iomem: str | bytes | Sequence[Resource],
    path: str = "/proc/iomem",
    rules: HeaderRules | None = None,
) -> CrashRanges:
    """The ranges kexec-tools collects for a crash kernel's ELF core header.

    kexec-tools' crashdump code (x86: crashdump-x86.c get_crash_memory_ranges())
    reads every line, nested or not, keeps RAM and the architecture's other
    kinds (:attr:`kexecd.arch.KexecToolsFacts.range_types`) in file order (no
    sorting, no merging), stops silently at its most ranges, then cuts out
    each "Crash kernel" range and what the architecture skips (x86: a GART
    aperture) with exclude_region(); arm64 cuts with mem_regions_exclude()
    and sorts. The C core does it all (``kexecd_iomem_collect()``), so no
    Python object is made per range.

    :param iomem: the /proc/iomem text, or its lines (written out again).
    :param path: where it was read, for messages.
    :param rules: the kexec-tools version's: what is RAM, the most ranges.
    :raises SystemStateError: the text is malformed (as :func:`parse_iomem`
        says), or a cut splits a range when there are as many as the most
        already (exclude_region() fails then too, and so does ``kexec -p``).
    """
    rules = rules or rules_for(None)
    if isinstance(iomem, (str, bytes)):
        data = _text(iomem)
    else:
        data = "".join(
            f"{'  ' * r.depth}{r.start:x}-{r.end:x} : {r.name}\n" for r in iomem
        ).encode("utf-8", "surrogateescape")
    try:
        ranges, reserved = core.collect_iomem(data, _c_rules(rules))
    except IomemFault as e:
        if e.fault != IomemFault.TOO_MANY:
            raise _fault(e, data, path) from None
        facts = rules.facts
        name = "'Crash kernel'" if e.cut < 0 else f"'{facts.skipped[e.cut]}'"
        cut = e.cut_range
        raise SystemStateError(
            f"{path}: cutting {name} {cut.start:#x}-{cut.end:#x} out of the memory ranges "
            f"makes more than {rules.max_ranges}, kexec-tools' limit, so 'kexec -p' fails too; "
            "pass the kernel's /proc/iomem"
        ) from None
    return CrashRanges(ranges, reserved)


def kernel_code_start(resources: Sequence[Resource], path: str = "/proc/iomem") -> int:
    """The physical start of "Kernel code" (kexec-tools get_kernel_paddr())."""
    for res in resources:
        if res.name == "Kernel code":
            return res.start
    raise SystemStateError(
        f"{path}: no 'Kernel code' line, so the kernel's physical address is unknown; "
        "read /proc/iomem as root"
    )
