# SPDX-License-Identifier: GPL-2.0-or-later
"""The Debian 12 host with kexecd upgraded to Debian 13, rebooted into 6.12,
judged by what lands in /var/crash (issue 25, item 3).

1. **Debian 12.** The adopted host of ``test_debian_host.py`` (restored:
   kdump-tools loaded the crash kernel with ``kexec_load``, kexecd.service
   adopted it and keeps its state in ``/var/lib/kexecd``) gets a 1 GiB DIMM:
   kexecd refreshes the header. Then the host powers off, as an
   administrator's does before an offline upgrade.
2. **The upgrade** (:mod:`testbed.debian_upgrade`): trixie's sources, ``apt-get
   full-upgrade`` of the guest's own disk in a chroot on the test bed's
   machine (native: about 1.5 min; the same upgrade live under TCG takes
   about 24, docs/debian13.md). Debian's maintainer scripts run as in a live
   upgrade; what they would start or restart at once waits for the boot.
   kexecd's package is not upgraded: the bookworm-built .deb stays, under
   Python 3.13 now.
3. **Debian 13.** The host boots the kernel the upgrade installed (6.12,
   with the initrd its postinst built; the trixie machine, whose ACPI tables
   let 6.12 hot-add a CPU under TCG). kdump-tools 1:1.10.7 loads the crash
   kernel the new way, a ``kexec_file_load`` (kexec-tools 2.0.29's ``kexec
   -p``), and kexecd follows without a hand on it: it adopts the new load
   (its Debian 12 snapshot replaced), appends ``acpi_no_memhotplug`` by
   loading it once more, stands aside because 6.12 keeps that image's header
   current, keeps kdump-tools' rule masked, ``kexecd status`` exits 0, no
   traceback in its journal. A DIMM and a CPU come: no load by kexecd, none
   by kdump-tools. A crash: the pattern in the new DIMM, a note per CPU.

Figures go to ``$KEXECD_VM_CACHE/results/debian-host-upgrade-12-13.json``.
"""

from __future__ import annotations

import json
import time

import pytest

from testbed import assets, debian_host, debian_upgrade
from testbed.debian_host import HostImage
from testbed.debian_suites import TRIXIE
from testbed.vm import Guest
from tests.vm.test_debian13_host import _counted_hotplug, _finish, _quiet, standing_aside
from tests.vm.test_debian_host import (
    DIMM_MIB,
    PATTERN_PAGES,
    Outcome,
    _boot,
    _journal,
    _kexecd_counts,
    _online,
    settle_adopted,
)

pytestmark = pytest.mark.vm

POWEROFF_TIMEOUT = 180.0


def _power_off(guest: Guest) -> None:
    """``systemctl poweroff`` in the guest; wait until QEMU exits."""
    # In a second: the agent answers first.
    guest.sh("(sleep 1; systemctl poweroff) >/dev/null 2>&1 </dev/null &")
    try:
        guest.proc.wait(POWEROFF_TIMEOUT)
    except Exception:
        raise guest.fail(f"the guest did not power off within {POWEROFF_TIMEOUT:.0f} s") from None
    guest.close()


def test_upgrade_to_trixie_then_the_dump_is_whole(
    host_run: dict[str, Guest], host_image: HostImage
) -> None:
    out = Outcome("upgrade-12-13")
    # (1) Debian 12, kexecd running: a DIMM, a header reload.
    guest = _boot(host_image, host_run, out)
    assert guest.sh("cat /etc/debian_version").startswith("12.")
    loads_before, _ = _kexecd_counts(guest)
    start, end = guest.hot_add_memory(DIMM_MIB)
    _online(guest, start, end)
    guest.sh("udevadm settle --timeout=120", timeout=150)
    _quiet(guest)
    assert _kexecd_counts(guest)[0] > loads_before
    assert guest.run(["kexecd", "status"], check=False).rc == 0
    assert guest.sh("ls /var/lib/kexecd").split(), "kexecd keeps no state on the disk"
    _power_off(guest)
    # (2) The upgrade, offline, of the guest's own disk.
    disk = guest.run_dir / "disk.img"
    kernel = debian_upgrade.upgrade_disk(disk, guest.run_dir / "upgrade")
    out.notes.append(f"upgrade: {kernel.seconds:.0f} s, kernel {kernel.kver}")
    assert kernel.kver.startswith("6.12."), kernel
    # (3) Debian 13: its new kernel and initrd, as a boot loader loads them.
    upgraded = HostImage(
        disk,
        assets.Kernel(
            f"linux-image-{kernel.kver}", kernel.vmlinuz, kernel.vmlinuz.parent / "no-modules"
        ),
        kernel.initrd,
        kernel.kver,
        TRIXIE,
    )
    started = time.monotonic()
    guest = debian_host.boot_host(upgraded, "debian-upgraded", disk=disk)
    host_run["upgraded"] = guest
    out.boot_s = round(guest.boot_seconds, 1)
    settle_adopted(guest)
    out.adopted_s = round(time.monotonic() - started, 1)
    # Where the first boot on the new kernel went (for the note).
    out.notes.append(guest.sh("systemd-analyze blame --no-pager | head -n 8 || true"))
    out.notes.append(guest.sh("journalctl -b -u kdump-tools -o short-monotonic --no-pager"))
    assert guest.sh("uname -r").strip() == kernel.kver
    assert guest.sh("cat /etc/debian_version").startswith("13.")
    versions = guest.sh(
        "dpkg-query -W -f '${Package} ${Version}\\n' kdump-tools kexec-tools kexecd"
    )
    out.notes.append(versions.strip())
    assert "kdump-tools 1:1.10." in versions, versions
    assert guest.sh("readlink -f /usr/bin/python3").strip().endswith("python3.13")
    # kdump-tools loaded the new way; kexecd adopted it, appended its word
    # and stands aside: the kernel keeps this header.
    standing_aside(guest, out)
    st = _quiet(guest)
    assert int(str(st["adoptions"])) >= 1, st
    log = "\n".join(_journal(guest, "kexecd"))
    assert "Traceback" not in guest.sh("journalctl -b -u kexecd -o cat --no-pager"), log[-3000:]
    # A DIMM and a CPU: the kernel updates the header; nobody reloads.
    kdump_before = len(_journal(guest, "kdump-config"))
    dimm, st = _counted_hotplug(guest, out)
    assert guest.run(["kexecd", "status"], check=False).rc == 0
    assert out.kexecd_events and out.kexecd_loads == 0, (out, st)
    new = _journal(guest, "kdump-config")[kdump_before:]
    _finish(guest, out, dimm)
    print(json.dumps({"notes": out.notes}))
    assert new == [], f"kdump-tools ran during the hotplug: {new}"
    assert "acpi_no_memhotplug" in out.crash_cmdline.split(), out
    assert out.pages_found == PATTERN_PAGES and out.dimm_in_dump, out
    assert out.prstatus == out.online_cpus == 3, out
