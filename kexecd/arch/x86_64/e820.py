# SPDX-License-Identifier: GPL-2.0-or-later
"""The crash kernel's memory map: boot_params' e820 table, and the header's hole in it.

kexec-tools builds the map from the crashkernel memory as RAM with the backup
area and the header cut out (crashdump-x86.c load_crashdump_segments(),
add_memmap() and delete_memmap(), 2.0.20 to 2.0.29), and the x86 crash
kernel does not protect the ``elfcorehdr=`` range by itself: a header left in
memory its map calls RAM can be overwritten while it boots. So a header that
moves takes its hole with it (:func:`moved_hole`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from kexecd.errors import HeaderError
from kexecd.loads import Buffer

__all__ = ["E820Entry", "moved_hole", "read_e820", "write_e820"]

# Documentation/arch/x86/zero-page.rst: e820_entries (u8) at 0x1e8, the table
# of 20-byte {u64 addr, u64 size, u32 type} entries at 0x2d0, 128 of them
# (E820_MAX_ENTRIES_ZEROPAGE). kexec-tools puts more in a SETUP_E820_EXT
# setup_data segment, which this module does not rewrite.
E820_ENTRIES = 0x1E8
E820_TABLE = 0x2D0
E820_ENTRY = struct.Struct("<QQI")
E820_MAX = 128
E820_RAM = 1
# elfcorehdr= is in KiB; kexec-tools' delete_memmap() wants 1 KiB alignment.
HEADER_ALIGN = 1024


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


def _given_back(entries: Sequence[E820Entry], old: tuple[int, int]) -> list[E820Entry]:
    # The map with ``old`` RAM again, joined with the RAM entries it touches.
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
    return merged


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
    out: list[E820Entry] = []
    cut = False
    for e in _given_back(entries, old):
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
