# SPDX-License-Identifier: GPL-2.0-or-later
"""The machine-wide guest lock: one test run, benchmark or helper boots guests
at a time on this machine (a 2-core host runs one TCG guest well, not two).

The lock is held per process (a test may hold a shared guest while it boots
its own) and released when the process's last guest closes.
"""

from __future__ import annotations

import fcntl
import os
import time

from testbed import assets
from testbed.transport import TestbedError

__all__ = ["acquire", "release"]

_lock_fd = -1
_lock_users = 0


def acquire(timeout: float) -> None:
    """Take the lock for one more guest of this process, waiting up to
    ``timeout`` s for another process to let go of it.

    :raises TestbedError: it did not.
    """
    global _lock_fd, _lock_users
    if _lock_users == 0:
        path = assets.cache_dir() / "guest.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise TestbedError(
                        f"another process has held {path} for {timeout:.0f} s; "
                        "is a test run or benchmark still going?"
                    ) from None
                time.sleep(0.5)
        _lock_fd = fd
    _lock_users += 1


def release() -> None:
    """One guest of this process less; the last one lets go of the lock."""
    global _lock_fd, _lock_users
    _lock_users -= 1
    if _lock_users == 0:
        os.close(_lock_fd)  # releases the flock
        _lock_fd = -1
