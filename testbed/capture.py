# SPDX-License-Identifier: GPL-2.0-or-later
"""Reading a ground-truth capture (tests/data/NAME, or one just made in a guest)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Capture:
    """``root/`` (a fake root) and ``load/`` (the kexec_load arguments) of one capture."""

    path: Path

    @property
    def root(self) -> Path:
        return self.path / "root"

    @cached_property
    def manifest(self) -> dict[str, Any]:
        m: dict[str, Any] = json.loads((self.path / "load" / "manifest.json").read_text())
        return m

    def segment(self, index: int) -> bytes:
        name = self.manifest["segments"][index]["file"]
        assert name, f"{self.path}: segment {index} was not stored"
        return (self.path / "load" / name).read_bytes()

    @property
    def header_segment(self) -> dict[str, Any]:
        """The manifest's record of the elfcorehdr segment (ELF, ET_CORE)."""
        for seg in self.manifest["segments"]:
            if seg["file"]:
                data = (self.path / "load" / seg["file"]).read_bytes()
                if data[:4] == b"\x7fELF" and data[16] == 4:
                    return dict(seg)
        raise AssertionError(f"{self.path}: no ELF core header segment")

    @property
    def header_path(self) -> Path:
        """The elfcorehdr segment kexec-tools passed to kexec_load."""
        return self.path / "load" / self.header_segment["file"]

    @property
    def header(self) -> bytes:
        return self.header_path.read_bytes()

    @property
    def backup_start(self) -> int:
        """Where kexec-tools put the backup area: the zero-filled segment past 4 KiB."""
        (seg,) = [s for s in self.manifest["segments"] if s["zero"] and s["bufsz"] > 4096]
        start: int = seg["mem"]
        return start
