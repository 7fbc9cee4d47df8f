# SPDX-License-Identifier: GPL-2.0-or-later
"""Access to the ground-truth captures under tests/data."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from testbed.capture import Capture

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURES = ["boot", "hotadd", "hotremove"]  # one guest, one boot, in this order
# A guest of its own (tests/vm/captures.py make_virtio_mem_capture): virtio-mem
# blocks plugged sparsely, nested under the device's "virtioN" in /proc/iomem.
VIRTIO_MEM = "virtio_mem"
ALL_CAPTURES = [*CAPTURES, VIRTIO_MEM]


def manifest(name: str) -> dict[str, Any]:
    return Capture(DATA / name).manifest


def header_bytes(name: str) -> bytes:
    """The elfcorehdr segment kexec-tools passed to kexec_load."""
    return Capture(DATA / name).header


def backup_start(name: str) -> int:
    """Where kexec-tools put the backup segment."""
    return Capture(DATA / name).backup_start


def fake_root(name: str, tmp: Path) -> Path:
    """A writable copy of a capture's root, to break in tests."""
    dest = tmp / f"root-{name}"
    shutil.copytree(DATA / name / "root", dest)
    return dest
