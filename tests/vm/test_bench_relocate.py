# SPDX-License-Identifier: GPL-2.0-or-later
"""The relocation benchmark runs in the guest and reports both ways (no timing asserted)."""

from __future__ import annotations

import pytest

from bench.bench_relocate import kernel_static_size, measure, report

pytestmark = pytest.mark.vm


def test_relocation_benchmark_measures_both_ways() -> None:
    r = measure(rounds=1)
    assert {k: len(v) for k, v in r.items()} == {"move_cli": 1, "move_inner": 1, "full": 1}
    assert all(v[0] > 0 for v in r.values())
    static = kernel_static_size()
    assert static > 16384  # room for CRASH_MAX_MEMORY_RANGES, whatever the host
    assert report(r, static)[-1].startswith("SUMMARY relocate: move ")
