# SPDX-License-Identifier: GPL-2.0-or-later
"""Reload cost in the test-bed guest: kexecd refresh vs unload + kexec -p vs bare kexec_load.

Boots the guest, loads kdump with ``kexecd load``, hot-adds 512 MiB and a
CPU, then times, in the same guest run, ``rounds`` of each:

* ``kexecd refresh`` (the command's wall time, and the time it reports
  itself, without Python's start-up);
* ``kexec -p -u && kexec -p ...``, what Debian's kdump-tools does per event;
* a bare ``kexec_load`` of the same segments (the floor).

    .venv/bin/python -m bench.bench_reload [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from testbed.vm import boot


def measure(rounds: int) -> dict[str, list[float]]:
    guest = boot("bench-reload")
    try:
        state = "/run/kexecd-state"
        argv = guest.kexec_argv()
        guest.run(["kexecd", "load", "--state-dir", state, "--", *argv])
        stale = guest.run_dir / "share" / "stale-header.bin"
        guest.run(["cp", f"{state}/snapshot/loaded-header.bin", str(stale)])
        mem = guest.hot_add_memory(512)
        guest.set_memory_online(*mem)
        guest.set_cpu_online(guest.hot_add_cpu())
        res = guest.python(
            "-m",
            "bench.guest_reload",
            state,
            str(stale),
            str(rounds),
            "--",
            *argv,
            timeout=60 + 30 * rounds,
        )
        result: dict[str, list[float]] = json.loads(res.stdout)
        return result
    finally:
        guest.close()


def report(r: dict[str, list[float]]) -> list[str]:
    med = {k: statistics.median(v) * 1000 for k, v in r.items()}
    n = len(r["bare"])
    lines = [
        f"reload after hot-adding 512 MiB and a CPU, in the guest (TCG), median of {n}",
        f"  kexec -p -u && kexec -p (kdump-tools)   {med['unload_load']:8.0f} ms",
        f"  kexecd refresh, command wall time        {med['refresh_cli']:8.0f} ms"
        f"   {med['unload_load'] / med['refresh_cli']:5.1f}x faster",
        f"  kexecd refresh, its own work             {med['refresh_inner']:8.0f} ms"
        f"   {med['unload_load'] / med['refresh_inner']:5.1f}x faster",
        f"  bare kexec_load of the same segments     {med['bare']:8.0f} ms"
        f"   (refresh work is {med['refresh_inner'] / med['bare']:.1f}x the floor)",
        f"SUMMARY reload: kexecd refresh {med['refresh_cli']:.0f} ms wall "
        f"({med['refresh_inner']:.0f} ms of work), unload+load {med['unload_load']:.0f} ms, "
        f"bare kexec_load {med['bare']:.0f} ms",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print("\n".join(report(measure(args.rounds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
