# SPDX-License-Identifier: GPL-2.0-or-later
"""Turning bursts of hotplug events into few refreshes, and retrying after failures."""

from __future__ import annotations

__all__ = ["Backoff", "Coalescer"]


class Coalescer:
    """When to refresh for the events seen: at once, then at most once more per burst.

    * **Leading edge.** The first event after a quiet period (no event and no
      refresh for ``settle`` seconds) is due at once: a lone hotplug costs no
      wait.
    * **Trailing edge.** Events that come while that refresh runs, or within
      ``settle`` seconds of the last event or refresh, mark the state dirty;
      together they make one more refresh, due ``settle`` seconds after the
      last of them but never later than ``max_delay`` seconds after the first
      of them.

    A burst shorter than ``max_delay`` thus costs at most two refreshes, and
    the last one starts after the last event, so it reads the final state.
    The daemon calls :meth:`take` when it starts a refresh for the events and
    :meth:`finished` when that refresh is over.
    """

    def __init__(self, settle: float, max_delay: float) -> None:
        self.settle = settle
        self.max_delay = max_delay
        self.first: float | None = None  # the first event not yet refreshed for
        self.last: float | None = None  # the last event seen
        self.leading = False  # ``first`` came after a quiet period
        self.quiet_at: float | None = None  # no event or refresh since settle before

    def event(self, now: float) -> None:
        """An event was seen at ``now``."""
        if self.first is None:
            self.first = now
            self.leading = self.quiet_at is None or now >= self.quiet_at
        self.last = now
        self._busy_until(now + self.settle)

    def deadline(self) -> float | None:
        """When the next refresh is due, or ``None`` with no event pending."""
        if self.first is None or self.last is None:
            return None
        if self.leading:
            return self.first
        return min(self.last + self.settle, self.first + self.max_delay)

    def take(self) -> float | None:
        """A refresh starts now and covers every event so far; return the first of them."""
        first, self.first, self.last, self.leading = self.first, None, None, False
        return first

    def finished(self, now: float) -> None:
        """A refresh ended at ``now``: events within ``settle`` of it are a trailing edge."""
        self._busy_until(now + self.settle)

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
