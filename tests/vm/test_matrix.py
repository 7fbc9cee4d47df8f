# SPDX-License-Identifier: GPL-2.0-or-later
"""The reach matrix: kexecd on each Debian kernel with each kexec-tools that
loads crash kernels there, every scenario ended by a real crash.

Where the loaded header is the one kexecd must keep (``kexec_load`` without
``--hotplug``), kexecd refreshes it after hot-add and hot-remove, from the CLI
and from the daemon, and the refreshed header is byte-identical to the one
that kexec-tools version builds for the same system. Where the kernel keeps
the header itself (a file-loaded image, or ``kexec_load --hotplug``, both on
6.12), kexecd stands aside: no reload, and the kernel's own update makes the
dump whole. The whole existing VM suite covers 6.1 with 2.0.25.
"""

from __future__ import annotations

import time

import pytest

from testbed.vm import Guest
from tests.vm.conftest import Combo

pytestmark = pytest.mark.vm

STATE = "/run/kexecd-state"


# kexec_load images whose header kexecd keeps.
REFRESHED = [
    Combo("5.10", "2.0.20"),
    Combo("6.12", "2.0.25"),
    Combo("6.12", "2.0.29", ("-c",)),
]
# Images whose header the kernel keeps: 2.0.29 file-loads by default.
KERNEL_KEPT = [
    Combo("6.12", "2.0.29"),
    Combo("6.12", "2.0.29", ("-c", "--hotplug")),
]
# A file-loaded image on a kernel that does not update it (no crash_hotplug
# before 6.6): the kernel built its boot parameters and header, so kexecd can
# only load it again whole, with the command that loaded it.
RELOADED_WHOLE = [Combo("6.1", "2.0.25", ("-s",))]


def load(guest: Guest, combo: Combo) -> str:
    return guest.kexecd_load(STATE, options=combo.options, timeout=300)


def status(guest: Guest) -> tuple[int | None, str]:
    res = guest.run(["kexecd", "status", "--state-dir", STATE], check=False)
    return res.rc, res.stdout


def hot_add(guest: Guest) -> tuple[int, int]:
    start, end = guest.hot_add_memory(512)
    guest.set_memory_online(start, end)
    return start, end


def wait_current(guest: Guest, timeout: float = 90.0) -> None:
    """Wait until ``kexecd status`` says the loaded header is current (exit 0)
    and the daemon has no retry pending."""
    deadline = time.monotonic() + timeout
    while True:
        rc, out = status(guest)
        if rc == 0 and guest.daemon_state()["retry_in_s"] is None:
            return
        if time.monotonic() > deadline:
            log = guest.run(["cat", "/run/kexecd.log"], check=False).stdout
            raise AssertionError(f"status never became current:\n{out}\n--- log ---\n{log}")
        time.sleep(0.5)


@pytest.mark.parametrize("combo_guest", REFRESHED, ids=str, indirect=True)
def test_refresh_after_hot_add(combo_guest: tuple[Combo, Guest]) -> None:
    combo, g = combo_guest
    out = load(g, combo)
    assert (
        f"kexec-tools {combo.kexec_tools}"
        in g.run(["kexecd", "status", "--state-dir", STATE]).stdout
    ), out
    start, end = hot_add(g)
    cpu = g.hot_add_cpu()  # 6.12: with the test bed's ACPI table upgrade
    g.set_cpu_online(cpu)
    out = g.run(["kexecd", "refresh", "--state-dir", STATE]).stdout
    assert "reload the header and purgatory's digest: done in" in out
    assert f"+ {start:#x}-{end - 1:#x} (512 MiB)" in out and f"+ CPU {cpu}" in out
    ours = g.run_dir / "share" / "ours.bin"
    g.run(["cp", f"{STATE}/snapshot/loaded-header.bin", str(ours)])
    assert ours.read_bytes() == g.fresh_header(options=combo.options)
    assert status(g)[0] == 0
    vmcore = g.crash()
    assert vmcore.covers(start, end)
    assert vmcore.prstatus == 3


@pytest.mark.parametrize("combo_guest", REFRESHED, ids=str, indirect=True)
def test_refresh_after_hot_remove(combo_guest: tuple[Combo, Guest]) -> None:
    combo, g = combo_guest
    start, end = hot_add(g)
    load(g, combo)
    g.hot_remove_memory("dimm1")
    assert status(g)[0] == 1
    out = g.run(["kexecd", "refresh", "--state-dir", STATE]).stdout
    assert f"- {start:#x}-{end - 1:#x} (512 MiB)" in out
    vmcore = g.crash()
    assert not vmcore.overlaps(start, end)
    assert vmcore.prstatus == 2


@pytest.mark.parametrize("combo_guest", REFRESHED, ids=str, indirect=True)
def test_daemon_keeps_the_dump_whole(combo_guest: tuple[Combo, Guest]) -> None:
    combo, g = combo_guest
    first = hot_add(g)
    load(g, combo)
    g.start_daemon(STATE)
    second = hot_add(g)
    cpu = g.hot_add_cpu()
    g.set_cpu_online(cpu)
    g.hot_remove_memory("dimm1")
    wait_current(g)
    st = g.daemon_state()
    assert st["reloads"] >= 1 and st["full_reloads"] == 0 and st["failed"] == 0
    vmcore = g.crash()
    assert vmcore.covers(*second)
    assert not vmcore.overlaps(*first)
    assert vmcore.prstatus == 3


@pytest.mark.parametrize("combo_guest", KERNEL_KEPT, ids=str, indirect=True)
def test_stand_aside_where_the_kernel_keeps_the_header(combo_guest: tuple[Combo, Guest]) -> None:
    combo, g = combo_guest
    load(g, combo)
    assert g.read("/sys/devices/system/memory/crash_hotplug").strip() == "1"
    g.start_daemon(STATE)
    # A file load is loaded again once, at start, with acpi_no_memhotplug
    # appended to the line its command gives (the kernel keeps the header,
    # not the line); a kexec_load --hotplug image gets it in its segment.
    before = g.daemon_state()
    assert before["full_reloads"] + before["reloads"] <= 1 and before["failed"] == 0, before
    start, end = hot_add(g)
    cpu = g.hot_add_cpu()
    g.set_cpu_online(cpu)
    rc, out = status(g)
    assert rc == 0, out
    assert "the kernel keeps the header current" in out
    time.sleep(2)  # the events have reached the daemon: it did nothing with them
    st = g.daemon_state()
    assert st["events"] >= 1
    assert (st["reloads"], st["full_reloads"]) == (before["reloads"], before["full_reloads"])
    vmcore = g.crash()
    assert vmcore.covers(start, end)
    assert vmcore.prstatus == 3  # the kernel added the CPU's note itself


@pytest.mark.parametrize("combo_guest", RELOADED_WHOLE, ids=str, indirect=True)
def test_file_load_is_reloaded_whole(combo_guest: tuple[Combo, Guest]) -> None:
    combo, g = combo_guest
    load(g, combo)
    g.start_daemon(STATE)
    start, end = hot_add(g)
    wait_current(g)
    st = g.daemon_state()
    assert st["full_reloads"] >= 1 and st["failed"] == 0
    vmcore = g.crash()
    assert vmcore.covers(start, end)
