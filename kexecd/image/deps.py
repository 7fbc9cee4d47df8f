# SPDX-License-Identifier: GPL-2.0-or-later
"""The collaborators of a refresh: the system's root, the kernel, the tracer, the clock.

One :class:`Deps` is built by whoever runs kexecd (the command line, the
daemon) and handed down; tests hand fakes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kexecd import core
from kexecd.loads import LoadCapture, Segment
from kexecd.system.root import Root

__all__ = ["Backend", "Deps", "KernelBackend", "Tracer"]

Tracer = Callable[[Sequence[str]], LoadCapture]


class Backend(Protocol):
    """What issues the load: the kernel, or a fake in tests."""

    def load(self, entry: int, flags: int, segments: Sequence[Segment]) -> None:
        """Load the image; raise :class:`OSError` when the kernel refuses."""


class KernelBackend:
    """``kexec_load(2)`` through the C core."""

    def load(self, entry: int, flags: int, segments: Sequence[Segment]) -> None:
        core.kexec_load(entry, flags, segments)


@dataclass(frozen=True)
class Deps:
    """What a refresh reads, loads and traces with.

    :ivar root: the system's files (``/`` in production; a fake tree in tests).
    :ivar backend: what issues ``kexec_load``.
    :ivar tracer: what runs kexec-tools under the tracer (a whole reload).
    :ivar clock: monotonic seconds, for the timing.
    """

    root: Root = field(default_factory=Root)
    backend: Backend = field(default_factory=lambda: KernelBackend())
    tracer: Tracer = core.trace_kexec
    clock: Callable[[], float] = time.monotonic
