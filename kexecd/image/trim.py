# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel segment reloaded without the zero-filled tail kexec-tools gave it.

kexec-tools loads the crash kernel with memsz the extent its boot needs
(x86: the bzImage's ``init_size``, 56-67 MB for Debian's kernels, against a
7-12 MB file), and the kernel zero-fills the difference on every
``kexec_load``: the greater part of the floor of every reload. Where the
architecture knows that extent need only be free, not zeroed
(:meth:`kexecd.arch.Arch.kernel_extent`; x86: :mod:`kexecd.arch.x86_64.bzimage`),
a reload loads that segment with memsz its buffer rounded to a page, every
other segment where kexec-tools put it, and purgatory's regions and digest
rewritten to match (purgatory then hashes the buffer, not the zeros, at the
crash). The same rewrite passes the header last, so that a new header's
digest hashes the header alone (:func:`trimmed`).

Here is the arithmetic, on copies of the segments; the executor makes the
cut image a snapshot of its own (as a moved header's) on the first reload
that needs one, and the policy's ``trim_kernel`` (``keep_kernel_memsz`` in
kexecd.conf) turns it off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from kexecd.errors import HeaderError
from kexecd.image import purgatory
from kexecd.image.purgatory import DigestLocation
from kexecd.loads import Segment, page_up

__all__ = ["Cut", "cut", "occupied", "trimmed"]


@dataclass(frozen=True)
class Cut:
    """A kernel segment to cut: its index, memsz before and after.

    :ivar index: the segment's index.
    :ivar memsz: its memsz now.
    :ivar cut: its buffer rounded to a page: the memsz it is loaded with.
    """

    index: int
    memsz: int
    cut: int


def cut(
    segments: Sequence[Segment],
    found: tuple[int, int] | None,
    page: int,
    loc: DigestLocation | None,
) -> Cut | None:
    """The kernel segment to load shorter, or ``None``: none known to the
    architecture, already cut, or purgatory's regions not found (the digest
    could not vouch for a new memsz).

    :param found: the kernel segment's index and extent
        (:meth:`kexecd.arch.Arch.kernel_extent`; a snapshot's
        :attr:`~kexecd.image.snapshot.Snapshot.kernel_extent`).
    """
    if loc is None or loc.regions_offset is None or found is None:
        return None
    seg = segments[found[0]]
    short = page_up(len(seg.buf), page)
    if seg.memsz <= short:
        return None
    return Cut(found[0], seg.memsz, short)


def occupied(segments: Sequence[Segment], found: tuple[int, int] | None) -> list[Segment]:
    """The segments as memory they use until the crash kernel runs: a cut
    kernel segment (``found``: its index and extent, as for :func:`cut`) over
    its whole extent (its boot writes there), for placing a moved header
    (:func:`kexecd.image.relocate.place`)."""
    out = list(segments)
    if found is not None:
        i, extent = found
        out[i] = replace(out[i], memsz=max(extent, out[i].memsz))
    return out


def trimmed(
    segments: Sequence[Segment],
    c: Cut,
    purgatory_index: int,
    header: int,
    loc: DigestLocation,
) -> tuple[tuple[Segment, ...], DigestLocation]:
    """The image with segment ``c.index`` loaded ``c.cut`` bytes long and the
    header passed last, and where purgatory's digest is in it (with the
    states saved on the way).

    Purgatory hashes its regions in the order of ``sha256_regions``, which
    kexec-tools fills in segment order (sorted by address: the header before
    the 651 KB backup segment on x86); the kernel takes the segments in any
    order (kernel/kexec_core.c sanity_check_segment_list() checks overlaps
    and the crash reservation only). With the header last, the digest of a
    new header is one SHA-256 of the header from the saved state, not of the
    header and everything after it. Purgatory's ``sha256_regions`` name the
    new memsz in the new order, and its digest is hashed again, from the
    first segment (the cut one comes before the header).

    :raises HeaderError: purgatory's regions were not found, or there are
        more segments than it holds.
    """
    if loc.regions_offset is None:
        raise HeaderError("purgatory's sha256_regions were not found: a segment cannot shrink")
    cut_segs = list(segments)
    cut_segs[c.index] = replace(cut_segs[c.index], memsz=c.cut)
    order = [i for i in range(len(cut_segs)) if i != header] + [header]
    segs = [cut_segs[i] for i in order]
    p, h = order.index(purgatory_index), len(segs) - 1
    setup = None if loc.setup is None else order.index(loc.setup)
    moved = replace(loc, setup=setup, prefix_state=None, setup_state=None)
    skip = {p} if loc.header_hashed else {p, h}
    regions = purgatory.regions(segs, skip)
    if not regions:
        raise HeaderError("more segments than purgatory's sha256_regions hold")
    purg = bytearray(segs[p].buf)
    purg[loc.regions_offset : loc.regions_offset + len(regions)] = regions
    digest, new = purgatory.rehashed(moved, segs, p, h)  # purgatory is not hashed
    segs[p] = replace(segs[p], buf=purgatory.patched(purg, loc, digest))
    return tuple(segs), new
