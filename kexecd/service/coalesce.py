# SPDX-License-Identifier: GPL-2.0-or-later
"""Turning bursts of hotplug events into few refreshes, and retrying after failures."""

from __future__ import annotations

__all__ = ["Backoff", "Coalescer"]


class Coalescer:
    """Turns a burst of events into one deadline.

    Due ``settle`` seconds after the last event, but never later than
    ``max_delay`` seconds after the first one of the burst.
    """

    def __init__(self, settle: float, max_delay: float) -> None:
        self.settle = settle
        self.max_delay = max_delay
        self.first: float | None = None
        self.last: float | None = None

    def event(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.last = now

    def deadline(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        return min(self.last + self.settle, self.first + self.max_delay)

    def take(self) -> float | None:
        """End the burst; return when it began."""
        first, self.first, self.last = self.first, None, None
        return first


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
