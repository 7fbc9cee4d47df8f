# SPDX-License-Identifier: GPL-2.0-or-later
"""The test bed's saved guest states (testbed/saved.py): what a saved host is keyed by."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed import saved
from testbed.qemu import Machine
from testbed.transport import TestbedError

REPO = Path(__file__).resolve().parents[2]


def _settle_a(guest: object) -> None:
    for x in [n for n in range(3)]:  # nested code: a comprehension
        print(guest, x)


def _settle_b(guest: object) -> None:
    for x in [n for n in range(4)]:
        print(guest, x)


def test_the_key_follows_the_settle_code_the_machine_and_the_command_line() -> None:
    key = saved._key(_settle_a, Machine(), ())
    assert key == saved._key(_settle_a, Machine(), ())
    assert key != saved._key(_settle_b, Machine(), ())
    assert key != saved._key(_settle_a, Machine(mem_mib=2048), ())
    assert key != saved._key(_settle_a, Machine(), ("systemd.mask=kexecd.service",))


def test_the_key_is_the_same_in_another_process() -> None:
    # Nested code objects' repr names their address: the key must not.
    code = (
        "from testbed.qemu import Machine; from testbed import saved; "
        "from tests.unit.test_testbed_saved import _settle_a; "
        "print(saved._key(_settle_a, Machine(), ()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == saved._key(_settle_a, Machine(), ())


def test_restoring_needs_a_whole_saved_state(tmp_path: Path) -> None:
    with pytest.raises(TestbedError, match="no saved guest state"):
        saved.restore_argv(["qemu"], tmp_path)
    (tmp_path / saved.STATE).write_bytes(b"x")
    with pytest.raises(TestbedError, match="no saved guest state"):
        saved.restore_argv(["qemu"], tmp_path)
    (tmp_path / saved.DISK).write_bytes(b"x")
    argv = saved.restore_argv(["qemu", "-m", "1G"], tmp_path)
    assert argv == ["qemu", "-m", "1G", "-incoming", f"exec:cat {tmp_path / saved.STATE}"]
