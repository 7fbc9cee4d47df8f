# SPDX-License-Identifier: GPL-2.0-or-later
"""The typed wrapper around kexecd's C core.

This is the only module that imports the cffi extension ``kexecd._core``,
allocates its buffers or frees C memory. Errors from C arrive as ``-errno``
and leave here as :class:`OSError`.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass

from kexecd._core import ffi, lib

__all__ = ["KexecCall", "LoadCapture", "Segment", "trace_kexec"]


class KexecCall(enum.Enum):
    """Which kexec syscall a traced program made."""

    NONE = lib.KEXECD_SYS_NONE
    KEXEC_LOAD = lib.KEXECD_SYS_KEXEC_LOAD
    KEXEC_FILE_LOAD = lib.KEXECD_SYS_KEXEC_FILE_LOAD


@dataclass(frozen=True)
class Segment:
    """One ``kexec_load(2)`` segment: the buffer and where it goes."""

    buf: bytes
    mem: int
    memsz: int


@dataclass(frozen=True)
class LoadCapture:
    """The arguments of the last kexec syscall of a traced program.

    :ivar call: which syscall it was (``NONE`` when it made none).
    :ivar result: what the syscall returned: 0, or ``-errno``.
    :ivar calls: how many kexec syscalls the program made in all.
    :ivar exit_code: the program's exit code; ``-N`` when signal N killed it.
    """

    call: KexecCall
    result: int
    entry: int
    flags: int
    segments: tuple[Segment, ...]
    cmdline: bytes | None
    calls: int
    exit_code: int


def _check(ret: int, what: str) -> None:
    if ret < 0:
        raise OSError(-ret, os.strerror(-ret), what)


def trace_kexec(argv: Sequence[str], *, skip: bool = False) -> LoadCapture:
    """Run ``argv`` and capture the arguments of its kexec syscalls.

    The program runs under ptrace with a seccomp filter that stops it only at
    ``kexec_load`` and ``kexec_file_load``.

    :param argv: the command; ``argv[0]`` is looked up in ``PATH``.
    :param skip: answer the kexec syscalls with 0 instead of letting the
        kernel run them, so nothing is loaded.
    :raises OSError: the program could not be started or traced.
    """
    if not argv:
        raise ValueError("trace_kexec needs a command")
    c_args = [ffi.new("char[]", os.fsencode(a)) for a in argv]
    c_argv = ffi.new("const char *[]", [*c_args, ffi.NULL])
    load = ffi.new("struct kexecd_load *")
    status = ffi.new("int *")
    mode = lib.KEXECD_TRACE_SKIP if skip else lib.KEXECD_TRACE_PASS
    try:
        _check(lib.kexecd_trace_run(c_argv, mode, load, status), argv[0])
        segments = tuple(
            Segment(
                buf=bytes(ffi.buffer(s.buf, s.bufsz)) if s.bufsz else b"",
                mem=s.mem,
                memsz=s.memsz,
            )
            for s in load.segments[0 : load.nr_segments]
        )
        cmdline = (
            bytes(ffi.buffer(load.cmdline, load.cmdline_len)) if load.cmdline != ffi.NULL else None
        )
        return LoadCapture(
            call=KexecCall(load.syscall),
            result=load.result,
            entry=load.entry,
            flags=load.flags,
            segments=segments,
            cmdline=cmdline,
            calls=load.calls,
            exit_code=os.waitstatus_to_exitcode(status[0]),
        )
    finally:
        lib.kexecd_load_deinit(load)
