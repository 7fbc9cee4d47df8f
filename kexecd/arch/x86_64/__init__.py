# SPDX-License-Identifier: GPL-2.0-or-later
"""x86_64: boot_params, ``elfcorehdr=`` and the e820 map; kexec-tools' x86 rules.

Everything kexecd knows that is true of x86_64 crash images only is here or
in this package's modules: :mod:`.bootparams` (the command line in the boot
parameters segment), :mod:`.e820` (the crash kernel's memory map),
:mod:`.bzimage` (the kernel segment and the tail it need not load), and the
facts of kexec-tools' ``kexec/arch/i386/crashdump-x86.c`` below.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import MappingProxyType

from kexecd.arch import CommandLine, KexecToolsFacts
from kexecd.arch.x86_64 import bootparams, bzimage, e820
from kexecd.errors import HeaderError
from kexecd.loads import Buffer, Segment, page_up
from kexecd.model import RangeType

__all__ = ["FACTS", "MAX_RANGES", "MAX_RANGES_OLD", "PAGE_OFFSET_PRE_4_20", "X86_64"]

# include/uapi/linux/kexec.h KEXEC_ARCH_X86_64; include/uapi/linux/elf-em.h.
KEXEC_ARCH_X86_64 = 62 << 16
EM_X86_64 = 62
PAGE = 4096
# kexec-tools crashdump-x86.c: ELF_CORE_HEADER_ALIGN, and the header segment
# is at least 16 KiB (its memsz, whatever the header's size).
HEADER_ALIGN = 1024
MIN_HEADER_MEMSZ = 16 * 1024

_ELFCOREHDR = re.compile(rf"(?<!\S){bootparams.ELFCOREHDR}=\S*")

# kexec-tools crashdump-x86.c get_crash_memory_ranges(): the exact names it
# collects besides RAM (what is RAM is the version's rule), the GART aperture
# it cuts out, CRASH_RESERVED_MEM_NR; crashdump-x86.h CRASH_MAX_MEMORY_RANGES
# before and since 2.0.22 (kexec-x86.h MAX_MEMORY_RANGES + 2, then 32k); 2.0.20
# X86_64_PAGE_OFFSET (Linux before 4.20); KCORE_ELF_HEADERS_SIZE;
# arch/x86/include/asm/page_64_types.h __START_KERNEL_map and the 512 MiB
# get_kernel_vaddr_and_size() searches above it; get_backup_area(): the
# first RAM range ending at or below 640 KiB.
MAX_RANGES_OLD = 2050
MAX_RANGES = 32768
PAGE_OFFSET_PRE_4_20 = 0xFFFF880000000000
START_KERNEL_MAP = 0xFFFFFFFF80000000
FACTS = KexecToolsFacts(
    range_types=MappingProxyType(
        {
            "ACPI Tables": RangeType.ACPI,
            "ACPI Non-volatile Storage": RangeType.ACPI_NVS,
            "Persistent Memory (legacy)": RangeType.PRAM,
            "Persistent Memory": RangeType.PMEM,
            "reserved": RangeType.RESERVED,
            "Reserved": RangeType.RESERVED,
        }
    ),
    skipped=("GART",),
    max_crash_reserved=8,
    max_ranges=(MAX_RANGES_OLD, MAX_RANGES),
    page_offset_fallback=PAGE_OFFSET_PRE_4_20,
    kernel_text_map=(START_KERNEL_MAP, 512 << 20),
    kcore_headers=65536,
    backup_limit=0xA0000,
)


class _X86_64:
    """x86_64 crash images as kexec-tools loads them (see :class:`kexecd.arch.Arch`)."""

    name = "x86_64"
    kexec_arch = KEXEC_ARCH_X86_64
    machine = EM_X86_64
    header_align = HEADER_ALIGN
    min_header_memsz = MIN_HEADER_MEMSZ
    page = PAGE
    kexec_tools = FACTS

    def find_cmdline(self, segments: Sequence[Segment]) -> CommandLine:
        return bootparams.find(segments)

    def with_cmdline(self, buf: Buffer, line: CommandLine, text: str) -> bytes:
        return bootparams.patched(buf, line, text)

    def header_holes(self, segments: Sequence[Segment]) -> list[tuple[int, int]]:
        line = bootparams.find(segments)
        entries = e820.read_e820(segments[line.segment].buf)
        return [(e.start, e.end) for e in entries if e.type == e820.E820_RAM]

    def repoint(
        self, segments: Sequence[Segment], header: int, new: tuple[int, int]
    ) -> dict[int, bytes]:
        line = bootparams.find(segments)
        setup = self.line_moved(segments[line.segment].buf, line, new[0])
        setup = self.map_moved(setup, segments[header], new)
        return {line.segment: setup}

    def resize(self, segments: Sequence[Segment], header: int, size: int) -> dict[int, bytes]:
        # elfcorehdr= names the address only; the e820 hole is memsz, not size.
        return {}

    def kernel_extent(self, segments: Sequence[Segment]) -> tuple[int, int] | None:
        return bzimage.kernel_extent(segments)

    def line_moved(self, setup: Buffer, line: CommandLine, mem: int) -> bytes:
        """The boot parameters with ``elfcorehdr=`` naming ``mem``
        (crashdump-x86.c cmdline_add_elfcorehdr(): KiB, decimal, so no leading
        zero that memparse() would read as octal).

        :raises HeaderError: the line has no single ``elfcorehdr=``.
        """
        matches = _ELFCOREHDR.findall(line.text)
        if len(matches) != 1:
            raise HeaderError(
                f"the command line has {len(matches)} elfcorehdr= parameters, not one"
            )
        text = _ELFCOREHDR.sub(f"{bootparams.ELFCOREHDR}={mem // 1024}K", line.text)
        return bootparams.patched(setup, line, text)

    def map_moved(self, setup: Buffer, old: Segment, new: tuple[int, int]) -> bytes:
        """The boot parameters with the e820 hole kexec-tools cut for the
        header at ``old`` moved to ``new``.

        The hole kexec-tools cut is the memsz it asked for, which may be less
        than the page-rounded segment.
        """
        asked = max(MIN_HEADER_MEMSZ, page_up(len(old.buf), HEADER_ALIGN))
        hole = (old.mem, old.mem + min(asked, old.memsz))
        return e820.write_e820(setup, e820.moved_hole(e820.read_e820(setup), hole, new))


X86_64 = _X86_64()
