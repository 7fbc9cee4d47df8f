# SPDX-License-Identifier: GPL-2.0-or-later
"""What the running kernel tells about itself: vmcoreinfo, text mapping, kexec state."""

from __future__ import annotations

from dataclasses import dataclass

from kexecd import core
from kexecd.errors import SystemStateError
from kexecd.model import PT_LOAD, KernelText, Note, Phdr
from kexecd.system.kexecstate import (
    U64_MAX,
    KexecState,
    parse_u64,
    read_kexec_state,
    read_uevent_seqnum,
)
from kexecd.system.kexecstate import int_file as _int
from kexecd.system.kexectools import HeaderRules, rules_for
from kexecd.system.root import Root

__all__ = [
    "U64_MAX",
    "KernelMap",
    "KexecState",
    "acpi_memory_hotplug",
    "kernel_symbols",
    "parse_u64",
    "read_kcore",
    "read_kernel_map",
    "read_kexec_state",
    "read_lockdown",
    "read_memory_block_size",
    "read_uevent_seqnum",
    "read_vmcoreinfo",
]

GIB = 1 << 30
MIB = 1 << 20
PAGE_SIZE = 4096


@dataclass(frozen=True)
class KernelMap:
    """Where the kernel is mapped: the direct map's base and the text mapping."""

    page_offset: int
    text: KernelText | None


def read_vmcoreinfo(root: Root) -> Note | None:
    """``/sys/kernel/vmcoreinfo``: "hexaddr hexsize", or ``None`` if absent."""
    rel = "sys/kernel/vmcoreinfo"
    text = root.read_optional(rel)
    if text is None:
        return None
    parts = text.split()
    what, fix = "'hexaddr hexsize'", "pass the kernel's /sys/kernel/vmcoreinfo"
    if len(parts) < 2:  # kexec-tools' sscanf("%llx %llx") ignores what follows
        raise SystemStateError(
            f"{root.path(rel)}: cannot parse {text.strip()[:80]!r}: expected {what}; {fix}"
        )
    addr, size = (parse_u64(p, root.path(rel), base=16, what=what, fix=fix) for p in parts[:2])
    return Note(addr, size)


def kernel_symbols(root: Root, names: tuple[str, ...]) -> dict[str, int]:
    """The addresses /proc/kallsyms gives ``names``, the first line of each;
    kexec-tools symbols.c get_kernel_sym() counts a zero address as absent, so
    such a name is left out."""
    path = root.path("proc/kallsyms")
    out: dict[str, int] = {}
    for lineno, line in enumerate(root.read_text("proc/kallsyms").splitlines(), 1):
        parts = line.split()
        if len(parts) >= 3 and parts[2] in names and parts[2] not in out:
            out[parts[2]] = parse_u64(
                parts[0],
                f"{path}:{lineno}",
                base=16,
                what=f"'hexaddr T {parts[2]}'",
                fix="pass the kernel's /proc/kallsyms",
            )
    return {name: addr for name, addr in out.items() if addr}


def _symbol(root: Root, name: str) -> int | None:
    return kernel_symbols(root, (name,)).get(name)


def read_kcore(root: Root, limit: int) -> tuple[bytes, list[Phdr]]:
    """The first ``limit`` bytes of /proc/kcore (what kexec-tools reads of it)
    and their program headers.

    :raises SystemStateError: it is not an ELF core file whose headers fit.
    """
    data = root.read_bytes("proc/kcore", limit)
    try:
        _, phdrs = core.parse_header(data)
    except OSError:
        raise SystemStateError(
            f"{root.path('proc/kcore')}: not an ELF core file whose headers fit in {limit} "
            "bytes; is /proc mounted, and are we root?"
        ) from None
    return data, phdrs


def read_kernel_map(root: Root, kernel_paddr: int, rules: HeaderRules | None = None) -> KernelMap:
    """The direct map's base and the kernel text PT_LOAD, as kexec-tools finds them.

    kexec-tools crashdump-x86.c get_kernel_vaddr_and_size(): page_offset is the
    lowest /proc/kcore PT_LOAD address rounded down to 1 GiB (KASLR moves it;
    before 2.0.22 only when /proc/kallsyms has ``page_offset_base``, else a
    constant: :class:`~kexecd.system.kexectools.HeaderRules`); the text is the
    kcore PT_LOAD holding ``_stext``, its start rounded down to 1 MiB and its
    end up to a page.

    :param kernel_paddr: the physical start of "Kernel code" in /proc/iomem.
    :param rules: the kexec-tools version's.
    """
    facts = (rules or rules_for(None)).facts
    text_map, text_size = facts.kernel_text_map
    path = root.path("proc/kcore")
    _, phdrs = read_kcore(root, facts.kcore_headers)
    loads = [p for p in phdrs if p.type == PT_LOAD]
    lowest = min((p.vaddr for p in loads), default=0) & ~(GIB - 1)
    if not lowest:
        raise SystemStateError(f"{path}: no PT_LOAD, so the direct map's base is unknown")
    if rules and rules.page_offset_symbol and _symbol(root, "page_offset_base") is None:
        lowest = facts.page_offset_fallback
    stext = _symbol(root, "_stext")
    text = None
    for p in loads:
        if stext is not None and p.vaddr <= stext < p.vaddr + p.memsz:
            text = p
            break
    if text is None:
        text = next(
            (
                p
                for p in loads
                if p.vaddr >= text_map and p.vaddr + p.memsz <= text_map + text_size
            ),
            None,
        )
    if text is None:
        raise SystemStateError(
            f"{path}: no PT_LOAD maps the kernel text (_stext in "
            f"{root.path('proc/kallsyms')}); read both as root"
        )
    vaddr = text.vaddr & ~(MIB - 1)
    size = (text.vaddr + text.memsz - vaddr + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    if vaddr + size - 1 > U64_MAX:
        raise SystemStateError(
            f"{path}: the kernel text PT_LOAD at {text.vaddr:#x} runs {text.memsz:#x} bytes, "
            "past the end of the address space; is this the kernel's /proc/kcore?"
        )
    return KernelMap(lowest, KernelText(kernel_paddr, vaddr, size))


def read_memory_block_size(root: Root) -> int | None:
    """The size of one memory block device, in bytes; ``None`` without memory hotplug.

    drivers/base/memory.c: ``block_size_bytes`` is hex without ``0x``
    (memory block ``N`` spans ``N * size`` to ``(N + 1) * size - 1``).

    :raises SystemStateError: the file does not hold a hex number.
    """
    return _int(root, "sys/devices/system/memory/block_size_bytes", base=16)


def read_lockdown(root: Root) -> str | None:
    """The kernel lockdown mode in force (``integrity``, ``confidentiality``), or ``None``.

    security/lockdown/lockdown.c: the file lists the modes and brackets the
    one in force; a locked-down kernel refuses ``kexec_load`` (only signed
    images, through ``kexec_file_load``, are loaded).
    """
    text = root.read_optional("sys/kernel/security/lockdown")
    if text is None:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            mode = word[1:-1]
            return None if mode == "none" else mode
    return None


ACPI_MEMORY_HOTPLUG = "sys/firmware/acpi/hotplug/memory"


def acpi_memory_hotplug(root: Root) -> bool:
    """Whether this kernel takes ACPI memory devices (DIMMs) as they come.

    drivers/acpi/acpi_memhotplug.c acpi_memory_hotplug_init() registers its
    scan handler with a hotplug profile, which drivers/acpi/sysfs.c
    acpi_sysfs_add_hotplug_profile() shows as ``/sys/firmware/acpi/hotplug/memory``,
    unless the kernel was built without CONFIG_ACPI_HOTPLUG_MEMORY or booted
    with ``acpi_no_memhotplug``. Then a crash kernel built alike would take
    them too: the DIMMs hot-added (or present at boot) that the dump covers.
    """
    return root.path(ACPI_MEMORY_HOTPLUG).is_dir()
