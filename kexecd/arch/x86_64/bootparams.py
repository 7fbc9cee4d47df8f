# SPDX-License-Identifier: GPL-2.0-or-later
"""The crash kernel's command line in the x86 boot parameters segment kexec-tools built.

kexec-tools (kexec/arch/x86_64/kexec-bzImage64.c do_bzImage64_load()) loads
one segment of boot parameters: ``struct boot_params`` with the bzImage's
setup header copied in at 0x1f1, then, ``kern16_size_needed`` (at least 4
KiB) in, the command line and its NUL, then ``PURGATORY_CMDLINE_SIZE`` (64)
zero bytes, and nothing after them. ``cmd_line_ptr`` (0x228, the high half
in ``ext_cmd_line_ptr`` at 0x0c8 from boot protocol 2.12) holds the
command line's physical address (kexec/arch/i386/x86-linux-setup.c
setup_linux_bootloader_parameters_high()); on a crash load the line ends
with the `` elfcorehdr=<KiB>K`` kexec-tools appended. No length is stored,
so the line may grow into the zero bytes after it, up to the kernel's
``cmdline_size`` (0x238, from protocol 2.06; Documentation/x86/boot.rst).

Purgatory keeps ``cmdline_end``, the address of the original NUL, where it
would write `` kexec_jump_back_entry=0x...`` if the word above its stack
were not 0; for a kexec that does not preserve context, a crash among them,
the kernel pushes 0 there (arch/x86/kernel/relocate_kernel_64.S; commit
2cacf7f23a02 dropped that push for a while, 786a45757dcd put it back), so words
are appended at the end, where that write, were it ever made, would only
cut them off again instead of cutting ``elfcorehdr=`` in two.

:func:`find` reads the segments (untrusted: a snapshot's files); anything
odd is a :class:`CmdlineError` naming the problem. :func:`patched` writes a
new line into a copy of the segment's buffer, of the same size.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from kexecd.arch import CommandLine
from kexecd.errors import CmdlineError
from kexecd.kparams import has
from kexecd.loads import Buffer, Segment

__all__ = ["ELFCOREHDR", "find", "patched"]

# arch/x86/include/uapi/asm/bootparam.h, Documentation/x86/zero-page.rst.
EXT_CMD_LINE_PTR = 0x0C8
HEADER = 0x202  # "HdrS"
VERSION = 0x206
CMD_LINE_PTR = 0x228
CMDLINE_SIZE = 0x238
BOOT_PARAMS_SIZE = 0x1000
# Documentation/x86/boot.rst: before protocol 2.06 the line is at most 255 bytes.
OLD_CMDLINE_MAX = 255
# The most of a segment read for the line: beyond any kernel's COMMAND_LINE_SIZE.
SCAN_LIMIT = 1 << 16
# kexec-tools crashdump-x86.c cmdline_add_elfcorehdr(): the header's address.
ELFCOREHDR = "elfcorehdr"


def patched(buf: Buffer, cl: CommandLine, text: str) -> bytes:
    """A copy of the segment's buffer with ``text`` as the command line.

    The copy is as long as ``buf``; what the old line covered beyond the new
    one becomes zeros.

    :raises CmdlineError: ``text`` is longer than the line may grow.
    """
    try:
        new = text.encode("latin-1")
    except UnicodeEncodeError:
        raise CmdlineError(f"{text[:60]!r}: not a command line of bytes") from None
    old = len(cl.text)
    if b"\0" in new:
        raise CmdlineError("a command line cannot hold a NUL byte")
    cl.check_room(text)
    out = bytearray(buf)
    end = cl.offset + max(old, len(new)) + 1
    out[cl.offset : end] = new + bytes(end - cl.offset - len(new))
    return bytes(out)


def _u16(buf: Buffer, at: int) -> int:
    value: int = struct.unpack_from("<H", buf, at)[0]
    return value


def _u32(buf: Buffer, at: int) -> int:
    value: int = struct.unpack_from("<I", buf, at)[0]
    return value


def _pointer(seg: Segment) -> int | None:
    # The command line's address if this segment begins with boot_params
    # whose setup header says so; None for any other segment.
    buf = seg.buf
    if len(buf) < BOOT_PARAMS_SIZE or bytes(buf[HEADER : HEADER + 4]) != b"HdrS":
        return None
    version = _u16(buf, VERSION)
    if version < 0x0202:
        return None
    ptr = _u32(buf, CMD_LINE_PTR)
    if version >= 0x020C:
        ptr |= _u32(buf, EXT_CMD_LINE_PTR) << 32
    return ptr


def _located(segments: Sequence[Segment]) -> tuple[int, int]:
    # The one segment whose boot parameters point into itself, and where.
    found = []
    for i, seg in enumerate(segments):
        ptr = _pointer(seg)
        if ptr is not None and seg.mem <= ptr < seg.mem + len(seg.buf):
            found.append((i, ptr - seg.mem))
    if not found:
        raise CmdlineError(
            "no segment holds x86 boot parameters with a command line (not a bzImage "
            "loaded by kexec-tools?)"
        )
    if len(found) > 1:
        raise CmdlineError(
            f"segments {', '.join(str(i) for i, _ in found)} all hold boot parameters "
            "with a command line: which one the kernel reads is unclear"
        )
    return found[0]


def find(segments: Sequence[Segment]) -> CommandLine:
    """Find and read the crash kernel's command line in the boot parameters segment.

    :raises CmdlineError: no segment or more than one holds boot parameters
        that point into themselves; the line is not NUL-terminated in its
        segment, something other than zeros follows it, it is longer than the
        kernel takes, or it has no ``elfcorehdr=`` (then it is not a crash
        kernel's line kexec-tools built).
    """
    index, offset = _located(segments)
    seg = segments[index]
    where = f"segment {index} at +{offset:#x}"
    buf = bytes(seg.buf[offset : offset + SCAN_LIMIT + 1])
    nul = buf.find(b"\0")
    if nul < 0:
        raise CmdlineError(f"the command line ({where}) has no NUL within its segment")
    tail = len(seg.buf) - offset - nul - 1
    if bytes(seg.buf[offset + nul + 1 :]).count(0) != tail:
        raise CmdlineError(
            f"the command line ({where}) is followed by more than zeros: not the layout "
            "kexec-tools builds"
        )
    version = _u16(seg.buf, VERSION)
    limit = _u32(seg.buf, CMDLINE_SIZE) if version >= 0x0206 else OLD_CMDLINE_MAX
    if nul > limit:
        raise CmdlineError(
            f"the command line ({where}) is {nul} bytes, more than the kernel's "
            f"cmdline_size ({limit})"
        )
    text = buf[:nul].decode("latin-1")
    if not has(text, ELFCOREHDR):
        raise CmdlineError(
            f"the command line ({where}) has no elfcorehdr=: not a crash kernel's command "
            "line as kexec-tools builds it"
        )
    return CommandLine(index, offset, text, min(tail, limit - nul))
