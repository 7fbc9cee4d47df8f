# SPDX-License-Identifier: GPL-2.0-or-later
"""What the hotplug benchmarks share: the daemon's state directory in the
guest, waiting on the guest, the per-event baseline, verdicts."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testbed.vm import Guest

__all__ = [
    "STATE",
    "baseline_records",
    "history_len",
    "main_of",
    "start_baseline",
    "verdict",
    "wait",
]

STATE = "/run/kexecd-state"


def history_len(g: Guest) -> int:
    return len(g.daemon_state()["history"])


def wait(pred: Any, what: str, g: Guest, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise g.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def baseline_records(out: Path) -> list[dict[str, Any]]:
    """The baseline's records so far (the file is replaced whole; a read that
    still catches it half-seen over 9p is tried again)."""
    for _ in range(50):
        try:
            records: list[dict[str, Any]] = json.loads(out.read_text())["reloads"]
            return records
        except (ValueError, KeyError, FileNotFoundError):
            time.sleep(0.1)
    raise RuntimeError(f"{out}: not the baseline's JSON after 5 s")


def start_baseline(g: Guest, name: str) -> tuple[Path, str]:
    out = g.run_dir / "share" / f"{name}.json"
    stop = f"/run/{name}.stop"
    argv = " ".join(f"'{a}'" for a in g.kexec_argv())
    g.sh(
        f"setsid {sys.executable} -m bench.guest_baseline {out} {stop} -- {argv} "
        f">/run/{name}.log 2>&1 </dev/null &"
    )
    wait(lambda: out.exists() and baseline_records(out) is not None, "the baseline listener", g)
    return out, stop


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def main_of(
    argv: list[str],
    doc: str,
    rounds: int,
    measure: Callable[[int], dict[str, Any]],
    summarize: Callable[[dict[str, Any]], list[str]],
) -> int:
    """A guest benchmark's command line: ``--rounds N`` (default ``rounds``)
    and ``--json FILE``; runs ``measure``, prints ``summarize``'s lines."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    r = measure(args.rounds)
    print("\n".join(summarize(r)))
    if args.json:
        Path(args.json).write_text(json.dumps(r))
    return 0
