# SPDX-License-Identifier: GPL-2.0-or-later
"""The header benchmark compares like with like (it asserts no timings)."""

from __future__ import annotations

import pytest

from bench.bench_header import main, make_spec, python_build
from kexecd import core


def test_python_baseline_builds_the_same_bytes() -> None:
    spec = make_spec(300)
    assert python_build(spec) == core.build_header(spec)


def test_benchmark_runs_and_summarises(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("SUMMARY P3 header-build: ") == 1
