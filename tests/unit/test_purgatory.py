# SPDX-License-Identifier: GPL-2.0-or-later
"""Finding and patching purgatory's SHA-256, on real captured purgatory bytes."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace

import pytest

from kexecd.core import Sha256
from kexecd.image import purgatory
from kexecd.loads import Segment
from testbed.capture import Capture
from testbed.images import image, kexec_tools_digest
from tests.unit.data import ALL_CAPTURES, DATA


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_finds_the_real_digest_and_regions(name: str) -> None:
    # The digest recorded in the guest was computed from the whole segments.
    cap = Capture(DATA / name)
    m = cap.manifest
    purg = m["purgatory_segment"]
    regions = b"".join(
        struct.pack("<QQ", s["mem"], s["memsz"]) for s in m["segments"] if s["index"] != purg
    )
    regions += bytes(16 * (16 - (len(m["segments"]) - 1)))
    found = purgatory.find_digest(cap.segment(purg), bytes.fromhex(m["purgatory_digest"]), regions)
    assert found == (0x5020, 0x5040)  # kexec-tools 2.0.25's build; found by value


def test_locate_on_a_whole_image() -> None:
    cap = image()
    segs = list(cap.segments)
    loc = purgatory.locate(segs, 4, 5, setup=3)
    assert loc is not None
    assert (loc.digest_offset, loc.regions_offset, loc.header_hashed) == (0x5020, 0x5040, True)
    # The saved prefix is the state after segments 0-3 (purgatory is 4); the
    # state before the boot parameters (segment 3), after segments 0-2.
    for state, upto in ((loc.prefix_state, 4), (loc.setup_state, 3)):
        h = hashlib.sha256()
        for s in cap.segments[:upto]:
            h.update(s.buf + bytes(s.memsz - len(s.buf)))
        assert state is not None
        assert Sha256(state).digest() == h.digest()
    assert loc.setup == 3
    assert purgatory.locate(segs, 4, 5).setup_state is None  # type: ignore[union-attr]


def _with(segs: list[Segment], i: int, buf: bytes) -> list[Segment]:
    out = list(segs)
    out[i] = Segment(buf, out[i].mem, out[i].memsz)
    return out


def test_new_digest_hashes_only_what_follows_the_prefix() -> None:
    cap = image()
    segs = list(cap.segments)
    loc = purgatory.locate(segs, 4, 5, setup=3)
    assert loc is not None
    changed = _with(segs, 5, Capture(DATA / "hotadd").header)
    got = purgatory.digest_of(loc, changed, 4, 5, [5])
    assert got == kexec_tools_digest(changed, 4)
    patched = purgatory.patched(segs[4].buf, loc, got)
    assert patched[0x5020:0x5040] == got
    assert patched[:0x5020] == bytes(segs[4].buf)[:0x5020]
    assert patched[0x5040:] == bytes(segs[4].buf)[0x5040:]
    with pytest.raises(ValueError, match="no segment changed"):
        purgatory.digest_of(loc, changed, 4, 5, [])


@pytest.mark.parametrize("setup", [3, None])
def test_new_boot_parameters_are_hashed_from_the_state_before_them(setup: int | None) -> None:
    # A new command line changes segment 3, before the header: the state
    # saved before the header no longer applies. From the one saved before
    # segment 3, or (an older manifest without it) from the start: the same
    # digest, the way kexec-tools computes it.
    cap = image()
    segs = list(cap.segments)
    loc = purgatory.locate(segs, 4, 5, setup=setup)
    assert loc is not None
    boot = bytearray(segs[3].buf)
    boot[-10:-5] = b" x=1\0"
    changed = _with(_with(segs, 3, bytes(boot)), 5, Capture(DATA / "hotadd").header)
    want = kexec_tools_digest(changed, 4)
    assert purgatory.digest_of(loc, changed, 4, 5, [3, 5]) == want
    assert purgatory.digest_of(loc, changed, 4, 5, [5]) != want  # from the wrong state


def test_header_left_out_of_the_hash() -> None:
    # kexec-tools 2.0.28 --hotplug: the digest covers everything but the header.
    cap = image(header_hashed=False)
    segs = list(cap.segments)
    loc = purgatory.locate(segs, 4, 5, setup=3)
    assert loc is not None and not loc.header_hashed and loc.prefix_state is None
    assert loc.regions_offset is None  # the recorded regions still list the header
    # The boot parameters are still hashed: a new command line needs a new digest.
    boot = bytearray(segs[3].buf)
    boot[-10:-5] = b" x=1\0"
    changed = _with(segs, 3, bytes(boot))
    assert purgatory.digest_of(loc, changed, 4, 5, [3]) == kexec_tools_digest(changed, 4, [5])


def test_no_digest_found() -> None:
    cap = image()
    segs = list(cap.segments)
    broken = bytearray(segs[4].buf)
    broken[0x5020:0x5040] = bytes(32)  # as with --no-checks: no digest to find
    segs[4] = replace(segs[4], buf=bytes(broken))
    assert purgatory.locate(segs, 4, 5) is None


def test_sha256_state_round_trip() -> None:
    h = Sha256()
    h.update(b"abc" * 1000)
    h.zeros(12345)
    again = Sha256(h.state())
    again.update(b"tail")
    assert again.digest() == hashlib.sha256(b"abc" * 1000 + bytes(12345) + b"tail").digest()
    with pytest.raises(ValueError):
        Sha256(b"short")


def test_sha256_state_fields_are_checked() -> None:
    # A saved state comes from manifest.json: out-of-range fields are refused
    # before the C code indexes with them (was an out-of-bounds write).
    good = bytearray(Sha256().state())
    Sha256(bytes(good))
    buflen = 32 + 8 + 64  # struct kexecd_sha256: h[8], len, buf[64], buflen
    for field, value in ((buflen, 0x7FFFFFFF), (buflen, 64), (32, 6), (32, 1 << 62)):
        bad = bytearray(good)
        size = 4 if field == buflen else 8
        bad[field : field + size] = value.to_bytes(size, "little")
        with pytest.raises(ValueError, match="a field is out of range"):
            Sha256(bytes(bad))
