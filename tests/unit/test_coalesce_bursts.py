# SPDX-License-Identifier: GPL-2.0-or-later
"""Hotplug timelines replayed against the coalescer on a fake clock (issue 27,
P2 at 256 blocks): how many refreshes, and when the last one starts after the
last event. The shapes are the test bed's: DIMMs hot-added one by one reach
the guest one ACPI event each, about 230 ms apart, 32 block ``add`` uevents
each (4 GiB of 128 MiB blocks); a reload takes about 200 ms."""

from __future__ import annotations

from pathlib import Path

import pytest

from kexecd.service.coalesce import Coalescer
from kexecd.service.config import Config
from kexecd.service.daemon import Daemon
from kexecd.service.monitor import Event
from tests.unit.fakes import FakeMonitor, daemon_env
from tests.unit.test_coalesce import Clock, Step, TimedBackend, _add_block, _simulate

SETTLE, MAX_DELAY, RELOAD = 0.1, 3.0, 0.2
T0 = 10.0


def replay(c: Coalescer, events: list[float], loads: bool = True) -> list[tuple[float, float]]:
    """The daemon's one thread over the coalescer alone: events that come
    during a refresh are seen together when it ends; each refresh takes
    ``RELOAD`` seconds (and loads, with ``loads``). The (start, end) of each."""
    queue, now, out = sorted(events), 0.0, []
    while True:
        due = c.deadline()
        if queue and (queue[0] <= now or due is None or queue[0] <= due):
            now = max(now, queue[0])
            while queue and queue[0] <= now:
                queue.pop(0)
                c.event(now)
        elif due is not None:
            now = max(now, due)
            c.take(now)
            out.append((now, now + RELOAD))
            now += RELOAD
            c.finished(now, loaded=loads)
        else:
            return out


def dimms(n: int, gap: float, blocks: int = 32, at: float = T0) -> list[float]:
    """``n`` DIMMs ``gap`` seconds apart, each ``blocks`` block events 1 ms apart."""
    return [at + d * gap + b * 0.001 for d in range(n) for b in range(blocks)]


def test_a_lone_event_is_refreshed_at_once() -> None:
    c = Coalescer(SETTLE, MAX_DELAY)
    assert replay(c, [T0]) == [(T0, T0 + RELOAD)]
    assert c.reload == pytest.approx(RELOAD)  # timed: the next burst's quiet period
    assert c.quiet == pytest.approx(SETTLE + RELOAD)


def test_a_cpu_pair_is_two_refreshes_the_second_after_a_quiet_period() -> None:
    # Two CPUs plugged back to back: the second uevent comes during the
    # leading reload and is seen when it ends.
    c = Coalescer(SETTLE, MAX_DELAY)
    out = replay(c, [T0, T0 + 0.05])
    assert [s for s, _ in out] == pytest.approx([T0, T0 + RELOAD + SETTLE + RELOAD])


def test_events_during_a_reload_make_one_trailing_refresh() -> None:
    c = Coalescer(SETTLE, MAX_DELAY)
    out = replay(c, [T0 + i * 0.04 for i in range(5)])  # 0 to 160 ms: all in the reload
    assert len(out) == 2
    assert out[1][0] == pytest.approx(T0 + RELOAD + SETTLE + RELOAD)


@pytest.mark.parametrize("gap", [0.05, 0.15, 0.23, 0.28])
def test_dimms_one_by_one_are_one_burst(gap: float) -> None:
    # 8 DIMMs of 32 blocks, ``gap`` apart (0.23: the test bed's 256-block P2):
    # the leading refresh, then one trailing refresh that starts a quiet
    # period after the last event, so the last reads the final state.
    c = Coalescer(SETTLE, MAX_DELAY)
    events = dimms(8, gap)
    out = replay(c, events)
    assert len(out) == 2, out
    assert out[0][0] == T0  # the leading edge: no wait
    last = events[-1]
    assert out[1][0] > last
    # The pauses between DIMMs: 31 ms of block events each, then the gap.
    assert c.pause == pytest.approx(max(0.0, gap - 0.031))
    wait = SETTLE + max(RELOAD, c.pause)
    assert out[1][0] - last == pytest.approx(wait)
    # Current that wait and a reload after the last event (the price of
    # merging; a floor + 50 ms contract would need no wait at all, hence a
    # reload per DIMM): settle plus two reloads, for pauses up to a reload.
    assert out[1][1] - last == pytest.approx(wait + RELOAD)


def test_a_burst_whose_pauses_grow_is_still_one() -> None:
    # Each DIMM slower than the one before (pauses up to 445 ms, past settle
    # plus a reload): each pause the burst went on after lengthens its quiet
    # period, so that a longer one is not taken for its end.
    c = Coalescer(SETTLE, MAX_DELAY)
    starts, t = [], T0
    for gap in (0.0, 0.25, 0.3, 0.35, 0.4, 0.45, 0.45, 0.45):
        t += gap
        starts.append(t)
    events = [s + b * 0.001 for s in starts for b in range(8)]
    out = replay(c, events)
    assert len(out) == 2, out
    assert c.pause == pytest.approx(0.45 - 0.007)
    assert out[1][0] - events[-1] == pytest.approx(SETTLE + c.pause)
    # The next burst starts afresh.
    replay(c, [T0 + 10.0])
    assert c.pause == 0.0


def test_a_pause_across_a_refresh_is_not_learnt() -> None:
    c = Coalescer(SETTLE, MAX_DELAY)
    c.event(0.0)
    c.take(0.0)
    c.finished(0.2, loaded=True)
    c.event(0.45)  # within the quiet period (0.3) of the refresh's end: trailing
    assert c.pause == 0.0 and c.deadline() == pytest.approx(0.75)
    c.event(0.6)
    assert c.pause == pytest.approx(0.15)


def test_the_old_quiet_period_split_the_dimms() -> None:
    # Before the quiet period grew by a reload: settle alone ended the burst
    # at every 230 ms gap (5 reloads measured in the guest).
    c = Coalescer(SETTLE, MAX_DELAY)
    out = replay(c, dimms(8, 0.23), loads=False)  # no reload timed: quiet is settle
    assert len(out) >= 4


def test_dimms_further_apart_than_the_quiet_period_are_bursts_of_their_own() -> None:
    c = Coalescer(SETTLE, MAX_DELAY)
    out = replay(c, dimms(3, 1.0))
    assert [round(s - T0, 3) for s, _ in out] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_a_long_burst_still_refreshes_every_max_delay() -> None:
    # 40 DIMMs 230 ms apart (9 s): the trailing refresh is not put off past
    # max_delay after the first event it covers.
    c = Coalescer(SETTLE, MAX_DELAY)
    events = dimms(40, 0.23, blocks=2)
    out = replay(c, events)
    assert 4 <= len(out) <= 6
    assert out[-1][0] > events[-1]
    # The first event a refresh covers is seen when the one before it ends, at the earliest.
    for (s, _), (_, prev_end) in zip(out[1:], out, strict=False):
        assert s - prev_end <= MAX_DELAY + 1e-9


def test_only_reloads_for_events_are_timed() -> None:
    c = Coalescer(SETTLE, MAX_DELAY)
    c.event(0.0)
    c.take(0.0)
    c.finished(0.05)  # a refresh that loaded nothing
    assert c.reload == 0.0 and c.quiet == SETTLE
    c.finished(3.0, loaded=True)  # a retry: not begun by take()
    assert c.reload == 0.0
    c.event(5.0)
    c.take(5.0)
    c.finished(5.25, loaded=True)
    assert c.reload == pytest.approx(0.25)
    c.event(6.0)
    c.take(6.0)
    c.finished(6.05)  # loaded nothing: the last reload's time is kept
    assert c.reload == pytest.approx(0.25)


def test_the_quiet_period_is_at_most_max_delay() -> None:
    # A full reload that ran kexec-tools for 5 s does not put the next burst off as long.
    c = Coalescer(SETTLE, 1.0)
    c.event(0.0)
    c.take(0.0)
    c.finished(5.0, loaded=True)
    assert c.quiet == 1.0
    c.event(5.5)  # within it: trailing, due 1 s later
    assert c.deadline() == pytest.approx(6.5)


@pytest.fixture
def daemon(tmp_path: Path) -> tuple[Daemon, Clock, TimedBackend, Config]:
    cfg = daemon_env(tmp_path, settle_ms=int(SETTLE * 1000), max_delay_ms=int(MAX_DELAY * 1000))
    clock = Clock()
    backend = TimedBackend(clock, seconds=RELOAD)
    d = Daemon(cfg, FakeMonitor(), backend=backend, clock=clock)
    assert d.reconcile("start").action == "nothing"
    return d, clock, backend, cfg


def test_daemon_256_blocks_dimm_by_dimm(
    daemon: tuple[Daemon, Clock, TimedBackend, Config],
) -> None:
    # The 256-block P2 through the daemon: each DIMM one /proc/iomem range
    # (registered before its first block's uevent), 32 block adds, 230 ms
    # apart; then every block onlined, which asks for no refresh.
    d, clock, backend, cfg = daemon
    steps = []
    for n in range(8):
        first = _add_block(cfg.root, n)
        first.at = n * 0.23
        steps.append(first)
        for b in range(1, 32):
            path = f"/devices/system/memory/memory{9000 + n * 32 + b}"
            steps.append(Step(n * 0.23 + b * 0.001, Event("add", "memory", path, n * 32 + b)))
    last_add = max(s.at for s in steps)
    for i in range(256):
        path = f"/devices/system/memory/memory{9000 + i}"
        steps.append(Step(2.0 + i * 0.002, Event("online", "memory", path, 1000 + i)))
    run = _simulate(d, clock, backend, steps)
    assert run.loads == 2, run.refreshes
    assert run.refreshes[0][0] == run.burst_start
    began = run.refreshes[-1][0] - run.burst_start
    assert last_add < began <= last_add + SETTLE + RELOAD + 1e-9
    assert d.reconcile("check").action == "nothing"  # the loaded header is current
    assert d.state.phnum == 7 + 8
