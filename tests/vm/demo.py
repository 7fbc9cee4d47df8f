# SPDX-License-Identifier: GPL-2.0-or-later
"""``make demo``: the stale crash dump that kexecd exists to fix, and the fixes.

Boots the test bed three times. Each time kdump is loaded at boot, then a CPU
and 512 MiB are hot-added and onlined, and the kernel panics. The first time
nothing reloads the crash kernel; the second time ``kexec -p`` runs again
after the hotplug (unload first, as kdump-tools does); the third time
``kexecd run`` keeps it current. Prints the three vmcores side by side, with
how long each took from the hotplug to a current crash kernel.
"""

from __future__ import annotations

import sys

from tests.vm import scenarios


def main() -> int:
    print("booting the test bed: kdump loaded at boot, then hotplug, then a panic ...")
    stale = scenarios.run("stale")
    print("... again, with kexec -p re-run after the hotplug ...")
    reload = scenarios.run("reload")
    print("... and again, with kexecd run keeping the crash kernel current ...")
    kexecd = scenarios.run("kexecd")
    print()
    print(scenarios.side_by_side(stale, reload, kexecd))
    a, b = stale.added_range
    ok = not stale.vmcore.overlaps(a, b) and all(
        o.vmcore.covers(a, b) and o.vmcore.prstatus == len(o.cpus_online) for o in (reload, kexecd)
    )
    print()
    if ok:
        assert reload.update_seconds and kexecd.update_seconds
        print(
            f"Without a reload the dump misses {(b - a) >> 20} MiB at {a:#x} and CPU "
            f"{stale.added_cpu}'s registers. Reloading with kexec-tools took "
            f"{reload.update_seconds * 1000:.0f} ms with no crash kernel during the unload; "
            f"kexecd took {kexecd.update_seconds * 1000:.0f} ms from the first uevent."
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
