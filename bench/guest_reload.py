# SPDX-License-Identifier: GPL-2.0-or-later
"""Runs inside the test-bed guest: time three ways to update the crash kernel.

    python -m bench.guest_reload STATE_DIR STALE_HEADER ROUNDS -- KEXEC_ARGV...

Before each ``kexecd refresh`` the snapshot's loaded header is set back to
STALE_HEADER (the one loaded before the hotplug), so every round really
reloads. Prints one JSON object: seconds per round for each way.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kexecd import core
from kexecd.image.store import open_snapshot
from testbed.guest_safety import require_guest


def main(argv: list[str]) -> int:
    state, stale, rounds = Path(argv[0]), Path(argv[1]), int(argv[2])
    kexec = argv[4:] if argv[3] == "--" else argv[3:]
    require_guest("time kexec_load and kexec -p")
    loaded = state / "snapshot" / "loaded-header.bin"
    out: dict[str, list[float]] = {
        "refresh_cli": [],
        "refresh_inner": [],
        "unload_load": [],
        "bare": [],
    }
    for _ in range(rounds):
        shutil.copyfile(stale, loaded)
        t = time.monotonic()
        p = subprocess.run(
            ["kexecd", "refresh", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            check=True,
        )
        out["refresh_cli"].append(time.monotonic() - t)
        m = re.search(r"done in (\d+) ms", p.stdout)
        assert m, p.stdout
        out["refresh_inner"].append(int(m.group(1)) / 1000)

        # Debian kdump-tools' per-event path: unload, then kexec -p.
        t = time.monotonic()
        subprocess.run(["kexec", "-p", "-u"], check=True)
        subprocess.run(kexec, check=True)
        out["unload_load"].append(time.monotonic() - t)

        # The floor: kexec_load of the same segments, nothing else.
        snap = open_snapshot(state)
        segs = snap.segments
        t = time.monotonic()
        core.kexec_load(snap.entry, snap.flags, segs)
        out["bare"].append(time.monotonic() - t)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
