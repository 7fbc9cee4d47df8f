# SPDX-License-Identifier: GPL-2.0-or-later
"""The daemon's loop: readers and timers in one registry, on a fake clock."""

from __future__ import annotations

import os

from kexecd.service.loop import Alarm, Loop


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_timers_run_in_time_order_once() -> None:
    clock = Clock()
    loop = Loop(clock)
    ran: list[str] = []
    loop.call_at(102.0, lambda: ran.append("b"))
    loop.call_at(101.0, lambda: ran.append("a"))
    loop.call_at(102.0, lambda: ran.append("c"))  # same time: in the order set
    dropped = loop.call_at(101.5, lambda: ran.append("x"))
    loop.cancel(dropped)
    assert loop.deadline() == 101.0
    loop.run_due()
    assert ran == []
    clock.t = 102.0
    loop.run_due()
    assert ran == ["a", "b", "c"] and loop.deadline() is None
    loop.run_due()
    assert ran == ["a", "b", "c"]


def test_a_timer_can_cancel_one_due_with_it() -> None:
    clock = Clock()
    loop = Loop(clock)
    ran: list[str] = []
    later = loop.call_at(100.0, lambda: ran.append("later"))
    loop.call_at(99.0, lambda: loop.cancel(later))
    loop.run_due()
    assert ran == []


def test_an_alarm_moves() -> None:
    clock = Clock()
    loop = Loop(clock)
    fired: list[float] = []
    alarm = Alarm(loop, lambda: fired.append(clock()))
    alarm.set(105.0)
    alarm.set(103.0)  # moved earlier: the old time is gone
    assert alarm.when == 103.0 and loop.deadline() == 103.0
    clock.t = 106.0
    loop.run_due()
    assert fired == [106.0] and alarm.when is None and loop.deadline() is None
    alarm.set(107.0)
    alarm.set(None)
    assert loop.deadline() is None


def test_readers_and_timers_in_one_wait() -> None:
    loop = Loop()  # the real clock: the wait is real
    loop.open()
    r, w = os.pipe2(os.O_NONBLOCK)
    got: list[bytes] = []
    woke: list[str] = []
    try:
        loop.add_reader(r, lambda: got.append(os.read(r, 16)))
        loop.after_each(lambda: woke.append("after"))
        loop.call_at(loop.clock() + 0.05, lambda: woke.append("timer"))
        os.write(w, b"x")
        loop.run_once()  # ready at once: the reader, not yet the timer
        assert got == [b"x"] and woke == ["after"]
        loop.run_once()  # nothing to read: waits for the timer only
        assert woke == ["after", "timer", "after"]
        loop.remove(r)
        loop.remove(r)  # again: nothing to do
        assert loop.watched() == 0
    finally:
        loop.close()
        os.close(r)
        os.close(w)
