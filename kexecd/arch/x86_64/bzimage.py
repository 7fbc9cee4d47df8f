# SPDX-License-Identifier: GPL-2.0-or-later
"""The bzImage's kernel segment, and the zero-filled tail its boot does not need.

kexec-tools' do_bzImage64_load() (kexec/arch/x86_64/kexec-bzImage64.c,
2.0.20 to 2.0.29) loads everything after the bzImage's setup sectors as one
segment, at a ``kernel_alignment`` boundary, with memsz the setup header's
``init_size`` rounded to a page: bufsz 7-12 MB, memsz 56-67 MB for Debian's
kernels. On every ``kexec_load`` the kernel zero-fills the difference
(kernel/kexec_core.c kimage_load_crash_segment()), and at the crash
purgatory hashes those zeros again (its regions are memsz long).

The boot protocol asks for ``init_size`` bytes of memory from the load
address, not for zeroed ones (Documentation/arch/x86/boot.rst, "init_size":
the memory the kernel "needs before it is capable of examining its memory
map"); a boot loader reads the file and leaves the rest as it was. The
decompressor moves itself to the end of that area, clears its own bss
(arch/x86/boot/compressed/head_64.S, "Clear BSS"), clears the page-table
pages it allocates (compressed/ident_map_64.c initialize_identity_maps())
and decompresses to the start; the kernel clears its bss and brk
(arch/x86/kernel/head64.c clear_bss()). So a reload may load this segment
with memsz cut to its buffer, provided the rest of the area stays free:
every other segment keeps the place kexec-tools gave it outside the whole
extent, and a moved header avoids it (:func:`kexecd.image.trim.occupied`).
``tests/vm/test_trim.py`` boots crash kernels 5.10, 6.1 and 6.12 from such a
load with the tail filled with a pattern first, and reads their dumps.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from kexecd.arch.x86_64 import bootparams
from kexecd.errors import CmdlineError
from kexecd.loads import Segment, page_up

__all__ = ["kernel_extent"]

# arch/x86/include/uapi/asm/bootparam.h (struct setup_header in boot_params).
KERNEL_ALIGNMENT = 0x230
PAYLOAD_OFFSET = 0x248
INIT_SIZE = 0x260
INIT_SIZE_SINCE = 0x020A  # boot protocol 2.10: init_size, payload_offset
PAGE = 4096
# The first bytes of the compressed kernel at payload_offset
# (arch/x86/boot/compressed/Makefile: gzip, bzip2, lzma, xz, lzo, lz4, zstd).
_MAGICS = (
    b"\x1f\x8b",
    b"BZh",
    b"\x5d\x00",
    b"\xfd7zXZ",
    b"\x89LZO",
    b"\x02\x21",
    b"\x28\xb5\x2f\xfd",
)


def kernel_extent(segments: Sequence[Segment]) -> tuple[int, int] | None:
    """The bzImage's kernel segment and the memsz kexec-tools gave it
    (``init_size`` rounded to a page), as ``(index, extent)``; ``None`` when
    it cannot be told exactly.

    The segment is the one, other than the boot parameters, at a
    ``kernel_alignment`` boundary whose compressed payload starts at the
    setup header's ``payload_offset``, loaded with memsz either that extent
    (kexec-tools' layout) or its buffer rounded to a page (cut).
    """
    try:
        setup = bootparams.find(segments).segment
    except CmdlineError:
        return None
    hdr = segments[setup].buf
    (version,) = struct.unpack_from("<H", hdr, bootparams.VERSION)
    if version < INIT_SIZE_SINCE:
        return None
    (align,) = struct.unpack_from("<I", hdr, KERNEL_ALIGNMENT)
    (payload,) = struct.unpack_from("<I", hdr, PAYLOAD_OFFSET)
    (init_size,) = struct.unpack_from("<I", hdr, INIT_SIZE)
    extent = page_up(init_size, PAGE)
    if not align or align & (align - 1) or not extent:
        return None
    found = []
    for i, seg in enumerate(segments):
        size = len(seg.buf)
        if i == setup or seg.mem % align or not 0 < size < extent:
            continue
        if seg.memsz not in (extent, page_up(size, PAGE)):
            continue
        head = bytes(seg.buf[payload : payload + 6])
        if any(head.startswith(m) for m in _MAGICS):
            found.append(i)
    return (found[0], extent) if len(found) == 1 else None
