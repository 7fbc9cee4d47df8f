# SPDX-License-Identifier: GPL-2.0-or-later
"""The test bed itself: commands, hotplug both ways, and a dump read back."""

from __future__ import annotations

import re

import pytest

from testbed.vm import Guest, TestbedError

pytestmark = pytest.mark.vm


def system_ram(iomem: str) -> list[tuple[int, int]]:
    """Top-level 'System RAM' lines of /proc/iomem as (start, end exclusive)."""
    out = []
    for line in iomem.splitlines():
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) : System RAM$", line)
        if m:
            out.append((int(m.group(1), 16), int(m.group(2), 16) + 1))
    return out


def crash_kernel(iomem: str) -> tuple[int, int]:
    m = re.search(r"^\s*([0-9a-f]+)-([0-9a-f]+) : Crash kernel$", iomem, re.M)
    assert m, "no Crash kernel range in /proc/iomem: is crashkernel= on the command line?"
    return int(m.group(1), 16), int(m.group(2), 16) + 1


def test_commands_report_output_and_exit_code(shared_guest: Guest) -> None:
    res = shared_guest.run("echo out; echo err >&2; exit 3", check=False)
    assert (res.rc, res.stdout, res.stderr) == (3, "out\n", "err\n")
    with pytest.raises(TestbedError, match="exited 3"):
        shared_guest.run("exit 3")


def test_guest_runs_this_checkout(shared_guest: Guest) -> None:
    out = shared_guest.python(
        "-c", "import kexecd, testbed.guest_safety as g; print(kexecd.__file__, g.in_guest())"
    ).stdout.split()
    assert out[0].endswith("kexecd/__init__.py")
    assert out[1] == "True"
    assert shared_guest.read("/proc/version").startswith("Linux version 6.1.")


def test_memory_hot_add_and_remove(shared_guest: Guest) -> None:
    g = shared_guest
    start, end = g.hot_add_memory(512)
    assert (start, end) == (0x1_0000_0000, 0x1_2000_0000)
    # ACPI adds the range to /proc/iomem before it is onlined.
    assert (start, end) in system_ram(g.read("/proc/iomem"))
    bs = g.memory_block_size()
    blocks = range(start // bs, end // bs)
    g.set_memory_online(start, end)
    states = {g.read(f"/sys/devices/system/memory/memory{b}/state").strip() for b in blocks}
    assert states == {"online"}
    g.hot_remove_memory("dimm1")
    assert not any(s < end and start < e for s, e in system_ram(g.read("/proc/iomem")))


def test_cpu_hot_add(shared_guest: Guest) -> None:
    g = shared_guest
    before = g.online_cpus()
    cpu = g.hot_add_cpu()
    assert cpu not in before and cpu in g.present_cpus()
    g.set_cpu_online(cpu)
    assert g.online_cpus() == sorted([*before, cpu])
    assert int(g.read(f"/sys/devices/system/cpu/cpu{cpu}/crash_notes"), 16) > 0


def test_crash_dump_is_read_back(guest: Guest) -> None:
    iomem = guest.read("/proc/iomem")
    guest.load_crash_kernel()
    vmcore = guest.crash()
    # The dump covers all RAM but the crash kernel's own reservation ...
    lo, hi = crash_kernel(iomem)
    want = []
    for s, e in system_ram(iomem):
        if s < lo < e:
            want += [(s, lo), (hi, e)] if hi < e else [(s, lo)]
        else:
            want.append((s, e))
    assert sorted(vmcore.ram_loads) == sorted(want)
    assert vmcore.kernel_text is not None
    # ... and has one register note per online CPU, plus vmcoreinfo.
    assert vmcore.prstatus == 2
    assert ("VMCOREINFO", 0) in vmcore.notes
