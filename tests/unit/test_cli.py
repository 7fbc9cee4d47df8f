# SPDX-License-Identifier: GPL-2.0-or-later
from __future__ import annotations

import subprocess
import sys

import pytest

from kexecd import __version__
from kexecd.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"kexecd {__version__}\n"


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kexecd.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("kexecd ")
