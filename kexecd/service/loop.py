# SPDX-License-Identifier: GPL-2.0-or-later
"""The daemon's loop: readiness and timers in one registry.

File descriptors are registered with a callback (:meth:`Loop.add_reader`);
timers are callbacks at a time of the loop's clock (:meth:`Loop.call_at`,
:class:`Alarm` for a source that has at most one pending time, moved as it
changes). :meth:`Loop.run_once` waits until a descriptor is ready or the
earliest timer is due and runs what is ready, then what is due. This is
chrony's scheduler (``SCH_AddFileHandler``, ``SCH_AddTimeout``) over
:mod:`selectors`.

Why not :mod:`asyncio`: the daemon takes an injectable clock, and the tests
drive its refreshes on a fake clock without running any loop
(tests/unit/test_coalesce.py); an asyncio loop keeps its own clock
(``loop.time()``) and would have to be subclassed to share it. Nothing in
the daemon awaits: every callback runs to completion (a refresh holds the
state directory's lock and must not interleave with another), which is what
a plain callback loop gives without coroutines.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import selectors
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

__all__ = ["Alarm", "Loop", "Timer"]

Callback = Callable[[], object]


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


FileLike: TypeAlias = int | _HasFileno  # what a selector takes


@dataclass(eq=False)
class Timer:
    """A callback at a time of the loop's clock; :meth:`Loop.cancel` drops it."""

    when: float
    callback: Callback = field(repr=False)
    cancelled: bool = False


class Loop:
    """Readiness and timers in one registry; callbacks take no arguments.

    :param clock: the time of the timers (``time.monotonic``; a fake in tests).

    Timers can be set before :meth:`open` (the daemon's refreshes schedule
    their retries whether or not a loop runs); descriptors only once it is open.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._sel: selectors.BaseSelector | None = None
        self._timers: list[tuple[float, int, Timer]] = []  # a heap
        self._order = itertools.count()  # equal times run in the order set
        self._after: list[Callback] = []

    def open(self, sel: selectors.BaseSelector | None = None) -> None:
        """Start watching descriptors (with ``sel``, or the system's default selector)."""
        self._sel = sel or selectors.DefaultSelector()

    def close(self) -> None:
        if self._sel is not None:
            self._sel.close()
            self._sel = None

    @property
    def _selector(self) -> selectors.BaseSelector:
        if self._sel is None:
            raise RuntimeError("the loop is not open")
        return self._sel

    # -- descriptors -----------------------------------------------------------

    def add_reader(self, fd: FileLike, callback: Callback) -> None:
        """Call ``callback`` whenever ``fd`` is readable."""
        self._selector.register(fd, selectors.EVENT_READ, callback)

    def add_writer(self, fd: FileLike, callback: Callback) -> None:
        """Call ``callback`` whenever ``fd`` is writable."""
        self._selector.register(fd, selectors.EVENT_WRITE, callback)

    def to_writer(self, fd: FileLike, callback: Callback) -> None:
        """Watch a registered ``fd`` for writing now, no longer for reading."""
        self._selector.modify(fd, selectors.EVENT_WRITE, callback)

    def remove(self, fd: FileLike) -> None:
        """Stop watching ``fd`` (nothing if it was not watched, or is closed)."""
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(fd)

    def watched(self) -> int:
        """How many descriptors are watched."""
        return 0 if self._sel is None else len(self._sel.get_map())

    # -- timers ----------------------------------------------------------------

    def call_at(self, when: float, callback: Callback) -> Timer:
        """Call ``callback`` once the clock reads ``when``."""
        timer = Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def cancel(self, timer: Timer | None) -> None:
        if timer is not None:
            timer.cancelled = True

    def deadline(self) -> float | None:
        """When the earliest timer is due; ``None`` with none set."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def after_each(self, callback: Callback) -> None:
        """Call ``callback`` after every wake-up, once the rest has run."""
        self._after.append(callback)

    # -- running ---------------------------------------------------------------

    def run_once(self) -> None:
        """Wait for a ready descriptor or the earliest timer; run them."""
        deadline = self.deadline()
        timeout = None if deadline is None else max(0.0, deadline - self.clock())
        for key, _ in self._selector.select(timeout):
            key.data()
        self.run_due()
        for callback in self._after:
            callback()

    def run_due(self) -> None:
        """Run the timers due now, earliest first; those they set run next time."""
        now = self.clock()
        due = []
        while self._timers and self._timers[0][0] <= now:
            due.append(heapq.heappop(self._timers)[2])
        for timer in due:
            if not timer.cancelled:  # an earlier one may have cancelled it
                timer.cancelled = True
                timer.callback()


class Alarm:
    """A timer source with at most one pending time (a deadline that moves).

    :meth:`set` replaces the pending time; ``None`` clears it.
    """

    def __init__(self, loop: Loop, callback: Callback) -> None:
        self._loop = loop
        self._callback = callback
        self._timer: Timer | None = None

    @property
    def when(self) -> float | None:
        t = self._timer
        return None if t is None or t.cancelled else t.when

    def set(self, when: float | None) -> None:
        if when == self.when:
            return
        self._loop.cancel(self._timer)
        self._timer = None if when is None else self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._callback()
