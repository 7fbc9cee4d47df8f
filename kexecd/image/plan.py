# SPDX-License-Identifier: GPL-2.0-or-later
"""The decision: given the snapshot, the header wanted now and the kernel, what to do.

Pure: no I/O, so every case is easy to test.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kexecd.image.snapshot import Snapshot

__all__ = ["Action", "Decision", "decide"]


class Action(enum.Enum):
    """What a refresh does."""

    NOTHING = "nothing"  # the loaded header is current
    STAND_ASIDE = "stand-aside"  # the kernel updates the header itself
    RELOAD_HEADER = "reload-header"  # kexec_load with the new header (and digest)
    FULL_RELOAD = "full-reload"  # run the recorded kexec command again


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def decide(
    snap: Snapshot,
    loaded: bytes | None,
    wanted: bytes | None,
    kernel_updates: bool,
) -> Decision:
    """Choose what to do.

    :param loaded: the header loaded now (``None`` for a file-loaded image).
    :param wanted: the header a fresh ``kexec -p`` would build now.
    :param kernel_updates: the kernel's own crash hotplug is active
        (``crash_hotplug`` reads 1, Linux 6.6+).
    """
    if kernel_updates:
        return Decision(Action.STAND_ASIDE, "the kernel updates the header itself")
    if snap.file_load:
        return Decision(
            Action.FULL_RELOAD,
            "the image was loaded with kexec_file_load, which only the kernel can rebuild",
        )
    if snap.header is None or loaded is None or wanted is None:
        return Decision(Action.FULL_RELOAD, "no ELF core header among the loaded segments")
    if wanted == loaded:
        return Decision(Action.NOTHING, "the loaded header is current")
    memsz = snap.segments[snap.header].memsz
    if len(wanted) > memsz:
        return Decision(
            Action.FULL_RELOAD,
            f"the header needs {len(wanted)} bytes but its segment holds {memsz}",
        )
    if snap.digest is None:
        return Decision(
            Action.FULL_RELOAD,
            "purgatory's SHA-256 digest was not found, so a new header cannot be vouched for",
        )
    how = "and purgatory's digest" if snap.digest.header_hashed else "(not hashed by purgatory)"
    return Decision(Action.RELOAD_HEADER, f"reload the header {how}")
