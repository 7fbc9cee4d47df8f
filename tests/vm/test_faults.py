# SPDX-License-Identifier: GPL-2.0-or-later
"""Faults and the hotplug cases the main tests do not cover, in the guest, with real crashes.

A kexec_load that fails (injected with a seccomp errno filter: the kernel
never sees the call), a full reload under the systemd unit's capability set,
a CPU hot-removed (offline, then device_del) and memory offlined without
removal.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from testbed.vm import Guest
from tests.vm.test_daemon import status, wait_current

pytestmark = pytest.mark.vm

STATE = "/run/kexecd-state"
UNIT = Path(__file__).resolve().parents[2] / "systemd/kexecd.service"


def unit_caps() -> str:
    """systemd/kexecd.service's CapabilityBoundingSet=, as setpriv spells it."""
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("CapabilityBoundingSet="))
    caps = line.split("=", 1)[1].split()
    return ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])


def test_failed_kexec_load_keeps_the_crash_kernel(guest: Guest) -> None:
    # Every kexec_load of the daemon fails with ENOMEM before the kernel sees
    # it: the crash kernel loaded before stays, the daemon says so and keeps
    # retrying, and a crash still dumps (the image it had).
    guest.kexecd_load(STATE)
    fail = f"{sys.executable} -m testbed.failing_kexec_load 12 --"
    guest.start_daemon(STATE, wrapper=fail)
    start, end = guest.hot_add_memory(512)
    guest.set_memory_online(start, end)
    deadline = time.monotonic() + 60
    while guest.daemon_state()["failed"] < 2:  # the failure, then a retry
        assert time.monotonic() < deadline, guest.read("/run/kexecd.log")
        time.sleep(0.5)
    st = guest.daemon_state()
    assert "the kernel kept the previous image" in st["last_error"]["message"]
    assert st["retry_in_s"] >= 1 and st["reloads"] == 0
    assert guest.read("/sys/kernel/kexec_crash_loaded").strip() == "1"
    rc, out = status(guest)
    assert rc == 1 and "retry" in out
    vmcore = guest.crash()
    assert vmcore.prstatus == 2 and not vmcore.overlaps(start, end)


def test_full_reload_under_the_units_capabilities(guest: Guest) -> None:
    # The fallback reruns kexec-tools, which reads /proc/kcore: that needs
    # CAP_SYS_RAWIO (which PrivateDevices=yes would take away). Forced here by
    # a snapshot whose digest location is unknown.
    guest.kexecd_load(STATE)
    manifest = f"{STATE}/snapshot/manifest.json"
    m = json.loads(guest.read(manifest))
    m["digest"] = None
    guest.sh(f"printf '%s' '{json.dumps(m)}' > {manifest}")
    start, end = guest.hot_add_memory(512)
    guest.set_memory_online(start, end)
    refresh = f"kexecd refresh --state-dir {STATE}"
    without = guest.run(
        ["setpriv", "--bounding-set", "-sys_rawio", "--", "sh", "-c", refresh], check=False
    )
    assert without.rc != 0, without.stdout
    assert guest.read("/sys/kernel/kexec_crash_loaded").strip() == "1"
    res = guest.run(["setpriv", "--bounding-set", unit_caps(), "--", "sh", "-c", refresh])
    assert "re-ran the kexec command because purgatory's SHA-256 digest" in res.stdout
    vmcore = guest.crash()
    assert vmcore.covers(start, end)


def test_memory_offline_without_removal(guest: Guest) -> None:
    start, end = guest.hot_add_memory(512)
    guest.set_memory_online(start, end)
    guest.kexecd_load(STATE)
    guest.start_daemon(STATE)
    # Offline without removal: /proc/iomem still lists the blocks as System
    # RAM, so the header (kexec-tools' and kexecd's) keeps them.
    guest.set_memory_online(start, end, online=False)
    out = wait_current(guest)
    assert out.startswith("crash kernel   loaded and current")
    out = guest.run(["kexecd", "refresh", "--state-dir", STATE]).stdout
    assert "nothing to do: the loaded header is current" in out
    vmcore = guest.crash()
    assert vmcore.prstatus == 2 and vmcore.covers(start, end)


def test_cpu_hot_remove(guest: Guest) -> None:
    # Offline, then device_del: the daemon drops the CPU's note, and what it
    # loaded is byte for byte what kexec-tools builds now. No crash here: in
    # this test bed (QEMU 7.2 TCG) a crash kernel booted after a CPU was
    # unplugged hangs in PCI enumeration whoever loaded it; plain 'kexec -p'
    # does the same (see the session notes), so the dump cannot judge kexecd.
    cpu = guest.hot_add_cpu()
    guest.set_cpu_online(cpu)
    guest.kexecd_load(STATE)
    guest.start_daemon(STATE)
    guest.hot_remove_cpu(cpu)
    deadline = time.monotonic() + 60
    while guest.daemon_state()["reloads"] < 1:
        assert time.monotonic() < deadline, guest.read("/run/kexecd.log")
        time.sleep(0.5)
    out = wait_current(guest)
    assert "header         2 CPUs" in out
    # Gone from sysfs, the CPU is named by its notes' address.
    changes = guest.daemon_state()["last_update"]["changes"]
    assert len(changes) == 1 and changes[0].startswith("- CPU")
    mine = guest.run_dir / "share" / "mine.bin"
    guest.sh(f"cp {STATE}/snapshot/loaded-header.bin {mine}")
    guest.sh("kill $(cat /run/kexecd.pid)")
    assert guest.capture_load("after-remove").header == mine.read_bytes()
