# SPDX-License-Identifier: GPL-2.0-or-later
"""The daemon's runtime state: ``RUNTIME_DIR/state.json``, replaced atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["SOCKET", "STATE_FILE", "read_state", "write_state"]

STATE_FILE = "state.json"
SOCKET = "kexecd.sock"


def write_state(runtime_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state.json`` so that readers see the old or the new file, whole."""
    runtime_dir.mkdir(parents=True, exist_ok=True)
    tmp = runtime_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, runtime_dir / STATE_FILE)


def read_state(runtime_dir: Path) -> dict[str, Any] | None:
    """The daemon's last state, or ``None`` if there is none (or it is unreadable)."""
    try:
        state: dict[str, Any] = json.loads((runtime_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state
