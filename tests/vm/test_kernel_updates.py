# SPDX-License-Identifier: GPL-2.0-or-later
"""Linux 6.12 keeps a file-loaded image's header itself; when it drops an
update (the kexec lock taken by another load during the hotplug), kexecd
loads the image again, and the dump is whole."""

from __future__ import annotations

import time

import pytest

from testbed.vm import Guest

pytestmark = pytest.mark.vm

STATE = "/run/kexecd-state"


def test_dropped_kernel_update_is_repaired(guest_612: Guest) -> None:
    g = guest_612
    argv = g.kexec_argv()
    g.run(["kexecd", "load", "--state-dir", STATE, "--", argv[0], "-s", *argv[1:]], timeout=300)
    assert g.read("/sys/devices/system/memory/crash_hotplug").strip() == "1"
    g.start_daemon(STATE)
    ranges = g.hot_add_memories([256] * 6)
    blocks = [b for s, e in ranges for b in g.memory_blocks(s, e)]
    # Another program loading and unloading a kexec reboot kernel holds the
    # kexec lock, so some of the kernel's own updates fail while blocks come online.
    g.sh(
        f"(for i in $(seq 40); do {argv[0]} -s -l {argv[2]} {argv[3]}; {argv[0]} -u; done) "
        ">/dev/null 2>&1 </dev/null & echo $! >/run/loop.pid"
    )
    for b in blocks:
        g.sh(f"echo online_movable > /sys/devices/system/memory/memory{b}/state")
        time.sleep(0.3)
    g.sh("kill $(cat /run/loop.pid) 2>/dev/null; true")
    assert "kexec_trylock() failed" in g.sh("dmesg | grep 'crash hp' || true")
    deadline = time.monotonic() + 120
    while True:  # the daemon's reloads (retried while the lock was busy) settle
        st = g.daemon_state()
        if st["full_reloads"] >= 1 and st["in_sync"] and st["retry_in_s"] is None:
            break
        assert time.monotonic() < deadline, st
        time.sleep(1)
    log = g.read("/run/kexecd.log")
    assert "the kernel dropped an update" in log
    # A last "kexec_trylock() failed" of the killed loop can come after that:
    # one more whole reload, during which the kernel holds no crash image
    # (kexec_file_load() frees the old one before it loads the new), so
    # status may say "not loaded" for that moment; it must settle to 0.
    deadline = time.monotonic() + 60
    while (status := g.run(["kexecd", "status", "--state-dir", STATE], check=False)).rc != 0:
        log = g.read("/run/kexecd.log")
        assert time.monotonic() < deadline, f"{status.stdout}\n--- log ---\n{log[-6000:]}"
        time.sleep(1)
    # And quiet before the crash: nothing loaded, failed or heard for 5 s. A
    # late drop makes one more whole reload, and kexec_file_load() frees the
    # old image before it loads the new one, holding the kexec lock
    # (kernel/kexec_file.c): a panic in that window finds no image to boot
    # (seen once in CI: "Rebooting in 1 seconds.." and no dump).
    deadline, last, quiet = time.monotonic() + 120, None, time.monotonic()
    while True:
        st = g.daemon_state()
        now = (st["events"], st["reloads"], st["full_reloads"], st["failed"], st["retry_in_s"])
        if now != last:
            last, quiet = now, time.monotonic()
        elif time.monotonic() - quiet >= 5 and st["in_sync"] and st["retry_in_s"] is None:
            break
        assert time.monotonic() < deadline, st
        time.sleep(1)
    assert g.read("/sys/kernel/kexec_crash_loaded").strip() == "1"
    vmcore = g.crash()
    for start, end in ranges:
        assert vmcore.covers(start, end), (start, end)
