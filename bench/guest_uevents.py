# SPDX-License-Identifier: GPL-2.0-or-later
"""Runs inside the test-bed guest: every CPU and memory kernel uevent, with
when it arrived (CLOCK_MONOTONIC, the daemon's clock), for P2's timeline.

    python -m bench.guest_uevents OUT.json STOPFILE

It listens as the daemon does (kernel uevents, the same filter) beside it, so
an event arrives here when it arrives there. Once STOPFILE exists it reads
what is left and writes OUT.json: ``{"done": true, "events": [[mono, action,
subsystem, devpath], ...]}``, whole (the host reads it over 9p).
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from pathlib import Path

from kexecd.service.monitor import UdevMonitor


def main(argv: list[str]) -> int:
    out, stop = Path(argv[0]), Path(argv[1])
    monitor = UdevMonitor("kernel")
    events: list[list[object]] = []
    _publish(out, events, done=False)  # the host waits for this: listening now
    while True:
        stopping = stop.exists()
        now = time.monotonic()
        events += [[now, e.action, e.subsystem, e.devpath] for e in monitor.drain()]
        if stopping:
            _publish(out, events, done=True)
            return 0
        select.select([monitor], [], [], 0.2)


def _publish(out: Path, events: list[list[object]], done: bool) -> None:
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"done": done, "events": events}))
    os.replace(tmp, out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
