# SPDX-License-Identifier: GPL-2.0-or-later
"""The daemon without a VM: a fake monitor over a pipe, a fake NOTIFY_SOCKET,
a fake kexec backend that records loads and fails on demand."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kexecd.service.config import Config
from kexecd.service.daemon import Daemon
from kexecd.service.monitor import Event
from kexecd.service.statefile import read_state
from testbed.capture import Capture
from testbed.images import loaded_root
from tests.unit.data import DATA
from tests.unit.fakes import (
    FakeBackend,
    FakeMonitor,
    FakeSystemd,
    added,
    daemon_env,
    run_until,
    started,
    switch_root,
)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Config, Path]]:
    """Config with a loaded boot image, and a root symlink the test can switch."""
    yield daemon_env(tmp_path, settle_ms=50, max_delay_ms=300), tmp_path


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    path = tmp_path / "notify.sock"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    fake = FakeSystemd(path)
    yield fake
    if not fake.done:
        fake.stop()


def test_burst_gives_one_reload(
    env: tuple[Config, Path], systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, tmp = env
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monitor, backend = FakeMonitor(), FakeBackend()
    daemon = Daemon(cfg, monitor, backend=backend)

    up = started(cfg)

    def hotplug() -> None:
        while not up():  # the reconcile at start is done
            time.sleep(0.01)
        switch_root(tmp, "hotadd")
        for block in range(32, 48):  # 16 blocks onlined at once, as in a burst
            monitor.push(added(block))
            time.sleep(0.005)

    t = threading.Thread(target=hotplug)
    t.start()

    def settled() -> bool:  # every event in, the reload done, nothing pending
        pending = daemon.coalescer.deadline() is not None
        return daemon.state.events == 16 and bool(backend.loads) and not pending

    assert run_until(daemon, monitor, settled) == 0
    t.join()
    assert len(backend.loads) == 1
    assert backend.loads[0][2][5] == Capture(DATA / "hotadd").header
    st = read_state(cfg.runtime_dir)
    assert st is not None
    assert (st.events, st.reloads, st.full_reloads, st.failed) == (16, 1, 0, 0)
    # The reconcile at start found the header current; the first event was
    # refreshed for at once, the rest in a trailing refresh that found it
    # current too (on a loaded machine a pause between pushes can make one
    # more; the fake clock's exact bursts are in test_coalesce.py).
    assert st.skipped >= 2
    assert st.last_event is not None
    assert st.last_event.devpath == "/devices/system/memory/memory47"
    upd = st.last_update
    assert upd is not None
    assert upd.action == "reload-header" and "+ CPU 2" in upd.changes
    assert upd.latency_ms is not None and 0 < upd.latency_ms < 1000
    (hist,) = st.history
    assert hist.first_event_mono is not None and st.last_event_mono is not None
    assert hist.first_event_mono < hist.start_mono < hist.done_mono
    assert hist.load_ms is not None and hist.load_ms >= 0
    assert st.last_event_mono >= hist.first_event_mono
    msgs = systemd.stop()
    assert "READY=1" in msgs and "WATCHDOG=1" in msgs and msgs[-1] == "STOPPING=1"
    status = [m for m in msgs if m.startswith("STATUS=")]
    assert status[-1].startswith(
        "STATUS=in sync: 3 CPUs, 5 ranges, 16 events, 1 reloads; last update "
    )
    assert not (cfg.runtime_dir / "kexecd.sock").exists()


def test_reconciles_at_start(env: tuple[Config, Path]) -> None:
    # A hotplug while the daemon was down is caught at once.
    cfg, tmp = env
    switch_root(tmp, "hotadd")
    backend = FakeBackend()
    Daemon(cfg, FakeMonitor(), backend=backend).run(max_seconds=0.1)
    assert len(backend.loads) == 1
    st = read_state(cfg.runtime_dir)
    assert st is not None and st.reloads == 1
    assert st.last_update is not None and st.last_update.why == "start"


def test_failed_load_is_counted_and_rolled_back(env: tuple[Config, Path]) -> None:
    cfg, tmp = env
    switch_root(tmp, "hotadd")
    backend = FakeBackend(fail=1, root=tmp / "root-hotadd")
    daemon = Daemon(cfg, FakeMonitor(), backend=backend)
    rec = daemon.reconcile("start")
    assert rec.action == "failed" and "previous image was loaded again" in str(rec.error)
    assert len(backend.loads) == 2  # the attempt, then the previous image
    assert daemon.state.failed == 1 and daemon.state.in_sync is False
    assert daemon.summary().startswith("error: kexec_load failed")
    rec = daemon.reconcile("retry")
    assert rec.action == "reload-header" and daemon.state.in_sync is True


def test_stands_aside_when_the_kernel_updates(env: tuple[Config, Path]) -> None:
    cfg, tmp = env
    switch_root(tmp, "hotadd")
    (tmp / "root-hotadd/sys/devices/system/cpu/crash_hotplug").write_text("1\n")
    backend = FakeBackend()
    daemon = Daemon(cfg, FakeMonitor(), backend=backend)
    assert daemon.reconcile("start").action == "stand-aside"
    assert backend.loads == [] and daemon.summary().startswith("standing aside")


def test_verifies_the_snapshot_once_and_again_when_it_changes(env: tuple[Config, Path]) -> None:
    cfg, tmp = env
    daemon = Daemon(cfg, FakeMonitor(), backend=FakeBackend())
    daemon.reconcile("start")
    seg = cfg.state_dir / "snapshot/seg-02.bin"
    data = bytearray(seg.read_bytes())
    data[0] ^= 1
    seg.write_bytes(data)
    switch_root(tmp, "hotadd")
    rec = daemon.reconcile("events")
    assert rec.action == "failed" and "seg-02.bin: does not match" in str(rec.error)


def test_control_socket(env: tuple[Config, Path]) -> None:
    cfg, tmp = env
    backend, monitor = FakeBackend(), FakeMonitor()
    daemon = Daemon(cfg, monitor, backend=backend)
    replies: list[dict[str, object]] = []

    def client() -> None:
        path = cfg.runtime_dir / "kexecd.sock"
        deadline = time.monotonic() + 30  # the daemon's start: longer on a loaded machine
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        switch_root(tmp, "hotadd")
        for cmd in ("status", "refresh", "bogus"):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
                s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
                replies.append(json.loads(s.makefile().readline()))

    t = threading.Thread(target=client)
    t.start()
    run_until(daemon, monitor, lambda: len(replies) == 3 or not t.is_alive())
    t.join()
    status, refreshed, bogus = replies
    assert status["ok"] and status["state"]["events"] == 0  # type: ignore[index]
    assert refreshed["record"]["action"] == "reload-header"  # type: ignore[index]
    assert "unknown command" in str(bogus["error"])
    assert len(backend.loads) == 1


def test_records_what_is_loaded_and_what_the_system_has(env: tuple[Config, Path]) -> None:
    # The plan's facts, for status --json and kexecd.prom: equal once current;
    # after a failed load, what the dump would miss.
    cfg, tmp = env
    switch_root(tmp, "hotadd")
    backend = FakeBackend(fail=1, root=tmp / "root-hotadd")
    daemon = Daemon(cfg, FakeMonitor(), backend=backend)
    assert daemon.reconcile("start").action == "failed"
    st = daemon.state
    assert (st.header_cpus, st.cpus) == (2, 3)
    assert st.header_ram is not None and st.ram is not None
    assert st.ram - st.header_ram == 1 << 30  # the two hot-added 512 MiB DIMMs
    assert (st.crash_loaded, st.kernel_updates, st.syscall) == (True, False, "kexec_load")
    assert st.phnum == 7 and st.capacity is not None and st.capacity > st.phnum
    assert st.in_sync is False and st.reconciled is None
    assert daemon.reconcile("retry").action == "reload-header"
    assert (st.header_cpus, st.cpus, st.header_ram, st.phnum) == (3, 3, st.ram, 10)
    assert st.in_sync is True and st.reconciled is not None
    saved = read_state(cfg.runtime_dir)
    assert saved is not None and saved.to_json() == st.to_json()


def test_events_that_ask_for_no_refresh_are_still_published(env: tuple[Config, Path]) -> None:
    cfg, _ = env
    monitor, backend = FakeMonitor(), FakeBackend()
    daemon = Daemon(cfg, monitor, backend=backend)
    up = started(cfg)

    def onlined() -> None:
        while not up():
            time.sleep(0.01)
        for block in (32, 33, 34):
            monitor.push(Event("online", "memory", f"/devices/system/memory/memory{block}", block))

    t = threading.Thread(target=onlined)
    t.start()

    def published() -> bool:
        st = read_state(cfg.runtime_dir) if up() else None
        return st is not None and st.events == 3

    assert run_until(daemon, monitor, published) == 0
    t.join()
    st = read_state(cfg.runtime_dir)
    assert st is not None and st.events == 3 and st.reconciles == 1  # only the start's
    assert st.last_event is not None and st.last_event.action == "online"
    assert backend.loads == []


def test_a_removal_still_in_iomem_is_looked_at_again(env: tuple[Config, Path]) -> None:
    # 5.10 releases a removed DIMM's "System RAM" after the remove uevents of
    # its blocks (mm/memory_hotplug.c try_remove_memory()): the refresh for
    # them reads it still there, and no event follows its release.
    cfg, tmp = env
    loaded_root("hotremove", tmp)
    switch_root(tmp, "hotadd")
    monitor, backend = FakeMonitor(), FakeBackend()
    daemon = Daemon(cfg, monitor, backend=backend)
    loads: list[int] = []
    released: list[float] = []

    def scenario() -> None:
        deadline = time.monotonic() + 20
        while not (cfg.runtime_dir / "state.json").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        loads.append(len(backend.loads))  # the start: loads the hot-added state
        # dimm1's blocks (0x100000000: blocks 32-35) go; /proc/iomem not yet.
        monitor.push(
            *(
                Event("remove", "memory", f"/devices/system/memory/memory{b}", 2000 + b)
                for b in range(32, 36)
            )
        )
        time.sleep(1.0)
        loads.append(len(backend.loads))
        released.append(time.monotonic())
        switch_root(tmp, "hotremove")  # now released

    t = threading.Thread(target=scenario)
    t.start()
    run_until(daemon, monitor, lambda: len(loads) == 2 and len(backend.loads) > loads[1])
    t.join()
    assert loads[0] == 1 and loads[1] == 1  # nothing to do while the range was there
    assert len(backend.loads) == 2  # looked at again, with no event: reloaded
    st = read_state(cfg.runtime_dir)
    assert st.reloads == 2 and st.last_update is not None
    assert st.last_update.why == "a removed memory block was still in /proc/iomem"
    # That reload is the removal's: timed from its uevents, seen before the release.
    last = st.history[-1]
    assert last.first_event_mono is not None
    assert last.first_event_mono < released[0] <= last.start_mono
    assert st.last_update.latency_ms == round((last.done_mono - last.first_event_mono) * 1000, 1)
