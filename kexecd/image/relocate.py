# SPDX-License-Identifier: GPL-2.0-or-later
"""Move the ELF core header of a ``kexec_load`` image to a larger hole.

kexec-tools sizes the header segment once (on x86 at least 16 KiB: about 291
program headers). When hotplug needs more, the header must move, and two
kinds of thing name where it is:

* the boot segment the architecture reads it from (x86: ``elfcorehdr=`` on
  the command line in boot_params, and the hole cut for it in the crash
  kernel's e820 map: :meth:`kexecd.arch.Arch.repoint`);
* purgatory's ``sha256_regions`` (one {start, len} per hashed segment, in
  segment order) and its digest (:mod:`kexecd.image.purgatory`).

Here is the arithmetic, on copies of the segments: choose the hole
(:func:`place`), then rewrite both (:func:`relocated`). Nothing here loads
anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from kexecd.arch import Arch
from kexecd.errors import HeaderError
from kexecd.image import purgatory
from kexecd.image.purgatory import DigestLocation
from kexecd.loads import Buffer, Segment, page_up

__all__ = [
    "Move",
    "Relocation",
    "capacity",
    "grown_memsz",
    "place",
    "relocated",
    "sized_memsz",
]

EHDR_SIZE = 64
PHDR_SIZE = 56


def capacity(memsz: int) -> int:
    """How many program headers a header segment of ``memsz`` bytes holds."""
    return max(0, (memsz - EHDR_SIZE) // PHDR_SIZE)


def sized_memsz(arch: Arch, phnum: int) -> int:
    """The memsz of a header segment with room for ``phnum`` program headers,
    in whole pages, never below kexec-tools' least for the architecture."""
    page = arch.page
    return max(arch.min_header_memsz, page_up(EHDR_SIZE + phnum * PHDR_SIZE, page))


def grown_memsz(arch: Arch, need: int, current: int) -> int:
    """The memsz of a grown header segment: room for twice the current
    capacity, at least ``need`` program headers, in whole pages.

    Doubling keeps the number of moves logarithmic in the growth; the size
    follows the host, not a compile-time worst case (the kernel's
    CRASH_MAX_MEMORY_RANGES sizes every host's header for 8192 ranges).
    """
    return sized_memsz(arch, max(need, 2 * capacity(current)))


def place(
    crash: tuple[int, int],
    segments: Sequence[Segment],
    holes: Sequence[tuple[int, int]],
    memsz: int,
    page: int = 4096,
) -> int | None:
    """The lowest page-aligned start of ``memsz`` bytes inside the crashkernel
    range ``crash`` ([start, end)) that no segment uses and that one of
    ``holes`` (the crash kernel's own RAM: :meth:`Arch.header_holes`) holds;
    ``None`` when there is no such place.

    The segments given are those that stay (the header being moved is left
    out by the caller: its old range is given back).
    """
    used = sorted((s.mem, s.mem + s.memsz) for s in segments)
    for start, end in sorted(holes):
        lo = max(start, crash[0])
        hi = min(end, crash[1])
        at = page_up(lo, page)
        while at + memsz <= hi:
            clash = next(((s, t) for s, t in used if s < at + memsz and at < t), None)
            if clash is None:
                return at
            at = page_up(clash[1], page)
    return None


@dataclass(frozen=True)
class Move:
    """A header to move: which segment, purgatory's, and where it goes.

    :ivar header: the header segment's index (it keeps it, so purgatory's
        regions keep their order).
    :ivar purgatory: the purgatory segment's index.
    :ivar location: where purgatory's digest and regions are.
    :ivar mem: the new place, page aligned.
    :ivar memsz: the new size in memory, whole pages.
    """

    header: int
    purgatory: int
    location: DigestLocation
    mem: int
    memsz: int


@dataclass(frozen=True)
class Relocation:
    """A header moved: the new segments and what changed in them.

    :ivar segments: every segment, the header, boot segment and purgatory
        rewritten, the others the same objects as before.
    :ivar changed: the indexes of the rewritten segments.
    """

    segments: tuple[Segment, ...]
    mem: int
    memsz: int
    old: tuple[int, int]
    changed: tuple[int, ...]


def _check(move: Move, new_header: Buffer, page: int) -> None:
    if move.mem % page or move.memsz % page or len(new_header) > move.memsz:
        raise HeaderError(
            f"a header of {len(new_header)} bytes cannot go at {move.mem:#x} in "
            f"{move.memsz} bytes (page-aligned start and size)"
        )
    if move.location.regions_offset is None:
        raise HeaderError(
            "purgatory's sha256_regions were not found: its header region cannot move"
        )
    if not move.location.header_hashed:
        raise HeaderError(
            "the header is not in purgatory's hash (kexec-tools --hotplug): the kernel moves it"
        )


def relocated(
    arch: Arch, segments: Sequence[Segment], move: Move, new_header: Buffer
) -> Relocation:
    """The image with its header at ``move.mem`` (``move.memsz`` bytes),
    holding ``new_header``.

    The boot segment names the new place (:meth:`Arch.repoint`); purgatory's
    region for the header and its digest match the new segments.

    :raises HeaderError: the new header does not fit, the place is not
        aligned, purgatory's regions were not found, the header is not
        hashed (``--hotplug``), or the boot segment cannot be rewritten.
    :raises CmdlineError: the command line has no room for the new one.
    """
    _check(move, new_header, arch.page)
    segs = list(segments)
    old_seg = segs[move.header]
    old = (old_seg.mem, old_seg.mem + old_seg.memsz)
    rewritten = arch.repoint(segs, move.header, (move.mem, move.mem + move.memsz))
    for i, buf in rewritten.items():
        segs[i] = replace(segs[i], buf=buf)
    segs[move.header] = Segment(bytes(new_header), move.mem, move.memsz)
    p, loc = move.purgatory, move.location
    regions = purgatory.regions(segs, {p})
    purg = bytearray(segs[p].buf)
    assert loc.regions_offset is not None
    purg[loc.regions_offset : loc.regions_offset + len(regions)] = regions
    digest = purgatory.digest_of(loc, segs, p, move.header, {move.header, *rewritten})
    segs[p] = replace(segs[p], buf=purgatory.patched(purg, loc, digest))
    changed = tuple(sorted({move.header, p, *rewritten}))
    return Relocation(tuple(segs), move.mem, move.memsz, old, changed)
