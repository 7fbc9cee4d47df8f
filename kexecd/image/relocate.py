# SPDX-License-Identifier: GPL-2.0-or-later
"""Move the ELF core header of a ``kexec_load`` image to a larger hole.

kexec-tools sizes the header segment once (at least 16 KiB: about 291
program headers). When hotplug needs more, the header must move, and three
other things name where it is:

* the crash kernel's command line, in the boot parameters segment, ends in
  ``elfcorehdr=<addr/1024>K`` (kexec-tools crashdump-x86.c
  cmdline_add_elfcorehdr(); decimal, so no leading zero that memparse() would
  read as octal);
* the crash kernel's memory map, boot_params' e820 table: kexec-tools builds it
  from the crashkernel memory as RAM with the backup area and the header cut
  out (crashdump-x86.c load_crashdump_segments(), add_memmap() and
  delete_memmap(), 2.0.20 to 2.0.29), and the x86 crash kernel does not
  protect the ``elfcorehdr=`` range by itself: a header left in memory its map
  calls RAM can be overwritten while it boots;
* purgatory's ``sha256_regions`` (one {start, len} per hashed segment, in
  segment order) and its digest (:mod:`kexecd.image.purgatory`).

Here is the arithmetic, on copies of the segments: choose the hole
(:func:`place`), give the old range back to the map and cut the new one out
as delete_memmap() would (:func:`moved_hole`), and rewrite the three
(:func:`relocated`). Nothing here loads anything.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace

from kexecd.errors import HeaderError
from kexecd.image import cmdline, purgatory
from kexecd.loads import Buffer, Segment

__all__ = [
    "E820Entry",
    "Relocation",
    "capacity",
    "grown_memsz",
    "moved_hole",
    "place",
    "read_e820",
    "relocated",
    "sized_memsz",
    "write_e820",
]

# Documentation/arch/x86/zero-page.rst: e820_entries (u8) at 0x1e8, the table
# of 20-byte {u64 addr, u64 size, u32 type} entries at 0x2d0, 128 of them
# (E820_MAX_ENTRIES_ZEROPAGE). kexec-tools puts more in a SETUP_E820_EXT
# setup_data segment, which this module does not rewrite.
E820_ENTRIES = 0x1E8
E820_TABLE = 0x2D0
E820_ENTRY = struct.Struct("<QQI")
E820_MAX = 128
E820_RAM = 1
PAGE = 4096
# elfcorehdr= is in KiB; kexec-tools' delete_memmap() wants 1 KiB alignment.
HEADER_ALIGN = 1024
EHDR_SIZE = 64
PHDR_SIZE = 56
# kexec-tools crashdump-x86.c: the header segment is at least 16 KiB.
MIN_MEMSZ = 16 * 1024


@dataclass(frozen=True)
class E820Entry:
    """One entry of the crash kernel's memory map: [start, end) of a type."""

    start: int
    end: int
    type: int


def read_e820(setup: Buffer) -> list[E820Entry]:
    """The e820 table in a boot parameters buffer.

    :raises HeaderError: the count is beyond the table, or the buffer too short.
    """
    n = setup[E820_ENTRIES]
    if n > E820_MAX or len(setup) < E820_TABLE + n * E820_ENTRY.size:
        raise HeaderError(f"boot parameters: {n} e820 entries do not fit the zero page")
    out = []
    for i in range(n):
        addr, size, kind = E820_ENTRY.unpack_from(setup, E820_TABLE + i * E820_ENTRY.size)
        out.append(E820Entry(addr, addr + size, kind))
    return out


def write_e820(setup: Buffer, entries: Sequence[E820Entry]) -> bytes:
    """A copy of the boot parameters with ``entries`` as the e820 table; the
    entries past the new count are zeroed (kexec-tools leaves them zero).

    :raises HeaderError: more entries than the zero page holds.
    """
    if len(entries) > E820_MAX:
        raise HeaderError(f"{len(entries)} e820 entries do not fit the zero page ({E820_MAX})")
    out = bytearray(setup)
    old = out[E820_ENTRIES]
    out[E820_ENTRIES] = len(entries)
    for i in range(max(old, len(entries))):
        at = E820_TABLE + i * E820_ENTRY.size
        if i < len(entries):
            e = entries[i]
            E820_ENTRY.pack_into(out, at, e.start, e.end - e.start, e.type)
        else:
            out[at : at + E820_ENTRY.size] = bytes(E820_ENTRY.size)
    return bytes(out)


def moved_hole(
    entries: Sequence[E820Entry], old: tuple[int, int], new: tuple[int, int]
) -> list[E820Entry]:
    """The memory map with the header's hole moved from ``old`` to ``new``
    (both [start, end)).

    The old range becomes RAM again, joined with the RAM entries it touches
    (what kexec-tools' map held before its delete_memmap() of the header);
    the new range is then cut out of the one RAM entry that holds it, as
    delete_memmap() cuts: the entry goes, shrinks, or splits in two.

    :raises HeaderError: the new range is not inside one RAM entry, or either
        range is not 1 KiB aligned.
    """
    for lo, hi in (old, new):
        if lo % HEADER_ALIGN or hi % HEADER_ALIGN or lo >= hi:
            raise HeaderError(f"header range {lo:#x}-{hi:#x} is not 1 KiB aligned")
    lo, hi = old
    merged: list[E820Entry] = []
    for e in sorted(entries, key=lambda e: e.start):
        if e.type == E820_RAM and (e.end == lo or e.start == hi):
            lo, hi = min(lo, e.start), max(hi, e.end)
        elif e.start < old[1] and old[0] < e.end:
            raise HeaderError(
                f"the old header range {old[0]:#x}-{old[1]:#x} is in the memory map as "
                f"{e.start:#x}-{e.end:#x} type {e.type}: not the hole kexec-tools cut"
            )
        else:
            merged.append(e)
    merged.append(E820Entry(lo, hi, E820_RAM))
    merged.sort(key=lambda e: e.start)
    out: list[E820Entry] = []
    cut = False
    for e in merged:
        if e.type == E820_RAM and e.start <= new[0] and new[1] <= e.end and not cut:
            cut = True
            if e.start < new[0]:
                out.append(E820Entry(e.start, new[0], E820_RAM))
            if new[1] < e.end:
                out.append(E820Entry(new[1], e.end, E820_RAM))
        else:
            out.append(e)
    if not cut:
        raise HeaderError(
            f"the new header range {new[0]:#x}-{new[1]:#x} is not inside one RAM entry of "
            "the crash kernel's memory map"
        )
    return out


def capacity(memsz: int) -> int:
    """How many program headers a header segment of ``memsz`` bytes holds."""
    return max(0, (memsz - EHDR_SIZE) // PHDR_SIZE)


def grown_memsz(need: int, current: int) -> int:
    """The memsz of a grown header segment: room for twice the current
    capacity, at least ``need`` program headers, in whole pages.

    Doubling keeps the number of moves logarithmic in the growth; the size
    follows the host, not a compile-time worst case (the kernel's
    CRASH_MAX_MEMORY_RANGES sizes every host's header for 8192 ranges).
    """
    return sized_memsz(max(need, 2 * capacity(current)))


def sized_memsz(phnum: int) -> int:
    """The memsz of a header segment with room for ``phnum`` program headers,
    in whole pages, never below kexec-tools' 16 KiB."""
    return max(MIN_MEMSZ, -(-(EHDR_SIZE + phnum * PHDR_SIZE) // PAGE) * PAGE)


def place(
    crash: tuple[int, int],
    segments: Sequence[Segment],
    ram: Sequence[E820Entry],
    memsz: int,
) -> int | None:
    """The lowest page-aligned start of ``memsz`` bytes inside the crashkernel
    range ``crash`` ([start, end)) that no segment uses and that one RAM entry of
    the crash kernel's map holds; ``None`` when there is no such hole.

    The segments given are those that stay (the header being moved is left
    out by the caller: its old range is given back).
    """
    used = sorted((s.mem, s.mem + s.memsz) for s in segments)
    for e in sorted(ram, key=lambda e: e.start):
        if e.type != E820_RAM:
            continue
        lo = max(e.start, crash[0])
        hi = min(e.end, crash[1])
        at = -(-lo // PAGE) * PAGE
        while at + memsz <= hi:
            clash = next(((s, t) for s, t in used if s < at + memsz and at < t), None)
            if clash is None:
                return at
            at = -(-clash[1] // PAGE) * PAGE
    return None


@dataclass(frozen=True)
class Relocation:
    """A header moved: the new segments and what changed in them.

    :ivar segments: every segment, the header, boot parameters and purgatory
        rewritten, the others the same objects as before.
    :ivar changed: the indexes of the rewritten segments.
    """

    segments: tuple[Segment, ...]
    mem: int
    memsz: int
    old: tuple[int, int]
    changed: tuple[int, ...]


_ELFCOREHDR = re.compile(rf"(?<!\S){cmdline.ELFCOREHDR}=\S*")


def relocated(
    segments: Sequence[Segment],
    *,
    header: int,
    purgatory_index: int,
    location: purgatory.DigestLocation,
    new_header: Buffer,
    mem: int,
    memsz: int,
    move_line: bool = True,
    move_map: bool = True,
) -> Relocation:
    """The image with its header at ``mem`` (``memsz`` bytes), holding ``new_header``.

    The header segment keeps its index (so purgatory's regions keep their
    order); the command line's ``elfcorehdr=`` names the new place; the e820
    hole moves with it; purgatory's region for the header and its digest
    match the new segments.

    :param move_line: only for the test bed's control experiment: leave
        ``elfcorehdr=`` naming the old place.
    :param move_map: likewise: leave the crash kernel's e820 map as it was.
    :raises HeaderError: the new header does not fit, the place is not
        aligned, purgatory's regions were not found, the header is not
        hashed (``--hotplug``), or the memory map cannot move its hole.
    :raises CmdlineError: the line has no single ``elfcorehdr=``, or no room
        for the new one.
    """
    if mem % PAGE or memsz % PAGE or len(new_header) > memsz:
        raise HeaderError(
            f"a header of {len(new_header)} bytes cannot go at {mem:#x} in {memsz} bytes "
            "(page-aligned start and size)"
        )
    if location.regions_offset is None:
        raise HeaderError(
            "purgatory's sha256_regions were not found: its header region cannot move"
        )
    if not location.header_hashed:
        raise HeaderError(
            "the header is not in purgatory's hash (kexec-tools --hotplug): the kernel moves it"
        )
    segs = list(segments)
    old_seg = segs[header]
    old = (old_seg.mem, old_seg.mem + old_seg.memsz)
    cl = cmdline.find(segs)
    matches = _ELFCOREHDR.findall(cl.text)
    if len(matches) != 1:
        raise HeaderError(f"the command line has {len(matches)} elfcorehdr= parameters, not one")
    text = cl.text
    if move_line:
        text = _ELFCOREHDR.sub(f"{cmdline.ELFCOREHDR}={mem // 1024}K", text)
    setup = cmdline.patched(segs[cl.segment].buf, cl, text)
    # The hole kexec-tools cut for the header is the memsz it asked for,
    # which may be less than the page-rounded segment.
    asked = max(MIN_MEMSZ, -(-len(old_seg.buf) // HEADER_ALIGN) * HEADER_ALIGN)
    if move_map:
        e820 = moved_hole(
            read_e820(setup), (old[0], old[0] + min(asked, old_seg.memsz)), (mem, mem + memsz)
        )
        setup = write_e820(setup, e820)
    segs[cl.segment] = replace(segs[cl.segment], buf=setup)
    segs[header] = Segment(bytes(new_header), mem, memsz)
    regions = purgatory.regions(segs, {purgatory_index})
    purg = bytearray(segs[purgatory_index].buf)
    at = location.regions_offset
    purg[at : at + len(regions)] = regions
    digest = purgatory.digest_of(location, segs, purgatory_index, header, {header, cl.segment})
    segs[purgatory_index] = replace(
        segs[purgatory_index], buf=purgatory.patched(purg, location, digest)
    )
    return Relocation(
        tuple(segs), mem, memsz, old, tuple(sorted({header, cl.segment, purgatory_index}))
    )
