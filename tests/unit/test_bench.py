# SPDX-License-Identifier: GPL-2.0-or-later
"""The header benchmark compares like with like (it asserts no timings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import bench_capture, bench_debian_host, bench_hotplug, bench_refresh
from bench.bench_header import main, make_spec, python_build
from kexecd import core
from kexecd.arch.x86_64 import MAX_RANGES
from kexecd.image import loader
from kexecd.image.store import open_snapshot
from kexecd.system.root import Root
from testbed.images import loaded_root


def test_python_baseline_builds_the_same_bytes() -> None:
    spec = make_spec(300)
    assert python_build(spec) == core.build_header(spec)


def test_benchmark_runs_and_summarises(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("SUMMARY P3 header-build: ") == 1


def test_refresh_benchmark_reloads_every_round() -> None:
    shown, res = bench_refresh.measure(4, 2)
    assert shown == 4 + 3  # the capture's own RAM ranges, and the four added
    assert len(res["daemon"]) == len(res["one-shot"]) == 2


def test_refresh_benchmark_image_fits_the_largest_header(tmp_path: Path) -> None:
    # The grown image is one kexecd accepts: the digest found, regions and
    # all, and room for every range kexec-tools allows.
    root = loaded_root("boot", tmp_path)
    loader.load(
        bench_refresh.ARGV,
        tmp_path / "state",
        root=Root(root),
        tracer=lambda argv: bench_refresh.big_image(MAX_RANGES),
    )
    snap = open_snapshot(tmp_path / "state")
    assert snap.digest is not None and snap.header == bench_refresh.HEADER
    assert snap.header_capacity is not None and snap.header_capacity >= MAX_RANGES


def test_a_refresh_makes_no_python_object_per_range(monkeypatch: pytest.MonkeyPatch) -> None:
    # P7: /proc/iomem's ranges and both headers' program headers stay in the
    # C core on the refresh path; the objects made do not grow with them.
    from kexecd.model import MemRange, Phdr

    made = {"ranges": 0, "phdrs": 0}

    def counting(cls: type, key: str) -> None:
        init = cls.__init__

        def wrapped(self: object, *args: object, **kw: object) -> None:
            made[key] += 1
            init(self, *args, **kw)

        monkeypatch.setattr(cls, "__init__", wrapped)

    counting(MemRange, "ranges")
    counting(Phdr, "phdrs")
    per_refresh = []
    for n in (4, 1500):
        before = dict(made)
        shown, _ = bench_refresh.measure(n, 1)  # a first refresh, then one each way
        assert shown >= n
        per_refresh.append({k: made[k] - before[k] for k in made})
    assert per_refresh[1] == per_refresh[0], per_refresh


def test_capture_and_floor_summaries_give_both_sides() -> None:
    # bench_capture and P1's two floors: each figure with its baseline and a
    # verdict computed from them, not written in.
    lines = bench_capture.summarize({"rounds": 2, "kept": [7.4, 7.7], "cut": [6.9, 6.9]})
    assert lines[-1].startswith(
        "SUMMARY capture: crash to dump 6.90 s with the kernel cut, 7.55 s"
    )
    p1 = {"memory": [72.0], "cpu": [74.0], "floor": [39.0]}
    base = {"memory": [1136.0], "cpu": [1206.0]}
    r = {"n": 1, "p1_kexecd": p1, "p1_baseline": base, "floor_kexec_tools": [129.0]}
    r["p4"] = {
        "wakeups_per_min": 0.0,
        "rss_kib": 1024,
        "rss_anon_kib": 512,
        "segments_kib": 100,
        "segments_mapped_when_idle": 7,
    }
    memory = next(x for x in bench_hotplug.summarize(r) if x.startswith("SUMMARY P1 memory"))
    assert "kexecd 1.85x it, target <= 1.1x: missed" in memory
    assert (
        "kexec-tools' layout floor 129 ms" in memory and "0.56x it, target <= 1.1x: met" in memory
    )
    del r["floor_kexec_tools"]
    memory = next(x for x in bench_hotplug.summarize(r) if x.startswith("SUMMARY P1 memory"))
    assert "kexec-tools' layout" not in memory


def test_debian_host_summary_compares_in_the_same_run() -> None:
    r = {
        "n": 2,
        "floor_kexec_tools": [120.0, 140.0],
        "unit": {"p1": [100.0, 90.0, 110.0, 95.0], "load": [40.0, 42.0, 38.0, 41.0]},
        "shell": {"p1": [90.0, 85.0, 95.0, 88.0], "load": [40.0, 40.0, 40.0, 40.0]},
        "kdump_config_reload": [2000.0, 2100.0],
        "cut": 58 << 20,
    }
    (line,) = [x for x in bench_debian_host.summarize(r) if x.startswith("SUMMARY")]
    assert "kexecd.service 98 ms" in line
    assert "floor 130 ms: 0.75x, target <= 1.1x: met" in line
    assert "cut by 58 MiB) 40 ms: 2.41x, target <= 1.1x: missed" in line
    assert "kdump-config reload 2050 ms (21.0x kexecd)" in line
    assert "sandbox +8 ms" in line
