# SPDX-License-Identifier: GPL-2.0-or-later
"""Fill part of the crash kernel reservation with a pattern, through the kernel.

``python -m testbed.guest_poison START LENGTH`` loads a crash image of one
segment, ``LENGTH`` bytes of 0xff at ``START`` (page aligned, inside the
crash reservation): the kernel copies it there (kimage_load_crash_segment()),
and a later ``kexec_load`` that does not cover that memory leaves it as it
is. The test bed's proof that a crash kernel whose tail kexecd no longer
has zero-filled (:mod:`kexecd.image.trim`) boots over whatever the memory
held. All ones is the worst a stale page table can hold (present, writable,
huge). It refuses to run outside a test-bed guest.
"""

from __future__ import annotations

import sys

from kexecd import core
from kexecd.loads import Segment
from testbed.guest_safety import require_guest

# include/uapi/linux/kexec.h
KEXEC_ON_CRASH = 0x00000001
KEXEC_ARCH_X86_64 = 62 << 16


def main(argv: list[str]) -> int:
    start, length = int(argv[0], 0), int(argv[1], 0)
    require_guest("load a crash image of a pattern")
    core.kexec_load(
        start, KEXEC_ON_CRASH | KEXEC_ARCH_X86_64, [Segment(b"\xff" * length, start, length)]
    )
    print(f"filled {start:#x}-{start + length - 1:#x} with 0xff ({length >> 20} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
