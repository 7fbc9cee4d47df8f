# SPDX-License-Identifier: GPL-2.0-or-later
"""Reading procfs and sysfs under a root directory (``/``, or a fake tree in tests)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from kexecd.errors import SystemStateError

__all__ = ["Root"]


class Root:
    """A root directory under which ``proc/...`` and ``sys/...`` are read.

    Errors name the file as the caller sees it (with the root prefixed) and
    say what to do.
    """

    def __init__(self, path: str | Path = "/") -> None:
        self.base = Path(path)

    def __repr__(self) -> str:
        return f"Root({str(self.base)!r})"

    def path(self, rel: str) -> Path:
        """The path of ``rel`` (such as ``proc/iomem``) under this root."""
        return self.base / rel.lstrip("/")

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def read_text(self, rel: str, *, hint: str = "") -> str:
        """Read a whole file; a missing or unreadable one raises :class:`SystemStateError`."""
        return self.read_bytes(rel, hint=hint).decode("utf-8", errors="replace")

    def read_bytes(self, rel: str, limit: int = -1, *, hint: str = "") -> bytes:
        """Read a regular file (procfs and sysfs files are); never wait on a FIFO."""
        path = self.path(rel)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise SystemStateError(f"{path}: not a regular file; is this root a real one?")
                return f.read(limit)
        except FileNotFoundError:
            fix = hint or "is procfs/sysfs mounted, and does the kernel have it?"
            raise SystemStateError(f"{path}: missing; {fix}") from None
        except PermissionError:
            raise SystemStateError(f"{path}: permission denied; run kexecd as root") from None
        except OSError as e:
            if e.errno == errno.EISDIR:
                raise SystemStateError(f"{path}: is a directory, expected a file") from None
            raise SystemStateError(f"{path}: cannot read: {e.strerror}") from None

    def read_optional(self, rel: str) -> str | None:
        """Read a file that may be absent (older kernels); ``None`` if it is."""
        if not self.path(rel).exists():
            return None
        return self.read_text(rel)
