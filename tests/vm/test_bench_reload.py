# SPDX-License-Identifier: GPL-2.0-or-later
"""The reload benchmark runs in the guest and reports its three ways (no timing asserted)."""

from __future__ import annotations

import pytest

from bench.bench_reload import measure, report

pytestmark = pytest.mark.vm


def test_reload_benchmark_measures_all_three_ways() -> None:
    r = measure(rounds=1)
    assert {k: len(v) for k, v in r.items()} == {
        "refresh_cli": 1,
        "refresh_inner": 1,
        "unload_load": 1,
        "bare": 1,
    }
    assert all(v[0] > 0 for v in r.values())
    assert report(r)[-1].startswith("SUMMARY reload: kexecd refresh ")
