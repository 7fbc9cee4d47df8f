# SPDX-License-Identifier: GPL-2.0-or-later
"""Access to the ground-truth captures under tests/data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURES = ["boot", "hotadd", "hotremove"]


def manifest(name: str) -> dict[str, Any]:
    m: dict[str, Any] = json.loads((DATA / name / "load" / "manifest.json").read_text())
    return m


def header_bytes(name: str) -> bytes:
    """The elfcorehdr segment kexec-tools passed to kexec_load (ELF, ET_CORE)."""
    for seg in manifest(name)["segments"]:
        if seg["file"]:
            data = (DATA / name / "load" / seg["file"]).read_bytes()
            if data[:4] == b"\x7fELF" and data[16] == 4:
                return data
    raise AssertionError(f"{name}: no ELF core header segment")


def backup_start(name: str) -> int:
    """Where kexec-tools put the backup segment: the zero-filled one after 640 KiB."""
    (seg,) = [s for s in manifest(name)["segments"] if s["zero"] and s["bufsz"] > 4096]
    start: int = seg["mem"]
    return start


def fake_root(name: str, tmp: Path) -> Path:
    """A writable copy of a capture's root, to break in tests."""
    dest = tmp / f"root-{name}"
    shutil.copytree(DATA / name / "root", dest)
    return dest
