# SPDX-License-Identifier: GPL-2.0-or-later
"""Runs inside the test-bed guest: the distro reload path, event by event.

Debian's kdump-tools reloads the whole crash kernel from a udev rule on CPU
add/remove and memory online/offline (``kdump-config try-reload``: unload,
then ``kexec -p``). This listener does the same for each kernel uevent, one
after the other, and records when each event arrived and when its unload and
load started and ended (CLOCK_MONOTONIC).

    python -m bench.guest_baseline OUT.json STOPFILE -- KEXEC_ARGV...

It writes OUT.json after every reload and stops once STOPFILE exists and no
event is pending.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from kexecd.service.monitor import UdevMonitor
from testbed.guest_safety import require_guest

TRIGGERS = {("cpu", "add"), ("cpu", "remove"), ("memory", "online"), ("memory", "offline")}


def main(argv: list[str]) -> int:
    out, stop = Path(argv[0]), Path(argv[1])
    kexec = argv[3:] if argv[2] == "--" else argv[2:]
    require_guest("run kexec -p for every hotplug event")
    monitor = UdevMonitor("kernel")
    records: list[dict[str, object]] = []
    pending: list[tuple[float, str, str]] = []
    _publish(out, records)
    while True:
        for ev in monitor.drain():
            if (ev.subsystem, ev.action) in TRIGGERS:
                pending.append((time.monotonic(), ev.action, ev.devpath))
        if not pending:
            if stop.exists():
                return 0
            select.select([monitor], [], [], 0.2)
            continue
        arrived, action, devpath = pending.pop(0)
        t0 = time.monotonic()
        subprocess.run(["kexec", "-p", "-u"], check=True)
        t1 = time.monotonic()
        subprocess.run(kexec, check=True)
        t2 = time.monotonic()
        records.append(
            {
                "event": f"{action} {devpath}",
                "arrived": arrived,
                "unload_start": t0,
                "unloaded": t1,
                "loaded": t2,
            }
        )
        _publish(out, records)


def _publish(out: Path, records: list[dict[str, object]]) -> None:
    # Whole or not at all: the host polls this file over 9p.
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"ready": True, "reloads": records}))
    os.replace(tmp, out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
