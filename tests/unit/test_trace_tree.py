# SPDX-License-Identifier: GPL-2.0-or-later
"""kexecd.core.trace_kexec follows the command's whole process tree.

kdump-config runs ``eval $KEXEC_CMD``, kdumpctl a subshell: the crash load is
made by a descendant, not by the traced command itself. Skip mode only, on the
stand-in program (its flags would make the kernel refuse the calls anyway).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from kexecd.core import trace_kexec
from kexecd.loads import KexecCall, LoadCapture

CRASH_FLAGS = 0x80000101  # fake_kexec's bad bits | KEXEC_ON_CRASH


def sh(script: str, fake: Path) -> LoadCapture:
    """Trace ``sh -c script`` in skip mode, with ``$0`` the fake program."""
    return trace_kexec(["sh", "-c", script, str(fake)], skip=True)


def assert_one_crash_load(cap: LoadCapture, entry: int) -> None:
    assert cap.exit_code == 0
    assert cap.call is KexecCall.KEXEC_LOAD
    assert (cap.result, cap.entry, cap.flags) == (0, entry, CRASH_FLAGS)
    assert [(len(s.buf), s.mem, s.memsz) for s in cap.segments] == [
        (5000, 0x100000, 0x2000),
        (0, 0x200000, 0x1000),
        (3, 0x300000, 0x1000),
    ]
    assert cap.segments[2].buf == b"xyz"
    assert (cap.calls, cap.crash_loads, cap.unloads, cap.reboot_loads) == (1, 1, 0, 0)


@pytest.mark.parametrize("script", ['exec "$0" crash', '"$0" crash; true'])
def test_shell_wrapper(fake_kexec: Path, script: str) -> None:
    assert_one_crash_load(sh(script, fake_kexec), 0x1234)


def test_eval_like_kdump_config(fake_kexec: Path) -> None:
    cmd = f"{fake_kexec} crash 0x4d"
    assert_one_crash_load(sh(f'KEXEC_CMD="{cmd}"; eval $KEXEC_CMD', fake_kexec), 0x4D)


def test_exec_chain(fake_kexec: Path) -> None:
    assert_one_crash_load(sh('sh -c \'"$0" crash 0xc4a1\' "$0"', fake_kexec), 0xC4A1)


def test_child(fake_kexec: Path) -> None:
    assert_one_crash_load(trace_kexec([str(fake_kexec), "fork"], skip=True), 0xF0)


def test_double_fork(fake_kexec: Path) -> None:
    # The grandchild calls after its parent exited; the top process waits
    # for it through a pipe.
    assert_one_crash_load(trace_kexec([str(fake_kexec), "doublefork"], skip=True), 0xFF)


def test_thread(fake_kexec: Path) -> None:
    assert_one_crash_load(trace_kexec([str(fake_kexec), "thread"], skip=True), 0x7)


def test_unload_then_load(fake_kexec: Path) -> None:
    cap = sh('"$0" unload && "$0" crash', fake_kexec)
    assert (cap.exit_code, cap.call, cap.entry) == (0, KexecCall.KEXEC_LOAD, 0x1234)
    assert (cap.calls, cap.crash_loads, cap.unloads, cap.reboot_loads) == (2, 1, 1, 0)


def test_unloads_alone_record_nothing(fake_kexec: Path) -> None:
    cap = sh('"$0" unload && "$0" fileunload', fake_kexec)
    assert cap.exit_code == 0
    assert (cap.call, cap.segments, cap.cmdline) == (KexecCall.NONE, (), None)
    assert (cap.calls, cap.crash_loads, cap.unloads) == (2, 0, 2)


def test_non_crash_load_ignored(fake_kexec: Path) -> None:
    cap = trace_kexec([str(fake_kexec), "noncrash"], skip=True)
    assert cap.exit_code == 0  # skipped all the same
    assert (cap.call, cap.entry, cap.segments) == (KexecCall.NONE, 0, ())
    assert (cap.calls, cap.crash_loads, cap.reboot_loads) == (1, 0, 1)


def test_last_crash_load_kept(fake_kexec: Path) -> None:
    cap = sh(
        '"$0" crash 0x1111; "$0" file; "$0" crash 0x2222; "$0" noncrash 0x3333; "$0" unload',
        fake_kexec,
    )
    assert (cap.exit_code, cap.call, cap.entry, cap.cmdline) == (
        0,
        KexecCall.KEXEC_LOAD,
        0x2222,
        None,
    )
    assert (cap.calls, cap.crash_loads, cap.unloads, cap.reboot_loads) == (5, 3, 1, 1)


def test_outliving_descendant_is_detached(fake_kexec: Path, tmp_path: Path) -> None:
    # A background child still running when the command exits is let go,
    # untraced, instead of waited for.
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    cap = sh(f'"$0" crash; sleep 60 </dev/null >/dev/null 2>&1 & echo $! >{pidfile}', fake_kexec)
    assert time.monotonic() - started < 20
    assert_one_crash_load(cap, 0x1234)
    pid = int(pidfile.read_text())
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        assert "\nTracerPid:\t0\n" in status
    finally:
        os.kill(pid, signal.SIGKILL)
