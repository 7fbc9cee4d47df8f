# SPDX-License-Identifier: GPL-2.0-or-later
"""Access to the ground-truth captures under tests/data."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from testbed.capture import Capture

DATA = Path(__file__).resolve().parents[1] / "data"
# Debian 12's kernel 6.1 with kexec-tools 2.0.25 (``make captures``): one
# guest, one boot, in this order.
CAPTURES = ["boot", "hotadd", "hotremove"]
# Other kernels and kexec-tools, at boot and after hot-add, as sets
# (``python -m tests.vm.captures --set NAME``; each scenario.json says so).
SETS = {
    "5.10-2.0.20": ["5.10-2.0.20-boot", "5.10-2.0.20-hotadd"],
    "6.12-2.0.29-c": ["6.12-2.0.29-c-boot", "6.12-2.0.29-c-hotadd"],
}
# A guest of its own (tests/vm/captures.py make_virtio_mem_capture): virtio-mem
# blocks plugged sparsely, nested under the device's "virtioN" in /proc/iomem.
VIRTIO_MEM = "virtio_mem"
ALL_CAPTURES = [*CAPTURES, *(n for names in SETS.values() for n in names), VIRTIO_MEM]
# Each capture with the others of its set: a header built from one's template
# with another's system must equal that other's.
SAME_SET = [
    (a, b) for names in [CAPTURES, *SETS.values(), [VIRTIO_MEM]] for a in names for b in names
]


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
