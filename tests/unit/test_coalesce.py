# SPDX-License-Identifier: GPL-2.0-or-later
"""Leading-edge refresh, then one trailing refresh per burst: the coalescer
alone, and the daemon driven through whole hotplug bursts on a fake clock
(every event changes the fake root as the kernel would; each load takes
100 ms of that clock)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from kexecd.loads import Segment
from kexecd.service.coalesce import Coalescer
from kexecd.service.config import Config
from kexecd.service.daemon import Daemon, changes_header
from kexecd.service.monitor import Event
from tests.unit.fakes import FakeBackend, FakeMonitor, daemon_env

SETTLE, MAX_DELAY, LOAD = 0.1, 1.0, 0.1


def test_first_event_after_quiet_is_due_at_once() -> None:
    c = Coalescer(settle=SETTLE, max_delay=MAX_DELAY)
    assert c.deadline() is None
    c.event(10.0)
    assert c.deadline() == 10.0  # leading edge: no wait
    c.event(10.01)  # seen before the refresh started: covered by it
    assert c.take(10.0) == 10.0 and c.deadline() is None
    c.finished(10.1)
    # The quiet period: settle, plus the burst's longest pause (10 ms so
    # far; no reload was timed: this refresh loaded nothing).
    c.event(10.15)  # within it of the refresh: trailing
    assert c.deadline() == pytest.approx(10.26)
    c.event(10.2)  # a pause of 50 ms: the quiet period is 150 ms now
    assert c.deadline() == pytest.approx(10.35)
    assert c.take(10.35) == 10.15
    c.finished(10.4)
    c.event(10.6)  # quiet since the last refresh: leading again
    assert c.deadline() == 10.6
    assert c.pause == 0.0  # a new burst


def test_trailing_refresh_is_capped_by_max_delay() -> None:
    c = Coalescer(settle=SETTLE, max_delay=MAX_DELAY)
    c.event(0.0)
    c.take(0.0)
    c.finished(0.05)
    for i in range(100):  # a long, steady burst: events every 50 ms
        c.event(0.06 + i * 0.05)
    assert c.deadline() == pytest.approx(1.06)  # 1 s after the first it covers
    assert c.take(1.06) == pytest.approx(0.06)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class TimedBackend(FakeBackend):
    """A load that takes ``seconds`` (``LOAD``) of the fake clock."""

    def __init__(self, clock: Clock, seconds: float = LOAD) -> None:
        super().__init__()
        self.clock = clock
        self.seconds = seconds

    def load(self, entry: int, flags: int, segments: Sequence[Segment]) -> None:
        super().load(entry, flags, segments)
        self.clock.t += self.seconds


@dataclass
class Step:
    at: float  # seconds after the burst starts
    event: Event
    change: Callable[[], None] = lambda: None  # what the kernel did before sending it


@dataclass
class Run:
    refreshes: list[tuple[float, float | None, str]]  # start, first event covered, action
    loads: int
    burst_start: float


def _block_line(n: int) -> str:
    start = 0x10000000000 + n * 0x8000000  # above everything in the captures' iomem
    return f"{start:x}-{start + 0x7FFFFFF:x} : System RAM\n"


def _add_block(root: Path, n: int) -> Step:
    def change() -> None:
        with (root / "proc/iomem").open("a") as f:
            f.write(_block_line(n))

    ev = Event("add", "memory", f"/devices/system/memory/memory{8192 + n}", 2 * n)
    return Step(0.0, ev, change)


def _online_block(n: int) -> Step:
    # Onlining changes nothing /proc/iomem shows: the range was listed at add.
    ev = Event("online", "memory", f"/devices/system/memory/memory{8192 + n}", 2 * n + 1)
    return Step(0.0, ev)


def _add_cpu(root: Path, hotadd: Path) -> Step:
    def change() -> None:
        cpu = "sys/devices/system/cpu"
        shutil.copytree(hotadd / cpu / "cpu2", root / cpu / "cpu2")
        for name in ("present", "online"):
            (root / cpu / name).write_text("0-2\n")

    return Step(0.0, Event("add", "cpu", "/devices/system/cpu/cpu2", 9000), change)


def _simulate(daemon: Daemon, clock: Clock, backend: FakeBackend, steps: list[Step]) -> Run:
    """The daemon's loop on the fake clock: events are delivered when they
    come (those that came during a refresh, together after it), a due
    refresh runs when nothing comes first."""
    start = clock.t
    queue = sorted(steps, key=lambda s: s.at)
    loads0 = len(backend.loads)
    refreshes = []
    while True:
        due = daemon.coalescer.deadline()
        nxt = start + queue[0].at if queue else None
        if nxt is not None and (nxt <= clock.t or due is None or nxt < due):
            clock.t = max(clock.t, nxt)
            batch = []
            while queue and start + queue[0].at <= clock.t:
                step = queue.pop(0)
                step.change()
                batch.append(step.event)
            daemon.on_events(batch)
        elif due is not None:
            clock.t = max(clock.t, due)
            began, first = clock.t, daemon.coalescer.first
            record = daemon.run_due()
            assert record is not None
            refreshes.append((began, first, record.action))
        else:
            break
    return Run(refreshes, len(backend.loads) - loads0, start)


@pytest.fixture
def daemon(tmp_path: Path) -> tuple[Daemon, Clock, TimedBackend, Config]:
    cfg = daemon_env(tmp_path, settle_ms=int(SETTLE * 1000), max_delay_ms=int(MAX_DELAY * 1000))
    clock = Clock()
    backend = TimedBackend(clock)
    d = Daemon(cfg, FakeMonitor(), backend=backend, clock=clock)
    assert d.reconcile("start").action == "nothing"
    return d, clock, backend, cfg


def _check(run: Run, daemon: Daemon) -> None:
    """At most two reloads; the first refresh at once; none later than
    max_delay after the first event it covers; current at the end."""
    assert 1 <= run.loads <= 2, run.refreshes
    assert run.refreshes[0][0] == run.burst_start  # leading edge: no wait
    for began, first, _ in run.refreshes:
        assert first is not None and began - first <= MAX_DELAY + 1e-9
    assert daemon.reconcile("check").action == "nothing"  # the loaded header is current


@pytest.mark.parametrize("blocks", [1, 2, 16, 64, 256])
def test_burst_of_blocks(daemon: tuple[Daemon, Clock, TimedBackend, Config], blocks: int) -> None:
    # Each block is its own range (virtio-mem style): added 1 ms apart, then
    # onlined 2 ms apart (the kernel's add, then udev's or the admin's online).
    d, clock, backend, cfg = daemon
    root = cfg.root
    steps = []
    for n in range(blocks):
        s = _add_block(root, n)
        s.at = n * 0.001
        steps.append(s)
    for n in range(blocks):
        s = _online_block(n)
        s.at = blocks * 0.001 + n * 0.002
        steps.append(s)
    run = _simulate(d, clock, backend, steps)
    _check(run, d)
    if blocks == 1:
        # add, then online 1 ms after the leading refresh began: one reload,
        # and the online asks for no refresh at all.
        assert [a for _, _, a in run.refreshes] == ["reload-header"]
    assert d.state.phnum == 7 + blocks  # every range listed


def test_dimm_add_then_online_is_one_reload(
    daemon: tuple[Daemon, Clock, TimedBackend, Config],
) -> None:
    # A 2 GiB DIMM: one /proc/iomem range, 16 blocks that appear offline
    # (add) and are onlined later. Only the add changes the header.
    d, clock, backend, cfg = daemon
    steps = [_add_block(cfg.root, 0)]
    steps += [Step(0.001 * n, Event("add", "memory", f"/m{n}", n)) for n in range(1, 16)]
    steps += [Step(0.5 + 0.002 * n, _online_block(n).event) for n in range(16)]
    run = _simulate(d, clock, backend, steps)
    _check(run, d)
    assert run.loads == 1


def test_cpu_add_racing_a_dimm_add(daemon: tuple[Daemon, Clock, TimedBackend, Config]) -> None:
    d, clock, backend, cfg = daemon
    root = cfg.root
    hotadd = root.parent / "root-hotadd"
    steps = [_add_cpu(root, hotadd)]
    for n in range(16):
        s = _add_block(root, n) if n == 0 else Step(0.0, Event("add", "memory", f"/m{n}", n))
        s.at = 0.002 + 0.001 * n
        steps.append(s)
    steps += [Step(0.03 + 0.002 * n, _online_block(n).event) for n in range(16)]
    steps.append(Step(0.04, Event("online", "cpu", "/devices/system/cpu/cpu2", 9001)))
    run = _simulate(d, clock, backend, steps)
    _check(run, d)
    assert run.loads == 2  # the CPU at once, the DIMM in the trailing refresh
    assert d.state.header_cpus == 3


def test_online_and_offline_ask_for_no_refresh(
    daemon: tuple[Daemon, Clock, TimedBackend, Config],
) -> None:
    d, clock, backend, _ = daemon
    steps = [Step(0.001 * n, _online_block(n).event) for n in range(64)]
    steps += [Step(0.2, Event("offline", "memory", "/devices/system/memory/memory8192", 1))]
    steps += [Step(0.3, Event("online", "cpu", "/devices/system/cpu/cpu1", 2))]
    steps += [Step(0.4, Event("offline", "cpu", "/devices/system/cpu/cpu1", 3))]
    run = _simulate(d, clock, backend, steps)
    assert run.refreshes == [] and run.loads == 0
    assert d.state.events == 67  # counted all the same


@pytest.mark.parametrize(
    ("subsystem", "action", "changes"),
    [
        ("memory", "add", True),
        ("memory", "remove", True),
        ("memory", "online", False),
        ("memory", "offline", False),
        ("cpu", "add", True),
        ("cpu", "remove", True),
        ("cpu", "bind", True),
        ("cpu", "online", False),
        ("cpu", "offline", False),
        ("memory", "change", True),
    ],
)
def test_which_events_may_change_the_header(subsystem: str, action: str, changes: bool) -> None:
    assert changes_header(Event(action, subsystem, "/devices/system/x", 1)) is changes


def test_quiet_events_each_refresh_at_once(
    daemon: tuple[Daemon, Clock, TimedBackend, Config],
) -> None:
    # Hotplugs further apart than settle are separate bursts: each refreshed at once.
    d, clock, backend, cfg = daemon
    steps = []
    for n in range(3):
        s = _add_block(cfg.root, n)
        s.at = n * 2.0
        steps.append(s)
    run = _simulate(d, clock, backend, steps)
    assert run.loads == 3
    assert [began - run.burst_start for began, _, _ in run.refreshes] == [0.0, 2.0, 4.0]
