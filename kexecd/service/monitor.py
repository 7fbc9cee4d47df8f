# SPDX-License-Identifier: GPL-2.0-or-later
"""Hotplug uevents of the ``cpu`` and ``memory`` subsystems, through pyudev."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Event", "Monitor", "UdevMonitor"]

SUBSYSTEMS = ("cpu", "memory")


@dataclass(frozen=True)
class Event:
    """One uevent: ``add``, ``remove``, ``online``, ``offline``, ``bind`` ..."""

    action: str
    subsystem: str
    devpath: str
    seqnum: int


class Monitor(Protocol):
    """A source of uevents with a file descriptor to wait on."""

    def fileno(self) -> int: ...

    def drain(self) -> list[Event]:
        """Every event ready now, without blocking."""
        ...


class UdevMonitor:
    """pyudev's netlink monitor, filtered to CPU and memory.

    :param source: ``"udev"`` (events after udevd processed them) or
        ``"kernel"`` (raw kernel events, for hosts without udevd).
    """

    def __init__(self, source: str = "udev") -> None:
        import pyudev

        self._mon = pyudev.Monitor.from_netlink(pyudev.Context(), source=source)
        for subsystem in SUBSYSTEMS:
            self._mon.filter_by(subsystem)
        self._mon.start()

    def fileno(self) -> int:
        fd: int = self._mon.fileno()
        return fd

    def drain(self) -> list[Event]:
        events: list[Event] = []
        while True:
            # pyudev: compare with None; an empty Device is falsy.
            dev = self._mon.poll(timeout=0)
            if dev is None:
                return events
            events.append(
                Event(
                    str(dev.action or ""),
                    str(dev.subsystem or ""),
                    str(dev.device_path),
                    int(dev.sequence_number or 0),
                )
            )
