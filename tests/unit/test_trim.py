# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel segment reloaded without its zero-filled tail (issue 27 item 6),
checked against independent readers: the boot parameters and purgatory's
regions parsed here, the digest with hashlib (testbed.images)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from kexecd.arch.aarch64 import AARCH64
from kexecd.arch.x86_64 import X86_64
from kexecd.errors import HeaderError
from kexecd.image import facts, loader, plan, purgatory, relocate, trim
from kexecd.image.plan import Action, Policy
from kexecd.image.refresher import Request
from kexecd.image.store import open_snapshot
from kexecd.loads import Segment
from kexecd.service.config import load_config
from kexecd.system.root import Root
from kexecd.system.state import read_system
from testbed.images import image, kernel_index, kexec_tools_digest, loaded_root
from tests.unit import fakes
from tests.unit.data import SETS
from tests.unit.fakes import ARGV, FakeBackend, tracer_for

X86 = ["boot", "hotadd", *SETS["5.10-2.0.20"], *SETS["6.12-2.0.29-c"]]


def _regions(purg: bytes, offset: int) -> list[tuple[int, int]]:
    # purgatory's sha256_regions[16] (kexec-tools kexec/kexec-sha256.h), read here.
    pairs = [struct.unpack_from("<QQ", purg, offset + 16 * i) for i in range(16)]
    return [(a, n) for a, n in pairs if n]


def _init_size(segs: list[Segment]) -> int:
    setup = next(s.buf for s in segs if bytes(s.buf[0x202:0x206]) == b"HdrS")
    value: int = struct.unpack_from("<I", setup, 0x260)[0]
    return value


@pytest.mark.parametrize("name", X86)
def test_the_kernel_segment_is_told_by_its_payload(name: str) -> None:
    segs = list(image(name, bzimage=True).segments)
    k = kernel_index(segs)
    extent = -(-_init_size(segs) // 4096) * 4096
    assert X86_64.kernel_extent(segs) == (k, extent)
    # Cut, it is still the kernel, with the extent it needs.
    short = list(segs)
    short[k] = Segment(segs[k].buf, segs[k].mem, -(-len(segs[k].buf) // 4096) * 4096)
    assert X86_64.kernel_extent(short) == (k, extent)
    # Random bytes where the compressed payload starts: not told, not cut.
    assert X86_64.kernel_extent(list(image(name).segments)) is None
    # Misaligned, or another memsz: not the kernel either.
    moved = list(segs)
    moved[k] = Segment(segs[k].buf, segs[k].mem + 4096, segs[k].memsz)
    assert X86_64.kernel_extent(moved) is None
    odd = list(segs)
    odd[k] = Segment(segs[k].buf, segs[k].mem, segs[k].memsz - 4096)
    assert X86_64.kernel_extent(odd) is None


def test_arm64_keeps_its_layout() -> None:
    segs = list(image("arm64-6.1-2.0.25-boot").segments)
    assert AARCH64.kernel_extent(segs) is None


def _cut(
    segs: list[Segment] | tuple[Segment, ...], loc: purgatory.DigestLocation | None
) -> trim.Cut | None:
    return trim.cut(segs, X86_64.kernel_extent(segs), X86_64.page, loc)


@pytest.mark.parametrize("name", X86)
def test_the_cut_changes_one_memsz_one_region_and_the_digest(name: str) -> None:
    cap = image(name, bzimage=True)
    segs = list(cap.segments)
    snap_purg = next(i for i, s in enumerate(segs) if s.mem <= cap.entry < s.mem + s.memsz)
    header = max(i for i, s in enumerate(segs) if bytes(s.buf[:4]) == b"\x7fELF")
    loc = purgatory.locate(segs, snap_purg, header, None)
    assert loc is not None and loc.regions_offset is not None
    c = _cut(segs, loc)
    assert c is not None
    k = kernel_index(segs)
    assert (c.index, c.memsz, c.cut) == (k, segs[k].memsz, -(-len(segs[k].buf) // 4096) * 4096)
    assert c.memsz - c.cut > 40 << 20  # tens of MB no longer zero-filled
    new, new_loc = trim.trimmed(segs, c, snap_purg, header, loc)
    # The same segments, the header passed last, the kernel cut.
    order = [i for i in range(len(segs)) if i != header] + [header]
    assert [(s.mem, s.memsz) for s in new] == [
        (segs[i].mem, c.cut if i == k else segs[i].memsz) for i in order
    ]
    purg_at = order.index(snap_purg)
    for i, b in zip(order, new, strict=True):
        if i != snap_purg:
            assert bytes(segs[i].buf) == bytes(b.buf)
    purg = bytes(new[purg_at].buf)
    # Purgatory hashes exactly the new regions, in that order, the header
    # last, and the digest is theirs.
    regions = _regions(purg, loc.regions_offset)
    assert regions == [(s.mem, s.memsz) for i, s in enumerate(new) if i != purg_at]
    assert regions[-1] == (segs[header].mem, segs[header].memsz)
    digest = purg[loc.digest_offset : loc.digest_offset + 32]
    assert digest == kexec_tools_digest(new, purg_at)
    # In purgatory, only the digest and the regions changed.
    changed = {
        i for i, (x, y) in enumerate(zip(bytes(segs[snap_purg].buf), purg, strict=True)) if x != y
    }
    assert changed <= set(range(loc.digest_offset, loc.digest_offset + 32)) | set(
        range(loc.regions_offset, loc.regions_offset + 16 * 16)
    )
    # The states saved on the way are those a fresh search finds.
    setup = None if loc.setup is None else order.index(loc.setup)
    assert purgatory.locate(new, purg_at, len(new) - 1, setup) == new_loc
    # A new header's digest starts from the state before it: the header alone.
    other = bytearray(new[-1].buf)
    other[-1] ^= 1
    again = [*new[:-1], Segment(bytes(other), new[-1].mem, new[-1].memsz)]
    assert purgatory.digest_of(new_loc, again, purg_at, len(new) - 1, [len(new) - 1]) == (
        kexec_tools_digest(again, purg_at)
    )
    # Cut already: nothing more to cut.
    assert _cut(new, new_loc) is None


def test_no_cut_without_purgatorys_regions() -> None:
    cap = image("boot", bzimage=True)
    segs = list(cap.segments)
    m_purg = 4
    loc = purgatory.locate(segs, m_purg, 5, None)
    assert loc is not None
    blind = purgatory.DigestLocation(loc.digest_offset, None, True, loc.prefix_state)
    assert _cut(segs, blind) is None
    assert _cut(segs, None) is None
    c = _cut(segs, loc)
    assert c is not None
    with pytest.raises(HeaderError, match="sha256_regions were not found"):
        trim.trimmed(segs, c, m_purg, 5, blind)


def _loaded(tmp: Path, name: str = "boot") -> tuple[Path, Path]:
    root = loaded_root(name, tmp)
    state = tmp / "state"
    cap = image(name, bzimage=True)
    loader.load(ARGV, state, root=Root(root), tracer=tracer_for(cap))
    return root, state


def _switch(root: Path, tmp: Path, name: str) -> None:
    # The fake system becomes the other capture's (a hot-add): /proc and /sys.
    src = tmp / f"src-{name}"
    src.mkdir(exist_ok=True)
    other = loaded_root(name, src)
    for sub in ("proc", "sys"):
        shutil.rmtree(root / sub)
        shutil.copytree(other / sub, root / sub)


def test_a_reload_cuts_the_kernel_once_and_purgatory_vouches(tmp_path: Path) -> None:
    root, state = _loaded(tmp_path)
    before = open_snapshot(state)
    k = kernel_index(list(before.segments))
    files = [before.path / f"seg-{i:02d}.bin" for i in range(len(before.segments))]
    inodes = [f.stat().st_ino for f in files]
    _switch(root, tmp_path, "hotadd")
    backend = FakeBackend(root=root)
    r = fakes.refresh(state, root=Root(root), backend=backend)
    assert r.loaded and r.decision.action is Action.RELOAD_HEADER and r.relocated is None
    after = open_snapshot(state)
    assert after.path == before.path
    assert after.segments[k].memsz == -(-len(before.segments[k].buf) // 4096) * 4096
    # Every other segment where it was, the header passed last.
    h = before.header
    assert h is not None and after.header == len(after.segments) - 1
    order = [i for i in range(len(before.segments)) if i != h] + [h]
    assert [(s.mem, s.memsz) for i, s in enumerate(after.segments) if i != k] == [
        (before.segments[i].mem, before.segments[i].memsz) for i in order if i != k
    ]
    assert "kernel segment 2 loaded 8228864 bytes long, not 66682880" in after.record.info()["how"]
    ((_, _, bufs),) = backend.loads
    sent = [Segment(b, s.mem, s.memsz) for b, s in zip(bufs, after.segments, strict=True)]
    p = after.purgatory or 0
    off = after.digest.digest_offset if after.digest else -1
    assert bufs[p][off : off + 32] == kexec_tools_digest(sent, p)
    assert bufs[after.header or 0] == after.record.header()
    # The files of unchanged segments are linked, not written again.
    now = [(after.path / f"seg-{i:02d}.bin").stat().st_ino for i in range(len(order))]
    p_was = before.purgatory
    assert [n for n, i in zip(now, order, strict=True) if i != p_was] == [
        inodes[i] for i in order if i != p_was
    ]
    assert inodes[p_was or 0] not in now
    # Current now; the next reload keeps the cut and rewrites nothing.
    assert plan.make(after, Root(root)).action is Action.NOTHING
    _switch(root, tmp_path, "boot")
    r = fakes.refresh(state, root=Root(root), backend=backend)
    assert r.decision.action is Action.RELOAD_HEADER
    again = open_snapshot(state)
    assert again.segments[k].memsz == after.segments[k].memsz
    assert again.record.info()["how"] == "kexecd refresh"
    bufs = backend.loads[1][2]
    sent = [Segment(b, s.mem, s.memsz) for b, s in zip(bufs, again.segments, strict=True)]
    assert bufs[p][off : off + 32] == kexec_tools_digest(sent, p)


def test_keep_kernel_memsz_keeps_kexec_tools_layout(tmp_path: Path) -> None:
    root, state = _loaded(tmp_path)
    before = open_snapshot(state)
    _switch(root, tmp_path, "hotadd")
    r = fakes.refresher(state, root=Root(root), backend=FakeBackend(root=root))
    r.policy = Policy(trim_kernel=False)
    assert r.refresh(Request()).loaded
    after = open_snapshot(state)
    assert [s.memsz for s in after.segments] == [s.memsz for s in before.segments]
    assert after.record.info()["how"] == "kexecd refresh"
    conf = tmp_path / "kexecd.conf"
    conf.write_text("keep_kernel_memsz = true\n")
    assert load_config(conf).policy.trim_kernel is False
    assert load_config(None).policy.trim_kernel is True


def test_a_moved_header_never_lands_in_the_cut_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, state = _loaded(tmp_path)
    _switch(root, tmp_path, "hotadd")
    fakes.refresh(state, root=Root(root), backend=FakeBackend(root=root))
    snap = open_snapshot(state)
    k = kernel_index(list(image("boot").segments))
    seg = snap.segments[k]
    found = X86_64.kernel_extent(list(snap.segments))
    assert found is not None
    extent = found[1]
    assert extent > seg.memsz
    # The crash kernel's RAM, as far as a move may look: the kernel's extent
    # and 1 MiB after it. Placed by the segments alone, the header would go
    # into the tail the decompressor writes.
    ram = [(seg.mem, seg.mem + extent + (1 << 20))]
    others = [s for i, s in enumerate(snap.segments) if i != snap.header]
    crash = (0x2F000000, 0x3F000000)
    assert relocate.place(crash, others, ram, 32768) == seg.mem + seg.memsz
    monkeypatch.setattr(type(X86_64), "header_holes", lambda self, segs: ram)
    at = facts.hole(snap, read_system(Root(root)), 300, None)
    assert at == (seg.mem + extent, 32768)


def test_a_move_and_the_cut_in_one_load(tmp_path: Path) -> None:
    # The first reload must also move the header (it outgrew its 16 KiB): one
    # rewrite does both, and the new place is outside the kernel's extent.
    root, state = _loaded(tmp_path)
    before = open_snapshot(state)
    k = kernel_index(list(before.segments))
    found = X86_64.kernel_extent(list(before.segments))
    assert found is not None
    iomem = root / "proc/iomem"
    added = "".join(
        f"{0x2_0000_0000 + i * 0x200_0000:x}-{0x2_0000_0000 + i * 0x200_0000 + 0xFF_FFFF:x}"
        " : System RAM\n"
        for i in range(300)
    )
    iomem.write_text(iomem.read_text() + added)
    backend = FakeBackend(root=root)
    r = fakes.refresh(state, root=Root(root), backend=backend)
    assert r.decision.action is Action.RELOCATE and r.relocated is not None
    _, mem, memsz = r.relocated
    kern = before.segments[k]
    assert not (kern.mem <= mem < kern.mem + found[1])
    after = open_snapshot(state)
    assert after.header == len(after.segments) - 1
    assert (after.segments[-1].mem, after.segments[-1].memsz) == (mem, memsz)
    assert after.segments[k].memsz == -(-len(kern.buf) // 4096) * 4096
    how = after.record.info()["how"]
    assert how.startswith("kexecd relocate (header moved from") and "kernel segment 2" in how
    ((_, _, bufs),) = backend.loads
    sent = [Segment(b, s.mem, s.memsz) for b, s in zip(bufs, after.segments, strict=True)]
    p = after.purgatory or 0
    off = after.digest.digest_offset if after.digest else -1
    assert bufs[p][off : off + 32] == kexec_tools_digest(sent, p)
    assert bufs[-1] == after.record.header()
    setup = next(b for b in bufs if b"elfcorehdr=" in b)
    assert b" elfcorehdr=%dK" % (mem >> 10) in setup
