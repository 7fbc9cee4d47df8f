# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel log (``/dev/kmsg``), for the one message that says the kernel's
own header update was dropped.

Linux 6.6+ kernel/crash_core.c crash_handle_hotplug_event(): when the kexec
lock is taken (a ``kexec_load`` in progress, for one), the kernel skips the
update of the loaded image's header for that hotplug event and logs
"crash hp: kexec_trylock() failed, elfcorehdr may be inaccurate" (later
kernels, Debian's 6.12.95 among them, say "kdump image" instead). No later event repairs it
unless another hotplug comes, so the header may miss that CPU or memory until
then: the daemon then loads a corrected image itself. (Seen in the test
bed's 6.12.95 guest, as "kdump image may be inaccurate", with a loop of
``kexec -s -l`` and ``kexec -u`` holding the lock while blocks were onlined.)

The same words come from crash_check_hotplug_support() when a read of a
``crash_hotplug`` file finds the lock taken (it then reads 0): kexecd's own
read during another program's load can thus set off one reload too many.
"""

from __future__ import annotations

import contextlib
import errno
import os

from kexecd.system.root import Root

__all__ = ["KmsgWatch", "is_missed_update"]

_PREFIX = "crash hp: kexec_trylock() failed, "
_SUFFIXES = ("elfcorehdr may be inaccurate", "kdump image may be inaccurate")


def is_missed_update(record: str) -> bool:
    """Whether one ``/dev/kmsg`` record (``prio,seq,usec,flags;text``, with
    continuation lines) is the kernel saying it dropped a header update."""
    _, sep, text = record.partition(";")
    if not sep:
        return False
    text = text.split("\n", 1)[0]
    return text.startswith(_PREFIX) and text[len(_PREFIX) :] in _SUFFIXES


class KmsgWatch:
    """``/dev/kmsg`` opened non-blocking at its end: only messages from now on.

    Documentation/ABI/testing/dev-kmsg: each ``read()`` returns one record;
    ``EPIPE`` means records were overwritten before they were read (the read
    after it goes on with the oldest one left); ``EAGAIN``, nothing new.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, root: Root) -> KmsgWatch | None:
        """Open the kernel log under ``root``; ``None`` if it cannot be read."""
        try:
            fd = os.open(root.path("dev/kmsg"), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        with contextlib.suppress(OSError):  # a pipe (tests) has no end to seek to
            os.lseek(fd, 0, os.SEEK_END)
        return cls(fd)

    def drain(self, limit: int = 10000) -> bool:
        """Read what is new (at most ``limit`` records); whether a dropped
        header update was among it."""
        missed = False
        for _ in range(limit):
            try:
                data = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:
                    continue
                raise
            if not data:
                break
            text = data.decode("utf-8", errors="replace")
            # One record per read from /dev/kmsg; a pipe may hold several.
            missed = missed or any(is_missed_update(r) for r in text.split("\n") if r)
        return missed

    def close(self) -> None:
        """Close the log (again is fine)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
