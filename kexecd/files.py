# SPDX-License-Identifier: GPL-2.0-or-later
"""Writing files so that a reader sees the old one or the new one, whole; timestamps."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["timestamp", "unix_time", "write_atomic"]

_TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"


def write_atomic(
    path: Path, data: bytes, *, durable: bool = True, mode: int | None = None
) -> None:
    """Replace ``path`` with ``data`` through a rename.

    :param durable: fsync the file before the rename, so that a crash of the
        host leaves the old or the new content on disk. Pointless on tmpfs
        (``/run``), where nothing outlives a reboot.
    :param mode: the file's mode, whatever the umask (kexecd.service's is 0077).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        if mode is not None:
            os.fchmod(f.fileno(), mode)
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def timestamp() -> str:
    """Now, in UTC, as kexecd records it: ``2026-11-27T16:20:01Z``."""
    return time.strftime(_TIMESTAMP, time.gmtime())


def unix_time(stamp: str) -> int:
    """A :func:`timestamp` back in seconds since the epoch.

    :raises ValueError: not a timestamp of that form.
    """
    import calendar  # not at start-up: kexecd status may never need it

    return calendar.timegm(time.strptime(stamp, _TIMESTAMP))
