# SPDX-License-Identifier: GPL-2.0-or-later
"""The problem kexecd exists to fix, shown on a real kernel.

kdump is loaded at boot; a CPU and 512 MiB are hot-added and onlined; the
kernel panics. The dump misses the memory and the CPU. Re-running
``kexec -p`` after the hotplug, as the distros' udev rules do, fixes both.
"""

from __future__ import annotations

import pytest

from tests.vm import scenarios

pytestmark = pytest.mark.vm


def test_dump_after_hotplug_is_stale_without_reload() -> None:
    o = scenarios.run("stale")
    start, end = o.added_range
    assert (start, end) == (0x1_0000_0000, 0x1_2000_0000)
    assert o.added_cpu == 2 and o.cpus_online == [0, 1, 2]
    # The header loaded at boot names neither the new range nor the new CPU ...
    assert not o.header.overlaps(start, end)
    assert o.header_cpus == [0, 1]
    # ... so the dump misses exactly that range and has one CPU note fewer.
    assert not o.vmcore.overlaps(start, end)
    assert sorted(o.vmcore.ram_loads) == sorted(o.header.ram_loads)
    assert o.vmcore.prstatus == len(o.cpus_online) - 1


@pytest.mark.parametrize("mode", ["reload", "kexecd"])
def test_dump_after_hotplug_is_whole_when_updated(mode: str) -> None:
    # kexec -p run again after the hotplug, or kexecd run keeping it current.
    o = scenarios.run(mode)
    start, end = o.added_range
    assert o.header.covers(start, end)
    assert o.header_cpus == [0, 1, 2]
    assert o.vmcore.covers(start, end)
    assert o.vmcore.prstatus == len(o.cpus_online) == 3
    assert o.update_seconds is not None and 0 < o.update_seconds < 10
