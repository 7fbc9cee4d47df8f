# SPDX-License-Identifier: GPL-2.0-or-later
"""Power cuts on the real Debian 12 host, at three points of kexecd's work.

The host of ``test_debian_host.py`` boots once from a fresh copy of its disk,
then again from the same disk after each cut. A cut: one of kexecd's
processes is held at a chosen system call by ``testbed/guest_stop_at.py``
(ptrace; the call never runs), and QEMU is killed with SIGKILL: no sync, the
guest's page cache lost, the disk as far as it got. The points:

* ``reload``: the daemon (kexecd.service's main pid) at the ``kexec_load`` of
  the header reload a hot-added CPU started, its intent recorded;
* ``move``: ``kexecd grow --capacity 8192`` at the creation of the second
  segment file it writes into the new snapshot (``.snapshot.new`` half
  written: the segments it changes are written, the others linked);
* ``adopt``: ``kexecd adopt`` of kdump-tools' crash kernel on a state
  directory emptied as after a first install (kexecd.service stopped), at
  the creation of its second segment file.

After each boot kdump-tools loads the crash kernel, kexecd.service starts,
recovers or adopts again by itself, and ``kexecd status`` exits 0 after a CPU
is hot-added; nothing is typed to repair anything. After the last one a DIMM
with a pattern and a crash: kdump-tools' dump holds the pattern and a note per
CPU. Figures go to ``$KEXECD_VM_CACHE/results/debian-host-power-cut.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed import assets, debian_host
from testbed.debian_host import HostImage
from testbed.vm import Guest
from tests.vm.test_debian_host import (
    DIMM_MIB,
    PATTERN_PAGES,
    Outcome,
    _check_dump,
    _crash_and_read,
    _wait,
    _write_pattern,
)

pytestmark = pytest.mark.vm

STOP_AT = Path(debian_host.__file__).with_name("guest_stop_at.py")
HELD = "/run/held"


def _boot(
    image: HostImage, runs: dict[str, Guest], name: str, disk: Path | None
) -> tuple[Guest, float]:
    """Boot (from ``disk``, if given); return the guest and how long it took
    until kexecd was current and its service active (s)."""
    start = time.monotonic()
    guest = debian_host.boot_host(image, f"power-cut-{name}", disk=disk)
    runs[name] = guest
    _wait(guest, "systemctl is-active kdump-tools.service", "kdump-tools.service did not load")
    _wait(guest, "kexecd status", "kexecd status did not exit 0 after boot", 240)
    _wait(guest, "systemctl is-active kexecd.service", "kexecd.service never became active")
    return guest, round(time.monotonic() - start, 1)


def _hot_add_cpu(guest: Guest) -> None:
    cpu = guest.hot_add_cpu()
    guest.set_cpu_online(cpu)
    guest.sh("udevadm settle --timeout=120", timeout=150)


def _cut(guest: Guest, stop: str, trigger: Callable[[], None] | None = None) -> tuple[str, Path]:
    """Hold a process at a call (``stop``: guest_stop_at.py's arguments), call
    ``trigger``, kill QEMU once the call is held; return what was held and the disk."""
    guest.run(["sh", "-c", "cat >/run/stop_at.py"], input=STOP_AT.read_text())
    guest.sh(
        f"setsid python3 /run/stop_at.py --ready {HELD} {stop} >/run/stop_at.log 2>&1 </dev/null &"
    )
    time.sleep(1)  # attached (pid mode) before the trigger
    if trigger:
        trigger()
    _wait(guest, f"test -s {HELD}", f"nothing was held ({stop})", 120)
    held = guest.read(HELD).strip()
    guest.proc.kill()  # the power cut: no sync
    guest.proc.wait()
    guest.close()
    return held, guest.run_dir / "disk.img"


def test_power_cuts_leave_nothing_to_repair(
    host_run: dict[str, Guest], host_image: HostImage
) -> None:
    facts: dict[str, object] = {}
    guest, facts["first_boot_s"] = _boot(host_image, host_run, "first", None)

    # 1. During a header reload: the daemon at its kexec_load.
    pid = guest.sh("systemctl show -p MainPID --value kexecd.service").strip()
    held, disk = _cut(guest, f"--syscall kexec_load --pid {pid}", lambda: _hot_add_cpu(guest))
    facts["reload"] = held
    guest, facts["after_reload_s"] = _boot(host_image, host_run, "after-reload", disk)
    _hot_add_cpu(guest)
    _wait(guest, "kexecd status", "kexecd did not follow a CPU after the reload cut")

    # 2. During a move: the new snapshot half written.
    held, disk = _cut(
        guest,
        "--syscall openat --match .seg- --nth 2 -- kexecd grow --capacity 8192",
    )
    facts["move"] = held
    assert held.endswith(".seg-01.bin.tmp") or held.endswith(".tmp"), held
    guest, facts["after_move_s"] = _boot(host_image, host_run, "after-move", disk)
    _hot_add_cpu(guest)
    _wait(guest, "kexecd status", "kexecd did not follow a CPU after the move cut")

    # 3. During an adoption, as on the first boot after installing the package.
    guest.sh("systemctl stop kexecd.service && rm -rf /var/lib/kexecd")
    held, disk = _cut(guest, "--syscall openat --match .seg- --nth 2 -- kexecd adopt")
    facts["adopt"] = held
    guest, facts["after_adopt_s"] = _boot(host_image, host_run, "after-adopt", disk)
    state = json.loads(guest.read("/run/kexecd/state.json"))
    facts["adoptions"] = state["adoptions"]
    assert state["adoptions"] >= 1 and state["failed"] == 0, state

    # The last boot: a CPU and a DIMM, the pattern, the crash.
    _hot_add_cpu(guest)
    dimm = guest.hot_add_memory(DIMM_MIB)
    bs = guest.memory_block_size()
    for block in range(dimm[0] // bs, dimm[1] // bs):
        path = f"/sys/devices/system/memory/memory{block}/state"
        if guest.read(path).strip() != "online":
            guest.sh(f"echo online_movable > {path}")
    guest.sh("udevadm settle --timeout=120", timeout=150)
    _wait(guest, "kexecd status", "kexecd did not follow the last hotplug")
    out = Outcome("power-cut")
    out.online_cpus = len(guest.online_cpus())
    pages = _write_pattern(guest, *dimm)
    elf = _crash_and_read(guest, out)
    _check_dump(elf, pages, dimm, out)
    results = assets.cache_dir() / "results"
    results.mkdir(exist_ok=True)
    record = {**facts, "crash_to_dump_s": out.crash_to_dump_s, "pages_found": out.pages_found}
    (results / "debian-host-power-cut.json").write_text(json.dumps(record, indent=2))
    print(f"\npower cut: {json.dumps(record)}")
    assert out.pages_found == PATTERN_PAGES, out
    assert out.prstatus == out.online_cpus == 3, out
