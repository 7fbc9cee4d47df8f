# SPDX-License-Identifier: GPL-2.0-or-later
"""P2's figures and SUMMARY line from a recorded timeline (the guest run is
the lead's; these check the arithmetic on the shape it records)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.p2_burst import _uevents, p2_figures, p2_line


def _timeline() -> tuple[dict[str, Any], list[dict[str, Any]], list[list[Any]]]:
    # 8 DIMMs 230 ms apart, 32 block adds each; then 256 onlines from 3.0 s.
    seen: list[list[Any]] = []
    for d in range(8):
        for b in range(32):
            path = f"/devices/system/memory/memory{64 + d * 32 + b}"
            seen.append([100.0 + d * 0.23 + b * 0.001, "add", "memory", path])
    for i in range(256):
        seen.append([103.0 + i * 0.01, "online", "memory", f"/devices/system/memory/m{i}"])
    last_add = 100.0 + 7 * 0.23 + 0.031
    hist = [
        {"first_event_mono": 100.0, "start_mono": 100.0, "done_mono": 100.22, "load_ms": 160.0},
        {
            "first_event_mono": 100.22,
            "start_mono": last_add + 0.32,
            "done_mono": last_add + 0.54,
            "load_ms": 170.0,
        },
    ]
    st = {"events": len(seen), "last_event_mono": seen[-1][0]}
    return st, hist, seen


def test_p2_figures_time_the_last_event_that_changes_the_header() -> None:
    st, hist, seen = _timeline()
    kx = p2_figures(st, hist, seen)
    assert kx["reloads"] == 2 and kx["changes"] == 256
    assert kx["after_last_change_ms"] == pytest.approx(540.0)
    assert kx["after_last_event_ms"] == 0.0  # the onlines come after: no measure of it
    assert kx["changes_span_ms"] == pytest.approx(7 * 230 + 31)
    assert kx["longest_pause_ms"] == pytest.approx(230 - 31)
    assert kx["rule_ms"] == pytest.approx(100 + 220 + 220)  # the pauses are shorter
    seen[224:] = [[t + 0.2, *rest] for t, *rest in seen[224:]]  # the last DIMM 430 ms after
    assert p2_figures(st, hist, seen)["rule_ms"] == pytest.approx(100 + 399 + 220)
    assert kx["floor_ms"] == 165.0 and kx["without_crash_kernel_ms"] == 330.0


def test_p2_figures_need_the_recorders_events() -> None:
    st, hist, seen = _timeline()
    onlines = [e for e in seen if e[1] == "online"]
    with pytest.raises(RuntimeError, match="recorded no event that changes the header"):
        p2_figures(st, hist, onlines)


def test_p2_line_says_both_targets() -> None:
    st, hist, seen = _timeline()
    line = p2_line(256, p2_figures(st, hist, seen))
    assert line.startswith("SUMMARY P2 256 blocks: kexecd 2 reloads (target <= 2: met), ")
    assert "current 540 ms after the last event that changes the header (256 over 1641 ms" in line
    assert "(target <= floor + 50 ms: missed; the quiet-period rule: " in line
    assert line.endswith("settle_ms + two refreshes, about 540 ms)")


def test_p2_line_reads_older_results() -> None:
    old = {"reloads": 5, "after_last_event_ms": 0.0, "floor_ms": 132.0}
    assert p2_line(256, old) == (
        "SUMMARY P2 256 blocks: kexecd 5 reloads (target <= 2: missed), current 0 ms after "
        "the last event, floor 132 ms (target <= floor + 50 ms: met)"
    )


def test_the_recorders_file_counts_once_done(tmp_path: Path) -> None:
    out = tmp_path / "p2-uevents.json"
    assert _uevents(out) is None
    out.write_text('{"done": false, "ev')  # half-seen over 9p
    assert _uevents(out) is None
    out.write_text(json.dumps({"done": False, "events": []}))
    assert _uevents(out) is None
    out.write_text(json.dumps({"done": True, "events": [[1.5, "add", "cpu", "/c"]]}))
    assert _uevents(out) == [[1.5, "add", "cpu", "/c"]]
