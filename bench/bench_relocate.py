# SPDX-License-Identifier: GPL-2.0-or-later
"""A header that outgrew its segment: kexecd's move vs kexec-tools' full reload,
and the memory a header holds, kexecd's growth policy vs the kernel's static size.

Boots a guest whose RAM 60 reserved pages split into 61 ranges, loads kdump
with ``kexecd load`` (kexec-tools' 16 KiB header: 291 program headers), hot-
adds 240 DIMMs (309 program headers wanted), then times, in the same run,
``rounds`` of each:

* ``kexecd refresh`` from the snapshot taken before the hotplug: the header
  moves (one ``kexec_load``; the command's wall time, and its own work);
* ``kexec -p -u && kexec -p ...``: what kexecd would fall back to without the
  move, and what Debian's kdump-tools does per event.

Then it boots bookworm-backports' 6.12 and reads ``crash_elfcorehdr_size``:
the header memory the kernel's own crash hotplug sets aside for every host
(CONFIG_CRASH_MAX_MEMORY_RANGES), against what kexecd's policy holds at 4,
64 and 1024 RAM ranges (:func:`kexecd.image.relocate.grown_memsz`).

    .venv/bin/python -m bench.bench_relocate [--rounds N]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time

from kexecd.arch.x86_64 import X86_64
from kexecd.image import relocate
from testbed.vm import Machine, boot

HOLES = 60
DIMMS = 240
MACHINE = Machine(mem_mib=2048, slots=DIMMS, maxmem_mib=2048 + DIMMS * 128)
APPEND = [
    "memhp_default_state=offline",
    "memory_hotplug.memmap_on_memory=1",  # the DIMMs' struct pages on themselves
    *(f"memmap=4K${0x1000_0000 + i * 0x10_0000:#x}" for i in range(HOLES)),
]
STATE = "/run/kexecd-state"
# Two CPU notes, vmcoreinfo and the kernel text besides the RAM ranges.
OTHER_PHDRS = 4

_ROUND = """
set -e
rm -rf {state}; cp -a {state}.0 {state}
t0=$(date +%s%N); out=$(kexecd refresh --state-dir {state}); t1=$(date +%s%N)
kexec -p -u; {kexec}; t2=$(date +%s%N)
echo "$out" | grep -o 'done in [0-9]* ms'
echo "wall $(( (t1 - t0) / 1000000 )) full $(( (t2 - t1) / 1000000 ))"
"""


def measure(rounds: int) -> dict[str, list[float]]:
    """Milliseconds per round: the move's wall time and work, the full reload."""
    guest = boot("bench-relocate", machine=MACHINE, append=APPEND)
    out: dict[str, list[float]] = {"move_cli": [], "move_inner": [], "full": []}
    try:
        argv = guest.kexec_argv()
        guest.run(["kexecd", "load", "--state-dir", STATE, "--", *argv])
        guest.sh(f"cp -a {STATE} {STATE}.0")
        guest.hot_add_memories([128] * DIMMS, timeout=600)
        kexec = " ".join(f"'{a}'" for a in argv)
        for _ in range(rounds):
            text = guest.sh(_ROUND.format(state=STATE, kexec=kexec), timeout=300)
            inner = re.search(r"done in (\d+) ms", text)
            times = re.search(r"wall (\d+) full (\d+)", text)
            assert inner and times, text
            out["move_inner"].append(float(inner.group(1)))
            out["move_cli"].append(float(times.group(1)))
            out["full"].append(float(times.group(2)))
    finally:
        guest.close()
    return out


def kernel_static_size() -> int:
    """``/sys/kernel/crash_elfcorehdr_size`` of bookworm-backports' 6.12."""
    guest = boot("bench-relocate-612", kernel_version="6.12")
    try:
        return int(guest.read("/sys/kernel/crash_elfcorehdr_size"))
    finally:
        guest.close()


def policy_size(ranges: int) -> int:
    """The header segment kexecd holds for ``ranges`` RAM ranges: kexec-tools'
    16 KiB, doubled by :func:`relocate.grown_memsz` each time it runs out."""
    memsz = X86_64.min_header_memsz
    need = ranges + OTHER_PHDRS
    while relocate.capacity(memsz) < need:
        memsz = relocate.grown_memsz(X86_64, need, memsz)
    return memsz


def report(r: dict[str, list[float]], static: int) -> list[str]:
    med = {k: statistics.median(v) for k, v in r.items()}
    n = len(r["full"])
    lines = [
        f"header outgrown: {DIMMS} DIMMs on {HOLES + 1} boot ranges, in the guest (TCG), "
        f"median of {n}",
        f"  kexec -p -u && kexec -p (full reload)   {med['full']:8.0f} ms",
        f"  kexecd refresh, moving the header, wall {med['move_cli']:8.0f} ms"
        f"   {med['full'] / med['move_cli']:5.1f}x faster",
        f"  kexecd refresh, its own work            {med['move_inner']:8.0f} ms"
        f"   {med['full'] / med['move_inner']:5.1f}x faster",
        "header memory: kexecd's growth policy vs the kernel's static size (6.12)",
    ]
    for ranges in (4, 64, 1024):
        ours = policy_size(ranges)
        lines.append(
            f"  {ranges:5d} RAM ranges: kexecd {ours:8d} bytes, kernel {static:8d} bytes"
            f"   {static / ours:5.1f}x less"
        )
    lines.append(
        f"SUMMARY relocate: move {med['move_cli']:.0f} ms wall ({med['move_inner']:.0f} ms of "
        f"work), full reload {med['full']:.0f} ms: {med['full'] / med['move_cli']:.1f}x; "
        f"header memory at 64 ranges {policy_size(64)} bytes vs {static}: "
        f"{static / policy_size(64):.0f}x less"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    start = time.monotonic()
    r = measure(args.rounds)
    print("\n".join(report(r, kernel_static_size())))
    print(f"({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
