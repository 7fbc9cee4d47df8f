# SPDX-License-Identifier: GPL-2.0-or-later
"""aarch64: the DTB's ``/chosen``; kexec-tools' arm64 rules.

kexec-tools 2.0.25 loads five segments for an arm64 crash kernel (the Image,
the initrd, the DTB, purgatory, the ELF core header at the top of the crash
area). The DTB (kexec/arch/arm64/kexec-arm64.c setup_2nd_dtb(), from
``/sys/firmware/fdt``) is what names the header, in ``/chosen``:

* ``bootargs``: the command line, set by kexec/dt-ops.c dtb_set_bootargs()
  with ``strlen + 1`` bytes that dtb_set_property() rounds up to 4
  (FDT_TAGALIGN), copied from a zero-filled ``command_line[COMMAND_LINE_SIZE]``
  (arm64_load_other_segments()): the line may grow only into those 0-3 NULs;
* ``linux,elfcorehdr`` = <address size> (fdt_setprop_ranges()): the header's
  start and its ``bufsz`` (the header rounded up to ELF_CORE_HEADER_ALIGN);
* ``linux,usable-memory-range`` = <address size>..., the "Crash kernel"
  ranges, the low one last: the crash kernel's only RAM.

Address and size are ``#address-cells`` and ``#size-cells`` of the root
(get_cells_size(); 1 each when absent, as in Linux's dt_root_*_cells), which
kexec-tools checks the values fit (cells_size_fitted()). The capture kernel
(Linux drivers/of/fdt.c early_init_dt_check_for_elfcorehdr() and
fdt_reserve_elfcorehdr(); arch/arm64/mm/init.c reserve_elfcorehdr() in older
kernels) reserves exactly the size the DTB gives, so a header that grows in
place must have that size rewritten too (:meth:`resize`). Of
``linux,usable-memory-range`` it takes the first two ranges
(early_init_dt_check_for_usable_mem_range(), MAX_USABLE_RANGES).

The blob is ``fdt_pack()``ed: every rewrite here is of cells of the same size,
in a copy of the same length (:mod:`.fdt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

from kexecd.arch import CommandLine, KexecToolsFacts
from kexecd.arch.aarch64 import fdt
from kexecd.errors import CmdlineError, HeaderError
from kexecd.loads import Buffer, Segment

__all__ = ["AARCH64", "FACTS", "KIMAGE_REGION"]

# include/uapi/linux/kexec.h KEXEC_ARCH_AARCH64; include/uapi/linux/elf-em.h.
KEXEC_ARCH_AARCH64 = 183 << 16
EM_AARCH64 = 183
# Debian's arm64 kernels use 4 KiB pages (CONFIG_ARM64_4K_PAGES).
PAGE = 4096
# kexec-tools crashdump.h ELF_CORE_HEADER_ALIGN: crashdump-arm64.c
# load_crashdump_segments() asks crash_create_elf64_headers() for a header
# rounded up to it and loads exactly that (bufsz = memsz); kexec.c
# add_buffer_phys_virt() rounds memsz up to a page, so one page is the least.
HEADER_ALIGN = 1024
MIN_HEADER_MEMSZ = PAGE
# arch/arm64/include/uapi/asm/setup.h (kexec-tools kexec-arm64.h too).
COMMAND_LINE_SIZE = 2048
# Linux drivers/of/fdt.c: the usable memory ranges a crash kernel takes.
MAX_USABLE_RANGES = 2

# kexec-tools kexec-arm64.c get_page_offset(): since Linux 5.4 the kernel image
# is above UINT64_MAX << (VA_BITS - 1) and the linear map below it; with
# Debian's VA_BITS = 48 that is the upper half of the kernel's 2^48 bytes
# (modules, the kimage at KIMAGE_VADDR, vmalloc): the kernel text PT_LOAD is the
# only one a kexec-tools header puts there.
KIMAGE_REGION = (0xFFFF800000000000, 1 << 47)
# crashdump-arm64.c: 2.0.20 collects at most CRASH_MAX_MEMORY_RANGES = 32
# ranges (a fixed array; kexec-iomem.c stops reading at the first that does not
# fit); since 2.0.21 (commit 2572b8d "deal with a lot of resource entries in
# /proc/iomem") mem_regions_alloc_and_add() grows the array, so the only bound
# is its unsigned int count (2.0.25 raised the constant, 1b87ea9, but nothing
# reads it any more). At most CRASH_MAX_RESERVED_RANGES "Crash kernel" ranges
# (a low and a high one; one before 2.0.24, b5a34a2). iomem_range_callback()
# compares the names with "System RAM\n" (iomem.h, the newline included):
# exactly that name, in every version, so "System RAM (virtio_mem)" and
# "System RAM (kmem)" are never dumped; nothing else is collected and nothing
# is cut but "Crash kernel". kexecd's headers take every "System RAM ..."
# line (ram_exact False), as x86's kexec-tools does since 2.0.22: a whole dump
# wants virtio-mem's memory, and a header with the same ranges otherwise is
# byte-identical. Without a _text symbol get_page_offset() fails and the
# header is written with page_offset 0 (no constant to fall back on;
# kexecd.image.elfcore repairs such a header). No backup area.
FACTS = KexecToolsFacts(
    range_types=MappingProxyType({}),
    skipped=(),
    max_crash_reserved=2,
    max_ranges=(32, 0xFFFFFFFF),
    page_offset_fallback=0,
    kernel_text_map=KIMAGE_REGION,
    kcore_headers=65536,  # crashdump.h KCORE_ELF_HEADERS_SIZE, as on x86
    backup_limit=0,
    ram_exact=False,
    ranges_raised_in=(2, 0, 21),
    kernel_from_iomem=True,
    sort_ranges=True,
)

_CHOSEN = "/chosen"
_BOOTARGS = "bootargs"
_ELFCOREHDR = "linux,elfcorehdr"
_USABLE = "linux,usable-memory-range"


def _dtb(segments: Sequence[Segment]) -> tuple[int, fdt.Tree]:
    # The one segment that is a device tree, read.
    found = [i for i, s in enumerate(segments) if bytes(s.buf[:4]) == fdt.MAGIC.to_bytes(4, "big")]
    if len(found) != 1:
        raise HeaderError(
            f"{len(found)} segments hold a device tree, not one (not an arm64 image "
            "kexec-tools loaded?)"
        )
    tree = fdt.read(segments[found[0]].buf)
    if tree.find(_CHOSEN, _ELFCOREHDR) is None:
        raise HeaderError(
            f"the device tree (segment {found[0]}) has no {_CHOSEN}/{_ELFCOREHDR}: not a "
            "crash kernel's as kexec-tools builds it"
        )
    return found[0], tree


def _root_cells(tree: fdt.Tree) -> tuple[int, int]:
    # #address-cells and #size-cells of the root, 1 when absent; kexecd
    # handles 1 or 2 (64-bit values).
    out = []
    for name in ("#address-cells", "#size-cells"):
        prop = tree.find("/", name)
        cells = (1,) if prop is None else fdt.cells_of(tree.value(prop))
        if len(cells) != 1 or cells[0] not in (1, 2):
            raise HeaderError(f"the device tree's root {name} is {cells}, not 1 or 2")
        out.append(cells[0])
    return out[0], out[1]


def _join(cells: Sequence[int]) -> int:
    value = 0
    for c in cells:
        value = value << 32 | c
    return value


def _split(value: int, n: int, what: str) -> list[int]:
    if not 0 <= value < 1 << (32 * n):
        raise HeaderError(f"{what} {value:#x} does not fit {n} device tree cell(s)")
    return [(value >> (32 * (n - 1 - i))) & 0xFFFFFFFF for i in range(n)]


def _ranges(tree: fdt.Tree, name: str) -> list[tuple[int, int]]:
    # The <address size> pairs of /chosen/name, as (start, size).
    prop = tree.find(_CHOSEN, name)
    if prop is None:
        raise HeaderError(f"the device tree has no {_CHOSEN}/{name}")
    a, s = _root_cells(tree)
    cells = fdt.cells_of(tree.value(prop))
    if not cells or len(cells) % (a + s):
        raise HeaderError(
            f"{_CHOSEN}/{name} is {len(cells)} cells, not pairs of <{a} address, {s} size> cells"
        )
    step = a + s
    return [
        (_join(cells[i : i + a]), _join(cells[i + a : i + step]))
        for i in range(0, len(cells), step)
    ]


def _elfcorehdr(segments: Sequence[Segment], header: int) -> tuple[int, fdt.Tree]:
    # The DTB, checked to name the header segment where it is.
    index, tree = _dtb(segments)
    named = _ranges(tree, _ELFCOREHDR)
    seg = segments[header]
    if len(named) != 1 or named[0][0] != seg.mem:
        raise HeaderError(
            f"{_CHOSEN}/{_ELFCOREHDR} names {named}, not one header at {seg.mem:#x} "
            f"(segment {header})"
        )
    return index, tree


def _write_elfcorehdr(tree: fdt.Tree, start: int, size: int) -> bytes:
    a, s = _root_cells(tree)
    prop = tree.find(_CHOSEN, _ELFCOREHDR)
    assert prop is not None
    cells = _split(start, a, "the header's address") + _split(size, s, "the header's size")
    return fdt.set_cells(tree.blob, prop.offset, cells)


class _AArch64:
    """arm64 crash images as kexec-tools loads them (see :class:`kexecd.arch.Arch`)."""

    name = "aarch64"
    kexec_arch = KEXEC_ARCH_AARCH64
    machine = EM_AARCH64
    header_align = HEADER_ALIGN
    min_header_memsz = MIN_HEADER_MEMSZ
    page = PAGE
    kexec_tools = FACTS

    def find_cmdline(self, segments: Sequence[Segment]) -> CommandLine:
        """``/chosen/bootargs`` of the DTB; it may grow only into the NULs
        that pad it to 4 bytes (the blob is packed: nothing follows).

        :raises CmdlineError: no single crash kernel DTB, no ``bootargs``,
            or one that is not a NUL-terminated line padded with NULs.
        """
        try:
            index, tree = _dtb(segments)
        except HeaderError as e:
            raise CmdlineError(str(e)) from None
        prop = tree.find(_CHOSEN, _BOOTARGS)
        where = f"{_CHOSEN}/{_BOOTARGS} (segment {index})"
        if prop is None:
            raise CmdlineError(f"the device tree (segment {index}) has no {_CHOSEN}/{_BOOTARGS}")
        value = tree.value(prop)
        nul = value.find(b"\0")
        if nul < 0 or value[nul:].count(0) != len(value) - nul:
            raise CmdlineError(f"{where} is not a NUL-terminated line followed by NULs only")
        if nul >= COMMAND_LINE_SIZE:
            raise CmdlineError(f"{where} is {nul} bytes, more than the kernel takes")
        room = min(len(value) - nul - 1, COMMAND_LINE_SIZE - 1 - nul)
        return CommandLine(index, prop.offset, value[:nul].decode("latin-1"), room)

    def with_cmdline(self, buf: Buffer, line: CommandLine, text: str) -> bytes:
        """:raises CmdlineError: ``text`` is not bytes, holds a NUL, or is
        longer than the padding allows (a packed DTB cannot grow: load again
        with the words on kexec-tools' command line)."""
        try:
            new = text.encode("latin-1")
        except UnicodeEncodeError:
            raise CmdlineError(f"{text[:60]!r}: not a command line of bytes") from None
        if b"\0" in new:
            raise CmdlineError("a command line cannot hold a NUL byte")
        try:
            line.check_room(text)
        except CmdlineError as e:
            raise CmdlineError(
                f"{e} (arm64: the DTB kexec-tools loads is packed, bootargs cannot grow "
                "past its padding; add the words to 'kexec -p --append' instead)"
            ) from None
        size = len(line.text) + 1 + line.room
        if line.offset < 0 or line.offset + size > len(buf):
            raise CmdlineError("the command line is not inside its segment")
        out = bytearray(buf)
        out[line.offset : line.offset + size] = new.ljust(size, b"\0")
        return bytes(out)

    def header_holes(self, segments: Sequence[Segment]) -> list[tuple[int, int]]:
        _, tree = _dtb(segments)
        ranges = _ranges(tree, _USABLE)[:MAX_USABLE_RANGES]
        return [(start, start + size) for start, size in ranges]

    def repoint(
        self, segments: Sequence[Segment], header: int, new: tuple[int, int]
    ) -> dict[int, bytes]:
        """``/chosen/linux,elfcorehdr`` naming ``new``, all of it: the capture
        kernel reserves the whole segment, so a header that later grows in
        place within it needs no :meth:`resize`."""
        index, tree = _elfcorehdr(segments, header)
        if new[1] <= new[0]:
            raise HeaderError(f"an empty place for the header: {new[0]:#x}-{new[1]:#x}")
        return {index: _write_elfcorehdr(tree, new[0], new[1] - new[0])}

    def resize(self, segments: Sequence[Segment], header: int, size: int) -> dict[int, bytes]:
        """``/chosen/linux,elfcorehdr`` with the header where it is and
        ``size`` bytes long (at most its segment's memsz): what the capture
        kernel reserves for it. kexec-tools gives the header's length rounded
        up to :data:`HEADER_ALIGN`."""
        index, tree = _elfcorehdr(segments, header)
        seg = segments[header]
        if not 0 < size <= seg.memsz:
            raise HeaderError(
                f"a header of {size} bytes does not fit its segment of {seg.memsz} at {seg.mem:#x}"
            )
        return {index: _write_elfcorehdr(tree, seg.mem, size)}

    def kernel_extent(self, segments: Sequence[Segment]) -> tuple[int, int] | None:
        # kexec-tools' arm64 Image segment is image_size long in memory
        # (kexec/arch/arm64/kexec-image-arm64.c), its bss among it; the kernel
        # clears its bss, but no crash has proven a cut one here yet.
        return None


AARCH64 = _AArch64()
