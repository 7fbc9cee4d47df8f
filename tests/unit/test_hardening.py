# SPDX-License-Identifier: GPL-2.0-or-later
"""The daemon's trust story: each case here was observed failing before its fix.

Verified snapshots, a checked manifest, one lock, a control socket that
cannot stall or end the loop, faults (EBUSY, interrupted loads and swaps,
retries), policy (an unload respected, one daemon per runtime dir) and bad
input that used to end in a traceback or a hang.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from kexecd.cli import main
from kexecd.errors import LoadError, ServiceError, SnapshotError
from kexecd.image import statedir
from kexecd.image.plan import Action, Why
from kexecd.image.store import open_snapshot
from kexecd.service import control
from kexecd.service.config import Config
from kexecd.service.daemon import Daemon
from kexecd.service.statefile import FORMAT
from kexecd.system.root import Root
from testbed.capture import Capture
from testbed.images import loaded_root
from tests.unit import fakes
from tests.unit.data import DATA
from tests.unit.fakes import (
    FakeBackend,
    FakeMonitor,
    added,
    daemon_env,
    run_until,
    started,
    switch_root,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> tuple[Config, Path]:
    """A loaded boot image; ``tmp/root`` a symlink to switch between boot and hotadd."""
    return daemon_env(tmp_path, settle_ms=20, max_delay_ms=100), tmp_path


def tamper(path: Path) -> None:
    """Flip a byte and put the mtime back: the stat signature does not change."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    with path.open("r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# -- 1. verified snapshots -----------------------------------------------------------


def test_daemon_does_not_load_a_snapshot_tampered_after_a_current_start(
    env: tuple[Config, Path],
) -> None:
    # Before: the start reconcile decided "nothing" and recorded the files as
    # verified; the next hotplug loaded the tampered segment unhashed.
    cfg, tmp = env
    monitor, backend = FakeMonitor(), FakeBackend()
    daemon = Daemon(cfg, monitor, backend=backend)
    up = started(cfg)

    def attack_then_hotplug() -> None:
        while not up():
            time.sleep(0.01)
        tamper(cfg.state_dir / "snapshot/seg-02.bin")
        switch_root(tmp, "hotadd")
        monitor.push(added(32))

    t = threading.Thread(target=attack_then_hotplug)
    t.start()
    run_until(daemon, monitor, lambda: daemon.state.failed >= 1)
    t.join()
    assert backend.loads == []
    assert daemon.state.last_error is not None
    assert "seg-02.bin: does not match the SHA-256" in daemon.state.last_error.message


def test_daemon_hashes_again_after_any_write_to_a_verified_snapshot(
    env: tuple[Config, Path],
) -> None:
    cfg, tmp = env
    monitor, backend = FakeMonitor(), FakeBackend()
    daemon = Daemon(cfg, monitor, backend=backend)
    up = started(cfg)

    def hotplug_attack_hotplug() -> None:
        while not up():
            time.sleep(0.01)
        switch_root(tmp, "hotadd")
        monitor.push(added(32))  # a verified reload
        while len(backend.loads) < 1:
            time.sleep(0.01)
        time.sleep(0.05)
        tamper(cfg.state_dir / "snapshot/seg-02.bin")
        switch_root(tmp, "boot")
        monitor.push(added(33))

    t = threading.Thread(target=hotplug_attack_hotplug)
    t.start()
    run_until(daemon, monitor, lambda: daemon.state.failed >= 1)
    t.join()
    assert len(backend.loads) == 1  # the tampered image was never loaded
    assert daemon.state.last_error is not None
    assert "does not match" in daemon.state.last_error.message


# -- 3. the manifest and the state directory ---------------------------------------------


def _manifest(state: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((state / "snapshot/manifest.json").read_text())
    return data


BAD_MANIFESTS = {
    "a list": [],
    "null": None,
    "a string": "manifest",
    "wrong types": {"entry": "0x1000"},
    "header index": {"header": 7},
    "purgatory index": {"purgatory": -1},
    "entry outside purgatory": {"entry": 0},
    "digest past purgatory": {"digest": {"offset": 1 << 30, "header_hashed": True}},
    "a bad SHA-256 state": {
        # buflen 200 at +104: would index the 64-byte buffer out of bounds
        "digest": {
            "offset": 0x5020,
            "header_hashed": True,
            "prefix_state": "00" * 104 + "c8000000" + "00" * 4,
        }
    },
    "digest setup out of range": {"digest": {"setup": 7}},
    "digest setup is purgatory": {"digest": {"setup": 4}},
    "digest setup without its state": {"digest": {"setup_state": None}},
    "a bad setup state": {"digest": {"setup_state": "00" * 8}},
    "argv not strings": {"argv": [1, 2]},
    "a segment as a string": {"segments": ["seg-00.bin"]},
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_malformed_manifests_are_refused(env: tuple[Config, Path], case: str) -> None:
    cfg, _ = env
    bad = BAD_MANIFESTS[case]
    if isinstance(bad, dict):
        m = _manifest(cfg.state_dir)
        if "digest" in bad and isinstance(m.get("digest"), dict):
            merged = dict(m["digest"])  # type: ignore[arg-type]
            merged.update(bad["digest"])  # type: ignore[arg-type]
            bad = {**bad, "digest": merged}
        m.update(bad)
        bad = m
    (cfg.state_dir / "snapshot/manifest.json").write_text(json.dumps(bad))
    with pytest.raises(SnapshotError, match=r"manifest\.json: malformed: .*load.* again"):
        open_snapshot(cfg.state_dir)


def test_overlapping_or_too_many_segments_are_refused(env: tuple[Config, Path]) -> None:
    cfg, _ = env
    path = cfg.state_dir / "snapshot/manifest.json"
    m = _manifest(cfg.state_dir)
    segs = m["segments"]
    assert isinstance(segs, list)
    overlap = [dict(s) for s in segs]
    overlap[1]["mem"] = overlap[0]["mem"]
    path.write_text(json.dumps({**m, "segments": overlap}))
    with pytest.raises(SnapshotError, match="overlaps segment 0"):
        open_snapshot(cfg.state_dir)
    path.write_text(json.dumps({**m, "segments": segs * 3}))
    with pytest.raises(SnapshotError, match="at most 16"):
        open_snapshot(cfg.state_dir)


def test_deeply_nested_manifest(env: tuple[Config, Path]) -> None:
    cfg, _ = env
    (cfg.state_dir / "snapshot/manifest.json").write_text("[" * 30000)
    with pytest.raises(SnapshotError, match="unreadable"):
        open_snapshot(cfg.state_dir)


def test_state_dir_only_root_can_write(env: tuple[Config, Path], tmp_path: Path) -> None:
    cfg, _ = env
    cfg.state_dir.chmod(0o777)
    with pytest.raises(SnapshotError, match=r"mode 0777.*only root can write"):
        open_snapshot(cfg.state_dir)
    cfg.state_dir.chmod(0o700)
    link = tmp_path / "link"
    link.symlink_to(cfg.state_dir)
    with pytest.raises(SnapshotError, match="not a directory"):
        open_snapshot(link)


def test_segment_files_are_plain_files_of_their_size(env: tuple[Config, Path]) -> None:
    cfg, tmp = env
    seg = cfg.state_dir / "snapshot/seg-02.bin"
    good = seg.read_bytes()
    seg.write_bytes(b"")
    with pytest.raises(SnapshotError, match=r"seg-02.bin: 0 bytes, but the manifest says"):
        open_snapshot(cfg.state_dir)
    elsewhere = tmp / "outside.bin"
    elsewhere.write_bytes(good)  # the right bytes, behind a symlink
    seg.unlink()
    seg.symlink_to(elsewhere)
    with pytest.raises(SnapshotError, match=r"seg-02.bin: cannot open \(.*\)"):
        open_snapshot(cfg.state_dir)
    seg.unlink()
    os.mkfifo(seg)
    with pytest.raises(SnapshotError, match=r"seg-02.bin: not a regular file"):
        open_snapshot(cfg.state_dir)  # and no hang


def test_fifos_where_files_are_expected(env: tuple[Config, Path], tmp_path: Path) -> None:
    cfg, _ = env
    loaded = cfg.state_dir / "snapshot/loaded-header.bin"
    loaded.unlink()
    os.mkfifo(loaded)
    with pytest.raises(SnapshotError, match=r"loaded-header.bin: not a regular file"):
        open_snapshot(cfg.state_dir).record.header()
    root = loaded_root("boot", tmp_path)
    iomem = root / "proc/iomem"
    iomem.unlink()
    os.mkfifo(iomem)
    with pytest.raises(Exception, match="iomem: not a regular file"):
        Root(root).read_text("proc/iomem")


# -- 4. one lock ------------------------------------------------------------------------


def test_writers_wait_for_the_lock_then_give_up(
    env: tuple[Config, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, tmp = env
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; "
            f"fd = os.open({str(cfg.state_dir / statedir.LOCK)!r}, os.O_RDWR); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        monkeypatch.setattr(statedir, "WAIT_SECONDS", 0.2)
        backend = FakeBackend()
        with pytest.raises(SnapshotError, match=r"another kexecd .* has held it"):
            fakes.refresh(cfg.state_dir, root=Root(tmp / "root-hotadd"), backend=backend)
        assert backend.loads == []
        from kexecd.cli import status

        monkeypatch.setattr(status, "LOCK_WAIT", 0.2)
        args = ["--state-dir", str(cfg.state_dir), "--root", str(tmp / "root-boot")]
        assert main(["status", *args, "--runtime-dir", str(tmp / "run")]) == 2
        assert "another kexecd" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()
    r = fakes.refresh(cfg.state_dir, root=Root(tmp / "root-hotadd"), backend=FakeBackend())
    assert r.loaded


# -- 5. the control socket -----------------------------------------------------------------


def test_request_parser() -> None:
    assert control.parse(b'{"cmd": "status"}') == "status"
    for bad in (b"[1]", b"5", b"[" * 30000, b"\xff\xfe", b"{}", b'{"cmd": ["status"]}'):
        with pytest.raises(control.RequestError):
            control.parse(bad)


def test_nothing_a_client_sends_stalls_or_ends_the_daemon(env: tuple[Config, Path]) -> None:
    cfg, _ = env
    # A runtime dir a non-root peer can reach (pytest's base temp dir is root's).
    shared = Path(tempfile.mkdtemp(prefix="kexecd-test-", dir="/tmp"))
    shared.chmod(0o755)
    cfg = replace(cfg, runtime_dir=shared / "run")
    monitor = FakeMonitor()
    daemon = Daemon(cfg, monitor, backend=FakeBackend())
    up = started(cfg)
    replies: list[dict[str, object]] = []
    path = cfg.runtime_dir / "kexecd.sock"

    def ask(data: bytes) -> dict[str, object]:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            s.sendall(data)
            reply: dict[str, object] = json.loads(s.makefile().readline())
            return reply

    def clients() -> None:
        while not up():
            time.sleep(0.01)
        idle = []
        for _ in range(12):  # a dozen connect and send nothing
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(path))
            idle.append(s)
        replies.append(ask(b'{"cmd": "status"}\n'))  # answered at once all the same
        for bad in (b"[1]\n", b"5\n", b"[" * 30000 + b"\n", b"x" * 5000):
            replies.append(ask(bad))
        s = socket.socket(socket.AF_UNIX)  # asks, then leaves before the reply
        s.connect(str(path))
        s.sendall(b'{"cmd": "status"}\n')
        s.close()
        cfg.runtime_dir.chmod(0o755)  # let a non-root peer reach the socket at all
        path.chmod(0o666)
        subprocess.run(  # a non-root peer that hangs up at once
            [
                sys.executable,
                "-c",
                f"import os, socket; os.setuid(65534); s = socket.socket(socket.AF_UNIX); "
                f"s.connect({str(path)!r}); s.close()",
            ],
            check=True,
        )
        for s in idle:  # dropped at their deadline, not served forever
            s.settimeout(10)
            assert s.recv(1) == b""
            s.close()
        replies.append(ask(b'{"cmd": "status"}\n'))

    t = threading.Thread(target=clients)
    t.start()
    try:
        run_until(daemon, monitor, lambda: not t.is_alive())
        t.join()
    finally:
        shutil.rmtree(shared)
    assert len(replies) == 6
    first, *bad, last = replies
    assert first["ok"] and last["ok"]
    assert [str(r.get("error", ""))[:15] for r in bad] == [
        "not a JSON obje",
        "not a JSON obje",
        "request longer ",  # 30000 '[': refused by size before any parsing
        "request longer ",
    ]


# -- 6. faults ---------------------------------------------------------------------------


def test_a_failed_reload_is_retried_with_backoff(env: tuple[Config, Path]) -> None:
    cfg, tmp = env
    monitor = FakeMonitor()
    backend = FakeBackend(fail=1, root=tmp / "root-hotadd")
    daemon = Daemon(cfg, monitor, backend=backend)
    up = started(cfg)

    def hotplug() -> None:
        while not up():
            time.sleep(0.01)
        switch_root(tmp, "hotadd")
        monitor.push(added(32))

    t = threading.Thread(target=hotplug)
    t.start()
    run_until(daemon, monitor, lambda: daemon.state.reloads >= 1)
    t.join()
    # The attempt, the previous image loaded again, then the retry with no
    # further event.
    assert len(backend.loads) == 3 and daemon.state.failed == 1
    assert daemon.state.last_update is not None
    assert daemon.state.last_update.why == "retry after a failure"
    assert daemon.state.retry_in_s is None and daemon.state.in_sync


def test_an_interrupted_swap_is_completed(env: tuple[Config, Path]) -> None:
    cfg, tmp = env
    snap = cfg.state_dir / "snapshot"
    shutil.copytree(snap, cfg.state_dir / ".snapshot.new")
    snap.rename(cfg.state_dir / ".snapshot.old")  # killed between the two renames
    rc = main(["status", "--state-dir", str(cfg.state_dir), "--root", str(tmp / "root-boot")])
    assert rc == 2
    r = fakes.refresh(cfg.state_dir, root=Root(tmp / "root-boot"), backend=FakeBackend())
    assert any("interrupted 'kexecd load' was completed" in n for n in r.notes)
    assert r.decision.action is Action.NOTHING
    assert not (cfg.state_dir / ".snapshot.new").exists()
    assert not (cfg.state_dir / ".snapshot.old").exists()


def test_a_load_killed_before_its_record_is_loaded_again(
    env: tuple[Config, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, tmp = env
    hot = tmp / "root-hotadd"
    snap = open_snapshot(cfg.state_dir)
    snap.record.begin(Capture(DATA / "hotadd").header)  # then killed in kexec_load
    args = ["--state-dir", str(cfg.state_dir), "--root", str(hot), "--runtime-dir", str(tmp)]
    assert main(["status", *args]) == 1
    assert "UNCERTAIN: a load was interrupted" in capsys.readouterr().out
    # Even where the header looks current, it is loaded again.
    (cfg.state_dir / "snapshot/loaded-header.bin").write_bytes(Capture(DATA / "hotadd").header)
    backend = FakeBackend()
    r = fakes.refresh(cfg.state_dir, root=Root(hot), backend=backend)
    assert r.decision.why is Why.UNCERTAIN and len(backend.loads) == 1
    assert open_snapshot(cfg.state_dir).record.intent() is None


# -- 7. policy -----------------------------------------------------------------------------


def test_an_unload_is_respected(
    env: tuple[Config, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, tmp = env
    hot = tmp / "root-hotadd"
    (hot / "sys/kernel/kexec_crash_loaded").write_text("0\n")  # the admin ran kexec -p -u
    backend = FakeBackend()
    r = fakes.refresh(cfg.state_dir, root=Root(hot), backend=backend)
    assert r.decision.why is Why.NOT_LOADED and backend.loads == []
    daemon = Daemon(
        Config(state_dir=cfg.state_dir, runtime_dir=tmp / "run", root=hot, metrics_dir=""),
        FakeMonitor(),
        backend=backend,
    )
    daemon.run(max_seconds=0.05)
    assert backend.loads == [] and daemon.summary().startswith("no crash kernel loaded")
    args = [
        "--state-dir",
        str(cfg.state_dir),
        "--root",
        str(hot),
        "--runtime-dir",
        str(tmp / "run"),
    ]
    assert main(["status", *args]) == 3


def test_one_daemon_per_runtime_dir(env: tuple[Config, Path]) -> None:
    cfg, _ = env
    first_monitor = FakeMonitor()
    first = Daemon(cfg, first_monitor, backend=FakeBackend())
    up = started(cfg)
    errors: list[str] = []

    def second() -> None:
        while not up():
            time.sleep(0.01)
        try:
            Daemon(cfg, FakeMonitor(), backend=FakeBackend()).run(max_seconds=0.05)
        except ServiceError as e:
            errors.append(str(e))

    t = threading.Thread(target=second)
    t.start()
    run_until(first, first_monitor, lambda: not t.is_alive())
    t.join()
    assert len(errors) == 1 and "another kexecd (pid " in errors[0]
    assert not (cfg.runtime_dir / "kexecd.sock").exists()  # the first removed its own


def test_dry_run_refuses_what_a_real_run_would(
    env: tuple[Config, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, tmp = env
    tamper(cfg.state_dir / "snapshot/seg-02.bin")
    args = ["--state-dir", str(cfg.state_dir), "--root", str(tmp / "root-hotadd"), "--dry-run"]
    assert main(["refresh", *args]) == 2
    assert "seg-02.bin: does not match" in capsys.readouterr().err


def test_busy_is_not_a_lost_crash_kernel(env: tuple[Config, Path]) -> None:
    cfg, tmp = env
    hot = tmp / "root-hotadd"
    backend = FakeBackend(fail=2, root=hot, error=errno.EBUSY)
    with pytest.raises(LoadError) as e:
        fakes.refresh(cfg.state_dir, root=Root(hot), backend=backend)
    assert not e.value.image_lost and "NO CRASH KERNEL" not in str(e.value)


# -- 8. bad input, one line, no traceback --------------------------------------------------


def test_state_files_missing_or_malformed(
    env: tuple[Config, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, tmp = env
    run = tmp / "run"
    run.mkdir()
    args = ["--state-dir", str(cfg.state_dir), "--root", str(tmp / "root-boot")]
    for content in (
        "{",
        "[]",
        '{"pid": 1}',
        '{"format": "4"}',
        f'{{"format": {FORMAT}, "events": "many"}}',
    ):
        (run / "state.json").write_text(content)
        assert main(["status", *args, "--runtime-dir", str(run)]) == 2
        out = capsys.readouterr().out
        assert "state.json: " in out and "Traceback" not in out
    (run / "state.json").unlink()
    (cfg.state_dir / "snapshot/loaded.json").write_text("null")
    assert main(["status", *args, "--runtime-dir", str(run)]) == 2
    assert "loaded.json: not a JSON object" in capsys.readouterr().out
    (cfg.state_dir / "snapshot/loaded.json").unlink()
    assert main(["status", *args, "--runtime-dir", str(run)]) == 2
    assert "loaded.json: missing" in capsys.readouterr().out


@pytest.mark.parametrize("other", [1, 2, 3, 99])
def test_another_versions_state_file_is_no_error(
    env: tuple[Config, Path], capsys: pytest.CaptureFixture[str], other: int
) -> None:
    # During a package upgrade the old daemon writes its format until the new
    # one restarts (or the other way round): status judges the crash kernel
    # without it and says why, never exit 2.
    cfg, tmp = env
    run = tmp / "run"
    run.mkdir()
    args = ["--state-dir", str(cfg.state_dir), "--root", str(tmp / "root-boot")]
    (run / "state.json").write_text(json.dumps({"format": other, "pid": 1, "future": [1]}))
    assert main(["status", *args, "--runtime-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"state unread: {run / 'state.json'}: format {other}, not {FORMAT}" in out, out
    assert main(["status", *args, "--runtime-dir", str(run), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["daemon"] is None and f"format {other}" in got["daemon_note"]
    assert got["error"] is None and got["exit_code"] == 0
    # A format of this version with bad fields is still an error.
    (run / "state.json").write_text(json.dumps({"format": FORMAT, "pid": "one"}))
    assert main(["status", *args, "--runtime-dir", str(run)]) == 2


def test_a_closed_pipe_is_no_traceback(env: tuple[Config, Path]) -> None:
    cfg, tmp = env
    cmd = (
        f"{sys.executable} -m kexecd.cli status --state-dir {cfg.state_dir} "
        f"--root {tmp / 'root-boot'} --runtime-dir {tmp / 'run'} | head -c 1"
    )
    p = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=REPO, check=False)
    assert p.stdout == "c" and p.stderr == ""


def test_non_root_is_told_to_run_as_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for cmd in (["load", "--", "kexec", "-p", "x"], ["refresh"], ["status"], ["adopt"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "run as root" in err
