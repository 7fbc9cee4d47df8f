# SPDX-License-Identifier: GPL-2.0-or-later
"""The test bed refuses crash-kernel loads and panics outside its guest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed import guest_capture
from testbed.guest_safety import NotInGuestError, in_guest, require_guest

REPO = Path(__file__).resolve().parents[2]


def test_this_host_is_not_a_guest() -> None:
    assert not in_guest()
    with pytest.raises(NotInGuestError, match="not the kexecd test bed's guest"):
        require_guest("crash the kernel")


def test_guest_is_recognised_by_its_command_line(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 kexecd.testbed=1 panic=1\n")
    assert in_guest(cmdline)
    require_guest("anything", cmdline)
    cmdline.write_text("console=ttyS0 kexecd.testbed=10\n")
    assert not in_guest(cmdline)
    assert not in_guest(tmp_path / "missing")


def test_capture_refuses_to_run_kexec_on_the_host(tmp_path: Path) -> None:
    # Would run "kexec -p" in a guest; here it must stop before running anything.
    with pytest.raises(NotInGuestError, match="refusing to run /usr/sbin/kexec"):
        guest_capture.main([str(tmp_path / "out"), "--", "/usr/sbin/kexec", "-p", "/x"])
    assert not (tmp_path / "out").exists()


def test_agent_refuses_to_start_on_the_host() -> None:
    p = subprocess.run(
        [sys.executable, str(REPO / "testbed/guest_agent.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode != 0
    assert "refusing to start the test-bed agent" in p.stderr


def test_fault_injection_refuses_to_run_on_the_host() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "testbed.failing_kexec_load", "12", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert p.returncode != 0 and "refusing to inject kexec_load failures" in p.stderr
