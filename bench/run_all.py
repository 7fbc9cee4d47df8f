# SPDX-License-Identifier: GPL-2.0-or-later
"""``make bench``: every benchmark, side by side with its baseline, in one run.

P1 (update latency) and P4 (idle cost) in one guest, P2 (a 64-block burst)
in two, P3 (header build) on the host. Prints each table and one SUMMARY line
per figure; writes ``bench/results/results.json`` and ``bench/results/hotplug.png``.

    .venv/bin/python -m bench.run_all [--rounds N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench import bench_header, bench_hotplug

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="P1 runs per case (median)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    start = time.monotonic()
    results = bench_hotplug.p1_p4(n=args.rounds)
    results["p2"] = bench_hotplug.p2()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    bench_hotplug.chart(results, args.out / "hotplug.png")
    print("\n".join(bench_hotplug.summarize(results)))
    bench_header.main(["--rounds", "30"])
    took = time.monotonic() - start
    chart = args.out / "hotplug.png"
    shown = chart.relative_to(REPO) if chart.is_relative_to(REPO) else chart
    print(f"(all benchmarks took {took:.0f} s; chart: {shown})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
