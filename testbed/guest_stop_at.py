# SPDX-License-Identifier: GPL-2.0-or-later
"""Run in an x86-64 guest: hold a process at a chosen system call, for a power cut there.

``python3 guest_stop_at.py --syscall NAME [--match TEXT] [--nth N] --ready FILE
(--pid PID | -- COMMAND...)`` traces the process ``PID`` (each of its threads)
or ``COMMAND`` (started here) with ptrace and lets every system call through
until the Nth entry into ``NAME`` (``kexec_load``, ``openat``) whose path
argument contains ``TEXT`` (``openat`` only). That call is held at its entry,
never to run; ``FILE`` is written, and this waits for the guest to lose power
(the test kills QEMU). Only the traced process itself is held: children it
starts are not traced (kexecd traces its own kexec-tools).

Standard library only (the guest's python3), x86-64 only: ``user_regs_struct``
and the system call numbers of arch/x86/entry/syscalls/syscall_64.tbl.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import time

SYSCALLS = {"openat": 257, "kexec_load": 246, "renameat2": 316, "rename": 82}
PTRACE_TRACEME = 0
PTRACE_SYSCALL = 24
PTRACE_GETREGS = 12
PTRACE_SETOPTIONS = 0x4200
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_O_TRACESYSGOOD = 1
PTRACE_O_TRACEEXEC = 0x10
WALL = 0x40000000
# struct user_regs_struct (arch/x86/include/asm/user_64.h): 27 words.
RAX, RSI, ORIG_RAX = 10, 13, 15
# At a syscall-entry-stop rax holds -ENOSYS (arch/x86/entry/common.c): how an
# entry is told from an exit, also for a thread seized inside a call.
ENTRY_RAX = 2**64 - 38

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    r = int(libc.ptrace(request, pid, ctypes.c_void_p(addr), ctypes.c_void_p(data)))
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, f"ptrace({request}, {pid}): {os.strerror(e)}")
    return r


def regs(pid: int) -> list[int]:
    buf = (ctypes.c_ulong * 27)()
    ptrace(PTRACE_GETREGS, pid, 0, ctypes.addressof(buf))
    return list(buf)


def path_at(pid: int, addr: int) -> str:
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as f:
        f.seek(addr)
        raw = f.read(512)
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def start(argv: list[str]) -> int:
    pid = os.fork()
    if pid == 0:
        libc.ptrace(PTRACE_TRACEME, 0, None, None)
        os.kill(os.getpid(), signal.SIGSTOP)
        os.execvp(argv[0], argv)
    os.waitpid(pid, WALL)
    ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEEXEC)
    ptrace(PTRACE_SYSCALL, pid)
    return pid


def seize(pid: int) -> list[int]:
    tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    for tid in tids:
        ptrace(PTRACE_SEIZE, tid, 0, PTRACE_O_TRACESYSGOOD)
        ptrace(PTRACE_INTERRUPT, tid)
    return tids


def hold(ready: str, what: str) -> None:
    """Say which call is held (``ready``, synced), then wait for the power cut."""
    with open(ready, "w") as f:
        f.write(what + "\n")
        f.flush()
        os.fsync(f.fileno())
    while True:
        time.sleep(3600)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--syscall", required=True, choices=sorted(SYSCALLS))
    ap.add_argument("--match", default="")
    ap.add_argument("--nth", type=int, default=1)
    ap.add_argument("--ready", required=True)
    ap.add_argument("--pid", type=int)
    ap.add_argument("command", nargs="*")
    a = ap.parse_args()
    nr = SYSCALLS[a.syscall]
    if a.pid:
        seize(a.pid)
    else:
        start(a.command)
    alive: set[int] = set()
    seen = 0
    while True:
        tid, status = os.waitpid(-1, WALL)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            alive.discard(tid)
            if not alive and a.pid is None:
                print("the command ended before the call", file=sys.stderr)
                return 1
            continue
        alive.add(tid)
        sig = os.WSTOPSIG(status)
        if sig == signal.SIGTRAP | 0x80:
            r = regs(tid)
            hit = r[RAX] == ENTRY_RAX and r[ORIG_RAX] == nr
            if hit and (not a.match or a.match in path_at(tid, r[RSI])):
                seen += 1
                if seen == a.nth:
                    hold(a.ready, f"{tid} {a.syscall} {path_at(tid, r[RSI]) if a.match else ''}")
            ptrace(PTRACE_SYSCALL, tid)
        elif status >> 16:  # an event stop (PTRACE_EVENT_STOP, _EXEC): no signal
            ptrace(PTRACE_SYSCALL, tid)
        else:
            ptrace(PTRACE_SYSCALL, tid, 0, sig)  # a signal for the tracee: deliver it


if __name__ == "__main__":
    sys.exit(main())
