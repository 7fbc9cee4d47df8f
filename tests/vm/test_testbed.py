# SPDX-License-Identifier: GPL-2.0-or-later
"""The test bed itself: commands, hotplug both ways, and a dump read back."""

from __future__ import annotations

import re
import shutil

import pytest

from testbed import acpi
from testbed.vm import Guest, GuestBootPanic, Machine, TestbedError, boot, read_acpi_tables

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
    # Present and offline: 6.1 does not online a hot-added CPU itself.
    assert cpu not in before and cpu in g.present_cpus() and cpu not in g.online_cpus()
    g.set_cpu_online(cpu)
    assert g.online_cpus() == sorted([*before, cpu])
    assert int(g.read(f"/sys/devices/system/cpu/cpu{cpu}/crash_notes"), 16) > 0


def test_cpu_hot_add_and_remove_on_612(guest_612: Guest) -> None:
    # Linux 6.12 drops the MADT's disabled CPUs under TCG unless the FADT
    # claims ACPI 6.3 and the MADT marks them Online Capable: the test bed
    # boots it with QEMU's tables so upgraded (testbed/acpi.py).
    g = guest_612
    assert g.acpi_key is not None
    dmesg = g.sh("dmesg")
    assert "ACPI: Table Upgrade: override [FACP-BOCHS -BXPC    ]" in dmesg
    assert "ACPI: Table Upgrade: override [APIC-BOCHS -BXPC    ]" in dmesg
    assert "Allowing 2 present CPUs plus 2 hotplug CPUs" in dmesg
    tables = read_acpi_tables(g)
    assert acpi.online_capable_honoured(tables["FACP"])
    assert [c.online_capable for c in acpi.madt_cpus(tables["APIC"])] == [0, 0, 1, 1]
    before = g.online_cpus()
    cpu = g.hot_add_cpu()
    # Present and offline (6.12 does not online it either), and onlineable.
    assert cpu not in before and cpu in g.present_cpus() and cpu not in g.online_cpus()
    g.set_cpu_online(cpu)
    assert g.online_cpus() == sorted([*before, cpu])
    assert int(g.read(f"/sys/devices/system/cpu/cpu{cpu}/crash_notes"), 16) > 0
    other = g.hot_add_cpu()  # the last free slot; left offline
    assert g.present_cpus() == sorted([*before, cpu, other])
    g.hot_remove_cpu(cpu)
    g.hot_remove_cpu(other)
    assert g.present_cpus() == before and g.online_cpus() == before
    # QEMU 7.2 under TCG aborts on a CPU plug after an unplug: refused.
    with pytest.raises(TestbedError, match="double free or corruption"):
        g.hot_add_cpu()
    assert g.proc.poll() is None and "Unable to map lapic" not in g.sh("dmesg")


def test_612_without_the_upgrade_cannot_hot_add_a_cpu(request: pytest.FixtureRequest) -> None:
    # The control: QEMU 7.2's own tables (FADT revision 3), TCG, Linux 6.12.
    g = boot(request.node.name, Machine(acpi_upgrade=False), kernel_version="6.12")
    try:
        assert g.acpi_key is None
        assert "Allowing 2 present CPUs plus 0 hotplug CPUs" in g.sh("dmesg")
        with pytest.raises(TestbedError, match="Unable to map lapic"):
            g.hot_add_cpu()
    finally:
        g.close()
    shutil.rmtree(g.run_dir, ignore_errors=True)


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


def test_a_guest_that_panics_while_booting_is_booted_twice(
    request: pytest.FixtureRequest,
) -> None:
    # A real panic before the agent (no init in the initramfs, no root): the
    # test bed tries once more, keeps the first boot's console, then fails.
    with pytest.raises(GuestBootPanic) as raised:
        boot(request.node.name, append=["rdinit=/no-such-init"], timeout=120)
    assert "Unable to mount root fs" in raised.value.why or "init" in raised.value.why
    run_dir = raised.value.run_dir
    first = (run_dir / "console.boot1.log").read_text(errors="replace")
    assert "Kernel panic - not syncing" in first
    assert "Kernel panic - not syncing" in (run_dir / "console.log").read_text(errors="replace")
    assert not (run_dir / "console.boot2.log").exists()
    shutil.rmtree(run_dir, ignore_errors=True)
