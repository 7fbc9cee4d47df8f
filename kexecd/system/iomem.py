# SPDX-License-Identifier: GPL-2.0-or-later
"""/proc/iomem: its resources, and the memory ranges kexec-tools collects from it."""

from __future__ import annotations

import errno
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kexecd import core
from kexecd.errors import SystemStateError
from kexecd.model import MemRange, RangeType
from kexecd.system.kernel import U64_MAX
from kexecd.system.kexectools import HeaderRules, rules_for
from kexecd.system.root import Root

__all__ = ["CrashRanges", "Resource", "crash_ranges", "kernel_code_start", "parse_iomem"]

_LINE = re.compile(r"^( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$")


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
        aperture) cut out.
    :ivar crash_reserved: the "Crash kernel" ranges.
    """

    ranges: tuple[MemRange, ...]
    crash_reserved: tuple[MemRange, ...]

    @property
    def ram(self) -> list[MemRange]:
        return [r for r in self.ranges if r.type is RangeType.RAM]


def parse_iomem(text: str, path: str = "/proc/iomem") -> list[Resource]:
    """Parse /proc/iomem text.

    :raises SystemStateError: a line is malformed, or every address reads as
        zero (what non-root users see).
    """
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise SystemStateError(
                f"{path}:{lineno}: cannot parse {line[:120]!r}: expected 'start-end : name' "
                "with hex addresses; pass the kernel's /proc/iomem"
            )
        start, end = int(m.group(2), 16), int(m.group(3), 16)
        if end > U64_MAX:
            raise SystemStateError(
                f"{path}:{lineno}: address past 64 bits in {line[:120]!r}; "
                "pass the kernel's /proc/iomem"
            )
        if end < start:
            raise SystemStateError(
                f"{path}:{lineno}: range ends before it starts: {line[:120]!r}; "
                "pass the kernel's /proc/iomem"
            )
        out.append(Resource(start, end, m.group(4), len(m.group(1)) // 2))
    if not out:
        raise SystemStateError(f"{path}: empty; pass the kernel's /proc/iomem")
    if all(r.start == 0 and r.end == 0 for r in out):
        raise SystemStateError(
            f"{path}: every address is zero, which is what non-root users see; run as root"
        )
    return out


def read_iomem(root: Root) -> list[Resource]:
    """Read and parse ``proc/iomem`` under ``root``."""
    return parse_iomem(root.read_text("proc/iomem"), str(root.path("proc/iomem")))


def crash_ranges(
    resources: Sequence[Resource], path: str = "/proc/iomem", rules: HeaderRules | None = None
) -> CrashRanges:
    """The ranges kexec-tools collects for a crash kernel's ELF core header.

    kexec-tools' crashdump code (x86: crashdump-x86.c get_crash_memory_ranges())
    reads every line, nested or not, keeps RAM and the architecture's other
    kinds (:attr:`kexecd.arch.KexecToolsFacts.range_types`) in file order (no
    sorting, no merging), stops silently at its most ranges, then cuts out
    each "Crash kernel" range and what the architecture skips (x86: a GART
    aperture) with exclude_region().

    :param path: where ``resources`` were read, for messages.
    :param rules: the kexec-tools version's: what is RAM, the most ranges.
    :raises SystemStateError: a cut splits a range when there are as many as
        the most already (exclude_region() fails then too, and so does
        ``kexec -p``).
    """
    rules = rules or rules_for(None)
    facts = rules.facts
    limit = rules.max_ranges
    ranges: list[MemRange] = []
    reserved: list[MemRange] = []
    skipped: dict[str, MemRange] = {}  # the last of each name, as kexec-tools keeps it
    for res in resources:
        if res.name == "Crash kernel" and len(reserved) < facts.max_crash_reserved:
            reserved.append(MemRange(res.start, res.end))
        if len(ranges) >= limit:
            continue
        if rules.is_ram(res.name):
            kind = RangeType.RAM
        elif res.name in facts.skipped:
            skipped[res.name] = MemRange(res.start, res.end)
            continue
        elif res.name in facts.range_types:
            kind = facts.range_types[res.name]
        else:
            continue
        ranges.append(MemRange(res.start, res.end, kind))
    if facts.sort_ranges:
        for cut in reserved:
            ranges = _mem_regions_exclude(ranges, cut)
        ranges.sort(key=lambda r: r.start)
        return CrashRanges(tuple(ranges), tuple(reserved))
    cuts = [("'Crash kernel'", r) for r in reserved] + [(f"'{n}'", r) for n, r in skipped.items()]
    for name, cut in cuts:
        try:
            ranges = core.exclude_range(ranges, cut.start, cut.end, limit)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise SystemStateError(
                f"{path}: cutting {name} {cut.start:#x}-{cut.end:#x} out of the memory ranges "
                f"makes more than {limit}, kexec-tools' limit, so 'kexec -p' fails too; "
                "pass the kernel's /proc/iomem"
            ) from None
    return CrashRanges(tuple(ranges), tuple(reserved))


def _mem_regions_exclude(ranges: list[MemRange], cut: MemRange) -> list[MemRange]:
    # kexec/mem_regions.c mem_regions_exclude() (arm64): only a range holding
    # the cut whole is cut; the upper part of a split is appended (typed RAM)
    # and the scan stops there; after a range is removed the next one is not
    # looked at (the index moves on past the entry shuffled into its place).
    out = list(ranges)
    i = 0
    while i < len(out):
        r = out[i]
        if r.start <= cut.start and r.end >= cut.end:
            if r.start == cut.start and r.end == cut.end:
                del out[i]
            elif r.start == cut.start:
                out[i] = MemRange(cut.end + 1, r.end, r.type)
            elif r.end == cut.end:
                out[i] = MemRange(r.start, cut.start - 1, r.type)
            else:
                out.append(MemRange(cut.end + 1, r.end, RangeType.RAM))
                out[i] = MemRange(r.start, cut.start - 1, r.type)
                break
        i += 1
    return out


def kernel_code_start(resources: Sequence[Resource], path: str = "/proc/iomem") -> int:
    """The physical start of "Kernel code" (kexec-tools get_kernel_paddr())."""
    for res in resources:
        if res.name == "Kernel code":
            return res.start
    raise SystemStateError(
        f"{path}: no 'Kernel code' line, so the kernel's physical address is unknown; "
        "read /proc/iomem as root"
    )
