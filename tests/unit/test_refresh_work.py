# SPDX-License-Identifier: GPL-2.0-or-later
"""Less work per refresh, and still correct: the snapshot kept open while it
is unchanged, hashed ahead while idle, no fsync on tmpfs, the system read
again when a uevent came during the read."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kexecd import files
from kexecd.image import facts, loader, plan, record
from kexecd.image.store import Store, open_snapshot
from kexecd.service.config import Config
from kexecd.service.daemon import VERIFY_AFTER_S, Daemon
from kexecd.service.runtime import SnapshotWatch
from kexecd.system.root import Root
from testbed.capture import Capture
from testbed.images import image, loaded_root
from tests.unit.data import DATA
from tests.unit.fakes import (
    ARGV,
    FakeBackend,
    FakeMonitor,
    daemon_env,
    root_reads,
    switch_root,
    tracer_for,
)


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Daemon, Config, Path]]:
    """A daemon with its snapshot watch running, as ``run()`` starts it."""
    cfg = daemon_env(tmp_path, settle_ms=100, max_delay_ms=1000)
    d = Daemon(cfg, FakeMonitor(), backend=FakeBackend())
    d.session.watch = SnapshotWatch.start(cfg.state_dir)
    assert d.session.watch is not None
    yield d, cfg, tmp_path
    d.session.watch.close()


def _spy(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[object]:
    """Record the first argument of every call to ``owner.name``, which still runs."""
    calls: list[object] = []
    real = getattr(owner, name)

    def spy(first: object) -> Any:
        calls.append(first)
        return real(first)

    static = isinstance(inspect.getattr_static(owner, name), staticmethod)
    monkeypatch.setattr(owner, name, staticmethod(spy) if static else spy)
    return calls


def test_snapshot_kept_open_until_a_new_load(watched: tuple[Daemon, Config, Path]) -> None:
    d, cfg, tmp = watched
    assert d.reconcile("start").action == "nothing"
    first = d.refresher.snapshot
    assert first is not None and Store.unchanged(first)
    switch_root(tmp, "hotadd")
    assert d.reconcile("events").action == "reload-header"
    assert d.refresher.snapshot is first  # not opened again
    # A new 'kexecd load' swaps in another directory: seen without the watch's help.
    loader.load(ARGV, cfg.state_dir, root=Root(cfg.root), tracer=tracer_for(image("hotadd")))
    assert not Store.unchanged(first)
    assert d.reconcile("events").action == "nothing"  # the new image's header is current
    assert (
        d.refresher.snapshot is not first
        and d.refresher.snapshot is not None
        and Store.unchanged(d.refresher.snapshot)
    )


def test_manifest_rewritten_in_place_is_a_change(watched: tuple[Daemon, Config, Path]) -> None:
    d, cfg, _ = watched
    d.reconcile("start")
    snap = d.refresher.snapshot
    assert snap is not None
    manifest = cfg.state_dir / "snapshot/manifest.json"
    st = manifest.stat()
    manifest.write_bytes(manifest.read_bytes() + b" ")
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back
    assert not Store.unchanged(snap)  # the size gave it away
    d.on_snapshot_change()  # and the watch saw the write
    assert d.refresher.snapshot is None and not d.refresher.verified


def test_verified_ahead_so_the_first_event_does_not_hash(
    watched: tuple[Daemon, Config, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, _, tmp = watched
    calls = _spy(monkeypatch, Store, "verify")
    d.reconcile("start")  # current: nothing to load, nothing hashed
    assert calls == [] and not d.refresher.verified
    d.verify_ahead()
    assert len(calls) == 1 and d.refresher.verified
    switch_root(tmp, "hotadd")
    assert d.reconcile("events").action == "reload-header"
    assert len(calls) == 1  # the event's refresh did not hash again


def test_an_event_reads_only_the_notes_of_a_cpu_it_has_not_seen(
    watched: tuple[Daemon, Config, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon's Refresher hands each plan the system as the last one read
    # it: the CPUs' notes already read are not read again (read_cpus).
    d, _, tmp = watched
    d.reconcile("start")
    reads = root_reads(monkeypatch)
    switch_root(tmp, "hotadd")  # CPU 2 and a memory block added
    assert d.reconcile("events").action == "reload-header"
    assert [r for r in reads if r.endswith("/crash_notes")] == [
        "sys/devices/system/cpu/cpu2/crash_notes"
    ]
    # And the header loaded is kexec-tools' own for that system, byte for byte.
    backend = d.refresher.deps.backend
    assert isinstance(backend, FakeBackend)
    want = Capture(DATA / "hotadd").header
    assert any(seg[: len(want)] == want for seg in backend.loads[-1][2])


def test_tampered_after_verify_ahead_is_refused(watched: tuple[Daemon, Config, Path]) -> None:
    d, cfg, tmp = watched
    d.reconcile("start")
    d.verify_ahead()
    seg = cfg.state_dir / "snapshot/seg-02.bin"
    st = seg.stat()
    data = bytearray(seg.read_bytes())
    data[7] ^= 1
    seg.write_bytes(bytes(data))
    os.utime(seg, ns=(st.st_atime_ns, st.st_mtime_ns))
    d.on_snapshot_change()  # the loop dispatches the watch's event before the next refresh
    switch_root(tmp, "hotadd")
    rec = d.reconcile("events")
    assert rec.action == "failed" and "seg-02.bin: does not match" in str(rec.error)
    backend = d.refresher.deps.backend
    assert isinstance(backend, FakeBackend) and backend.loads == []


def test_a_changed_snapshot_is_hashed_again_once_quiet(
    watched: tuple[Daemon, Config, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rewrite of the daemon's own (a cut kernel, a moved header) replaces
    # the snapshot; the next event's refresh must not be the one to hash it.
    d, cfg, _ = watched
    d.reconcile("start")
    d.verify_ahead()
    calls = _spy(monkeypatch, Store, "verify")
    manifest = cfg.state_dir / "snapshot/manifest.json"
    manifest.write_bytes(manifest.read_bytes())
    d.on_snapshot_change()
    assert not d.refresher.verified and calls == []
    due = d.loop.deadline()
    assert due is not None and due <= d.clock() + VERIFY_AFTER_S
    time.sleep(VERIFY_AFTER_S)
    d.loop.run_due()
    assert d.refresher.verified and len(calls) == 1


def test_verify_ahead_failure_is_left_to_the_refresh(watched: tuple[Daemon, Config, Path]) -> None:
    d, cfg, _ = watched
    d.reconcile("start")
    (cfg.state_dir / "snapshot/seg-03.bin").write_bytes(b"tampered")
    d.verify_ahead()
    assert not d.refresher.verified


def _mountinfo(tmp_path: Path, fstype: str, options: str) -> Path:
    """A mountinfo whose one line is ``tmp_path``'s file system, as ``fstype``."""
    dev = os.stat(tmp_path).st_dev
    path = tmp_path / "mountinfo"
    path.write_text(
        f"27 1 {os.major(dev)}:{os.minor(dev)} / / rw,relatime shared:1 - "
        f"{fstype} /dev/vda {options}\n"
    )
    return path


@pytest.mark.parametrize(
    ("fstype", "options", "ordered"),
    [
        ("ext4", "rw,errors=remount-ro", True),
        ("ext4", "rw,data=journal", True),
        ("ext4", "rw,noauto_da_alloc", False),
        ("ext4", "rw,data=writeback", False),
        ("xfs", "rw,attr2,inode64", False),
        ("btrfs", "rw,space_cache=v2", False),
    ],
)
def test_the_record_is_fsynced_only_where_a_crash_could_tear_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fstype: str, options: str, ordered: bool
) -> None:
    monkeypatch.setattr(files, "MOUNTINFO", _mountinfo(tmp_path, fstype, options))
    state = tmp_path / "state"
    loader.load(ARGV, state, root=Root(loaded_root("boot", tmp_path)), tracer=tracer_for(image()))
    snap = open_snapshot(state)
    assert snap.durable and snap.ordered is ordered
    calls = _spy(monkeypatch, os, "fsync")
    header = Capture(DATA / "hotadd").header
    snap.record.begin(header)  # never: only its existence counts
    assert calls == []
    snap.record.done(header, None, "test")
    # The header and loaded.json replace the load's: each file and its
    # directory, unless the file system orders the replacement.
    assert len(calls) == (0 if ordered else 4)
    assert snap.record.header() == header and snap.record.intent() is None


def test_a_new_record_is_fsynced_even_where_replacing_is_ordered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = record.LoadRecord(tmp_path, durable=True, ordered=True)
    calls = _spy(monkeypatch, os, "fsync")
    rec.done(b"\x7fELF first", None, "test")  # new files: they could be empty after a crash
    assert len(calls) == 4
    rec.done(b"\x7fELF again", None, "test")
    assert len(calls) == 4


def test_no_fsync_on_tmpfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # /dev/shm is tmpfs on Debian.
    shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        loader.load(
            ARGV,
            shm / "state",
            root=Root(loaded_root("boot", tmp_path)),
            tracer=tracer_for(image()),
        )
        snap = open_snapshot(shm / "state")
        assert not snap.durable
        calls = _spy(monkeypatch, os, "fsync")
        header = Capture(DATA / "hotadd").header
        snap.record.begin(header)
        snap.record.done(header, None, "test")
        assert calls == []
    finally:
        shutil.rmtree(shm)


def test_an_empty_intent_is_an_intent(tmp_path: Path) -> None:
    # Written without fsync: a crash of the host may leave it empty.
    rec = record.LoadRecord(tmp_path)
    assert rec.intent() is None
    (tmp_path / record.INTENT).write_bytes(b"")
    assert rec.intent() == {}
    rec.begin(b"\x7fELF")
    assert rec.intent() is not None and rec.intent() != {}


def test_system_read_again_when_a_uevent_came_during_the_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = daemon_env(tmp_path, settle_ms=100, max_delay_ms=1000)
    seqnum = tmp_path / "root-boot/sys/kernel/uevent_seqnum"
    seqnum.write_text("100\n")
    (tmp_path / "root-hotadd/sys/kernel/uevent_seqnum").write_text("101\n")
    real = facts.read_uevent_seqnum
    reads: list[int] = []

    def hotplug_during_the_first_read(root: Root) -> int:
        if not reads:  # the kernel hot-adds while the system is read
            switch_root(tmp_path, "hotadd")
        reads.append(real(root))
        return reads[-1]

    monkeypatch.setattr(facts, "read_uevent_seqnum", hotplug_during_the_first_read)
    p = plan.make(open_snapshot(cfg.state_dir), Root(cfg.root))
    assert reads == [101, 101]
    assert p.notes == ("the system changed while the header was built; built again",)
    assert p.wanted is not None and p.wanted == Capture(DATA / "hotadd").header
    assert p.kexec.uevent_seqnum == 101


def test_a_loads_header_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The intent and the record name the same header: one SHA-256 of it.
    import hashlib

    from kexecd.image import record

    calls: list[int] = []
    real = hashlib.sha256

    def counting(data: bytes = b"") -> Any:
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(hashlib, "sha256", counting)
    rec = record.LoadRecord(tmp_path, durable=False)
    header = b"\x7fELF" + bytes(5000)
    rec.begin(header)
    rec.done(header, None, "test")
    assert calls == [len(header)]
    info = rec.info()
    assert info["header_sha256"] == real(header).hexdigest()
    # Another object is hashed again (a bytearray may have changed since).
    again = bytearray(header)
    assert record.sha256_hex(again) == info["header_sha256"]
    again[0] = 0
    assert record.sha256_hex(again) != info["header_sha256"]
    assert len(calls) == 3


_NO_IMPORT = """
import sys, tempfile
from pathlib import Path
from kexecd.service.daemon import Daemon
from kexecd.service.runtime import SnapshotWatch
from tests.unit.fakes import FakeBackend, FakeMonitor, daemon_env, switch_root

tmp = Path(tempfile.mkdtemp())
cfg = daemon_env(tmp, settle_ms=100, max_delay_ms=1000)
d = Daemon(cfg, FakeMonitor(), backend=FakeBackend())
d.session.watch = SnapshotWatch.start(cfg.state_dir)
assert d.reconcile("start").action == "nothing"
d.verify_ahead()
for name in ("hotadd", "boot", "hotadd"):
    before = set(sys.modules)
    switch_root(tmp, name)
    assert d.reconcile("events").action == "reload-header"
    print(sorted(set(sys.modules) - before))
"""


def test_an_event_imports_nothing() -> None:
    # Issue 27 item 1: no import on the hot path. In a fresh interpreter (this
    # one has imported what other tests needed): the daemon started and its
    # snapshot hashed ahead, each event's reload imports no module.
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _NO_IMPORT],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out.splitlines() == ["[]", "[]", "[]"]
