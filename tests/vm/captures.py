# SPDX-License-Identifier: GPL-2.0-or-later
"""Ground-truth captures: what kexec-tools read and what it passed to kexec_load.

``python -m tests.vm.captures [DIR]`` (``make captures``) boots one guest and
writes three captures to DIR (default ``tests/data``):

* ``boot``: right after boot (2 CPUs, 1 GiB);
* ``hotadd``: after hot-adding one CPU and two 512 MiB DIMMs, all onlined;
* ``hotremove``: after offlining and unplugging the first DIMM.

Each is ``root/`` (a fake root) plus ``load/`` (the kexec_load arguments), as
:mod:`testbed.guest_capture` writes them, and ``scenario.json`` saying what
was plugged where.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from testbed.vm import Guest, boot

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


def capture(guest: Guest, out: Path, scenario: dict[str, Any]) -> dict[str, Any]:
    """Capture the guest's state and a traced ``kexec -p`` into ``out``."""
    made = guest.capture_load(out.name)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(made.path, out)
    (out / "scenario.json").write_text(json.dumps(scenario, indent=2) + "\n")
    return made.manifest


def make_captures(dest: Path = DATA) -> list[Path]:
    """Boot a guest, hotplug, and capture the three states into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    guest = boot("captures")
    try:
        out = [dest / "boot", dest / "hotadd", dest / "hotremove"]
        capture(guest, out[0], {"cpus_online": guest.online_cpus(), "dimms": {}})
        cpu = guest.hot_add_cpu()
        guest.set_cpu_online(cpu)
        for _ in range(2):
            start, end = guest.hot_add_memory(512)
            guest.set_memory_online(start, end)
        dimms = {k: [hex(s), hex(e)] for k, (s, e) in guest.dimms.items()}
        capture(
            guest,
            out[1],
            {"cpus_online": guest.online_cpus(), "added_cpu": cpu, "dimms": dimms},
        )
        removed = guest.hot_remove_memory("dimm1")
        dimms = {k: [hex(s), hex(e)] for k, (s, e) in guest.dimms.items()}
        capture(
            guest,
            out[2],
            {
                "cpus_online": guest.online_cpus(),
                "dimms": dimms,
                "removed": [hex(removed[0]), hex(removed[1])],
            },
        )
        return out
    finally:
        guest.close()


def main(argv: list[str]) -> int:
    dest = Path(argv[0]) if argv else DATA
    for path in make_captures(dest):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
