# SPDX-License-Identifier: GPL-2.0-or-later
"""``make bench``: every benchmark, side by side with its baseline, in one run.

P1 (update latency), P4 (idle cost) and P6 (start-up) in one guest, P2 (a
64-block burst) in two and at 256 blocks in a third, P3 (header build) and P7
(refresh work) on the host, the kernel's own update on Linux 6.12 as the
anchor, crash to capture with the kernel segment cut and kept (six
guests), and P1 on the real Debian 12 host against its floors and
``kdump-config reload``. Prints each table and one SUMMARY line
per figure; writes ``bench/results/results.json`` and ``bench/results/hotplug.png``.

    .venv/bin/python -m bench.run_all [--rounds N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench import bench_capture, bench_debian_host, bench_header, bench_hotplug, bench_refresh

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="P1 and P6 runs per case (median)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    start = time.monotonic()
    results = bench_hotplug.p1_p4(n=args.rounds)
    results["p2"] = bench_hotplug.p2()
    # 256 blocks: eight 4 GiB DIMMs (kexecd only; the per-event path's cost
    # grows with the blocks, as the 64-block run shows).
    results["p2_256"] = bench_hotplug.p2(dimms=8, dimm_mib=4096, baseline=False)
    results["anchor"] = bench_hotplug.anchor_612(n=args.rounds)
    results["capture"] = bench_capture.capture_times(rounds=3)
    results["debian_host"] = bench_debian_host.measure(n=5)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    bench_hotplug.chart(results, args.out / "hotplug.png")
    print("\n".join(bench_hotplug.summarize(results)))
    print("\n".join(bench_capture.summarize(results["capture"])))
    print("\n".join(bench_debian_host.summarize(results["debian_host"])))
    bench_header.main(["--rounds", "30"])
    bench_refresh.main(["--rounds", "15"])
    took = time.monotonic() - start
    chart = args.out / "hotplug.png"
    shown = chart.relative_to(REPO) if chart.is_relative_to(REPO) else chart
    print(f"(all benchmarks took {took:.0f} s; chart: {shown})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
