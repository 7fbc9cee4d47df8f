# SPDX-License-Identifier: GPL-2.0-or-later
"""The test bed's boot retry: a guest kernel that panics before its agent
answers (QEMU 7.2 TCG live-patching race on Linux 6.12) is booted once more,
its first logs kept; a second panic, or any other failure, is reported."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from testbed import boot
from testbed.qemu import BootSpec, Machine
from testbed.transport import TestbedError

# The panic seen in CI (6.12.95, 2 vCPUs, TCG), cut to the lines that matter.
OOPS = """\
[    1.692379] sched_clock: Marking stable (1656105270, 33441178)->(1720214089, -30667641)
[    1.697727] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI
[    1.698292] RIP: 0010:sched_clock_cpu+0x9/0x190
[    1.700793] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI
[    1.701033] Kernel panic - not syncing: Fatal exception in interrupt
"""


def test_boot_panic_names_the_first_oops(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text(OOPS)
    assert boot.boot_panic(log) == "Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"


def test_boot_panic_without_an_oops_names_the_panic(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("[    2.1] Kernel panic - not syncing: No working init found.\n")
    assert boot.boot_panic(log) == "Kernel panic - not syncing: No working init found."


def test_a_console_without_a_panic_is_not_one(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("[    1.0] Oops: this word alone is not a panic\n[    2.0] login:\n")
    assert boot.boot_panic(log) is None
    assert boot.boot_panic(tmp_path / "missing.log") is None


def test_keep_logs_moves_each_log_aside(tmp_path: Path) -> None:
    for log in ("console.log", "qmp.log", "ttyS1.out"):
        (tmp_path / log).write_text(log)
    kept = boot._keep_logs(tmp_path, "boot1")
    assert kept == tmp_path / "console.boot1.log"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "console.boot1.log",
        "qmp.boot1.log",
        "ttyS1.boot1.out",
    ]
    assert (tmp_path / "ttyS1.boot1.out").read_text() == "ttyS1.out"


class _Starts:
    """Stands in for one QEMU start per call: each outcome in turn."""

    def __init__(self, run_dir: Path, outcomes: list[BaseException | str]) -> None:
        self.run_dir = run_dir
        self.outcomes = outcomes
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        (self.run_dir / "console.log").write_text(f"boot {self.calls}\n")
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def _launch(tmp_path: Path) -> Any:
    spec = BootSpec(Machine(), None, tmp_path / "initrd")  # type: ignore[arg-type]
    return boot.launch("t", tmp_path, spec, 1.0)


@pytest.fixture
def no_qemu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boot, "qemu_argv", lambda *a: ["qemu-system-x86_64"])


@pytest.mark.usefixtures("no_qemu")
def test_a_boot_that_panics_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    starts = _Starts(
        tmp_path, [boot.GuestBootPanic("agent gone", "Oops: int3", tmp_path), "guest"]
    )
    monkeypatch.setattr(boot, "_start", starts)
    assert _launch(tmp_path) == "guest"
    assert starts.calls == 2
    assert (tmp_path / "console.boot1.log").read_text() == "boot 1\n"
    assert (tmp_path / "console.log").read_text() == "boot 2\n"
    assert "panicked or stalled while booting (Oops: int3)" in capsys.readouterr().err


@pytest.mark.usefixtures("no_qemu")
def test_a_second_panic_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    starts = _Starts(
        tmp_path,
        [
            boot.GuestBootPanic("first", "Oops: a", tmp_path),
            boot.GuestBootPanic("second", "Oops: b", tmp_path),
        ],
    )
    monkeypatch.setattr(boot, "_start", starts)
    with pytest.raises(boot.GuestBootPanic, match="second"):
        _launch(tmp_path)
    assert starts.calls == boot.BOOT_ATTEMPTS


@pytest.mark.usefixtures("no_qemu")
def test_other_boot_failures_are_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts = _Starts(tmp_path, [TestbedError("the guest agent did not answer"), "guest"])
    monkeypatch.setattr(boot, "_start", starts)
    with pytest.raises(TestbedError, match="did not answer"):
        _launch(tmp_path)
    assert starts.calls == 1


def test_a_console_that_stopped_is_a_stall(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("[    1.24] NET: Registered PF_INET protocol family\n[    1.25] IP idents\n")
    mtime = log.stat().st_mtime
    assert boot.boot_stalled(log, 120, now=mtime + 119) is None
    why = boot.boot_stalled(log, 120, now=mtime + 121)
    assert why is not None and "'IP idents'" in why and "121 s ago" in why
    assert boot.boot_stalled(tmp_path / "missing.log", 120) is None


class _SilentAgent:
    """An agent that never answers, of a QEMU still running."""

    class proc:  # stands for the subprocess.Popen
        @staticmethod
        def poll() -> None:
            return None

    def recv(self, deadline: float) -> dict[str, object]:
        raise TestbedError("the guest agent did not answer")


def test_a_stalled_boot_raises_a_retried_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "console.log"
    log.write_text("[    1.25] IP idents\n")
    os.utime(log, (0, 0))  # long ago
    with pytest.raises(boot.GuestBootPanic, match="printed nothing") as e:
        boot._first_message(_SilentAgent(), tmp_path, time.monotonic() + 60)  # type: ignore[arg-type]
    assert "IP idents" in e.value.why
    # A console still growing is a slow boot: the deadline decides.
    log.write_text("[    9.00] still booting\n")
    with pytest.raises(TestbedError) as e2:
        boot._first_message(_SilentAgent(), tmp_path, time.monotonic() + 0.1)  # type: ignore[arg-type]
    assert not isinstance(e2.value, boot.GuestBootPanic)
