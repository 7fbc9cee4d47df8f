# SPDX-License-Identifier: GPL-2.0-or-later
"""kexecd load and refresh, on fake roots with a fake kexec backend.

Nothing here calls kexec_load: a backend that records loads (and fails on
demand) stands in for the kernel; the VM tier does the real thing.
"""

from __future__ import annotations

import errno
import hashlib
import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from kexecd.cli import main
from kexecd.errors import LoadError, SnapshotError, TraceError
from kexecd.image import loader, statedir
from kexecd.image.plan import Action
from kexecd.image.store import Store, open_snapshot
from kexecd.loads import KexecCall, LoadCapture
from kexecd.system.root import Root
from testbed.capture import Capture
from testbed.images import image, kexec_tools_digest, loaded_root
from tests.unit import fakes
from tests.unit.data import DATA
from tests.unit.fakes import ARGV, KEXEC, FakeBackend, tracer_for


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state dir holding the boot capture's image, loaded."""
    root = Root(loaded_root("boot", tmp_path))
    state = tmp_path / "state"
    loader.load(ARGV, state, root=root, tracer=tracer_for(image("boot")))
    return state


def test_load_keeps_a_snapshot(state: Path) -> None:
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    snap = open_snapshot(state)
    assert snap.argv == tuple(ARGV)
    assert (snap.header, snap.purgatory, snap.header_capacity) == (5, 4, 291)
    assert snap.digest is not None and snap.digest.digest_offset == 0x5020
    assert snap.record.header() == Capture(DATA / "boot").header
    cap = image("boot")
    for i, seg in enumerate(snap.segments):
        assert bytes(seg.buf) == cap.segments[i].buf
        assert (seg.mem, seg.memsz) == (cap.segments[i].mem, cap.segments[i].memsz)
        assert snap.sha256[i] == hashlib.sha256(cap.segments[i].buf).hexdigest()
    Store.verify(snap)


def test_load_refuses_what_is_not_a_crash_load(tmp_path: Path) -> None:
    t = tracer_for(image())
    with pytest.raises(TraceError, match="not a crash-kernel load"):
        loader.load(["kexec", "-l", "/boot/vmlinuz"], tmp_path / "s", tracer=t)
    with pytest.raises(TraceError, match="no kexec command"):
        loader.load([], tmp_path / "s", tracer=t)
    assert t.calls == []  # type: ignore[attr-defined]
    assert not (tmp_path / "s").exists()


def test_load_reports_a_failed_kexec(tmp_path: Path) -> None:
    root = Root(loaded_root("boot", tmp_path))
    failed = replace(image(), exit_code=1)
    with pytest.raises(TraceError, match="kexec exited 1"):
        loader.load(ARGV, tmp_path / "s", root=root, tracer=tracer_for(failed))
    none = replace(image(), call=KexecCall.NONE)
    with pytest.raises(TraceError, match="made no kexec_load"):
        loader.load(ARGV, tmp_path / "s", root=root, tracer=tracer_for(none))


def test_load_checks_the_kernel_loaded_it(tmp_path: Path) -> None:
    root = loaded_root("boot", tmp_path)
    (root / "sys/kernel/kexec_crash_loaded").write_text("0\n")
    with pytest.raises(LoadError, match="kexec_crash_loaded is not 1"):
        loader.load(ARGV, tmp_path / "s", root=Root(root), tracer=tracer_for(image()))


def test_refresh_with_nothing_changed_loads_nothing(state: Path, tmp_path: Path) -> None:
    backend = FakeBackend()
    r = fakes.refresh(state, root=Root(loaded_root("boot", tmp_path)), backend=backend)
    assert r.decision.action is Action.NOTHING and not r.loaded
    assert backend.loads == []


def test_refresh_after_hotplug_reloads_header_and_digest(state: Path, tmp_path: Path) -> None:
    backend = FakeBackend()
    r = fakes.refresh(state, root=Root(loaded_root("hotadd", tmp_path)), backend=backend)
    assert r.decision.action is Action.RELOAD_HEADER and r.loaded
    assert r.diff is not None
    assert [c[0] for c in r.diff.cpus_added] == [2]
    assert [(x.start, x.end) for x in r.diff.ranges_added] == [(0x1_0000_0000, 0x1_3FFF_FFFF)]
    ((entry, flags, segs),) = backend.loads
    orig = image("boot")
    assert (entry, flags) == (orig.entry, orig.flags)
    want = Capture(DATA / "hotadd").header
    assert segs[5] == want
    # Purgatory differs from kexec-tools' only in the 32 digest bytes, and the
    # digest is what kexec-tools would compute for the new segments.
    new = [replace(s, buf=segs[i]) for i, s in enumerate(orig.segments)]
    assert segs[4][0x5020:0x5040] == kexec_tools_digest(new, 4)
    assert segs[4][:0x5020] == orig.segments[4].buf[:0x5020]
    assert segs[4][0x5040:] == orig.segments[4].buf[0x5040:]
    for i in (0, 1, 2, 3, 6):
        assert segs[i] == orig.segments[i].buf
    snap = open_snapshot(state)
    assert snap.record.header() == want
    assert snap.record.info()["digest"] == segs[4][0x5020:0x5040].hex()
    # A second refresh finds the loaded header current.
    again = fakes.refresh(state, root=Root(loaded_root("hotadd", tmp_path)), backend=backend)
    assert again.decision.action is Action.NOTHING and len(backend.loads) == 1


def test_hot_remove_after_hot_add(state: Path, tmp_path: Path) -> None:
    backend = FakeBackend()
    fakes.refresh(state, root=Root(loaded_root("hotadd", tmp_path)), backend=backend)
    r = fakes.refresh(state, root=Root(loaded_root("hotremove", tmp_path)), backend=backend)
    assert r.diff is not None
    assert [(x.start, x.end) for x in r.diff.ranges_removed] == [(0x1_0000_0000, 0x1_1FFF_FFFF)]
    assert backend.loads[-1][2][5] == Capture(DATA / "hotremove").header


def test_failed_load_rolls_back(state: Path, tmp_path: Path) -> None:
    root = loaded_root("hotadd", tmp_path)
    backend = FakeBackend(fail=1, root=root)
    with pytest.raises(LoadError, match="previous image was loaded again"):
        fakes.refresh(state, root=Root(root), backend=backend)
    new, old = backend.loads
    assert new[2][5] == Capture(DATA / "hotadd").header
    assert old[2] == [s.buf for s in image("boot").segments]  # exactly the previous image
    assert open_snapshot(state).record.header() == Capture(DATA / "boot").header


def test_failed_rollback_says_no_crash_kernel(state: Path, tmp_path: Path) -> None:
    root = loaded_root("hotadd", tmp_path)
    backend = FakeBackend(fail=2, root=root)
    with pytest.raises(LoadError, match="NO CRASH KERNEL IS LOADED"):
        fakes.refresh(state, root=Root(root), backend=backend)
    assert len(backend.loads) == 2


def test_busy_kernel_keeps_the_image(state: Path, tmp_path: Path) -> None:
    # EBUSY twice used to report NO CRASH KERNEL IS LOADED: the kernel had
    # touched nothing. Now kexec_crash_loaded decides, and nothing is undone.
    root = loaded_root("hotadd", tmp_path)
    backend = FakeBackend(fail=2, root=root, error=errno.EBUSY)
    with pytest.raises(LoadError, match="the kernel kept the previous image \\(it was busy\\)"):
        fakes.refresh(state, root=Root(root), backend=backend)
    assert len(backend.loads) == 1
    snap = open_snapshot(state)
    assert snap.record.header() == Capture(DATA / "boot").header and snap.record.intent() is None
    r = fakes.refresh(state, root=Root(root), backend=FakeBackend(root=root))
    assert r.decision.action is Action.RELOAD_HEADER and r.loaded


def test_corrupt_snapshot_is_refused_before_any_load(state: Path, tmp_path: Path) -> None:
    seg = state / "snapshot/seg-02.bin"
    data = bytearray(seg.read_bytes())
    data[1000] ^= 0xFF
    seg.write_bytes(data)
    backend = FakeBackend()
    with pytest.raises(SnapshotError, match=r"seg-02.bin: does not match the SHA-256"):
        fakes.refresh(state, root=Root(loaded_root("hotadd", tmp_path)), backend=backend)
    assert backend.loads == []


def test_malformed_manifest(state: Path) -> None:
    (state / "snapshot/manifest.json").write_text("{")
    with pytest.raises(SnapshotError, match=r"manifest\.json: unreadable"):
        open_snapshot(state)
    (state / "snapshot/manifest.json").write_text(json.dumps({"format": 1}))
    with pytest.raises(SnapshotError, match=r"manifest\.json: malformed"):
        open_snapshot(state)


def test_header_too_big_falls_back_to_full_reload(tmp_path: Path) -> None:
    cap = image("boot")
    small = list(cap.segments)
    small[5] = replace(small[5], memsz=1024)  # hotadd's header needs 2048
    cap = replace(cap, segments=tuple(small))
    root = Root(loaded_root("hotadd", tmp_path))
    state = tmp_path / "state"
    loader.load(ARGV, state, root=root, tracer=tracer_for(cap))
    tracer = tracer_for(image("hotadd"))
    backend = FakeBackend()
    r = fakes.refresh(state, root=root, backend=backend, tracer=tracer)
    assert r.decision.action is Action.FULL_RELOAD
    assert "needs 2048 bytes but its segment holds 1024" in r.decision.reason
    assert tracer.calls == [tuple(ARGV)]  # type: ignore[attr-defined]
    assert backend.loads == []  # the kexec command did the load
    assert open_snapshot(state).record.header() == Capture(DATA / "hotadd").header


def test_digest_not_found_falls_back_to_full_reload(tmp_path: Path) -> None:
    cap = image("boot")
    segs = list(cap.segments)
    purg = bytearray(segs[4].buf)
    purg[0x5020:0x5040] = bytes(32)
    segs[4] = replace(segs[4], buf=bytes(purg))
    root = Root(loaded_root("hotadd", tmp_path))
    state = tmp_path / "state"
    loader.load(ARGV, state, root=root, tracer=tracer_for(replace(cap, segments=tuple(segs))))
    assert open_snapshot(state).digest is None
    tracer = tracer_for(image("hotadd"))
    r = fakes.refresh(state, root=root, backend=FakeBackend(), tracer=tracer)
    assert r.decision.action is Action.FULL_RELOAD and "digest was not found" in r.decision.reason


def test_file_loaded_image_is_reloaded_whole(tmp_path: Path) -> None:
    cap = LoadCapture(
        KexecCall.KEXEC_FILE_LOAD,
        0,
        0,
        0,
        (),
        b"elfcorehdr=1K\0",
        1,
        0,
        crash_loads=1,
        unloads=0,
        reboot_loads=0,
        program=KEXEC.read_bytes(),  # the kexec binary that ran
    )
    root = Root(loaded_root("boot", tmp_path))
    state = tmp_path / "state"
    snap = loader.load([*ARGV, "-s"], state, root=root, tracer=tracer_for(cap))
    assert snap.file_load
    tracer = tracer_for(cap)
    r = fakes.refresh(state, root=root, backend=FakeBackend(), tracer=tracer)
    assert r.decision.action is Action.FULL_RELOAD and "kexec_file_load" in r.decision.reason
    assert tracer.calls == [(*ARGV, "-s")]  # type: ignore[attr-defined]


def test_stands_aside_when_the_kernel_updates_the_header(state: Path, tmp_path: Path) -> None:
    root = loaded_root("hotadd", tmp_path)
    (root / "sys/devices/system/memory/crash_hotplug").write_text("1\n")
    backend = FakeBackend()
    r = fakes.refresh(state, root=Root(root), backend=backend)
    assert r.decision.action is Action.STAND_ASIDE and backend.loads == []


def test_dry_run_loads_nothing(state: Path, tmp_path: Path) -> None:
    backend = FakeBackend()
    r = fakes.refresh(
        state, root=Root(loaded_root("hotadd", tmp_path)), backend=backend, dry_run=True
    )
    assert r.decision.action is Action.RELOAD_HEADER and not r.loaded and backend.loads == []


def test_cli_refresh_dry_run_and_errors(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(loaded_root("hotadd", tmp_path))
    assert main(["refresh", "--state-dir", str(state), "--root", root, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would reload the header and purgatory's digest" in out
    assert "+ CPU 2" in out and "+ 0x100000000-0x13fffffff (1 GiB)" in out
    assert main(["refresh", "--state-dir", str(tmp_path / "none"), "--root", root]) == 2
    assert "no snapshot" in capsys.readouterr().err
    root_boot = str(loaded_root("boot", tmp_path))
    assert main(["refresh", "--state-dir", str(state), "--root", root_boot]) == 0
    assert "nothing to do: the loaded header is current" in capsys.readouterr().out


def test_cli_load_refuses_non_crash_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", "--state-dir", str(tmp_path / "s"), "--", "kexec", "-e"]) == 2
    assert "must load with -p/--load-panic" in capsys.readouterr().err


def test_the_lock_is_taken_once_per_operation(tmp_path: Path) -> None:
    # A whole reload inside a refresh runs under the refresh's hold; taking
    # the lock again in the same process would wait on itself, so it fails.
    state = tmp_path / "s"
    statedir.ready(state)
    with (
        statedir.locked(state),
        pytest.raises(RuntimeError, match="already held"),
        statedir.locked(state, shared=True),
    ):
        pass
    with statedir.locked(state):  # released: taken again
        pass
