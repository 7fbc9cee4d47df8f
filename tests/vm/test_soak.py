# SPDX-License-Identifier: GPL-2.0-or-later
"""A soak: the daemon under hotplug churn for at least 1,000 uevents, then a crash.

One busybox guest (6.1, kexec-tools 2.0.25) with a 1 GiB virtio-mem device
(128 MiB blocks, onlined movable), DIMM slots and a spare CPU slot. kexecd
loads the crash kernel and ``kexecd run`` follows kernel uevents while, in
rounds:

* virtio-mem grows to 1 GiB and shrinks to nothing (8 blocks added and
  onlined, then offlined and removed: about 32 uevents a round);
* every :data:`DIMM_EVERY` rounds a 256 MiB DIMM is plugged (the kernel
  onlines it, ``memhp_default_state=online_movable``), offlined and
  unplugged;
* one CPU is hot-added at the start, then offlined and onlined every round.
  It is not unplugged: in this test bed (QEMU 7.2, TCG) a crash kernel
  booted after a CPU unplug never dumps (QEMU segfaulted in the capture
  kernel's PCI enumeration here; ``test_faults.py::test_cpu_hot_remove``
  says the same of plain ``kexec -p``), and no CPU can be plugged after an
  unplug (``Hotplug.hot_remove_cpu``). The daemon's handling of an unplug is
  ``test_cpu_hot_remove``'s.

Every :data:`CHECK_EVERY` rounds the churn stops until the daemon is current
(``kexecd status`` exits 0) and its RSS and open fds are read from
``/proc/PID``. Asserted: the daemon is the same process throughout, no reload
failed, RSS grows by at most 2 MiB and the number of fds stays the same from
the first check to the last, and a final crash (virtio-mem and a DIMM left
plugged) dumps every ``System RAM`` range of ``/proc/iomem`` outside the crash
area, with a note per online CPU.

``KEXECD_SOAK_EVENTS`` sets how many uevents (default 1,000; the README's
longer run used more). Figures go to ``$KEXECD_VM_CACHE/results/soak.json``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from testbed import assets
from testbed.vm import Guest, Machine
from tests.vm.captures import VMEM_APPEND
from tests.vm.conftest import _guest
from tests.vm.test_relocate import system_ram

pytestmark = pytest.mark.vm

STATE = "/run/kexecd-state"
EVENTS = int(os.environ.get("KEXECD_SOAK_EVENTS", "1000"))
VMEM_MIB = 1024
DIMM_MIB = 256
DIMM_EVERY = 4
CHECK_EVERY = 10
RSS_GROWTH_KIB = 2048
SOAK = Machine(
    smp=2,
    maxcpus=3,
    mem_mib=1024,
    slots=4,
    maxmem_mib=1024 + VMEM_MIB + 4 * DIMM_MIB,
    virtio_mem_mib=VMEM_MIB,
)


@pytest.fixture
def soak_guest(request: pytest.FixtureRequest) -> Iterator[Guest]:
    yield from _guest(request, request.node.name, machine=SOAK, append=list(VMEM_APPEND))


def _status(guest: Guest) -> int | None:
    return guest.run(["kexecd", "status", "--state-dir", STATE], check=False).rc


def _settle(guest: Guest, timeout: float = 60.0) -> float:
    """Wait until ``kexecd status`` exits 0; return how long that took (s)."""
    start = time.monotonic()
    deadline = start + timeout
    while _status(guest) != 0:
        if time.monotonic() > deadline:
            log = guest.run(["tail", "-n", "40", "/run/kexecd.log"], check=False).stdout
            raise AssertionError(f"status never became current after the churn:\n{log}")
        time.sleep(0.3)
    return time.monotonic() - start


def _usage(guest: Guest, pid: int) -> tuple[int, int]:
    """The daemon's RSS (KiB) and number of open fds."""
    status = guest.read(f"/proc/{pid}/status")
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert m, status
    fds = int(guest.sh(f"ls /proc/{pid}/fd | wc -l").strip())
    return int(m.group(1)), fds


def _sample(guest: Guest, pid: int, start: float) -> tuple[dict[str, float], dict[str, Any]]:
    """Stop the churn until the daemon is current, then read it: a sample of
    its figures (time since ``start``, events, reloads, settle time, RSS,
    fds) and its whole state."""
    settle_s = _settle(guest)
    rss, fds = _usage(guest, pid)
    st = guest.daemon_state()
    sample = {
        "t_s": round(time.monotonic() - start, 1),
        "events": st["events"],
        "reloads": st["reloads"],
        "settle_s": round(settle_s, 2),
        "rss_kib": rss,
        "fds": fds,
    }
    return sample, st


def _less(ranges: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ranges`` (start, end exclusive) less every one of ``holes``."""
    for h0, h1 in holes:
        cut = []
        for lo, hi in ranges:
            cut += [(a, b) for a, b in ((lo, min(hi, h0)), (max(lo, h1), hi)) if a < b]
        ranges = cut
    return ranges


def test_daemon_soaks_under_hotplug_churn(soak_guest: Guest) -> None:
    guest = soak_guest
    guest.kexecd_load(STATE)
    pid = guest.start_daemon(STATE)
    cpu = guest.hot_add_cpu()
    guest.set_cpu_online(cpu)
    _settle(guest)
    samples: list[dict[str, float]] = []
    rounds = 0
    start = time.monotonic()
    while guest.daemon_state()["events"] < EVENTS:
        rounds += 1
        guest.resize_virtio_mem(VMEM_MIB)
        guest.set_cpu_online(cpu, False)
        if rounds % DIMM_EVERY == 0:
            s, e = guest.hot_add_memory(DIMM_MIB)  # onlined movable by the kernel
            (name,) = [n for n, r in guest.dimms.items() if r == (s, e)]
            guest.hot_remove_memory(name)
        guest.resize_virtio_mem(0)
        guest.set_cpu_online(cpu, True)
        if rounds % CHECK_EVERY == 1:
            samples.append(_sample(guest, pid, start)[0])
    # The end state: virtio-mem half plugged, a DIMM, the extra CPU online.
    vmem = guest.resize_virtio_mem(VMEM_MIB // 2)
    s, e = guest.hot_add_memory(DIMM_MIB)
    sample, st = _sample(guest, pid, start)
    samples.append(sample)
    facts: dict[str, object] = {
        "rounds": rounds,
        "churn_s": round(time.monotonic() - start, 1),
        "daemon": {k: st[k] for k in ("events", "reloads", "full_reloads", "skipped", "failed")},
        "samples": samples,
    }
    iomem = guest.read("/proc/iomem")
    crash_area = [
        (int(a, 16), int(b, 16) + 1)
        for a, b in re.findall(r"^\s*([0-9a-f]+)-([0-9a-f]+) : Crash kernel", iomem, re.M)
    ]
    online = len(guest.online_cpus())
    running = guest.run(["kill", "-0", str(pid)], check=False).rc == 0
    vmcore = guest.crash()
    results = assets.cache_dir() / "results"
    results.mkdir(exist_ok=True)
    (results / "soak.json").write_text(json.dumps(facts, indent=2))
    print(f"\nsoak: {json.dumps(facts)}")

    assert running, "the daemon is gone"
    assert st["events"] >= EVENTS and st["failed"] == 0 and st["full_reloads"] == 0, st
    assert len(samples) >= 3, samples
    first, last = samples[0], samples[-1]
    assert last["rss_kib"] - first["rss_kib"] <= RSS_GROWTH_KIB, samples
    assert last["fds"] == first["fds"], samples
    # The dump: every System RAM range above 1 MiB (x86's kexec-tools maps
    # the first 640 KiB to its backup segment) less the crash area,
    # virtio-mem's and the DIMM's included, and a note per online CPU.
    for lo, hi in _less(system_ram(iomem), [(0, 1 << 20), *crash_area]):
        assert vmcore.covers(lo, hi), (hex(lo), hex(hi), vmcore.loads)
    assert vmem and all(vmcore.covers(a, b) for a, b in vmem)
    assert vmcore.covers(s, e)
    assert vmcore.prstatus == online
