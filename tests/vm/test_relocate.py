# SPDX-License-Identifier: GPL-2.0-or-later
"""The header moved by kexecd (``kexecd grow``, and a refresh when it outgrows
its segment), proven by real crashes: the crash kernel is told the new place
(``elfcorehdr=``), keeps its hands off it (its memory map), and dumps whole."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from bench.bench_relocate import APPEND, DIMMS, MACHINE
from testbed.vm import Guest, TestbedError
from tests.vm.conftest import Combo, _guest

pytestmark = pytest.mark.vm

STATE = "/run/kexecd-state"


def system_ram(iomem: str) -> list[tuple[int, int]]:
    """Every 'System RAM' line of /proc/iomem as (start, end exclusive)."""
    return [
        (int(a, 16), int(b, 16) + 1)
        for a, b in re.findall(r"^\s*([0-9a-f]+)-([0-9a-f]+) : System RAM", iomem, re.M)
    ]


# Where the header is moved and a crash proves it: the suite's 6.1 with
# 2.0.25, and the kexec-tools versions whose setup segment differs (2.0.20:
# no RNG setup_data, so setup is segment 2 and the command line at +0x3e00;
# 2.0.29 -c on 6.12).
MOVED = [
    Combo("6.1", "2.0.25"),
    Combo("5.10", "2.0.20"),
    Combo("6.12", "2.0.29", ("-c",)),
]


@pytest.mark.parametrize("combo_guest", MOVED, ids=str, indirect=True)
def test_grow_then_hotplug_then_crash(combo_guest: tuple[Combo, Guest]) -> None:
    combo, g = combo_guest
    g.kexecd_load(STATE, options=combo.options, timeout=300)
    before = g.run(["kexecd", "status", "--state-dir", STATE]).stdout
    old = int(re.search(r"program headers, at (0x[0-9a-f]+)", before).group(1), 16)  # type: ignore[union-attr]
    out = g.run(["kexecd", "grow", "--capacity", "8192", "--state-dir", STATE]).stdout
    m = re.search(r"to (\d+) program headers: move it to (0x[0-9a-f]+) \((\d+) bytes\)", out)
    assert m, out
    room, mem, memsz = int(m.group(1)), int(m.group(2), 16), int(m.group(3))
    assert room >= 8192 and mem != old and "done in" in out
    status = g.run(["kexecd", "status", "--state-dir", STATE]).stdout
    assert f"of {room} program headers, at {mem:#x}" in status
    start, end = g.hot_add_memory(512)
    g.set_memory_online(start, end)
    cpu = g.hot_add_cpu()  # 6.12: with the test bed's ACPI table upgrade
    g.set_cpu_online(cpu)
    out = g.run(["kexecd", "refresh", "--state-dir", STATE]).stdout
    assert "reload the header and purgatory's digest: done in" in out  # in place now
    vmcore = g.crash()
    assert vmcore.covers(start, end) and vmcore.prstatus == 3
    cmdline, iomem = g.crash_kernel_view()
    assert f"elfcorehdr={mem >> 10}K" in cmdline.split()
    # The crash kernel took none of the header's range as RAM, and took the
    # old place back.
    ram = system_ram(iomem)
    assert not any(s < mem + memsz and mem < e for s, e in ram), iomem
    assert any(s <= old < e for s, e in ram), iomem


# The control experiments: the same move with one of its parts left out.
_CONTROL = """
import sys
from pathlib import Path
from kexecd.arch.x86_64 import X86_64, bootparams
from kexecd.image.refresher import Refresher, Request
from kexecd.image.store import Store

part = sys.argv[1]


def repoint(segments, header, new):
    line = bootparams.find(segments)
    setup = bytes(segments[line.segment].buf)
    if part != "move_line":
        setup = X86_64.line_moved(setup, line, new[0])
    if part != "move_map":
        setup = X86_64.map_moved(setup, segments[header], new)
    return {line.segment: setup}


X86_64.repoint = repoint
r = Refresher(Store(Path(sys.argv[2]))).refresh(Request(grow=8192))
assert r.relocated is not None, r.decision
print("%#x %d" % r.relocated[1:])
"""


def _moved_without(g: Guest, part: str) -> tuple[int, int, tuple[int, int]]:
    g.kexecd_load(STATE)
    mem, memsz = map(lambda w: int(w, 0), g.python("-c", _CONTROL, part, STATE).stdout.split())
    start, end = g.hot_add_memory(512)
    g.set_memory_online(start, end)
    out = g.run(["kexecd", "refresh", "--state-dir", STATE]).stdout
    assert "reload the header and purgatory's digest: done in" in out
    return mem, memsz, (start, end)


def test_control_command_line_left_naming_the_old_place(guest: Guest) -> None:
    # The crash kernel looks for the header at the old place, where nothing
    # put one (fs/proc/vmcore.c: "Warning: Core image elf header not found"):
    # no /proc/vmcore, no dump at all.
    mem, _, _ = _moved_without(guest, "move_line")
    with pytest.raises(TestbedError, match="the crash kernel sent no vmcore"):
        guest.crash()
    console = guest.console_log.read_text(errors="replace")
    crash_line = [line for line in console.splitlines() if "Command line:" in line][-1]
    assert "kexecd.crash=1" in crash_line and f"elfcorehdr={mem >> 10}K" not in crash_line
    assert "Warning: Core image elf header not found" in console
    assert "Kdump: vmcore not initialized" in console


def test_control_memory_map_left_as_it_was(guest: Guest) -> None:
    # The crash kernel is handed the header's new place as RAM of its own,
    # and x86 will not read old memory there: __copy_oldmem_page()'s ioremap
    # warns "ioremap on RAM" and fails (arch/x86/mm/ioremap.c), so
    # elfcorehdr_read() fails: no /proc/vmcore, no dump at all.
    mem, _, _ = _moved_without(guest, "move_map")
    with pytest.raises(TestbedError, match="the crash kernel sent no vmcore"):
        guest.crash()
    console = guest.console_log.read_text(errors="replace")
    crash_line = [line for line in console.splitlines() if "Command line:" in line][-1]
    assert f"elfcorehdr={mem >> 10}K" in crash_line.split()
    assert f"ioremap on RAM at {mem:#018x}" in console
    assert "Kdump: vmcore not initialized" in console


# A real overflow: the loaded header (kexec-tools' 16 KiB: 291 program
# headers) cannot list what the guest has after 240 hot-added DIMMs (each its
# own "System RAM" resource) on top of RAM that 60 reserved pages split into
# 61 ranges at boot (the benchmark's machine).


@pytest.fixture
def overflow_guest(request: pytest.FixtureRequest) -> Iterator[Guest]:
    yield from _guest(request, request.node.name, machine=MACHINE, append=APPEND)


def test_daemon_moves_an_outgrown_header_on_its_own(overflow_guest: Guest) -> None:
    g = overflow_guest
    g.kexecd_load(STATE)
    g.start_daemon(STATE)
    ranges = g.hot_add_memories([128] * DIMMS, timeout=600)
    deadline = time.monotonic() + 300
    while True:
        rc = g.run(["kexecd", "status", "--state-dir", STATE], check=False)
        st = g.daemon_state()
        # status may make its verdict itself (the daemon busy past its answer
        # timeout) as soon as the kernel holds the new header, a moment before
        # the daemon publishes state.json: wait for the published move too.
        if rc.rc == 0 and st["retry_in_s"] is None and st["moves"] >= 1:
            break
        assert time.monotonic() < deadline, (rc.stdout, st)
        time.sleep(1)
    assert st["full_reloads"] == 0 and st["failed"] == 0  # no kexec-tools run
    assert st["moves"] == 1 and st["reloads"] >= 1  # the one move, counted
    log = g.read("/run/kexecd.log")
    assert "program headers) and reload it with purgatory's digest" in log
    m = re.search(r"of (\d+) program headers, at (0x[0-9a-f]+)", rc.stdout)
    assert m and int(m.group(1)) > 291, rc.stdout
    vmcore = g.crash()
    assert len(vmcore.phdrs) > 291
    for start, end in ranges:
        assert vmcore.covers(start, end), (start, end)
    assert vmcore.prstatus == 2
