# SPDX-License-Identifier: GPL-2.0-or-later
"""Reading procfs and sysfs under a root directory (``/``, or a fake tree in tests)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import NoReturn

from kexecd.errors import SystemStateError

__all__ = ["Root"]


class Root:
    """A root directory under which ``proc/...`` and ``sys/...`` are read.

    Errors name the file as the caller sees it (with the root prefixed) and
    say what to do.
    """

    def __init__(self, path: str | Path = "/") -> None:
        self.base = Path(path)
        self._prefix = os.path.join(str(self.base), "")  # str joins: pathlib is slow

    def __repr__(self) -> str:
        return f"Root({str(self.base)!r})"

    def path(self, rel: str) -> Path:
        """The path of ``rel`` (such as ``proc/iomem``) under this root."""
        return self.base / rel.lstrip("/")

    def _join(self, rel: str) -> str:
        return self._prefix + rel.lstrip("/")

    def exists(self, rel: str) -> bool:
        return os.path.exists(self._join(rel))

    def list_dir(self, rel: str) -> frozenset[str]:
        """The names in directory ``rel``; a missing or unreadable one raises
        :class:`SystemStateError`."""
        try:
            return frozenset(os.listdir(self._join(rel)))
        except FileNotFoundError:
            raise SystemStateError(f"{self.path(rel)}: missing; is sysfs mounted?") from None
        except OSError as e:
            self._error(rel, e)

    def read_text(self, rel: str, *, hint: str = "") -> str:
        """Read a whole file; a missing or unreadable one raises :class:`SystemStateError`."""
        return self.read_bytes(rel, hint=hint).decode("utf-8", errors="replace")

    def read_bytes(self, rel: str, limit: int = -1, *, hint: str = "") -> bytes:
        """Read a regular file (procfs and sysfs files are); never wait on a FIFO."""
        data = self._read(rel, limit)
        if data is None:
            fix = hint or "is procfs/sysfs mounted, and does the kernel have it?"
            raise SystemStateError(f"{self.path(rel)}: missing; {fix}")
        return data

    def _read(self, rel: str, limit: int) -> bytes | None:
        # One open, fstat and read loop (no buffered file object): a refresh
        # reads a few dozen small files, and each costs several times more
        # under emulation than on hardware. None: the file is missing.
        try:
            fd = os.open(self._join(rel), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            self._error(rel, e)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise SystemStateError(f"{self.path(rel)}: is a directory, expected a file")
            if not stat.S_ISREG(mode):
                raise SystemStateError(
                    f"{self.path(rel)}: not a regular file; is this root a real one?"
                )
            chunks = []
            left = limit if limit >= 0 else -1
            while left != 0:
                chunk = os.read(fd, 1 << 20 if left < 0 else min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                if left > 0:
                    left -= len(chunk)
            return b"".join(chunks)
        except OSError as e:
            self._error(rel, e)
        finally:
            os.close(fd)

    def _error(self, rel: str, e: OSError) -> NoReturn:
        path = self.path(rel)
        if isinstance(e, PermissionError):
            raise SystemStateError(f"{path}: permission denied; run kexecd as root") from None
        if e.errno == errno.EISDIR:
            raise SystemStateError(f"{path}: is a directory, expected a file") from None
        raise SystemStateError(f"{path}: cannot read: {e.strerror}") from None

    def read_optional(self, rel: str) -> str | None:
        """Read a file that may be absent (older kernels); ``None`` if it is."""
        data = self._read(rel, -1)
        return None if data is None else data.decode("utf-8", errors="replace")
