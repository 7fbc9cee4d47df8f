# SPDX-License-Identifier: GPL-2.0-or-later
"""``pip install .`` into a fresh venv gives a working kexecd with its C core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_pip_install_into_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    p = subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", str(REPO)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    hdr = REPO / "tests/data/boot/load/seg-05.bin"
    out = subprocess.run(
        [str(venv / "bin/kexecd"), "inspect", str(hdr)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert "7 program headers" in out
    # The installed package, not this checkout, answered.
    where = subprocess.run(
        [str(venv / "bin/python"), "-c", "import kexecd._core as c; print(c.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert where.startswith(str(venv))
