# SPDX-License-Identifier: GPL-2.0-or-later
"""Where arm64's kexec-tools finds the kernel: ``/proc/iomem``, kallsyms, kcore's VMCOREINFO.

kexec-tools 2.0.25 (kexec/arch/arm64/crashdump-arm64.c iomem_range_callback(),
crash_get_memory_ranges(); kexec-arm64.c get_page_offset(), get_va_bits(),
get_memory_ranges(); util_lib/elf_info.c scan_vmcoreinfo()) builds the kernel
text PT_LOAD and the direct map's offset from:

* the kernel text's physical start: ``Kernel code``'s start, less
  ``_stext - _text`` when ``__init_begin - _stext`` is the length of that line
  (kernels that start ``Kernel code`` at ``_stext``); its end: the end of
  ``Kernel data``; its virtual start: ``_text``, or ``UINT64_MAX`` without it;
* the direct map: ``page_offset`` is ``UINT64_MAX << VA_BITS`` (kernels since
  5.4, whose ``_text`` lies above ``UINT64_MAX << (VA_BITS - 1)``; the half of
  that before), ``VA_BITS`` from kcore's VMCOREINFO note (else guessed from
  ``_stext``); without ``_text`` it stays 0. A RAM range at physical ``p`` is
  mapped at ``p - PHYS_OFFSET + page_offset``, ``PHYS_OFFSET`` the least of
  VMCOREINFO's ``NUMBER(PHYS_OFFSET)`` and the first ``System RAM`` start.

All arithmetic is unsigned 64-bit, as in C: Debian's arm64 kernels list no
``_text`` in /proc/kallsyms (no ``KALLSYMS_ALL``), and kexec-tools then writes
a kernel PT_LOAD at ``UINT64_MAX`` whose size wraps (FIELD-NOTES 13); kexecd
reproduces that header exactly and reports it (:func:`read_arm64_kernel_map`'s
``text_symbol``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from kexecd.arch.aarch64 import FACTS
from kexecd.model import PT_NOTE, KernelText
from kexecd.system.kernel import U64_MAX, KernelMap, kernel_symbols, read_kcore
from kexecd.system.root import Root

__all__ = ["Arm64Kernel", "kcore_vmcoreinfo", "kimage_text", "read_arm64_kernel_map"]

# kexec-tools crashdump.h KCORE_ELF_HEADERS_SIZE: what it reads of /proc/kcore.
KCORE_HEAD = FACTS.kcore_headers
# arch/arm64/Kconfig, as kexec-arm64.c get_va_bits() guesses VA_BITS from _stext
# when kcore has no VMCOREINFO (kernels before 4.19): the first mask it fills.
_VA_BITS_GUESS = ((36, 0xFFFFFFF800000000), (39, 0xFFFFFF8000000000),
                  (42, 0xFFFFFC0000000000), (47, 0xFFFF800000000000),
                  (48, 0xFFFF000000000000))  # fmt: skip


@dataclass(frozen=True)
class Arm64Kernel:
    """What kexec-tools' arm64 code read, and what it made of it.

    :ivar map: the direct map's offset as the header applies it (``vaddr =
        paddr + map.page_offset``, modulo 2^64) and the kernel text PT_LOAD
        (``None``: no ``Kernel data``, so no text PT_LOAD).
    :ivar text_symbol: ``_text`` was in /proc/kallsyms (without it the header
        kexec-tools writes has a kernel PT_LOAD at ``UINT64_MAX`` and
        page_offset 0).
    """

    map: KernelMap
    text_symbol: bool


def kcore_vmcoreinfo(root: Root) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of /proc/kcore's VMCOREINFO note (Linux 4.19+);
    empty when kcore has none within its first :data:`KCORE_HEAD` bytes.

    :raises SystemStateError: /proc/kcore is not an ELF core file.
    """
    data, phdrs = read_kcore(root, KCORE_HEAD)
    out: dict[str, str] = {}
    for p in phdrs:
        if p.type == PT_NOTE and p.offset + p.filesz <= len(data):
            out.update(_vmcoreinfo_lines(data[p.offset : p.offset + p.filesz]))
    return out


def _vmcoreinfo_lines(notes: bytes) -> dict[str, str]:
    # ELF notes: namesz, descsz, type, then name and desc, each padded to 4.
    out: dict[str, str] = {}
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        pos = desc_at + ((descsz + 3) & ~3)
        if pos > len(notes):
            break
        if kind == 0 and notes[name_at : name_at + namesz] == b"VMCOREINFO\0":
            text = notes[desc_at : desc_at + descsz].decode("ascii", "replace")
            for line in text.splitlines():
                key, eq, value = line.partition("=")
                if eq:
                    out[key] = value
    return out


def _number(info: dict[str, str], key: str) -> int | None:
    # scan_vmcoreinfo(): strtoul base 10, else base 16 (PHYS_OFFSET is 0x...).
    value = info.get(f"NUMBER({key})")
    if value is None:
        return None
    for base in (10, 16):
        try:
            return int(value, base)
        except ValueError:
            continue
    return None


def _signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def _page_offset(text: int | None, stext: int | None, info: dict[str, str]) -> int:
    # kexec-arm64.c get_page_offset(): 0 when it fails (no _text, no VA_BITS).
    va_bits = _number(info, "VA_BITS")
    if va_bits is None and stext:
        va_bits = next((bits for bits, mask in _VA_BITS_GUESS if stext & mask == mask), None)
    if not text or va_bits is None or not 0 < va_bits < 64:
        return 0
    if text < (U64_MAX << (va_bits - 1)) & U64_MAX:
        return (U64_MAX << (va_bits - 1)) & U64_MAX
    return (U64_MAX << va_bits) & U64_MAX


def _text(resources: Sequence[tuple[int, int, str]], syms: dict[str, int]) -> KernelText | None:
    # crashdump-arm64.c iomem_range_callback(): the last "Kernel code" and
    # "Kernel data" lines win; the start is 0 until "Kernel code" is seen.
    paddr = size = 0
    text, stext, init = (syms.get(n, 0) for n in ("_text", "_stext", "__init_begin"))
    for start, end, name in resources:
        length = end - start + 1
        if name == "Kernel code":
            paddr = start - (stext - text) if (init - stext) & U64_MAX == length else start
            paddr &= U64_MAX
        elif name == "Kernel data":
            size = (start + length - paddr) & U64_MAX
    if not size:
        return None
    return KernelText(paddr, text or U64_MAX, size)


def kimage_text(info: dict[str, str], stext: int | None) -> int | None:
    """``_text`` from VMCOREINFO when /proc/kallsyms lacks it: the kernel image
    starts at ``KIMAGE_VADDR`` plus the KASLR offset, and arm64's
    ``KIMAGE_VADDR`` is ``MODULES_END`` (arch/arm64/include/asm/memory.h, 5.4
    to 6.12), which VMCOREINFO gives with ``KERNELOFFSET``
    (arch/arm64/kernel/crash_core.c, kernel/crash_core.c). ``None`` when
    either is missing, or the result is not at most 2 MiB below ``_stext``
    (``.head.text``, the Image header, is all that lies between).
    """
    modules_end = _number(info, "MODULES_END")
    try:
        offset = int(info["KERNELOFFSET"], 16)
    except (KeyError, ValueError):
        return None
    if modules_end is None or stext is None:
        return None
    text = (modules_end + offset) & U64_MAX
    return text if 0 < stext - text <= 2 << 20 else None


def read_arm64_kernel_map(
    root: Root, resources: Sequence[tuple[int, int, str]], *, derive_text: bool = False
) -> Arm64Kernel:
    """The kernel text PT_LOAD and direct map of an arm64 kexec-tools header.

    :param resources: /proc/iomem's lines as (start, inclusive end, name).
    :param derive_text: without ``_text`` in /proc/kallsyms, take it from
        VMCOREINFO (:func:`kimage_text`), so that the header is the one
        kexec-tools writes when it has ``_text``; else read as kexec-tools does.
    :raises SystemStateError: /proc/kallsyms or /proc/kcore is unreadable or
        malformed; the message names it.
    """
    syms = kernel_symbols(root, ("_text", "_stext", "__init_begin"))
    info = kcore_vmcoreinfo(root)
    listed = "_text" in syms
    if derive_text and not listed:
        text = kimage_text(info, syms.get("_stext"))
        if text is not None:
            syms["_text"] = text
    page_offset = _page_offset(syms.get("_text"), syms.get("_stext"), info)
    first_ram = next((s for s, _, n in resources if n == "System RAM"), None)
    candidates = [v for v in (_number(info, "PHYS_OFFSET"), first_ram) if v is not None]
    # kexec-arm64.c set_phys_offset() keeps the least as an int64_t: with
    # 52-bit VAs on 48-bit hardware PHYS_OFFSET is "negative" (Linux 6.12:
    # 0xfff1000000000000), and wins.
    phys_offset = min(candidates, key=_signed, default=0)
    offset = (page_offset - phys_offset) & U64_MAX
    return Arm64Kernel(KernelMap(offset, _text(resources, syms)), listed)
