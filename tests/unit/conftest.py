# SPDX-License-Identifier: GPL-2.0-or-later
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kexecd import core
from kexecd.paths import DEFAULT_METRICS_DIR
from kexecd.service import metrics
from testbed import assets
from tests.unit.fakes import KEXEC

REPO = Path(__file__).resolve().parents[2]


class RealKexecRefused(AssertionError):
    """A unit test tried to reach the real kexec_load (or let a traced one run)."""


class _GuardedLib:
    """kexecd's C library, less the two calls that reach the kernel's kexec_load."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lib, name)

    def kexecd_kexec_load(self, *args: Any) -> int:
        raise RealKexecRefused("the unit tier must not call kexec_load: use FakeBackend")

    def kexecd_trace_run(self, argv: Any, mode: int, *args: Any) -> int:
        if mode != self._lib.KEXECD_TRACE_SKIP:
            raise RealKexecRefused("the unit tier traces in skip mode only: use tracer_for")
        result: int = self._lib.kexecd_trace_run(argv, mode, *args)
        return result


@pytest.fixture(autouse=True)
def no_real_kexec(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every unit test runs with the kernel's kexec_load out of reach.

    ``core`` is the only caller of the C library, so guarding its ``lib``
    covers every path: the backend, the tracer's pass mode, default arguments
    bound at import time.
    """
    monkeypatch.setattr(core, "lib", _GuardedLib(core.lib))
    yield


@pytest.fixture(autouse=True)
def no_real_metrics_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No unit test writes node exporter's real textfile directory, present or not:
    a daemon under test is given ``metrics_dir`` (``""``, or one in ``tmp_path``)."""
    write = metrics.write_atomic

    def guarded(path: Path, data: bytes, **kwargs: Any) -> None:
        if path.is_relative_to(DEFAULT_METRICS_DIR):
            raise AssertionError(f"the unit tier must not write {path}: give metrics_dir")
        write(path, data, **kwargs)

    monkeypatch.setattr(metrics, "write_atomic", guarded)
    yield


@pytest.fixture(autouse=True, scope="session")
def kexec_stand_in_mode() -> None:
    """The kexec-tools stand-in (``fakes.KEXEC``) writable by its owner alone, as a
    full reload asks of the binary it runs, whatever the checkout's umask."""
    KEXEC.chmod(0o755)


@pytest.fixture(scope="session")
def fake_kexec() -> Path:
    """csrc/tests/fake_kexec: makes kexec syscalls the kernel would reject."""
    subprocess.run(["make", "-s", "-C", str(REPO / "csrc"), "build/fake_kexec"], check=True)
    return REPO / "csrc" / "build" / "fake_kexec"


@pytest.fixture(scope="session")
def promtool() -> Path:
    """Prometheus' promtool, which scripts/setup fetches (testbed.assets.ensure_promtool)."""
    path = assets.promtool_path()
    if not path.exists():
        pytest.fail(f"{path} is missing: run bash scripts/setup (it fetches promtool)")
    return path
