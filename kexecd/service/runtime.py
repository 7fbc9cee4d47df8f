# SPDX-License-Identifier: GPL-2.0-or-later
"""What the daemon holds while it runs: its runtime directory, and two inotify watches.

* :func:`claim`: one daemon per runtime directory (a second would steal the
  control socket, and stopping the first would remove the second's).
* :class:`SnapshotWatch`: what changed among the snapshot's files. A stat
  signature is no proof that a file is unchanged (a file can be rewritten
  with its mtime restored); inotify sees every write, so a verification by
  content holds until the watch reports a change.
* :func:`watch_kexec_cmd`: the distro rewrites its record on every load
  (kdump-config load, reload, try-reload): watch its directory, never poll.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
from pathlib import Path

from kexecd import core
from kexecd.errors import OwnFileError, ServiceError
from kexecd.files import ensure_dir

__all__ = ["SnapshotWatch", "claim", "watch_kexec_cmd"]

log = logging.getLogger("kexecd")
INSTANCE_LOCK = "daemon.lock"
# No symlink followed, no wait on a FIFO planted at the name.
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
# Entries of the state and snapshot directories whose change undoes a
# verification ("" is the directory itself, moved or deleted).
_SNAPSHOT_FILES = ("", "snapshot", "manifest.json")


def claim(runtime_dir: Path) -> int:
    """Hold ``RUNTIME_DIR/daemon.lock`` (flock) for as long as the fd stays open.

    :raises ServiceError: another daemon holds it.
    """
    try:
        ensure_dir(runtime_dir)
    except OwnFileError as e:
        raise ServiceError(str(e)) from None
    path = runtime_dir / INSTANCE_LOCK
    try:
        fd = os.open(
            path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600
        )
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file")
    except OSError as e:
        raise ServiceError(
            f"{path}: cannot open the daemon's lock ({e.strerror}; a directory, a FIFO, a "
            "symlink?); remove it"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise ServiceError(
            f"{path}: another kexecd (pid {other or '?'}) runs with this runtime "
            "directory; stop it first, or give another --runtime-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class SnapshotWatch:
    """An inotify watch on the state directory and the snapshot directory in it."""

    def __init__(self, state_dir: Path, fd: int) -> None:
        self.state_dir = state_dir
        self.fd = fd

    @classmethod
    def start(cls, state_dir: Path) -> SnapshotWatch | None:
        """Watch ``state_dir``; ``None`` (verify before every load) if it cannot."""
        try:
            fd = core.watch_dir(state_dir)
        except OSError as e:
            log.info(
                "not watching %s (%s): the snapshot is hashed before every load",
                state_dir,
                e.strerror,
            )
            return None
        watch = cls(state_dir, fd)
        watch.rewatch()
        return watch

    def rewatch(self) -> None:
        """Watch the snapshot directory there now (a new 'kexecd load' swaps it)."""
        with contextlib.suppress(OSError):
            core.watch_dir(self.state_dir / "snapshot", self.fd)

    def changed(self) -> bool:
        """Whether a segment file, the manifest or the snapshot itself changed."""
        names = core.drain_watch(self.fd)
        hit = any(n in _SNAPSHOT_FILES or n.startswith(("seg-", ".snapshot")) for n in names)
        if hit:
            self.rewatch()
        return hit

    def close(self) -> None:
        os.close(self.fd)


def watch_kexec_cmd(path: Path) -> int | None:
    """An inotify fd on the directory of the distro's command file, or ``None``."""
    try:
        return core.watch_dir(path.parent)
    except OSError as e:
        log.warning(
            "cannot watch %s (%s): the distro's reloads are adopted when kexecd restarts",
            path.parent,
            e.strerror,
        )
        return None
