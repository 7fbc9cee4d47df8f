# SPDX-License-Identifier: GPL-2.0-or-later
"""The hotplug benchmarks run end to end, small (no timing asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import bench_hotplug

pytestmark = pytest.mark.vm


def test_p1_p4_and_p2_measure_and_chart(tmp_path: Path) -> None:
    r = bench_hotplug.p1_p4(n=1, idle_seconds=2)
    assert len(r["p1_kexecd"]["memory"]) == len(r["p1_baseline"]["cpu"]) == 1
    assert all(v[0] > 0 for v in r["p1_kexecd"].values())
    # The daemon keeps the verified snapshot open: each file mapped once, not copied.
    assert r["p4"]["segments_mapped_when_idle"] == r["p4"]["segment_files"] > 0
    assert len(r["p6"]["status"]) == len(r["p6"]["python"]) == 1
    r["p2"] = bench_hotplug.p2(dimms=1, dimm_mib=256)
    assert r["p2"]["blocks"] == 2 and r["p2"]["baseline"]["reloads"] == 2
    assert 1 <= r["p2"]["kexecd"]["reloads"] <= 2
    # The recorder beside the daemon saw both blocks' adds (bench.guest_uevents).
    assert r["p2"]["kexecd"]["changes"] >= 2
    lines = bench_hotplug.summarize(r)
    assert sum(line.startswith("SUMMARY ") for line in lines) == 6  # P1 x2, P6, P2 x2, P4
    assert all("target" in line for line in lines if line.startswith("SUMMARY P1"))
    bench_hotplug.chart(r, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_anchor_on_linux_6_12() -> None:
    # bookworm-backports' 6.12 in the test bed: the kernel's own update of a
    # kexec -s -p image (crash_hotplug 1, checked inside) and kexecd keeping a
    # plain kexec -p image current (crash_hotplug 0; status 0 at the end).
    r = bench_hotplug.anchor_612(n=1)
    assert r["kernel_release"].startswith("linux-image-6.12.")
    assert len(r["kernel"]) == len(r["online_only"]) == len(r["kexecd"]) == 1
    assert all(v[0] > 0 for k, v in r.items() if isinstance(v, list))


def test_debian_host_benchmark_measures_each_side() -> None:
    # The real Debian 12 host, restored: both floors, the unit's daemon and
    # the same daemon from a shell, kdump-config reload; one round each.
    from bench import bench_debian_host

    r = bench_debian_host.measure(n=1)
    assert len(r["unit"]["p1"]) == len(r["shell"]["p1"]) == 2  # a DIMM plugged and unplugged
    assert len(r["floor_kexec_tools"]) == len(r["floor_cut"]) == len(r["kdump_config_reload"]) == 1
    assert r["cut"] > 32 << 20  # the adopted image's kernel segment was cut
    assert all(v > 0 for v in r["unit"]["load"] + r["shell"]["load"])
    (line,) = [x for x in bench_debian_host.summarize(r) if x.startswith("SUMMARY")]
    assert "target <= 1.1x" in line
