# SPDX-License-Identifier: GPL-2.0-or-later
"""The header engine against a real kernel and real kexec-tools.

In the guest: load kdump, hot-add memory and a CPU, then build the header
with ``kexecd inspect --system`` (from the header loaded before, and fresh)
and compare it, byte for byte, with what a fresh ``kexec -p`` passes to
kexec_load.
"""

from __future__ import annotations

import pytest

from testbed.vm import Guest

pytestmark = pytest.mark.vm


def test_inspect_system_equals_fresh_kexec_after_hotplug(guest: Guest) -> None:
    before = guest.capture_load("before").header_path
    start, end = guest.hot_add_memory(512)
    guest.set_memory_online(start, end)
    guest.set_cpu_online(guest.hot_add_cpu())

    share = guest.run_dir / "share"
    mine = share / "mine.bin"
    guest.run(["kexecd", "inspect", "--system", "--template", str(before), "--output", str(mine)])
    after = guest.capture_load("after")
    assert mine.read_bytes() == after.header
    assert mine.read_bytes() != before.read_bytes()

    # Fresh, from /proc/kcore and kallsyms, given where the backup segment went.
    fresh = share / "fresh.bin"
    backup = hex(after.backup_start)
    guest.run(["kexecd", "inspect", "--system", "--backup-start", backup, "-o", str(fresh)])
    assert fresh.read_bytes() == after.header

    # The human form names the new range and CPU.
    out = guest.run(["kexecd", "inspect", str(mine)]).stdout
    assert "CPU notes (3):" in out
    assert f"{start:#014x}-{end - 1:#014x}" in out
