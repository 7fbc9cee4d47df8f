# SPDX-License-Identifier: GPL-2.0-or-later
"""Which uevents ask the daemon for a refresh.

Every uevent is counted (:meth:`kexecd.service.recorder.Recorder.events`);
only those that may change the ELF core header are refreshed for.
"""

from __future__ import annotations

from kexecd.service.monitor import Event

__all__ = ["changes_header"]

# Uevents after which the header kexec-tools would build is the same as
# before: onlining or offlining a memory block leaves /proc/iomem as it was
# (mm/memory_hotplug.c: the "System RAM" resource is registered when the
# memory is added and released when it is removed, online or not), and a
# CPU's crash_notes stays while it is present, online or not
# (drivers/base/cpu.c). Every other action (add, remove, bind, change ...)
# may change it.
_SAME_HEADER = frozenset(
    {("memory", "online"), ("memory", "offline"), ("cpu", "online"), ("cpu", "offline")}
)


def changes_header(ev: Event) -> bool:
    """Whether a uevent may change the ELF core header: only then is it refreshed for."""
    return (ev.subsystem, ev.action) not in _SAME_HEADER
