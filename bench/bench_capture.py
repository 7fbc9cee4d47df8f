# SPDX-License-Identifier: GPL-2.0-or-later
"""Crash to capture, with the kernel segment as kexec-tools laid it out and cut.

At the crash, purgatory hashes every region it was given again before it
starts the capture kernel (kexec-tools purgatory/purgatory.c
verify_sha256_digest()); kexec-tools' regions include the kernel segment's
zero-filled tail up to ``init_size``, 58 MB for Debian's 6.1, which a reload
of kexecd's no longer loads (:mod:`kexecd.image.trim`). The same guest
recipe twice per round: ``kexecd load``, 128 MiB hot-added and onlined,
``kexecd refresh`` (with ``keep_kernel_memsz`` true for kexec-tools' layout,
false for the cut one), then sysrq-c; the time is from the panic request to
the capture kernel's dump sent and QEMU gone (host clock), and the dump is
checked to cover the new memory.

    .venv/bin/python -m bench.bench_capture [--rounds N]
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from bench.guestio import STATE, main_of
from testbed.vm import boot

__all__ = ["capture_times", "summarize"]

CONF = "/run/kexecd-bench.conf"


def one(cut: bool) -> float:
    """Seconds from sysrq-c to the dump, in one fresh guest."""
    g = boot(f"bench-capture-{'cut' if cut else 'kept'}")
    try:
        g.kexecd_load(STATE)
        g.sh(f"echo 'keep_kernel_memsz = {str(not cut).lower()}' > {CONF}")
        start, end = g.hot_add_memory(128)
        g.set_memory_online(start, end)
        out = g.run(["kexecd", "refresh", "--state-dir", STATE, "--config", CONF]).stdout
        if cut != ("from now on" in out):
            raise g.fail(f"the refresh did not {'cut' if cut else 'keep'} the kernel: {out}")
        t = time.monotonic()
        vmcore = g.crash()
        took = time.monotonic() - t
        if not vmcore.covers(start, end):
            raise g.fail("the dump misses the hot-added memory")
        return took
    finally:
        g.close()


def capture_times(rounds: int = 3) -> dict[str, Any]:
    """Crash-to-dump seconds, ``rounds`` of each layout, alternated."""
    res: dict[str, list[float]] = {"kept": [], "cut": []}
    for _ in range(rounds):
        for name, cut in (("kept", False), ("cut", True)):
            res[name].append(one(cut))
    return {"rounds": rounds, **res}


def summarize(r: dict[str, Any]) -> list[str]:
    med = statistics.median
    kept, cut = med(r["kept"]), med(r["cut"])
    return [
        f"crash to dump, 6.1 guest (TCG), median of {r['rounds']} (s)",
        f"  kexec-tools' layout (keep_kernel_memsz)   {kept:6.2f}  "
        f"({min(r['kept']):.2f}-{max(r['kept']):.2f})",
        f"  the kernel segment cut (default)          {cut:6.2f}  "
        f"({min(r['cut']):.2f}-{max(r['cut']):.2f})",
        f"SUMMARY capture: crash to dump {cut:.2f} s with the kernel cut, {kept:.2f} s with "
        f"kexec-tools' memsz ({kept - cut:+.2f} s; no target: what purgatory no longer hashes)",
    ]


def main(argv: list[str]) -> int:
    return main_of(argv, __doc__ or "", 3, capture_times, summarize)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
