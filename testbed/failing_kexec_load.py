# SPDX-License-Identifier: GPL-2.0-or-later
"""Run a command whose kexec_load calls fail with an errno, before reaching the kernel.

``python -m testbed.failing_kexec_load ERRNO -- COMMAND...`` installs a
seccomp filter that answers every ``kexec_load`` with ``-ERRNO`` and execs
the command: the kernel never sees the call, so its crash image is untouched.
The test bed's fault injection for the daemon; it refuses to run outside a
test-bed guest.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys

from testbed.guest_safety import require_guest

# linux/filter.h, linux/seccomp.h, linux/audit.h, asm/unistd_64.h
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
AUDIT_ARCH_X86_64 = 0xC000003E
NR_KEXEC_LOAD = 246
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def install(error: int) -> None:
    """Make every later kexec_load of this process and its children fail with ``error``."""
    prog = b"".join(
        [
            _insn(BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
            _insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
            _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
            _insn(BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
            _insn(BPF_JEQ_K, 0, 1, NR_KEXEC_LOAD),
            _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | error),
            _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        ]
    )
    buf = ctypes.create_string_buffer(prog)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog) // 8, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main(argv: list[str]) -> int:
    error, sep, *command = argv
    if sep != "--" or not command:
        print(__doc__, file=sys.stderr)
        return 2
    require_guest("inject kexec_load failures")
    install(int(error))
    os.execvp(command[0], command)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
