# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel log (``/dev/kmsg``), for the messages that say the kernel's own
update of the header it keeps was dropped.

Linux 6.6+ drops an update in three ways, each logged once, and no later
event repairs it unless another hotplug comes, so the header may miss that
CPU or memory until then: the daemon then loads a corrected image itself.

* **lock busy** (:attr:`Drop.LOCK_BUSY`): kernel/crash_core.c
  crash_handle_hotplug_event() finds the kexec lock taken (a ``kexec_load``
  in progress, for one) and logs "crash hp: kexec_trylock() failed,
  elfcorehdr may be inaccurate" (later kernels, Debian's 6.12.95 among them,
  say "kdump image" instead). Seen in the test bed's 6.12.95 guest, as
  "kdump image may be inaccurate", with a loop of ``kexec -s -l`` and
  ``kexec -u`` holding the lock while blocks were onlined. The same words
  come from crash_check_hotplug_support() when a read of a ``crash_hotplug``
  file finds the lock taken (it then reads 0): kexecd's own read during
  another program's load can thus set off one reload too many.
* **too large** (:attr:`Drop.TOO_LARGE`): arch/x86/kernel/crash.c
  arch_crash_handle_hotplug_event() built a header larger than the segment
  sized at load: ``pr_err("update elfcorehdr elfsz %lu > memsz %lu", ...)``.
* **not built** (:attr:`Drop.NOT_BUILT`): the same function could not build
  one (prepare_elf_headers() failed, -ENOMEM for one):
  ``pr_err("unable to create new elfcorehdr")``.

Both x86 strings are the same in v6.6 (the function as added by "x86/crash:
add x86 crash hotplug support") and v6.12 (where it takes a second ``arg``);
the file redefines ``pr_fmt`` as ``"crash hp: "`` (it was ``"kexec: "``) just
inside its ``#ifdef CONFIG_CRASH_HOTPLUG``, so a 6.6 build's strings read
``KERN_ERR "crash hp: unable to create new elfcorehdr"``.
Neither ends in a newline, so the record is complete in ``/dev/kmsg`` only
once the kernel logs its next message (kernel/printk/printk.c: a record
without a newline stays open for a continuation).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import re

from kexecd.system.root import Root

__all__ = ["Drop", "KmsgWatch", "dropped_update", "is_missed_update", "worst"]


class Drop(enum.Enum):
    """Why the kernel dropped an update of the header it keeps."""

    LOCK_BUSY = "lock-busy"  # kexec_trylock() failed
    NOT_BUILT = "not-built"  # the new header could not be built
    TOO_LARGE = "too-large"  # the new header is larger than its segment

    @property
    def said(self) -> str:
        """The kernel's reason, in a few words for people."""
        return _SAID[self]


_SAID = {
    Drop.LOCK_BUSY: "kexec_trylock() failed",
    Drop.NOT_BUILT: "it could not build a new header",
    Drop.TOO_LARGE: "its new header was larger than the header segment",
}

# One message per kind, as the text of a record (after "prio,seq,usec,flags;").
_MESSAGES: tuple[tuple[Drop, re.Pattern[str]], ...] = (
    (
        Drop.LOCK_BUSY,
        re.compile(
            r"crash hp: kexec_trylock\(\) failed, (elfcorehdr|kdump image) may be inaccurate"
        ),
    ),
    (Drop.TOO_LARGE, re.compile(r"crash hp: update elfcorehdr elfsz [0-9]+ > memsz [0-9]+")),
    (Drop.NOT_BUILT, re.compile(r"crash hp: unable to create new elfcorehdr")),
)

# When one read holds several kinds: the one that asks the most of kexecd.
_WEIGHT = {Drop.LOCK_BUSY: 0, Drop.NOT_BUILT: 1, Drop.TOO_LARGE: 2}


def dropped_update(record: str) -> Drop | None:
    """Which dropped header update one ``/dev/kmsg`` record
    (``prio,seq,usec,flags;text``, with continuation lines) tells of, if any."""
    _, sep, text = record.partition(";")
    if not sep:
        return None
    text = text.split("\n", 1)[0]
    return next((kind for kind, pattern in _MESSAGES if pattern.fullmatch(text)), None)


def is_missed_update(record: str) -> bool:
    """Whether one ``/dev/kmsg`` record is the kernel saying it dropped a header update."""
    return dropped_update(record) is not None


def worst(drops: set[Drop]) -> Drop | None:
    """Of several drops, the one that asks the most of kexecd (``None`` for none)."""
    return max(drops, key=_WEIGHT.__getitem__, default=None)


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

    def drain(self, limit: int = 10000) -> set[Drop]:
        """Read what is new (at most ``limit`` records); the kinds of dropped
        header update among it (empty: none)."""
        drops: set[Drop] = set()
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
            for r in text.split("\n"):
                kind = dropped_update(r) if r else None
                if kind is not None:
                    drops.add(kind)
        return drops

    def close(self) -> None:
        """Close the log (again is fine)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
