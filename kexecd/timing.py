# SPDX-License-Identifier: GPL-2.0-or-later
"""Where a refresh's time goes: named spans, for the daemon's debug log."""

from __future__ import annotations

import time

__all__ = ["Spans"]


class Spans:
    """Consecutive named spans of wall time, each ended by :meth:`mark`.

    A refresh marks the end of each of its steps (read the system, build the
    header, hash, load ...); the daemon logs :meth:`__str__` at debug level,
    so one refresh's profile is one journal line.
    """

    def __init__(self) -> None:
        self._last = time.perf_counter_ns()
        self.spans: list[tuple[str, int]] = []

    def mark(self, name: str) -> None:
        """End the span that began at the previous mark (or at creation)."""
        now = time.perf_counter_ns()
        self.spans.append((name, now - self._last))
        self._last = now

    @property
    def total_ns(self) -> int:
        return sum(ns for _, ns in self.spans)

    def __str__(self) -> str:
        parts = [f"{name} {ns / 1e6:.2f}" for name, ns in self.spans]
        return f"{self.total_ns / 1e6:.2f} ms: " + ", ".join(parts)
