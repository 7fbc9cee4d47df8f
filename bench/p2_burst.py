# SPDX-License-Identifier: GPL-2.0-or-later
"""P2: a burst of DIMMs plugged back to back and onlined at once, under kexecd
and (for 64 blocks) under the per-event path.

The figures: reloads; from the first event until the loaded header matches
the system; time without a crash kernel loaded; and from the last event that
may change the header until the header is current, against the floor (one
``kexec_load``). When each uevent arrived is recorded beside the daemon by
``bench.guest_uevents``, on the same clock (the guest's CLOCK_MONOTONIC).
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.guestio import STATE, baseline_records, history_len, start_baseline, verdict, wait
from kexecd.service.config import Config
from kexecd.service.intake import changes_header
from kexecd.service.monitor import Event
from testbed.vm import Guest, Machine, boot

__all__ = ["P2_OVER_FLOOR_MS", "p2", "p2_figures", "p2_line"]

P2_OVER_FLOOR_MS = 50.0


def _burst(g: Guest, dimms: int, dimm_mib: int) -> list[tuple[int, int]]:
    ranges = g.hot_add_memories([dimm_mib] * dimms)
    blocks = [b for s, e in ranges for b in g.memory_blocks(s, e)]
    g.sh(
        "for b in " + " ".join(map(str, blocks)) + "; do "
        "echo online_movable > /sys/devices/system/memory/memory$b/state & done; wait",
        timeout=600,
    )
    return ranges


def p2(dimms: int = 4, dimm_mib: int = 2048, baseline: bool = True) -> dict[str, Any]:
    """The same burst under kexecd, then (``baseline``) under the per-event
    path, in two guests; the floor is the kexecd guest's own kexec_load."""
    machine = Machine(mem_mib=2048, slots=dimms, maxmem_mib=2048 + dimms * dimm_mib)
    res: dict[str, Any] = {"blocks": dimms * dimm_mib // 128}
    g = boot(f"bench-p2-kexecd-{res['blocks']}", machine)
    try:
        g.kexecd_load(STATE)
        g.start_daemon(STATE)
        base_hist = history_len(g)
        uevents, stop = _start_uevents(g)
        _burst(g, dimms, dimm_mib)

        def quiet() -> Any:
            st = g.daemon_state()
            if g.run(["kexecd", "status", "--state-dir", STATE], check=False).rc != 0:
                return None
            time.sleep(2.0)
            again = g.daemon_state()
            return again if again["events"] == st["events"] else None

        st = wait(quiet, "kexecd to settle after the burst", g, timeout=300)
        g.sh(f"touch {stop}")
        seen = wait(lambda: _uevents(uevents), "the uevent recorder's timeline", g)
        res["kexecd"] = p2_figures(st, st["history"][base_hist:], seen)
    finally:
        g.close()
    if not baseline:
        return res

    g = boot("bench-p2-baseline", machine)
    try:
        g.load_crash_kernel()
        out, stop = start_baseline(g, "baseline-p2")
        _burst(g, dimms, dimm_mib)
        blocks = res["blocks"]

        def all_done() -> Any:
            r = baseline_records(out)
            return r if len(r) >= blocks else None

        reloads = wait(all_done, "the per-event reloads", g, timeout=60 + 10 * blocks)
        g.sh(f"touch {stop}")
        first = reloads[0]["arrived"]
        res["baseline"] = {
            "events": len(reloads),
            "reloads": len(reloads),
            # Every DIMM was added before the first online event, so the first
            # reload already loads the final header; the rest only churn.
            "consistent_ms": (reloads[0]["loaded"] - first) * 1000,
            "churn_ms": (reloads[-1]["loaded"] - first) * 1000,
            "without_crash_kernel_ms": sum(
                (r["loaded"] - r["unload_start"]) * 1000 for r in reloads
            ),
        }
    finally:
        g.close()
    return res


def _start_uevents(g: Guest) -> tuple[Path, str]:
    out = g.run_dir / "share" / "p2-uevents.json"
    stop = "/run/p2-uevents.stop"
    g.sh(
        f"rm -f {stop}; setsid {sys.executable} -m bench.guest_uevents {out} {stop} "
        ">/run/p2-uevents.log 2>&1 </dev/null &"
    )
    wait(lambda: out.exists(), "the uevent recorder", g)
    return out, stop


def _uevents(out: Path) -> list[list[Any]] | None:
    """The recorder's events once it is done (else ``None``; a read that
    catches the file half-seen over 9p counts as not yet)."""
    try:
        data = json.loads(out.read_text())
    except (ValueError, FileNotFoundError):
        return None
    events: list[list[Any]] = data["events"]
    return events if data["done"] else None


def p2_figures(
    st: dict[str, Any], hist: list[dict[str, Any]], seen: list[list[Any]]
) -> dict[str, Any]:
    """P2's figures from the daemon's state after the burst, its loads during
    it, and every uevent as it arrived (``[mono, action, subsystem, devpath]``).

    ``after_last_change_ms``: from the last uevent that may change the header
    (the daemon's own test, :func:`kexecd.service.intake.changes_header`) to
    the last load done; 0 if the header was current before it.
    ``rule_ms``: what the coalescing rule takes after the last event:
    ``settle_ms`` and the longer of the previous reload's time and the
    longest pause (the quiet period; every pause counted, about), then the
    reload itself."""
    changes = sorted(
        float(t) for t, a, s, d in seen if changes_header(Event(str(a), str(s), str(d), 0))
    )
    if not changes:
        raise RuntimeError("bench.guest_uevents recorded no event that changes the header")
    done = hist[-1]["done_mono"]
    took = [(h["done_mono"] - h["start_mono"]) * 1000 for h in hist]
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(changes)]
    return {
        "events": st["events"],
        "reloads": len(hist),
        "consistent_ms": (done - min(h["first_event_mono"] for h in hist)) * 1000,
        "after_last_event_ms": max(0.0, (done - st["last_event_mono"]) * 1000),
        "changes": len(changes),
        "changes_span_ms": (changes[-1] - changes[0]) * 1000,
        "longest_pause_ms": max(gaps, default=0.0),
        "after_last_change_ms": max(0.0, (done - changes[-1]) * 1000),
        "refresh_ms": took,
        "rule_ms": Config().settle_ms
        + max(took[-2 if len(took) > 1 else -1], max(gaps, default=0.0))
        + took[-1],
        "without_crash_kernel_ms": sum(h["load_ms"] for h in hist),
        "floor_ms": statistics.median(h["load_ms"] for h in hist),
    }


def p2_line(blocks: int, kx: dict[str, Any]) -> str:
    """P2's SUMMARY line: reloads, and the time from the last event that may
    change the header (older results: from the last event of any kind) until
    the header is current, each against its target."""
    last = kx.get("after_last_change_ms", kx["after_last_event_ms"])
    over = last - kx["floor_ms"]
    line = (
        f"SUMMARY P2 {blocks} blocks: kexecd {kx['reloads']} reloads (target <= 2: "
        f"{verdict(kx['reloads'] <= 2)}), current {last:.0f} ms after the last event"
    )
    if "after_last_change_ms" in kx:
        line += (
            f" that changes the header ({kx['changes']} over {kx['changes_span_ms']:.0f} ms, "
            f"pauses up to {kx['longest_pause_ms']:.0f} ms; {kx['after_last_event_ms']:.0f} ms "
            "after the last event of any kind)"
        )
    line += (
        f", floor {kx['floor_ms']:.0f} ms (target <= floor + {P2_OVER_FLOOR_MS:.0f} ms: "
        f"{verdict(over <= P2_OVER_FLOOR_MS)}"
    )
    if "rule_ms" in kx:
        line += f"; the quiet-period rule: settle_ms + two refreshes, about {kx['rule_ms']:.0f} ms"
    return line + ")"
