# SPDX-License-Identifier: GPL-2.0-or-later
"""Moving the header, checked byte by byte against independent readers:
pyelftools for the header, a parse of boot_params written here for the
command line and the e820 table, hashlib for purgatory's digest; everything
else must be the bytes kexec-tools passed."""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from kexecd.arch.x86_64 import X86_64, e820
from kexecd.arch.x86_64.e820 import E820Entry
from kexecd.cli.main import main
from kexecd.errors import HeaderError, LoadError
from kexecd.image import deps, elfcore, plan, purgatory, relocate
from kexecd.image.plan import Action
from kexecd.image.store import open_snapshot
from kexecd.loads import Segment
from kexecd.service.daemon import Daemon
from kexecd.service.statefile import read_state
from kexecd.system.kernel import read_kexec_state
from kexecd.system.root import Root
from testbed.capture import Capture
from testbed.images import image, kexec_tools_digest
from tests.unit import fakes
from tests.unit.data import ALL_CAPTURES, DATA
from tests.unit.fakes import FakeBackend, FakeMonitor, daemon_env

CRASH = (0x2F000000, 0x3F000000)  # the 6.1 captures' crashkernel=256M range


def _e820(setup: bytes) -> list[tuple[int, int, int]]:
    # boot_params (Documentation/arch/x86/zero-page.rst), read here on its own.
    n = setup[0x1E8]
    return [struct.unpack_from("<QQI", setup, 0x2D0 + 20 * i) for i in range(n)]


def _line(setup: bytes, mem: int) -> bytes:
    at = struct.unpack_from("<I", setup, 0x228)[0] - mem
    return setup[at : setup.index(b"\0", at)]


def _parts(name: str) -> tuple[list[Segment], int, int, int]:
    cap = image(name)
    m = Capture(DATA / name).manifest
    header = Capture(DATA / name).header_segment["index"]
    setup = next(i for i, s in enumerate(cap.segments) if b"elfcorehdr=" in bytes(s.buf))
    return list(cap.segments), m["purgatory_segment"], header, setup


def _diff(a: bytes, b: bytes) -> set[int]:
    assert len(a) == len(b)
    return {i for i in range(len(a)) if a[i] != b[i]}


def test_capacity_and_growth() -> None:
    assert relocate.capacity(16384) == 291  # kexec-tools' 16 KiB minimum
    assert relocate.grown_memsz(X86_64, 292, 16384) == 32768  # 582 headers, in whole pages
    assert relocate.capacity(relocate.grown_memsz(X86_64, 292, 16384)) >= 582
    assert relocate.grown_memsz(X86_64, 2000, 16384) == -(-(64 + 2000 * 56) // 4096) * 4096
    assert relocate.grown_memsz(X86_64, 1, 0) == 16384


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_relocation_changes_only_what_purgatory_and_the_crash_kernel_read(name: str) -> None:
    segs, purg, header, setup = _parts(name)
    old = segs[header]
    memsz = relocate.grown_memsz(X86_64, 300, old.memsz)
    ram = [(a, a + s) for a, s, t in _e820(bytes(segs[setup].buf)) if t == 1]
    others = [s for i, s in enumerate(segs) if i != header]
    iomem = (DATA / name / "root/proc/iomem").read_text()
    m = re.search(r"^\s*([0-9a-f]+)-([0-9a-f]+) : Crash kernel$", iomem, re.M)
    assert m is not None
    crash = (int(m.group(1), 16), int(m.group(2), 16) + 1)
    mem = relocate.place(crash, others, ram, memsz)
    assert mem is not None and mem % 4096 == 0 and crash[0] <= mem < mem + memsz <= crash[1]
    assert all(mem + memsz <= s.mem or s.mem + s.memsz <= mem for s in others)
    loc = purgatory.locate(segs, purg, header, setup)
    assert loc is not None
    # The same header (it does not say where it lives), in a bigger segment.
    move = relocate.Move(header, purg, loc, mem, memsz)
    r = relocate.relocated(X86_64, segs, move, bytes(old.buf))
    new = r.segments
    assert r.changed == tuple(sorted({header, setup, purg}))
    # Untouched segments: the very bytes and places kexec-tools chose.
    for i, (a, b) in enumerate(zip(segs, new, strict=True)):
        if i not in r.changed:
            assert (bytes(a.buf), a.mem, a.memsz) == (bytes(b.buf), b.mem, b.memsz)
    # The header: where it was asked to go, an ELF core file pyelftools reads.
    assert (new[header].mem, new[header].memsz) == (mem, memsz)
    elf = ELFFile(io.BytesIO(bytes(new[header].buf)))
    was = ELFFile(io.BytesIO(bytes(old.buf)))
    assert elf["e_type"] == "ET_CORE" and elf.num_segments() == was.num_segments() > 3
    assert [p.header for p in elf.iter_segments()] == [p.header for p in was.iter_segments()]
    # The command line: only elfcorehdr= changed, to the new place in KiB.
    a, b = bytes(segs[setup].buf), bytes(new[setup].buf)
    line_a, line_b = _line(a, segs[setup].mem), _line(b, new[setup].mem)
    assert line_a.rsplit(b" elfcorehdr=", 1)[0] == line_b.rsplit(b" elfcorehdr=", 1)[0]
    assert line_b.endswith(b" elfcorehdr=%dK" % (mem >> 10))
    # The map: the old hole is RAM again, the new range is not RAM, the rest
    # the same.
    e_a, e_b = _e820(a), _e820(b)

    def ram_at(table: list[tuple[int, int, int]], lo: int, hi: int) -> bool:
        return any(s <= lo and hi <= s + n and t == 1 for s, n, t in table)

    assert not ram_at(e_a, old.mem, old.mem + 16384) and ram_at(e_b, old.mem, old.mem + 16384)
    assert ram_at(e_a, mem, mem + memsz) and not any(
        s < mem + memsz and mem < s + n for s, n, _ in e_b
    )
    assert [e for e in e_a if e[2] != 1] == [e for e in e_b if e[2] != 1]
    ram_total = sum(n for _, n, t in e_a if t == 1)
    assert sum(n for _, n, t in e_b if t == 1) == ram_total + 16384 - memsz
    # The setup segment changed in the line and the e820 table, nowhere else.
    line_at = struct.unpack_from("<I", a, 0x228)[0] - segs[setup].mem
    allowed = set(range(0x1E8, 0x1E9)) | set(range(0x2D0, 0x2D0 + 20 * 128))
    allowed |= set(range(line_at, line_at + len(line_b) + 1))
    assert _diff(a, b) <= allowed
    # Purgatory: its regions name every hashed segment where it now is, in
    # segment order; its digest is hashlib's over them; nothing else moved.
    p_a, p_b = bytes(segs[purg].buf), bytes(new[purg].buf)
    want = b"".join(
        struct.pack("<QQ", s.mem, s.memsz) for i, s in enumerate(new) if i != purg
    ).ljust(16 * 16, b"\0")
    assert p_b[loc.regions_offset : loc.regions_offset + 256] == want  # type: ignore[operator]
    h = hashlib.sha256()
    for i, s in enumerate(new):
        if i != purg:
            h.update(bytes(s.buf) + bytes(s.memsz - len(s.buf)))
    assert p_b[loc.digest_offset : loc.digest_offset + 32] == h.digest()
    assert loc.regions_offset is not None
    assert _diff(p_a, p_b) <= set(range(loc.digest_offset, loc.digest_offset + 32)) | set(
        range(loc.regions_offset, loc.regions_offset + 256)
    )
    # The moved image's digest location, carried over without hashing it all
    # again, is the one found by hashing it all.
    assert purgatory.rebased(loc, new, purg, header) == purgatory.locate(new, purg, header, setup)


def test_moved_hole_splits_shrinks_and_gives_back() -> None:
    ram = [
        E820Entry(0x1000, 0x9FC00, 1),
        E820Entry(0x2F000000, 0x3EF5D000, 1),
        E820Entry(0x3EFFFC00, 0x3F000000, 1),
        E820Entry(0x3FFDF000, 0x40000000, 2),
    ]
    old = (0x3EF5D000, 0x3EF61000)
    # In the middle of the big entry: split in two; the old hole joins its neighbour.
    got = e820.moved_hole(ram, old, (0x30000000, 0x30008000))
    assert got == [
        ram[0],
        E820Entry(0x2F000000, 0x30000000, 1),
        E820Entry(0x30008000, 0x3EF61000, 1),
        ram[2],
        ram[3],
    ]
    # At an entry's start: shrunk, no new entry.
    got = e820.moved_hole(ram, old, (0x2F000000, 0x2F008000))
    assert got[1] == E820Entry(0x2F008000, 0x3EF61000, 1) and len(got) == 4
    # Back where it was: the map kexec-tools built.
    assert e820.moved_hole(ram, old, old) == ram
    with pytest.raises(HeaderError, match="not inside one RAM entry"):
        e820.moved_hole(ram, old, (0x3FFDF000, 0x3FFE0000))  # reserved
    with pytest.raises(HeaderError, match="not 1 KiB aligned"):
        e820.moved_hole(ram, old, (0x30000100, 0x30008000))
    with pytest.raises(HeaderError, match="not the hole kexec-tools cut"):
        e820.moved_hole(ram, (0x3FFDF000, 0x3FFE0000), (0x30000000, 0x30008000))


def test_place_skips_segments_and_what_is_not_ram() -> None:
    ram = [(0x2F000000, 0x2F100000), (0x2F200000, 0x2F400000)]
    segs = [Segment(b"", 0x2F000000, 0x1000), Segment(b"", 0x2F002000, 0xFE000)]
    assert relocate.place(CRASH, segs, ram, 0x1000) == 0x2F001000
    assert relocate.place(CRASH, segs, ram, 0x2000) == 0x2F200000  # the gap is one page
    assert relocate.place(CRASH, segs, ram, 0x300000) is None
    assert relocate.place((0x2F200000, 0x2F201000), segs, ram, 0x2000) is None


def test_refused_where_purgatory_does_not_hash_the_header() -> None:
    segs, purg, header, setup = _parts("boot")
    loc = purgatory.locate(segs, purg, header, setup)
    assert loc is not None
    for bad, match in (
        (
            purgatory.DigestLocation(loc.digest_offset, loc.regions_offset, False, None),
            "--hotplug",
        ),
        (purgatory.DigestLocation(loc.digest_offset, None, True, None), "regions were not found"),
    ):
        with pytest.raises(HeaderError, match=match):
            move = relocate.Move(header, purg, bad, 0x30000000, 0x8000)
            relocate.relocated(X86_64, segs, move, bytes(segs[header].buf))
    with pytest.raises(HeaderError, match="cannot go at"):
        move = relocate.Move(header, purg, loc, 0x30000000, 0x8000)
        relocate.relocated(X86_64, segs, move, bytes(0x9000))


# -- the plan and the load --------------------------------------------------------


def _loaded_boot(tmp_path: Path) -> tuple[Path, Path]:
    """The boot capture's fake root and a state dir that kexecd loaded it into."""
    return fakes.loaded("boot", tmp_path)


def _many_ranges(root: Path, n: int, first: int = 0) -> list[tuple[int, int]]:
    """Add ``n`` 16 MiB System RAM ranges above 8 GiB to the fake /proc/iomem."""
    iomem = root / "proc/iomem"
    added = [(0x2_0000_0000 + (first + i) * 0x200_0000, 0x100_0000) for i in range(n)]
    lines = "".join(f"{s:x}-{s + n_ - 1:x} : System RAM\n" for s, n_ in added)
    iomem.write_text(iomem.read_text() + lines)
    return [(s, s + n_) for s, n_ in added]


def test_an_outgrown_header_moves_in_one_load(tmp_path: Path) -> None:
    root, state = _loaded_boot(tmp_path)
    cap = image("boot")
    before = open_snapshot(state)
    assert before.header_capacity == 291
    ranges = _many_ranges(root, 300)
    p = plan.make(before, Root(root), kexec=read_kexec_state(Root(root)))
    assert p.action is Action.RELOCATE and p.move is not None
    assert "move it to" in p.decision.reason
    backend = FakeBackend(root=root)
    r = fakes.refresh(state, root=Root(root), backend=backend)
    assert r.loaded and r.relocated is not None
    old_mem, mem, memsz = r.relocated
    assert (old_mem, mem) == (before.segments[before.header].mem, p.move[0])
    after = open_snapshot(state)
    assert after.header == before.header and after.header_capacity >= 582
    assert (after.segments[after.header].mem, after.segments[after.header].memsz) == (mem, memsz)
    # What the kernel got: the wanted header where the snapshot says, the
    # line naming it, purgatory's digest over exactly those segments.
    ((entry, flags, bufs),) = backend.loads
    assert (entry, flags) == (cap.entry, cap.flags)
    segs = [Segment(b, s.mem, s.memsz) for b, s in zip(bufs, after.segments, strict=True)]
    assert bufs[after.header] == p.wanted
    loads = {(ph.paddr, ph.paddr + ph.memsz) for ph in elfcore.parse(bufs[after.header]).ram}
    assert set(ranges) <= loads
    setup = next(i for i, b in enumerate(bufs) if b"elfcorehdr=" in b)
    assert _line(bufs[setup], segs[setup].mem).endswith(b" elfcorehdr=%dK" % (mem >> 10))
    assert not any(s < mem + memsz and mem < s + n for s, n, _ in _e820(bufs[setup]))
    off = after.digest.digest_offset if after.digest else -1
    assert bufs[after.purgatory or 0][off : off + 32] == kexec_tools_digest(
        segs, after.purgatory or 0
    )
    # Current now; one more range is a header-only reload in the new place.
    assert plan.make(after, Root(root)).action is Action.NOTHING
    _many_ranges(root, 1, first=300)
    r = fakes.refresh(state, root=Root(root), backend=backend)
    assert r.loaded and r.relocated is None and r.decision.action is Action.RELOAD_HEADER
    assert open_snapshot(state).segments[after.header].mem == mem


def test_a_refused_move_keeps_the_previous_image(tmp_path: Path) -> None:
    root, state = _loaded_boot(tmp_path)
    before = open_snapshot(state)
    _many_ranges(root, 300)
    backend = FakeBackend(fail=1, root=root)
    with pytest.raises(LoadError, match="the previous image was loaded again"):
        fakes.refresh(state, root=Root(root), backend=backend)
    assert len(backend.loads) == 2
    # The second load is the image as it was, and the snapshot still says so.
    assert backend.loads[1][2] == [bytes(s.buf) for s in before.segments]
    again = open_snapshot(state)
    assert again.segments[again.header or 0].mem == before.segments[before.header or 0].mem
    assert plan.make(again, Root(root)).action is Action.RELOCATE


def test_no_hole_falls_back_to_a_full_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, state = _loaded_boot(tmp_path)
    _many_ranges(root, 300)
    monkeypatch.setattr(relocate, "place", lambda *a: None)  # a reservation with no room
    p = plan.make(open_snapshot(state), Root(root))
    assert p.move is None and p.action is Action.FULL_RELOAD
    assert p.decision.reason == "the header needs 18432 bytes but its segment holds 16384"


def test_cli_grow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, state = _loaded_boot(tmp_path)
    args = ["--state-dir", str(state), "--root", str(root)]
    room = relocate.capacity(relocate.sized_memsz(X86_64, 1000))
    assert main(["grow", "--capacity", "1000", *args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would grow the header from room for 291 to {room} program headers: move it to" in out
    assert open_snapshot(state).header_capacity == 291  # a dry run
    monkeypatch.setattr(deps, "KernelBackend", lambda: FakeBackend(root=root))
    assert main(["grow", "--capacity", "1000", *args]) == 0
    assert "kexecd grow: grow the header from room for 291" in capsys.readouterr().out
    assert open_snapshot(state).header_capacity == room
    assert main(["grow", "--capacity", "1000", *args]) == 0
    assert f"nothing to do: the header has room for {room}" in capsys.readouterr().out
    # The reserve has no hole that big: refused, nothing loaded, exit 2.
    monkeypatch.setattr(relocate, "place", lambda *a: None)
    assert main(["grow", "--capacity", "5000", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kexecd grow: the header cannot grow to 5000 program headers")
    assert "no hole that big" in err and open_snapshot(state).header_capacity == room
    with pytest.raises(SystemExit) as e:
        main(["grow", "--capacity", "0", *args])
    assert e.value.code == 2 and "not between 1 and 1048576" in capsys.readouterr().err


def test_status_warns_below_a_tenth_of_room(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, state = _loaded_boot(tmp_path)
    _many_ranges(root, 270)
    fakes.refresh(state, root=Root(root), backend=FakeBackend(root=root))
    args = ["--state-dir", str(state), "--root", str(root), "--runtime-dir", str(tmp_path / "run")]
    assert main(["status", *args]) == 0
    out = capsys.readouterr().out
    assert "277 of 291 program headers, at 0x3ef5d000" in out
    assert "only 14 of 291 program headers free (under 10%): 'kexecd grow --capacity 582'" in out


def test_growth_policy_sizes() -> None:
    from bench.bench_relocate import policy_size

    # 4 and 64 ranges fit kexec-tools' 16 KiB (291 headers); 288 ranges and
    # four more headers double it; 1024 ranges need more than twice: room for
    # exactly 1028, in whole pages.
    assert [policy_size(n) for n in (4, 64, 287, 288, 1024)] == [
        16384,
        16384,
        16384,
        32768,
        61440,
    ]


def test_inspect_shows_where_the_loaded_header_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, state = _loaded_boot(tmp_path)
    assert main(["inspect", "--loaded", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "segment 5 at 0x3ef5d000, 16384 bytes, room for 291 program headers" in out
    monkeypatch.setattr(deps, "KernelBackend", lambda: FakeBackend(root=root))
    args = ["--state-dir", str(state), "--root", str(root)]
    assert main(["grow", "--capacity", "600", *args]) == 0
    capsys.readouterr()
    assert main(["inspect", "--loaded", "--state-dir", str(state), "--json"]) == 0
    place = json.loads(capsys.readouterr().out)["place"]
    snap = open_snapshot(state)
    assert place == {
        "segment": 5,
        "address": snap.segments[5].mem,
        "memsz": 36864,
        "capacity": 657,
    }
    assert place["address"] != 0x3EF5D000
    with pytest.raises(SystemExit):
        main(["inspect", "--loaded", "x.bin"])


def test_the_daemon_counts_a_move(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The daemon's reconcile moves an outgrown header on its own; state.json,
    # the metrics and status count it as a header-only reload that moved.
    cfg = daemon_env(tmp_path, settle_ms=50, max_delay_ms=300)
    root = tmp_path / "root-boot"
    _many_ranges(root, 300)
    daemon = Daemon(cfg, FakeMonitor(), backend=FakeBackend(root=root))
    assert daemon.reconcile("start").action == "relocate"
    st = read_state(cfg.runtime_dir)
    assert st is not None
    assert (st.reloads, st.moves, st.full_reloads, st.failed) == (1, 1, 0, 0)
    prom = (tmp_path / "metrics/kexecd.prom").read_text()
    assert "\nkexecd_header_moves_total 1\n" in prom
    assert '\nkexecd_reloads_total{kind="header"} 1\n' in prom
    assert daemon.reconcile("again").action == "nothing"
    assert read_state(cfg.runtime_dir).moves == 1  # type: ignore[union-attr]
    rc = main(
        [
            "status",
            "--state-dir",
            str(cfg.state_dir),
            "--root",
            str(tmp_path / "root"),
            "--runtime-dir",
            str(cfg.runtime_dir),
        ]
    )
    out = capsys.readouterr().out
    assert "1 reloads (1 moved the header), 0 full" in out, out
    assert rc == 0, out
