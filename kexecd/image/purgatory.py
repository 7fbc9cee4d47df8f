# SPDX-License-Identifier: GPL-2.0-or-later
"""Purgatory's SHA-256: find the digest and its regions by value, recompute, patch.

kexec-tools kexec/kexec.c update_purgatory() hashes every segment but
purgatory, in segment order, each buffer followed by zeros up to memsz, and
stores the digest in purgatory's ``sha256_digest`` and the list of
``{u64 start, u64 len}`` in ``sha256_regions[16]``. At panic purgatory hashes
the regions again and spins forever on a mismatch, so a reloaded header needs
a new digest. kexec-tools 2.0.28's ``--hotplug`` leaves the header out of the
hash (commit a563760); then a new header needs no patching, a new command
line (in the boot parameters, which are always hashed) still does.

The hash is sequential: SHA-256 states saved before the header and before the
boot parameters let a new digest hash only from the first changed segment on.

Nothing here depends on offsets in a particular purgatory build: both arrays
are found by their value.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from kexecd.core import Sha256
from kexecd.loads import Buffer, Segment

__all__ = [
    "DigestLocation",
    "digest_of",
    "find_digest",
    "locate",
    "patched",
    "rebased",
    "regions",
    "rehashed",
]

# kexec-tools kexec/kexec-sha256.h: SHA256_REGIONS.
SHA256_REGIONS = 16
DIGEST_SIZE = 32


@dataclass(frozen=True)
class DigestLocation:
    """Where purgatory keeps its digest, and what the digest covers.

    :ivar header_hashed: whether the ELF core header is among the hashed
        regions (so a new header needs a new digest).
    :ivar prefix_state: the SHA-256 state after the hashed segments that come
        before the header, to hash only the header and what follows.
    :ivar setup: the boot parameters segment (the command line's), if known.
    :ivar setup_state: the state after the hashed segments before it: a new
        command line is hashed from there, not from the first segment (the
        kernel's tens of MB come before it in kexec-tools' layout).
    """

    digest_offset: int
    regions_offset: int | None
    header_hashed: bool
    prefix_state: bytes | None
    setup: int | None = None
    setup_state: bytes | None = None


def regions(segments: Sequence[Segment], skip: set[int]) -> bytes:
    """``sha256_regions`` as kexec-tools fills it: {mem, memsz} of each hashed segment."""
    regions = [(s.mem, s.memsz) for i, s in enumerate(segments) if i not in skip]
    if len(regions) > SHA256_REGIONS:
        return b""
    out = b"".join(struct.pack("<QQ", mem, memsz) for mem, memsz in regions)
    return out + bytes(16 * (SHA256_REGIONS - len(regions)))


def _find_once(haystack: bytes, needle: bytes) -> int | None:
    if not needle or haystack.count(needle) != 1:
        return None
    return haystack.find(needle)


def find_digest(
    purgatory_buf: bytes, digest: bytes, regions: bytes
) -> tuple[int, int | None] | None:
    """Where ``digest`` (exactly once) and ``regions`` (if once) are in purgatory."""
    offset = _find_once(purgatory_buf, digest)
    if offset is None:
        return None
    return offset, _find_once(purgatory_buf, regions)


def _hash_on(
    h: Sha256, segments: Sequence[Segment], skip: set[int], start: int, stop: int
) -> None:
    for i in range(start, stop):
        if i not in skip:
            h.update(segments[i].buf)
            h.zeros(segments[i].memsz - len(segments[i].buf))


def locate(
    segments: Sequence[Segment], purgatory: int, header: int, setup: int | None = None
) -> DigestLocation | None:
    """Find purgatory's digest by recomputing it; ``None`` when it is not there.

    Tried with the header hashed (kexec-tools before 2.0.28, or without
    ``--hotplug``) and without it. ``None`` means neither digest occurs
    exactly once in purgatory (``--no-checks``, or a layout kexecd does not
    know): only a full reload is safe then.

    :param setup: the boot parameters segment: the state before it is kept too.
    """
    purg = bytes(segments[purgatory].buf)
    if setup in (purgatory, header):
        setup = None
    # One pass over what precedes the header (the kernel's tens of MB of
    # zero padding among it), shared by both guesses; the state before the
    # boot parameters is taken on the way.
    before = Sha256()
    at_setup = None
    for i in range(header):
        if i == setup:
            at_setup = before.state()
        _hash_on(before, segments, {purgatory}, i, i + 1)
    for skip, hashed in (({purgatory}, True), ({purgatory, header}, False)):
        h = before.copy()
        _hash_on(h, segments, skip, header, len(segments))
        found = find_digest(purg, h.digest(), regions(segments, skip))
        if found is None:
            continue
        if setup is not None and setup > header:
            after = before.copy()
            _hash_on(after, segments, skip, header, setup)
            at_setup = after.state()
        return DigestLocation(
            found[0],
            found[1],
            hashed,
            before.state() if hashed else None,
            setup,
            at_setup,
        )
    return None


def digest_of(
    loc: DigestLocation,
    segments: Sequence[Segment],
    purgatory: int,
    header: int,
    changed: Collection[int],
) -> bytes:
    """The digest over ``segments``, whose ``changed`` buffers are new.

    Hashes from the last state saved at or before the first changed segment
    (before the boot parameters, before the header), from the start if none
    is: the result is the same, only slower.

    :raises ValueError: nothing changed (the digest is what purgatory holds).
    """
    if not changed:
        raise ValueError("no segment changed: the digest is the one purgatory holds")
    first = min(changed)
    skip = {purgatory} if loc.header_hashed else {purgatory, header}
    start, state = 0, None
    for at, saved in ((header, loc.prefix_state), (loc.setup, loc.setup_state)):
        if at is not None and saved is not None and start <= at <= first:
            start, state = at, saved
    h = Sha256(state)
    _hash_on(h, segments, skip, start, len(segments))
    return h.digest()


def rebased(
    loc: DigestLocation, segments: Sequence[Segment], purgatory: int, header: int
) -> DigestLocation | None:
    """Where the digest is in an image whose boot parameters and header were
    rewritten (a moved header: :mod:`kexecd.image.relocate`), without hashing
    it all again: the segments before the boot parameters are the same, so
    the state before them still holds; the state before the header is that
    one carried over the new boot parameters. ``None`` when that does not
    apply (the header not hashed, no saved state, the boot parameters after
    the header): :func:`locate` then.
    """
    setup = loc.setup
    if not loc.header_hashed or setup is None or loc.setup_state is None or setup > header:
        return None
    h = Sha256(loc.setup_state)
    _hash_on(h, segments, {purgatory}, setup, header)
    return DigestLocation(
        loc.digest_offset, loc.regions_offset, True, h.state(), setup, loc.setup_state
    )


def rehashed(
    loc: DigestLocation, segments: Sequence[Segment], purgatory: int, header: int
) -> tuple[bytes, DigestLocation]:
    """The digest over ``segments`` hashed from the first, and where it is
    with the states saved on the way: for an image whose first segments
    changed (a kernel segment cut: :mod:`kexecd.image.trim`), where no saved
    state applies. One pass, where :func:`locate` would make two.
    """
    skip = {purgatory} if loc.header_hashed else {purgatory, header}
    h = Sha256()
    prefix = at_setup = None
    for i in range(len(segments)):
        if i == loc.setup:
            at_setup = h.state()
        if i == header:
            prefix = h.state()
        _hash_on(h, segments, skip, i, i + 1)
    new = DigestLocation(
        loc.digest_offset,
        loc.regions_offset,
        loc.header_hashed,
        prefix if loc.header_hashed else None,
        loc.setup,
        at_setup,
    )
    return h.digest(), new


def patched(purgatory_buf: Buffer, loc: DigestLocation, digest: bytes) -> bytes:
    """A copy of purgatory's buffer with ``digest`` in place of the old one."""
    if len(digest) != DIGEST_SIZE:
        raise ValueError("a SHA-256 digest is 32 bytes")
    out = bytearray(purgatory_buf)
    out[loc.digest_offset : loc.digest_offset + DIGEST_SIZE] = digest
    return bytes(out)
