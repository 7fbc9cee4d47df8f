# SPDX-License-Identifier: GPL-2.0-or-later
"""Runs in the guest: fill pages that lie in a physical range with a known pattern.

``python3 guest_pattern.py START END COUNT OUT`` allocates anonymous memory
in chunks until ``/proc/self/pagemap`` shows ``COUNT`` of its pages in
``[START, END)`` (the hot-added DIMM), writes into each of those pages a
pattern that names its own physical address, writes the addresses to
``OUT`` as JSON, and then keeps the pages (mlocked, no huge pages) until it
is killed or the kernel crashes. The host finds the pages in the dump with
:func:`expected_page`.

Standard library only: the guest's python3 runs it, not the test bed's venv.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import struct
import sys
import time

PAGE = 4096
MAGIC = b"KEXECD-PATTERN\x00\x00"
CHUNK = 32 << 20
LIMIT = 1536 << 20
PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63


def expected_page(phys: int) -> bytes:
    """The 4 KiB the writer put at physical address ``phys``."""
    return b"".join(MAGIC + struct.pack("<QQ", phys, i) for i in range(PAGE // 32))


def main(argv: list[str]) -> int:
    start, end, want, out = int(argv[1], 0), int(argv[2], 0), int(argv[3]), argv[4]
    libc = ctypes.CDLL(None, use_errno=True)
    keep: list[mmap.mmap] = []
    found: list[int] = []
    total = 0
    with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
        while len(found) < want and total < LIMIT:
            m = mmap.mmap(-1, CHUNK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            total += CHUNK
            m.madvise(mmap.MADV_NOHUGEPAGE)
            view = ctypes.c_char.from_buffer(m)
            addr = ctypes.addressof(view)
            del view  # an exported buffer would keep m from closing
            # mlock faults every page in for writing and keeps it in place
            # (with vm.compact_unevictable_allowed=0, which the test sets).
            if libc.mlock(ctypes.c_void_p(addr), ctypes.c_size_t(CHUNK)) != 0:
                raise OSError(ctypes.get_errno(), "mlock")
            pagemap.seek(addr // PAGE * 8)
            entries = pagemap.read(CHUNK // PAGE * 8)
            hit = False
            for i, (entry,) in enumerate(struct.iter_unpack("<Q", entries)):
                phys = (entry & PFN_MASK) * PAGE
                if entry & PRESENT and start <= phys < end and len(found) < want:
                    m[i * PAGE : (i + 1) * PAGE] = expected_page(phys)
                    found.append(phys)
                    hit = True
            if hit:
                keep.append(m)
            else:
                libc.munlock(ctypes.c_void_p(addr), ctypes.c_size_t(CHUNK))
                m.close()
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"pid": os.getpid(), "pages": found, "allocated": total}, f)
    os.rename(tmp, out)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
