# SPDX-License-Identifier: GPL-2.0-or-later
"""kexecd's Debian package on a real Debian 13 kdump host, judged by what lands in /var/crash.

The guest is a stock trixie root (Linux 6.12, systemd 257, kdump-tools
1:1.10.7, kexec-tools 1:2.0.29, makedumpfile 1.7.6, Python 3.13) with the
same ``kexecd_*.deb`` as the Debian 12 host installed by ``apt-get install``
(:data:`testbed.debian_suites.TRIXIE`). It boots with QEMU's ACPI tables
upgraded, without which 6.12 under TCG cannot hot-add a CPU (FIELD-NOTES
section 11). The host is booted and settled once (kdump-tools loaded,
kexecd adopted), saved, and restored for each run; every run ends in a
real crash through kdump-tools' own capture path and reads the dump back:

* ``stock``: trixie's ``kexec -p`` is a file load (2.0.29 tries
  ``kexec_file_load`` first) that 6.12 keeps current itself. kexecd loads
  it again once, at adoption, with ``acpi_no_memhotplug`` appended to the
  line kdump-tools gives (without it the crash kernel takes hot-added
  memory as its own and makedumpfile fails: "Bad address"), then stands
  aside, keeping kdump-tools' per-event rule masked, while a DIMM and a CPU
  come. Then a program loading and unloading a kexec reboot kernel holds
  the kexec lock while more memory comes online, so 6.12 drops some of its
  own updates ("kexec_trylock() failed"): kexecd loads the image again,
  whole. The dump holds both DIMMs and the pattern.
* ``kexec-load``: ``KDUMP_KEXEC_ARGS="-c"`` in ``/etc/default/kdump-tools``
  and kdump-tools restarted, as an administrator does: kexecd adopts the new
  ``kexec_load`` image and refreshes its header itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from testbed.debian_host import HostImage
from testbed.vm import Guest
from tests.vm.test_debian_host import (
    MASK,
    PATTERN_PAGES,
    Outcome,
    _boot,
    _check_dump,
    _crash_and_read,
    _hotplug,
    _journal,
    _kexecd_counts,
    _record,
    _wait,
    _write_pattern,
)

pytestmark = pytest.mark.vm

CRASH_HOTPLUG = "/sys/devices/system/memory/crash_hotplug"
DEFAULTS = "/etc/default/kdump-tools"


def _state(guest: Guest) -> dict[str, object]:
    state: dict[str, object] = json.loads(guest.read("/run/kexecd/state.json"))
    return state


def _quiet(guest: Guest, seconds: float = 5.0, timeout: float = 180.0) -> dict[str, object]:
    """Wait until the daemon has heard, loaded and failed nothing for
    ``seconds``, is in sync and has no retry pending; return its state."""
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while True:
        st = _state(guest)
        now = (st["events"], st["reloads"], st["full_reloads"], st["failed"], st["retry_in_s"])
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds and st["in_sync"] and st["retry_in_s"] is None:
            return st
        if time.monotonic() > deadline:
            raise guest.fail(f"kexecd did not settle within {timeout:.0f} s: {st}")
        time.sleep(1)


def _loaded_by(guest: Guest) -> str:
    """The syscall of the crash kernel loaded now, as ``kexecd status`` names it."""
    image = [ln for ln in guest.sh("kexecd status").splitlines() if ln.startswith("image")]
    assert image, "kexecd status names no image"
    return "kexec_file_load" if "kexec_file_load" in image[0] else "kexec_load"


def _finish(guest: Guest, out: Outcome, dimm: tuple[int, int]) -> None:
    """The pattern in ``dimm``, the crash, the dump read back and recorded."""
    out.online_cpus = len(guest.online_cpus())
    pages = _write_pattern(guest, *dimm)
    elf = _crash_and_read(guest, out)
    _check_dump(elf, pages, dimm, out)
    _record(out)


def _counted_hotplug(guest: Guest, out: Outcome) -> tuple[tuple[int, int], dict[str, object]]:
    """1 GiB and a CPU hot-added and onlined (``test_debian_host._hotplug``);
    once kexecd is quiet, its loads and the uevents it heard go in ``out``.
    Returns the DIMM and the daemon's state."""
    loads_before, events_before = _kexecd_counts(guest)
    dimm = _hotplug(guest)
    st = _quiet(guest)
    loads, events = _kexecd_counts(guest)
    out.kexecd_loads, out.kexecd_events = loads - loads_before, events - events_before
    return dimm, st


def standing_aside(guest: Guest, out: Outcome) -> None:
    """kdump-tools' load is a file load whose header the kernel keeps:
    ``kexecd status`` says so (its text goes in ``out``), and kdump-tools'
    rule stays masked (a try-reload that worked would unload and reload the
    crash kernel for nothing, the kernel having updated it already)."""
    assert _loaded_by(guest) == "kexec_file_load"
    assert guest.read(CRASH_HOTPLUG).strip() == "1"
    status = guest.sh("kexecd status")
    out.notes.append(status.strip())
    assert "the kernel keeps the header current" in status, status
    assert guest.sh(f"readlink {MASK}").strip() == "/dev/null"


def _covered(elf_path: Path, start: int, end: int) -> bool:
    """Whether the dump's PT_LOADs hold all of [start, end)."""
    with elf_path.open("rb") as f:
        loads = [
            (s.header.p_paddr, s.header.p_paddr + s.header.p_memsz)
            for s in ELFFile(f).iter_segments()
            if s.header.p_type == "PT_LOAD"
        ]
    at = start
    for lo, hi in sorted(loads):
        if lo <= at < hi:
            at = hi
    return at >= end


def _drop_an_update(guest: Guest) -> tuple[str, tuple[int, int]]:
    """Hot-add 512 MiB DIMMs, at most two, while another program loading and
    unloading a kexec reboot kernel holds the kexec lock, until the kernel
    drops one of its own updates (kernel/crash_core.c: "crash hp:
    kexec_trylock() failed"); return its lines and the last DIMM."""
    kver = guest.sh("uname -r").strip()
    guest.sh(
        "(while [ ! -e /run/loop.stop ]; do "
        f"kexec -s -l /boot/vmlinuz-{kver} --initrd=/boot/initrd.img-{kver}; kexec -u; done) "
        ">/dev/null 2>&1 </dev/null & echo $! >/run/loop.pid"
    )
    dropped, dimm = "", (0, 0)
    for _ in range(2):
        dimm = guest.hot_add_memory(512)
        for block in guest.memory_blocks(*dimm):
            guest.sh(
                f"f=/sys/devices/system/memory/memory{block}/state; "
                'grep -qx online "$f" || echo online_movable >"$f"; sleep 0.3'
            )
        dropped = guest.sh("dmesg | grep 'crash hp: kexec_trylock() failed' || true")
        if dropped:
            break
    # The loop stopped, and its last load undone, before the daemon is judged.
    guest.sh(
        "touch /run/loop.stop; while kill -0 $(cat /run/loop.pid) 2>/dev/null; do sleep 0.2; done"
    )
    return dropped, dimm


def test_stock_trixie_kernel_keeps_the_header_and_kexecd_repairs_a_drop(
    host_run: dict[str, Guest], trixie_image: HostImage
) -> None:
    out = Outcome("trixie-stock")
    guest = _boot(trixie_image, host_run, out)
    out.adopted_s = None if guest.restored else round(guest.ready_seconds, 1)
    standing_aside(guest, out)
    # (1) A DIMM and a CPU: the kernel updates the header, kexecd loads nothing.
    kdump_before = len(_journal(guest, "kdump-config"))
    first, st = _counted_hotplug(guest, out)
    assert guest.run(["kexecd", "status"], check=False).rc == 0
    assert out.kexecd_events >= 1 and out.kexecd_loads == 0, (out, st)
    # (2) The kernel drops an update: kexecd loads the image again, whole.
    dropped, dimm = _drop_an_update(guest)
    assert dropped, "the kernel dropped no update: the test proves nothing"
    out.notes.append(dropped.strip())
    st = _quiet(guest)
    log = "\n".join(_journal(guest, "kexecd"))
    assert "the kernel dropped an update" in log, log[-3000:]
    assert int(str(st["full_reloads"])) >= 1, st
    assert guest.run(["kexecd", "status"], check=False).rc == 0
    assert guest.read("/sys/kernel/kexec_crash_loaded").strip() == "1"
    new = _journal(guest, "kdump-config")[kdump_before:]
    # The pattern in the first DIMM (the writer's pages land there); the
    # dropped update's DIMM must be in the dump's PT_LOADs.
    _finish(guest, out, first)
    assert new == [], f"kdump-tools ran during the hotplug: {new}"
    assert "acpi_no_memhotplug" in out.crash_cmdline.split(), out
    assert out.pages_found == PATTERN_PAGES and out.dimm_in_dump, out
    assert _covered(guest.run_dir / "vmcore.elf", *dimm), dimm
    assert out.prstatus == out.online_cpus == 3, out


def test_kexec_load_by_kdump_tools_is_refreshed(
    host_run: dict[str, Guest], trixie_image: HostImage
) -> None:
    out = Outcome("trixie-kexec-load")
    guest = _boot(trixie_image, host_run, out)
    pid = guest.sh("systemctl show -p MainPID --value kexecd").strip()
    # What an administrator does to have kexec_load: kdump-tools' own setting.
    # kexecd.service is PartOf= kdump-tools.service: restarted with it.
    guest.sh(f"echo 'KDUMP_KEXEC_ARGS=\"-c\"' >>{DEFAULTS} && systemctl restart kdump-tools")
    _wait(
        guest,
        "systemctl is-active kexecd && test -e /run/kexecd/state.json && kexecd status",
        "kexecd did not take the reloaded crash kernel",
        240,
    )
    assert guest.sh("systemctl show -p MainPID --value kexecd").strip() != pid
    assert int(str(_quiet(guest)["adoptions"])) == 1
    assert " -c " in guest.read("/var/crash/kexec_cmd")
    assert _loaded_by(guest) == "kexec_load"
    assert guest.read(CRASH_HOTPLUG).strip() == "0"
    assert guest.sh(f"readlink {MASK}").strip() == "/dev/null"
    kdump_before = len(_journal(guest, "kdump-config"))
    dimm, st = _counted_hotplug(guest, out)
    new = _journal(guest, "kdump-config")[kdump_before:]
    out.notes.append(guest.sh("kexecd status").strip())
    _finish(guest, out, dimm)
    assert new == [], f"kdump-tools ran during the hotplug: {new}"
    assert 1 <= out.kexecd_loads <= 2 and st["full_reloads"] == 0, (out, st)
    assert "acpi_no_memhotplug" in out.crash_cmdline.split(), out
    assert out.pages_found == PATTERN_PAGES, out
    assert out.dimm_in_dump and out.prstatus == out.online_cpus == 3, out
