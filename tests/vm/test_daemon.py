# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd run`` in the guest: hotplug over QMP, no manual step, a whole dump."""

from __future__ import annotations

import time

import pytest

from testbed.vm import Guest

pytestmark = pytest.mark.vm

STATE = "/run/kexecd-state"


def status(guest: Guest, *extra: str) -> tuple[int | None, str]:
    res = guest.run(["kexecd", "status", "--state-dir", STATE, *extra], check=False)
    return res.rc, res.stdout


def wait_current(guest: Guest, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        rc, out = status(guest)
        if rc == 0:
            return out
        if time.monotonic() > deadline:
            log = guest.run(["cat", "/run/kexecd.log"], check=False).stdout
            raise AssertionError(f"status never became current:\n{out}\n--- log ---\n{log}")
        time.sleep(0.5)


def test_daemon_keeps_the_dump_whole(guest: Guest) -> None:
    guest.kexecd_load(STATE)
    guest.start_daemon(STATE)
    start, end = guest.hot_add_memory(512)
    guest.set_memory_online(start, end)
    cpu = guest.hot_add_cpu()
    guest.set_cpu_online(cpu)
    out = wait_current(guest)
    assert out.startswith("crash kernel   loaded and current")
    assert "daemon         pid " in out
    st = guest.daemon_state()
    assert st["reloads"] >= 1 and st["failed"] == 0
    assert st["last_update"]["latency_ms"] < 2000
    vmcore = guest.crash()
    assert vmcore.covers(start, end)
    assert vmcore.prstatus == 3


def test_burst_of_sixteen_blocks_is_at_most_two_reloads(guest: Guest) -> None:
    guest.kexecd_load(STATE)
    guest.start_daemon(STATE)
    dimms = [guest.hot_add_memory(1024) for _ in range(2)]
    blocks = [b for s, e in dimms for b in guest.memory_blocks(s, e)]
    assert len(blocks) == 16
    guest.sh(
        "for b in " + " ".join(map(str, blocks)) + "; do "
        "echo online_movable > /sys/devices/system/memory/memory$b/state & done; wait"
    )
    out = wait_current(guest)
    time.sleep(1.5)  # let every event land and settle
    st = guest.daemon_state()
    assert st["events"] >= 32  # 16 add + 16 online
    assert 1 <= st["reloads"] <= 2 and st["full_reloads"] == 0 and st["failed"] == 0
    out = status(guest)[1]
    assert f"{st['events']} events, {st['reloads']} reloads, 0 full" in out


def test_stale_while_down_then_reconciled_after_sigkill(guest: Guest) -> None:
    guest.kexecd_load(STATE)
    pid = guest.start_daemon(STATE)
    guest.sh(f"kill -KILL {pid}")
    start, end = guest.hot_add_memory(512)
    guest.set_memory_online(start, end)
    # (d) With the daemon down, status says stale and names the range.
    rc, out = status(guest)
    assert rc == 1
    assert out.startswith("crash kernel   STALE")
    assert (
        f"differs        + {start:#x}-{end - 1:#x} (512 MiB)  (missing from the loaded header)"
        in out
    )
    # (c) Started again, it reconciles at once.
    guest.start_daemon(STATE)
    wait_current(guest, timeout=30)
    assert guest.daemon_state()["last_update"]["why"] == "start"
    vmcore = guest.crash()
    assert vmcore.covers(start, end)
