# SPDX-License-Identifier: GPL-2.0-or-later
"""Taking over a crash kernel loaded the distro's way, in the guest, proven by real crashes.

The guest has no kdump-tools; ``Guest.kdump_tools_load`` does what its
``kdump-config load`` does: ``eval $KEXEC_CMD``, then the command into
``kexec_cmd``.
"""

from __future__ import annotations

import re
import shlex
import time

import pytest

from testbed.vm import Guest
from tests.vm.test_daemon import wait_current

pytestmark = pytest.mark.vm

STATE = "/run/kexecd-state"
KEXEC_CMD = "/run/crash/kexec_cmd"


def hot_add(guest: Guest) -> tuple[tuple[int, int], int]:
    mem = guest.hot_add_memory(512)
    guest.set_memory_online(*mem)
    cpu = guest.hot_add_cpu()
    guest.set_cpu_online(cpu)
    return mem, cpu


def adopt(guest: Guest) -> str:
    res = guest.run(["kexecd", "adopt", "--kexec-cmd", KEXEC_CMD, "--state-dir", STATE])
    m = re.search(r"replayed in (\d+) ms.*then: (\S+): .* \((\d+) ms\)", res.stdout, re.S)
    assert m, res.stdout
    print(f"\nadopt: {res.seconds * 1000:.0f} ms wall, replay {m[1]} ms, then {m[2]} in {m[3]} ms")
    return res.stdout


def test_load_through_a_grandchild(guest: Guest) -> None:
    # (a) The kexec_load is made by a child of the shell kexecd runs.
    script = shlex.join(guest.kexec_argv()) + "; true"
    out = guest.run(["kexecd", "load", "--state-dir", STATE, "--", "sh", "-c", script]).stdout
    assert "header is segment 5, room for 291 program headers" in out
    (start, end), cpu = hot_add(guest)
    out = guest.run(["kexecd", "refresh", "--state-dir", STATE]).stdout
    assert f"+ CPU {cpu}" in out and f"+ {start:#x}-{end - 1:#x} (512 MiB)" in out
    vmcore = guest.crash()
    assert vmcore.covers(start, end) and vmcore.prstatus == 3


def test_adopt_then_the_daemon_keeps_the_dump_whole(guest: Guest) -> None:
    # (b) The distro loads; kexecd adopts; hotplug with the daemon running.
    line = guest.kdump_tools_load(KEXEC_CMD)
    out = adopt(guest)
    assert f"took over the crash kernel of: {line}" in out
    assert "then: nothing: the loaded header is current" in out
    rc = guest.run(["kexecd", "status", "--state-dir", STATE], check=False)
    assert rc.rc == 0 and f"adopted from   {KEXEC_CMD}" in rc.stdout
    guest.start_daemon(STATE)
    (start, end), _cpu = hot_add(guest)
    wait_current(guest)
    vmcore = guest.crash()
    assert vmcore.covers(start, end) and vmcore.prstatus == 3


def test_adopt_after_a_hotplug_the_distro_missed(guest: Guest) -> None:
    # (c) Loaded at boot, then memory and a CPU came and nothing reloaded (the
    # distro's rule masked). Right after adopt, with no refresh, it is whole.
    guest.kdump_tools_load(KEXEC_CMD)
    (start, end), _cpu = hot_add(guest)
    adopt(guest)
    rc = guest.run(["kexecd", "status", "--state-dir", STATE], check=False)
    assert rc.rc == 0, rc.stdout
    vmcore = guest.crash()
    assert vmcore.covers(start, end) and vmcore.prstatus == 3


def test_daemon_adopts_at_start_and_after_the_distro_reloads(guest: Guest) -> None:
    # The daemon finds the distro's load at start, and a 'kdump-config reload'
    # (unload, load, kexec_cmd rewritten) while it runs; then keeps it current.
    guest.kdump_tools_load(KEXEC_CMD)
    guest.sh(f"printf 'kexec_cmd = \"{KEXEC_CMD}\"\\n' >/run/kexecd.conf")
    t = time.monotonic()
    guest.start_daemon(STATE, config="/run/kexecd.conf")
    print(f"\ndaemon start to first state (adopted): {(time.monotonic() - t) * 1000:.0f} ms")
    st = guest.daemon_state()
    assert st["adoptions"] == 1 and st["last_update"]["action"] == "adopt"
    guest.sh("kexec -p -u")
    guest.kdump_tools_load(KEXEC_CMD)
    deadline = time.monotonic() + 60
    while guest.daemon_state()["adoptions"] < 2:
        assert time.monotonic() < deadline, guest.read("/run/kexecd.log")
        time.sleep(0.5)
    u = guest.daemon_state()["last_update"]
    print(f"re-adopted after the distro's reload in {u['work_ms']:.0f} ms")
    (start, end), _cpu = hot_add(guest)
    wait_current(guest)
    vmcore = guest.crash()
    assert vmcore.covers(start, end) and vmcore.prstatus == 3
