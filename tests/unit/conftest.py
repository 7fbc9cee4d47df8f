# SPDX-License-Identifier: GPL-2.0-or-later
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fake_kexec() -> Path:
    """csrc/tests/fake_kexec: makes kexec syscalls the kernel would reject."""
    subprocess.run(["make", "-s", "-C", str(REPO / "csrc"), "build/fake_kexec"], check=True)
    return REPO / "csrc" / "build" / "fake_kexec"
