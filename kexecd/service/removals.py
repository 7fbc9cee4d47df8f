# SPDX-License-Identifier: GPL-2.0-or-later
"""Removed memory blocks whose range is still in ``/proc/iomem``: looked at again.

mm/memory_hotplug.c try_remove_memory() (5.10 to 6.12): the memory block
devices go (their "remove" uevents) before the "System RAM" resource is
released, after arch_remove_memory() has torn down the memory map: a refresh
for those events can still read the range in /proc/iomem, and no later event
says it went. Seen on 5.10 under QEMU TCG: 512 MiB released seconds after its
last remove event. So a removed block whose range is still there is looked
at again, every :data:`REMOVAL_POLL` seconds, for at most :data:`REMOVAL_WAIT`
seconds. The reload that finds it gone is the removal's: its latency counts
from the first uevent of the refresh that still read the range.
"""

from __future__ import annotations

import logging
import re

from kexecd.errors import KexecdError
from kexecd.service.monitor import Event
from kexecd.system.kernel import read_memory_block_size
from kexecd.system.root import Root
from kexecd.system.state import SystemState

__all__ = ["REMOVAL_POLL", "REMOVAL_WAIT", "RemovalFollower"]

REMOVAL_POLL = 0.25
REMOVAL_WAIT = 30.0
_MEMORY_BLOCK = re.compile(r"/devices/system/memory/memory(\d+)$")

log = logging.getLogger("kexecd")


class RemovalFollower:
    """The removed memory blocks not yet gone from ``/proc/iomem``.

    :ivar removed: memory block number -> when to stop looking (the daemon's clock).
    :ivar due: when to refresh again to look at them; ``None``: nothing to look at.
    :ivar first_event: the first uevent (the daemon's clock) of the refresh that
        first read one of them still there: the look again's reload is that
        event's; ``None`` while nothing is looked at, or that refresh had none.
    """

    def __init__(self) -> None:
        self.removed: dict[int, float] = {}
        self.due: float | None = None
        self.first_event: float | None = None

    def saw(self, ev: Event, now: float) -> None:
        """A uevent came at ``now``: remember a removed memory block."""
        m = _MEMORY_BLOCK.search(ev.devpath)
        if ev.subsystem == "memory" and ev.action == "remove" and m:
            self.removed[int(m.group(1))] = now + REMOVAL_WAIT

    def follow(
        self,
        root: Root,
        system: SystemState | None,
        now: float,
        first_event: float | None = None,
    ) -> None:
        """After a refresh that read ``system``: the removed blocks whose range
        it still read as RAM are looked at again soon; the others are done.

        :param system: the system as the refresh read it; ``None`` when it read
            none (the kernel keeps the header, or kexecd reloads it whole).
        :param first_event: that refresh's first uevent, kept as
            :attr:`first_event` if it is the first to leave a block to look at.
        """
        self.due = None
        self._follow(root, system, now)
        if not self.removed:
            self.first_event = None
        elif self.first_event is None:
            self.first_event = first_event

    def _follow(self, root: Root, system: SystemState | None, now: float) -> None:
        if not self.removed:
            return
        try:
            size = None if system is None else read_memory_block_size(root)
        except KexecdError:
            size = None
        if system is None or not size:
            self.removed.clear()
            return
        ram = system.memory.ram
        for block, until in list(self.removed.items()):
            start, end = block * size, (block + 1) * size - 1
            if now >= until or not any(r.start <= end and start <= r.end for r in ram):
                del self.removed[block]
        if self.removed:
            self.due = now + REMOVAL_POLL
            log.debug("removed memory still in /proc/iomem: blocks %s", sorted(self.removed))
