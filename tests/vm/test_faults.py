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


def test_cpu_hot_remove_and_memory_offline(guest: Guest) -> None:
    cpu = guest.hot_add_cpu()
    guest.set_cpu_online(cpu)
    start, end = guest.hot_add_memory(512)
    guest.set_memory_online(start, end)
    guest.kexecd_load(STATE)
    guest.start_daemon(STATE)
    # Offline without removal: /proc/iomem still lists the blocks as System
    # RAM, so the header (kexec-tools' and kexecd's) keeps them.
    guest.set_memory_online(start, end, online=False)
    guest.hot_remove_cpu(cpu)
    out = wait_current(guest)
    assert out.startswith("crash kernel   loaded and current")
    out = guest.run(["kexecd", "refresh", "--state-dir", STATE]).stdout
    assert "nothing to do: the loaded header is current" in out
    vmcore = guest.crash()
    assert vmcore.prstatus == 2 and vmcore.covers(start, end)
