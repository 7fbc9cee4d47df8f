# SPDX-License-Identifier: GPL-2.0-or-later
"""P1 on the real Debian 12 host: kexecd.service against the floor and kdump-tools.

The adopted host of ``tests/vm/test_debian_host.py`` (systemd, udev,
kdump-tools' own initrd, the .deb installed), restored from its saved state.
In the one guest, by the guest's CLOCK_MONOTONIC:

* the floor of kdump-tools' layout: a bare ``kexec_load`` of the adopted
  snapshot's segments as kexec-tools laid them out (before any reload);
* kexecd.service, sandboxed as shipped: from the first uevent of a 128 MiB
  DIMM plugged (and of its removal) to the new image loaded, and that load's
  own ``kexec_load`` (the lowered floor: the daemon's first reload cuts the
  kernel segment, :mod:`kexecd.image.trim`);
* the same daemon run from a shell, outside the unit's sandbox (seccomp,
  ``ProtectProc=``, the mount namespace): what the sandbox costs;
* ``kdump-config reload`` run from a shell, the distro's reload that works
  (unload, then ``kexec -p`` with its initrd).

    .venv/bin/python -m bench.bench_debian_host [--rounds N]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

from bench.guestio import main_of, verdict, wait
from testbed import debian_host, debpkg, saved
from testbed.vm import Guest
from tests.vm.test_debian_host import settle_adopted

__all__ = ["measure", "summarize"]

STATE = "/run/kexecd/state.json"
TARGET = 1.1
# Bare kexec_loads by the installed package (the guest has no checkout),
# refused outside a test-bed guest: the snapshot's kernel segment with the
# memsz kexec-tools gave it (init_size: its layout; the digest is not checked
# until a crash) and as kexecd loads it (cut: the snapshot, adopted and cut by
# the amending reload), alternately, the snapshot's own loaded last.
_FLOOR = """
import json, sys, time
from dataclasses import replace
from pathlib import Path
if "kexecd.testbed=1" not in open("/proc/cmdline").read().split():
    sys.exit("refusing to kexec_load: not the test bed's guest")
from kexecd import core
from kexecd.image.store import open_snapshot
snap = open_snapshot(Path("/var/lib/kexecd"))
segs = list(snap.segments)
k, extent = snap.kernel_extent
long = list(segs)
long[k] = replace(segs[k], memsz=max(extent, segs[k].memsz))
out = {"kexec_tools": [], "cut": [], "memsz": [segs[k].memsz, long[k].memsz]}
for _ in range(int(sys.argv[1])):
    for name, image in (("kexec_tools", long), ("cut", segs)):
        t = time.monotonic()
        core.kexec_load(snap.entry, snap.flags, image)
        out[name].append((time.monotonic() - t) * 1000)
print(json.dumps(out))
"""


def _history(g: Guest) -> list[dict[str, Any]]:
    h: list[dict[str, Any]] = json.loads(g.read(STATE))["history"]
    return h


def _reload_after(g: Guest, before: int, what: str) -> dict[str, Any]:
    def grown() -> dict[str, Any] | None:
        h = _history(g)
        return h[-1] if len(h) > before else None

    rec: dict[str, Any] = wait(grown, f"kexecd's reload after {what}", g)
    return rec


def _cycles(g: Guest, n: int) -> dict[str, list[float]]:
    """``n`` DIMMs plugged and unplugged one at a time: first uevent to loaded
    and that load's kexec_load, ms."""
    out: dict[str, list[float]] = {"p1": [], "load": []}

    def sample(before: int, what: str) -> None:
        rec = _reload_after(g, before, what)
        out["p1"].append((rec["done_mono"] - rec["first_event_mono"]) * 1000)
        out["load"].append(rec["load_ms"])

    bs = g.memory_block_size()
    for _ in range(n):
        time.sleep(1.0)  # a lone event: after the daemon's quiet period
        before = len(_history(g))
        start, end = g.hot_add_memory(128)
        sample(before, "a DIMM plugged")
        # udev leaves the blocks offline: online them movable, so that they
        # can go again (no header change: no reload).
        for b in range(start // bs, end // bs):
            state = f"/sys/devices/system/memory/memory{b}/state"
            if g.read(state).strip() != "online":
                g.sh(f"echo online_movable > {state}")
        time.sleep(1.0)
        before = len(_history(g))
        g.hot_remove_memory(next(k for k, v in g.dimms.items() if v == (start, end)))
        sample(before, "a DIMM unplugged")
    return out


def measure(n: int = 5) -> dict[str, Any]:
    """One restored Debian 12 host; every figure of the module's docstring."""
    image = debian_host.host_image(debpkg.ensure_deb())
    g = saved.settled_host(image, "bench-debian-host", settle_adopted)
    res: dict[str, Any] = {"n": n}
    try:
        floor = json.loads(g.run(["python3", "-c", _FLOOR, str(n)], timeout=300).stdout)
        res["floor_kexec_tools"], res["floor_cut"] = floor["kexec_tools"], floor["cut"]
        res["cut"] = floor["memsz"][1] - floor["memsz"][0]
        res["unit"] = _cycles(g, n)
        # The same daemon outside the unit: stopped (its mask removed), then
        # run from a shell with the same settings; it finds its snapshot adopted.
        # kdump-tools' rule masked by hand meanwhile, as the unit does.
        g.sh("systemctl stop kexecd.service && kexecd mask")
        g.sh("setsid /usr/bin/kexecd run >/run/kexecd-shell.log 2>&1 </dev/null &")
        wait(lambda: _ready(g), "the shell daemon's first reconcile", g)
        res["shell"] = _cycles(g, n)
        g.sh("pkill -TERM -f '^/usr/bin/kexecd run'; sleep 1; kexecd unmask")
        out = g.sh(
            f"for i in $(seq {n}); do a=$(cat /proc/uptime); kdump-config reload >/dev/null "
            "2>&1; b=$(cat /proc/uptime); echo ${a%% *} ${b%% *}; done",
            timeout=120 * n,
        )
        res["kdump_config_reload"] = [
            (float(b) - float(a)) * 1000 for a, b in (line.split() for line in out.splitlines())
        ]
    finally:
        g.close()
    return res


def _ready(g: Guest) -> bool:
    # The shell daemon published its first state (its start reconcile is done).
    res = g.run(["sh", "-c", f"test -s {STATE} && kexecd status"], check=False)
    return res.rc == 0


def summarize(r: dict[str, Any]) -> list[str]:
    """The table and one SUMMARY line, each ratio from the same run."""
    med = statistics.median
    unit, shell = r["unit"], r["shell"]
    p1, floor_old = med(unit["p1"]), med(r["floor_kexec_tools"])
    floor = med(r.get("floor_cut", unit["load"]))
    reload = med(r["kdump_config_reload"])
    lines = [
        f"P1 on the real Debian 12 host (kdump-tools' initrd), median of {len(unit['p1'])} "
        "DIMM adds and removals (ms)",
        f"  kexecd.service (sandboxed)          {p1:8.0f}  "
        f"({min(unit['p1']):.0f}-{max(unit['p1']):.0f}), of which kexec_load "
        f"{med(unit['load']):.0f}",
        f"  kexecd run from a shell             {med(shell['p1']):8.0f}  "
        f"({min(shell['p1']):.0f}-{max(shell['p1']):.0f}), of which kexec_load "
        f"{med(shell['load']):.0f}",
        f"  bare kexec_load, kdump-tools' layout {floor_old:7.0f}  "
        f"({min(r['floor_kexec_tools']):.0f}-{max(r['floor_kexec_tools']):.0f})",
        f"  bare kexec_load, the kernel cut     {floor:8.0f}  "
        f"({min(r.get('floor_cut', [floor])):.0f}-{max(r.get('floor_cut', [floor])):.0f})",
        f"  kdump-config reload from a shell    {reload:8.0f}  "
        f"({min(r['kdump_config_reload']):.0f}-{max(r['kdump_config_reload']):.0f})",
        f"SUMMARY P1 Debian host: kexecd.service {p1:.0f} ms from the first uevent to loaded; "
        f"kdump-tools' layout floor {floor_old:.0f} ms: {p1 / floor_old:.2f}x, target <= "
        f"{TARGET}x: {verdict(p1 / floor_old <= TARGET)}; the lowered floor (the kernel "
        f"segment cut by {r['cut'] >> 20} MiB) {floor:.0f} ms: {p1 / floor:.2f}x, target <= "
        f"{TARGET}x: {verdict(p1 / floor <= TARGET)}; kdump-config reload {reload:.0f} ms "
        f"({reload / p1:.1f}x kexecd); the unit's sandbox "
        f"{p1 - med(shell['p1']):+.0f} ms against the same daemon from a shell",
    ]
    return lines


def main(argv: list[str]) -> int:
    return main_of(argv, __doc__ or "", 5, measure, summarize)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
