# SPDX-License-Identifier: GPL-2.0-or-later
"""Turning bursts of hotplug events into few refreshes, and retrying after failures."""

from __future__ import annotations

__all__ = ["Backoff", "Coalescer"]


class Coalescer:
    """When to refresh for the events seen: at once, then at most once more per burst.

    * **Leading edge.** The first event after a quiet period is due at once: a
      lone hotplug costs no wait.
    * **Trailing edge.** Events that come while that refresh runs, or before
      the quiet period is over, mark the state dirty; together they make one
      more refresh, due once they pause for the quiet period, but never later
      than ``max_delay`` seconds after the first of them.
    * **The quiet period** is ``settle`` seconds plus the longer of the time
      the last reload took (a refresh for events that loaded an image, from
      :meth:`take` to :meth:`finished`) and the longest pause the burst has
      taken between two events seen with no refresh between them (a burst
      that went on after a pause may pause as long again), never more than
      ``max_delay``.
      Reloading at a pause shorter than a reload saves less waiting than it
      costs if the burst goes on: one more reload of the crash kernel
      (``kexec_load`` frees the old image first, so each is a window without
      one) and one more refresh's work. So DIMMs hot-added one by one (one
      ACPI event each, about 230 ms apart in the test bed's emulated guest,
      where a reload takes about 220 ms: a quiet period of 320 ms) are one
      burst, two reloads in all, even if their pauses grow. A pause longer
      than the quiet period still splits a burst: one more reload.

    The trade-off: the trailing refresh starts a quiet period after the last
    event, so the crash kernel is current about ``settle`` plus two reloads
    after it (the wait, then the reload), not one reload after it. No rule
    can do better and keep to two reloads: to make one refresh of events
    that come ``g`` seconds apart, it must wait ``g`` after each of them
    before reloading, since it cannot tell the last one from the others. So
    "current one reload (plus 50 ms) after the last event" can hold for a
    lone event only (docs/benchmarks.md, P2).

    A burst shorter than ``max_delay`` thus costs at most two refreshes, and
    the last one starts after the last event, so it reads the final state.
    The daemon calls :meth:`take` when it starts a refresh for the events and
    :meth:`finished` when a refresh (for events or not) is over.
    """

    def __init__(self, settle: float, max_delay: float) -> None:
        self.settle = settle
        self.max_delay = max_delay
        self.first: float | None = None  # the first event not yet refreshed for
        self.last: float | None = None  # the last event seen
        self.leading = False  # ``first`` came after a quiet period
        self.quiet_at: float | None = None  # when the last event's or refresh's quiet ends
        self.reload = 0.0  # seconds the last reload took (0: none yet)
        self.pause = 0.0  # the longest pause between two events of this burst
        self.started: float | None = None  # when the refresh for events running now began

    @property
    def quiet(self) -> float:
        """Seconds without an event or a refresh that end a burst."""
        return min(self.settle + max(self.reload, self.pause), self.max_delay)

    def event(self, now: float) -> None:
        """An event was seen at ``now``."""
        if self.first is None:
            self.first = now
            self.leading = self.quiet_at is None or now >= self.quiet_at
            if self.leading:
                self.pause = 0.0  # a new burst
        elif self.last is not None:
            self.pause = max(self.pause, now - self.last)
        self.last = now
        self._busy_until(now + self.quiet)

    def deadline(self) -> float | None:
        """When the next refresh is due, or ``None`` with no event pending."""
        if self.first is None or self.last is None:
            return None
        if self.leading:
            return self.first
        return min(self.last + self.quiet, self.first + self.max_delay)

    def take(self, now: float) -> float | None:
        """A refresh starts at ``now`` and covers every event so far; return the first of them."""
        first, self.first, self.last, self.leading = self.first, None, None, False
        self.started = now
        return first

    def finished(self, now: float, *, loaded: bool = False) -> None:
        """A refresh ended at ``now``; ``loaded``: it loaded an image (a reload
        begun by :meth:`take` is timed). Events within the quiet period after
        it are a trailing edge."""
        if loaded and self.started is not None:
            self.reload = max(0.0, now - self.started)
        self.started = None
        self._busy_until(now + self.quiet)

    def _busy_until(self, t: float) -> None:
        self.quiet_at = t if self.quiet_at is None else max(self.quiet_at, t)


class Backoff:
    """When to try again after a failure: 1 s, then doubling up to ``cap`` seconds.

    A success resets it.
    """

    def __init__(self, first: float = 1.0, cap: float = 60.0) -> None:
        self.first = first
        self.cap = cap
        self.delay: float | None = None
        self.due: float | None = None

    def failed(self, now: float) -> float:
        """Schedule the next try; return its delay in seconds."""
        self.delay = self.first if self.delay is None else min(self.cap, self.delay * 2)
        self.due = now + self.delay
        return self.delay

    def succeeded(self) -> None:
        self.delay = self.due = None
