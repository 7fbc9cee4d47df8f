# SPDX-License-Identifier: GPL-2.0-or-later
"""Runs inside the test-bed guest: the floor of kexec-tools' own layout.

    python -m bench.guest_floor STATE_DIR ROUNDS

``kexec_load`` of the snapshot's segments exactly as kexec-tools laid them
out (before kexecd's first reload cuts the kernel segment:
:mod:`kexecd.image.trim`), ``ROUNDS`` times; prints the milliseconds of each
as a JSON list. The image loaded at the end is the one loaded before.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from kexecd import core
from kexecd.image.store import open_snapshot
from testbed.guest_safety import require_guest


def main(argv: list[str]) -> int:
    state, rounds = Path(argv[0]), int(argv[1])
    require_guest("time kexec_load")
    snap = open_snapshot(state)
    out = []
    for _ in range(rounds):
        t = time.monotonic()
        core.kexec_load(snap.entry, snap.flags, snap.segments)
        out.append((time.monotonic() - t) * 1000)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
