# SPDX-License-Identifier: GPL-2.0-or-later
"""``make demo``: show the stale crash dump that kexecd exists to fix.

Boots the test bed twice. Both times kdump is loaded at boot, then a CPU and
512 MiB are hot-added and onlined, and the kernel panics. The first time
nothing reloads the crash kernel; the second time ``kexec -p`` runs again
after the hotplug. Prints the two vmcores side by side.
"""

from __future__ import annotations

import sys

from tests.vm import scenarios


def main() -> int:
    print("booting the test bed: kdump loaded at boot, then hotplug, then a panic ...")
    stale = scenarios.run(reload_after_hotplug=False)
    print("... and again, with kexec -p re-run after the hotplug ...")
    fresh = scenarios.run(reload_after_hotplug=True)
    print()
    print(scenarios.side_by_side(stale, fresh))
    a, b = stale.added_range
    gap = not stale.vmcore.overlaps(a, b) and fresh.vmcore.covers(a, b)
    print()
    if gap:
        print(
            f"Without a reload the dump misses {(b - a) >> 20} MiB at {a:#x} and CPU "
            f"{stale.added_cpu}'s registers; kexecd's job is to close that gap."
        )
    return 0 if gap else 1


if __name__ == "__main__":
    sys.exit(main())
