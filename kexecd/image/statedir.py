# SPDX-License-Identifier: GPL-2.0-or-later
"""The state directory as a trusted place: who owns it, one lock, no symlinks.

Everything kexecd loads into the kernel comes from here, so the directory is
checked before anything in it is read: owned by root (by the user running
kexecd, in tests), not writable by group or others, not a symlink. Files in
it are opened relative to the directory's descriptor with ``O_NOFOLLOW``, and
must be regular files.

Every writer (``kexecd load``, ``refresh``, ``adopt``, the daemon) holds
:func:`locked` across read, verify, load and record, so two of them cannot
interleave into a mixed image; readers (``status``) take it shared. The lock
is taken once per operation: a whole reload inside a refresh runs under the
refresh's hold (:func:`kexecd.image.loader.load_locked`), so it need not be
re-entrant, and taking it twice is a bug that fails at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from kexecd.errors import LockBusy, SnapshotError
from kexecd.files import read_own

__all__ = ["LOCK", "check_dir", "locked", "read_file", "ready"]

LOCK = ".lock"
# No symlink followed, no wait on a FIFO planted at the name.
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
# Readers wait this long for a writer (a full reload under TCG takes seconds).
WAIT_SECONDS = 60.0

_held: set[str] = set()  # the state directories this process holds the lock of


def ready(state_dir: Path) -> None:
    """Create the state directory (mode 0700) if needed, then :func:`check_dir` it."""
    with contextlib.suppress(FileExistsError):
        state_dir.mkdir(mode=0o700, parents=True)
    check_dir(state_dir)


def check_dir(path: Path) -> None:
    """Refuse a directory that someone but its owner could have written into.

    :raises SnapshotError: not a directory (a symlink counts as not), not
        owned by this user (root), or group/world-writable.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise SnapshotError(
            f"{path}: no state directory, so no snapshot; load the crash kernel with "
            "'kexecd load -- kexec -p ...' or 'kexecd adopt' first"
        ) from None
    except OSError as e:
        raise SnapshotError(f"{path}: cannot read: {e.strerror}; run kexecd as root") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SnapshotError(f"{path}: not a directory (a symlink?); remove it and load again")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise SnapshotError(
            f"{path}: owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}; "
            f"what is loaded as root must come from a directory only root can write: "
            f"chown root and chmod 0700 it"
        )


def read_file(directory: Path, name: str, limit: int) -> bytes:
    """Read the regular file ``name`` in ``directory``, at most ``limit`` bytes
    (:func:`kexecd.files.read_own`).

    :raises SnapshotError: missing, a symlink, not a regular file, larger
        than ``limit``, or unreadable.
    """
    return read_own(directory / name, limit, SnapshotError, "run 'kexecd load' again")[0]


@contextlib.contextmanager
def locked(state_dir: Path, *, shared: bool = False, wait: float | None = None) -> Iterator[None]:
    """Hold the state directory's lock (``STATE_DIR/.lock``, flock).

    :param shared: for readers; writers hold it exclusively.
    :param wait: how long to wait for another holder (default :data:`WAIT_SECONDS`).
    :raises SnapshotError: the directory is not one only root can write
        (:func:`check_dir`); :class:`~kexecd.errors.LockBusy`: another kexecd
        held the lock for ``wait`` seconds.
    """
    key = str(state_dir.resolve())
    if key in _held:  # a bug, not an input: flock would wait on itself
        raise RuntimeError(f"{state_dir / LOCK}: already held by this process")
    check_dir(state_dir)
    path = state_dir / LOCK
    try:
        fd = os.open(path, _LOCK_FLAGS, 0o600)
    except OSError as e:
        raise SnapshotError(
            f"{path}: cannot open the lock ({e.strerror}; a directory, a symlink?); remove it"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SnapshotError(f"{path}: the lock is not a regular file; remove it")
    try:
        wait = WAIT_SECONDS if wait is None else wait
        deadline = time.monotonic() + wait
        how = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        while True:
            try:
                fcntl.flock(fd, how | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(
                        f"{path}: another kexecd (load, refresh, adopt or the daemon) has "
                        f"held it for {wait:.0f} s; try again when it is done"
                    ) from None
                time.sleep(0.05)
        _held.add(key)
        try:
            yield
        finally:
            _held.discard(key)
    finally:
        os.close(fd)
