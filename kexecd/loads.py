# SPDX-License-Identifier: GPL-2.0-or-later
"""Plain data of kexec loads: segments, and what a traced command loaded.

No C here: :mod:`kexecd.core` fills these from the C core's tracer
(:func:`kexecd.core.trace_kexec`) and hands their buffers to ``kexec_load(2)``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Buffer", "KexecCall", "LoadCapture", "Segment", "page_up"]


class KexecCall(enum.Enum):
    """Which kexec syscall a traced program made (kexecd_core.h enum kexecd_syscall)."""

    NONE = 0
    KEXEC_LOAD = 1
    KEXEC_FILE_LOAD = 2


Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class Segment:
    """One ``kexec_load(2)`` segment: the buffer and where it goes.

    The one segment type: the tracer captures them, the snapshot maps them
    from its files, purgatory's digest is computed over them and
    :func:`kexecd.core.kexec_load` takes them.

    :ivar memsz: the size in memory; the kernel fills what lies past the
        buffer with zeros.
    """

    buf: Buffer
    mem: int
    memsz: int


@dataclass(frozen=True)
class LoadCapture:
    """What a traced command's process tree did with kexec: its last crash load.

    Every process and thread the command starts is traced, so a ``kexec -p``
    run by a shell script counts. A crash load is told from the call's flags:
    ``kexec_load`` with ``KEXEC_ON_CRASH`` and at least one segment, or
    ``kexec_file_load`` with ``KEXEC_FILE_ON_CRASH`` and not
    ``KEXEC_FILE_UNLOAD``. ``call`` to ``cmdline`` describe the last one.

    :ivar call: which syscall the last crash load was (``NONE`` when the tree
        made no crash load, whatever other kexec calls it made).
    :ivar result: what that call returned: 0, or ``-errno`` (always 0 when
        skipped; ``-EINPROGRESS`` when its caller died inside it).
    :ivar calls: how many kexec syscalls the tree made in all:
        ``crash_loads + unloads + reboot_loads``.
    :ivar exit_code: the command's exit code; ``-N`` when signal N killed it.
    :ivar crash_loads: how many crash loads the tree made; the last is captured.
    :ivar unloads: how many unloads: ``kexec_load`` with no segment (kernel/kexec.c)
        or ``kexec_file_load`` with ``KEXEC_FILE_UNLOAD``, of either image.
    :ivar reboot_loads: how many loads without the crash flag (``kexec -l``): of
        the kernel a kexec reboot boots. Passed or skipped like the others, never
        captured.
    :ivar program: the executable of the process that made the last crash load,
        read from ``/proc/PID/exe`` at the call (which kexec-tools built the
        image); ``None`` when it could not be read.
    """

    call: KexecCall
    result: int
    entry: int
    flags: int
    segments: tuple[Segment, ...]
    cmdline: bytes | None
    calls: int
    exit_code: int
    crash_loads: int
    unloads: int
    reboot_loads: int
    program: bytes | None = None

    @classmethod
    def one_load(
        cls,
        entry: int,
        flags: int,
        segments: Sequence[Segment],
        program: bytes | None = None,
    ) -> LoadCapture:
        """A successful run that made one ``kexec_load`` crash load and nothing
        else: what kexecd records for an image it built itself (a moved
        header), and what the test bed makes of a capture."""
        return cls(
            call=KexecCall.KEXEC_LOAD,
            result=0,
            entry=entry,
            flags=flags,
            segments=tuple(segments),
            cmdline=None,
            calls=1,
            exit_code=0,
            crash_loads=1,
            unloads=0,
            reboot_loads=0,
            program=program,
        )


def page_up(n: int, page: int = 4096) -> int:
    """``n`` rounded up to a whole number of ``page`` bytes."""
    return -(-n // page) * page
