# SPDX-License-Identifier: GPL-2.0-or-later
"""A package upgrade with the daemon running, then a purge, on the real Debian 12 host.

The host of ``test_debian_host.py`` (kdump-tools loads at boot, kexecd.service
adopts) runs the package as the test bed built it. Then, in one boot:

1. a CPU is hot-added; ``kexecd status`` exits 0;
2. ``apt-get install`` of the next version (:func:`testbed.debpkg.ensure_next_deb`:
   the version one up, ``state.json``'s format one up) runs while a loop in
   the guest runs ``kexecd status`` over and over and a 1 GiB DIMM is
   hot-added: no status exits 2 or 3 (the old and the new ``status`` each
   meet the other version's ``state.json`` during the window:
   :class:`kexecd.errors.StateFormatError` is no error);
3. the package restarted the daemon (a new pid, the new format in
   ``state.json``), the udev mask is in place, another CPU is hot-added,
   status 0;
4. ``apt-get purge kexecd``: no file of kexecd is left on the disk or in
   /run, kdump-tools' rule is unmasked, the crash kernel kexecd loaded is
   still loaded;
5. a crash: kdump-tools' capture path writes the dump, which holds the
   pattern written into the DIMM hot-added during the upgrade and a note
   per CPU.

Figures go to ``$KEXECD_VM_CACHE/results/debian-host-upgrade.json``.
"""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from kexecd.service.statefile import FORMAT
from testbed import assets, debpkg
from testbed.debian_host import HostImage
from testbed.vm import Guest
from tests.vm.test_debian_host import (
    MASK,
    PATTERN_PAGES,
    Outcome,
    _adopted,
    _boot,
    _check_dump,
    _crash_and_read,
    _wait,
    _write_pattern,
)

pytestmark = pytest.mark.vm

NEXT = "/root/kexecd-next.deb"
TESTBED = re.compile(r"kexecd-testbed|kexecd-host|org\.kexecd\.agent")


def _online(guest: Guest, start: int, end: int) -> None:
    bs = guest.memory_block_size()
    for block in range(start // bs, end // bs):
        state = f"/sys/devices/system/memory/memory{block}/state"
        if guest.read(state).strip() != "online":
            guest.sh(f"echo online_movable > {state}")


def _main_pid(guest: Guest) -> int:
    return int(guest.sh("systemctl show -p MainPID --value kexecd.service").strip())


def test_upgrade_with_the_daemon_running_then_purge(
    host_run: dict[str, Guest], host_image: HostImage
) -> None:
    deb = debpkg.ensure_next_deb()
    out = Outcome("upgrade")
    facts: dict[str, object] = {}
    guest = _boot(host_image, host_run, out.mode)
    out.boot_s = round(guest.boot_seconds, 1)
    _adopted(guest, out)
    old_version = guest.sh("dpkg-query -W -f='${Version}' kexecd").strip()
    pid = _main_pid(guest)
    # The pattern's DIMM is the only one: the writer's pages land in it.
    first = guest.hot_add_cpu()
    guest.set_cpu_online(first)
    _wait(guest, "kexecd status", "kexecd did not follow the first CPU")

    # The upgrade, with status asked over and over and a DIMM hot-added.
    encoded = base64.b64encode(deb.read_bytes()).decode()
    guest.run(["sh", "-c", f"base64 -d >{NEXT}"], input=encoded)
    guest.sh(
        # Each exit code, with "u" when status left the other version's state.json unread.
        "setsid sh -c 'while [ ! -e /run/upgrade.done ]; do kexecd status >/run/st.out 2>&1; "
        'rc=$?; grep -q "state unread" /run/st.out && rc=${rc}u; echo $rc >>/run/status.rcs; '
        "done' </dev/null >/dev/null 2>&1 &"
    )
    start = time.monotonic()
    guest.sh(
        f"setsid sh -c 'apt-get install -y {NEXT} >/run/upgrade.log 2>&1; "
        "echo $? >/run/upgrade.rc; touch /run/upgrade.done' </dev/null >/dev/null 2>&1 &"
    )
    during = guest.hot_add_memory(1024)
    _online(guest, *during)
    _wait(guest, "test -e /run/upgrade.done", "the upgrade did not finish", 600)
    facts["upgrade_s"] = round(time.monotonic() - start, 1)
    log = guest.read("/run/upgrade.log")
    assert guest.read("/run/upgrade.rc").strip() == "0", log
    assert "Traceback" not in log, log
    # One more status once the new daemon is up, then the loop's record.
    _wait(guest, "systemctl is-active kexecd.service", "kexecd.service is not active again")
    _wait(guest, "kexecd status", "the upgraded kexecd did not catch up")
    rcs = guest.read("/run/status.rcs").split()
    facts["status_rcs"] = {rc: rcs.count(rc) for rc in sorted(set(rcs))}
    version = guest.sh("dpkg-query -W -f='${Version}' kexecd").strip()
    facts["versions"] = [old_version, version]
    new_pid = _main_pid(guest)
    state = json.loads(guest.read("/run/kexecd/state.json"))
    facts["format"] = state["format"]
    assert version == debpkg.next_version(old_version), (old_version, version)
    assert new_pid not in (0, pid), (pid, new_pid)
    assert state["format"] == FORMAT + 1, state
    assert rcs and not {"2", "3", "2u", "3u"} & set(rcs), facts
    assert guest.sh(f"readlink {MASK}").strip() == "/dev/null"
    assert "Traceback" not in guest.sh("journalctl -b -u kexecd.service -o cat --no-pager")

    # After the upgrade: another CPU.
    cpu = guest.hot_add_cpu()
    guest.set_cpu_online(cpu)
    guest.sh("udevadm settle --timeout=120", timeout=150)
    _wait(guest, "kexecd status", "the upgraded kexecd did not follow the CPU")
    out.online_cpus = len(guest.online_cpus())
    pages = _write_pattern(guest, *during)

    # The purge: nothing of kexecd left, the distro's rule back.
    start = time.monotonic()
    purge = guest.run(["apt-get", "purge", "-y", "kexecd"], check=False, timeout=300)
    facts["purge_s"] = round(time.monotonic() - start, 1)
    assert purge.rc == 0, purge.stdout + purge.stderr
    left = guest.sh(
        "find / -xdev -name '*kexecd*' -not -path '/root/kexecd-next.deb' 2>/dev/null; "
        "find /run -name '*kexecd*' 2>/dev/null; ls -d /var/lib/kexecd /etc/kexecd* 2>/dev/null; "
        f"ls -l {MASK} 2>/dev/null; true"
    ).split("\n")
    # The test bed's own files (its agent and its virtio port, the host's name)
    # are not kexecd's.
    facts["left"] = [p for p in left if p and not TESTBED.search(p)]
    assert facts["left"] == [], facts["left"]
    assert guest.run(["dpkg-query", "-W", "kexecd"], check=False).rc != 0
    assert guest.read("/sys/kernel/kexec_crash_loaded").strip() == "1"

    elf = _crash_and_read(guest, out)
    _check_dump(elf, pages, during, out)
    out.notes.append(json.dumps(facts))
    results = assets.cache_dir() / "results"
    results.mkdir(exist_ok=True)
    (results / "debian-host-upgrade.json").write_text(
        json.dumps({"outcome": out.__dict__, **facts}, indent=2)
    )
    print(f"\nupgrade: {json.dumps(facts)} crash_to_dump_s={out.crash_to_dump_s}")
    assert out.pages_found == PATTERN_PAGES, out
    assert out.dimm_in_dump, out
    assert out.prstatus == out.online_cpus == 4, out
