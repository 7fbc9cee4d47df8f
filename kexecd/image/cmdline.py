# SPDX-License-Identifier: GPL-2.0-or-later
"""The crash kernel's command line, in the x86 boot parameters segment kexec-tools built.

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

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from kexecd.errors import CmdlineError
from kexecd.loads import Buffer, Segment

__all__ = [
    "NO_MEMHOTPLUG",
    "Amendment",
    "CommandLine",
    "appended",
    "check_word",
    "find",
    "has",
    "patched",
    "words",
]

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
ELFCOREHDR = "elfcorehdr"
# drivers/acpi/acpi_memhotplug.c: __setup("acpi_no_memhotplug", ...) keeps the
# ACPI memory device handler from attaching, so a crash kernel leaves the
# DIMMs that the first kernel hot-added (the dump covers them) alone.
NO_MEMHOTPLUG = "acpi_no_memhotplug"
ADD_IT = (
    "add it to the distro's crash command line (KDUMP_CMDLINE_APPEND in /etc/default/kdump-tools)"
)
_WORD = re.compile(r"[A-Za-z0-9_.,:/+-]+(=[A-Za-z0-9_.,:/+@-]*)?")
MAX_WORD = 128
# lib/ctype.c: what the kernel's isspace() takes (0xa0 too, in its latin-1 table).
_SPACE = frozenset(" \t\n\v\f\r\xa0")


@dataclass(frozen=True)
class CommandLine:
    """Where the command line is, what it says, and how far it may grow.

    :ivar segment: the index of the boot parameters segment.
    :ivar offset: where the line starts in that segment's buffer.
    :ivar text: the line, without its NUL (bytes as latin-1: round-trips).
    :ivar room: how many bytes the line may grow by: the zero bytes after its
        NUL (to the end of the buffer), less what ``cmdline_size`` forbids.
    """

    segment: int
    offset: int
    text: str
    room: int

    @property
    def words(self) -> list[str]:
        return words(self.text)

    def check_room(self, text: str) -> None:
        """:raises CmdlineError: ``text`` is longer than this line may grow."""
        grow = len(text) - len(self.text)
        if grow > self.room:
            raise CmdlineError(
                f"the command line would grow by {grow} bytes, but only {self.room} are "
                "free after it in its segment"
            )


@dataclass(frozen=True)
class Amendment:
    """The crash kernel's command line as kexec-tools built it, and what kexecd
    appends to it (the plan decides what: :mod:`kexecd.image.plan`).

    :ivar found: the line in the snapshot's boot parameters segment; ``None``
        when it cannot be read (``problem`` says why).
    :ivar given: the line passed to ``kexec_file_load``, which builds the
        boot parameters in the kernel (so kexecd cannot amend them).
    :ivar loaded: the words kexecd appended to the line loaded now.
    :ivar wanted: the words it appends now.
    :ivar hotplug: this host can hot-add memory (ACPI memory hotplug is there).
    :ivar enabled: ``crash_acpi_no_memhotplug`` is on.
    :ivar problem: why ``acpi_no_memhotplug`` is not appended where it is missing.
    """

    found: CommandLine | None
    loaded: tuple[str, ...]
    wanted: tuple[str, ...]
    hotplug: bool
    enabled: bool
    problem: str | None = None
    given: str | None = None

    @property
    def built(self) -> str | None:
        """The line as kexec-tools built it (or the kernel, from the one given)."""
        return self.found.text if self.found is not None else self.given

    @property
    def text(self) -> str | None:
        """The line loaded now."""
        if self.built is None:
            return None
        return " ".join([self.built, *self.loaded])

    @property
    def no_memhotplug(self) -> str:
        """Where ``acpi_no_memhotplug`` stands, one of: ``present`` (kexec-tools'
        line has it), ``appended`` (kexecd appended it), ``to-append`` (the next
        reload appends it), ``not-needed`` (this host cannot hot-add memory),
        ``off`` (missing: ``crash_acpi_no_memhotplug`` is off), ``cannot``
        (missing: ``problem`` says why), ``unknown`` (the line cannot be read:
        ``problem`` says why)."""
        if self.built is None:
            return "unknown"
        if has(self.built, NO_MEMHOTPLUG):
            return "present"
        if NO_MEMHOTPLUG in self.wanted:
            return "appended" if NO_MEMHOTPLUG in self.loaded else "to-append"
        if not self.hotplug:
            return "not-needed"
        return "off" if not self.enabled else "cannot"

    @property
    def hazard(self) -> str | None:
        """The crash kernel may boot without ``acpi_no_memhotplug`` on a host that
        can hot-add memory: why, in words; ``None`` when it will not."""
        state = self.no_memhotplug
        lacks = (
            "the crash kernel's command line (as kexec-tools built it) lacks "
            "acpi_no_memhotplug and this host can hot-add memory: the crash kernel may "
            'take hot-added memory as its own RAM and makedumpfile fail ("Bad address")'
        )
        if state == "off":
            return f"{lacks}; kexecd does not append it (crash_acpi_no_memhotplug = false)"
        if state == "cannot":
            return f"{lacks}; kexecd cannot append it: {self.problem}; {ADD_IT}"
        if state == "unknown" and self.hotplug:
            return (
                f"the crash kernel's command line cannot be read ({self.problem}), and this "
                f"host can hot-add memory: make sure it has acpi_no_memhotplug; {ADD_IT}"
            )
        return None

    @property
    def change(self) -> str:
        """What a reload does to the line, in words ("" for nothing)."""
        return self._change(("append", "drop"))

    @property
    def done(self) -> str:
        """What a reload did to the line, in words ("" for nothing)."""
        return self._change(("appended", "dropped"))

    def _change(self, verbs: tuple[str, str]) -> str:
        added = [w for w in self.wanted if w not in self.loaded]
        dropped = [w for w in self.loaded if w not in self.wanted]
        parts = []
        if added:
            why = " (this host can hot-add memory)" if NO_MEMHOTPLUG in added else ""
            parts.append(f"{verbs[0]} {' '.join(added)} to the crash kernel's command line{why}")
        if dropped:
            parts.append(
                f"{verbs[1]} {' '.join(dropped)} from the crash kernel's command line (kexecd "
                "no longer appends it)"
            )
        return " and ".join(parts)


def words(text: str) -> list[str]:
    """The line's parameters as the kernel splits them (lib/cmdline.c next_arg():
    whitespace outside double quotes)."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch in _SPACE and not quoted:
            if cur:
                out.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def _name(word: str) -> str:
    # kernel/params.c parameqn(): '-' and '_' are the same in a name.
    return word.split("=", 1)[0].strip('"').replace("-", "_")


def has(text: str, name: str) -> bool:
    """Whether a parameter named ``name`` (with or without a value) is in the line."""
    want = _name(name)
    return any(_name(w) == want for w in words(text))


def check_word(word: object) -> str:
    """``word`` if it is one plain kernel parameter (``name`` or ``name=value``,
    no quotes, no spaces).

    :raises CmdlineError: anything else.
    """
    if not isinstance(word, str) or len(word) > MAX_WORD or not _WORD.fullmatch(word):
        raise CmdlineError(f"{word!r:.60} is not a plain kernel parameter (name or name=value)")
    return word


def appended(text: str, word: str) -> str:
    """The line with ``word`` appended as its last parameter.

    :raises CmdlineError: ``word`` is not a plain parameter, or the line
        hands what follows ``--`` to init (a word appended would go there).
    """
    check_word(word)
    if "--" in words(text):
        raise CmdlineError(
            f"the command line passes arguments to init after '--', so {word} "
            "would not reach the kernel"
        )
    return f"{text} {word}" if text else word


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


def find(segments: Sequence[Segment]) -> CommandLine:
    """Find and read the crash kernel's command line in the boot parameters segment.

    :raises CmdlineError: no segment or more than one holds boot parameters
        that point into themselves; the line is not NUL-terminated in its
        segment, something other than zeros follows it, it is longer than the
        kernel takes, or it has no ``elfcorehdr=`` (then it is not a crash
        kernel's line kexec-tools built).
    """
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
    index, offset = found[0]
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
