# SPDX-License-Identifier: GPL-2.0-or-later
"""The architecture seam: what differs between the architectures kexecd loads for.

A ``kexec_load`` image records its architecture in the high half of its flags
(``KEXEC_ARCH_*``, include/uapi/linux/kexec.h): :func:`of_flags` turns that
into an :class:`Arch`, the one object the image layer asks about the boot
segment that names the header (x86: boot_params with ``elfcorehdr=`` and the
e820 map; arm64: the DTB's ``/chosen``), the header's size and placement
rules, and kexec-tools' per-architecture rules for reading the system. Plan,
loader and relocation hold no architecture conditionals: they call this.

x86_64 is the first implementation (:mod:`kexecd.arch.x86_64`), aarch64 the
second (:mod:`kexecd.arch.aarch64`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from kexecd.errors import CmdlineError, SnapshotError
from kexecd.loads import Buffer, Segment
from kexecd.model import RangeType

__all__ = ["Arch", "CommandLine", "KexecToolsFacts", "host", "of_flags", "of_machine"]

# include/uapi/linux/kexec.h: the architecture lives in the flags' high 16 bits.
KEXEC_ARCH_MASK = 0xFFFF0000
KEXEC_ARCH_DEFAULT = 0


@dataclass(frozen=True)
class CommandLine:
    """Where the crash kernel's command line is, what it says, how far it may grow.

    :ivar segment: the index of the segment that holds it.
    :ivar offset: where the line starts in that segment's buffer.
    :ivar text: the line, without its NUL (bytes as latin-1: round-trips).
    :ivar room: how many bytes the line may grow by.
    """

    segment: int
    offset: int
    text: str
    room: int

    def check_room(self, text: str) -> None:
        """:raises CmdlineError: ``text`` is longer than this line may grow."""
        grow = len(text) - len(self.text)
        if grow > self.room:
            raise CmdlineError(
                f"the command line would grow by {grow} bytes, but only {self.room} are "
                "free after it in its segment"
            )


@dataclass(frozen=True)
class KexecToolsFacts:
    """What one architecture's kexec-tools crashdump code reads, and how.

    :ivar range_types: the ``/proc/iomem`` names it collects besides RAM.
    :ivar skipped: names it cuts out of the ranges (besides "Crash kernel").
    :ivar max_crash_reserved: the most "Crash kernel" ranges it keeps.
    :ivar max_ranges: the most memory ranges it collects: (before, since)
        the version that raised it.
    :ivar page_offset_fallback: the direct map's base old versions assume
        when the kernel does not name it.
    :ivar kernel_text_map: where the kernel text is mapped, and how far.
    :ivar kcore_headers: the most of ``/proc/kcore`` it reads.
    :ivar backup_limit: the low memory purgatory copies aside (0: none).
    :ivar ram_exact: whether kexecd's header takes only lines named exactly
        ``System RAM`` as RAM, in every version; ``None``: as the version of
        kexec-tools that made the image does (x86:
        :class:`kexecd.system.kexectools.HeaderRules`).
    :ivar ranges_raised_in: the version that raised ``max_ranges``.
    :ivar kernel_from_iomem: the kernel text PT_LOAD and the direct map come
        from ``/proc/iomem``, kallsyms and kcore's VMCOREINFO (arm64,
        :mod:`kexecd.system.kimage`), not from kcore's PT_LOADs (x86).
    :ivar sort_ranges: the ranges are cut as kexec/mem_regions.c
        mem_regions_exclude() does (only a range that holds the cut whole;
        the upper part of a split appended) and then sorted by start (arm64);
        else as x86's exclude_region() and left in /proc/iomem order.
    """

    range_types: Mapping[str, RangeType]
    skipped: tuple[str, ...]
    max_crash_reserved: int
    max_ranges: tuple[int, int]
    page_offset_fallback: int
    kernel_text_map: tuple[int, int]
    kcore_headers: int
    backup_limit: int
    ram_exact: bool | None = None
    ranges_raised_in: tuple[int, int, int] = (2, 0, 22)
    kernel_from_iomem: bool = False
    sort_ranges: bool = False


class Arch(Protocol):
    """What kexecd needs to know of an architecture's crash images."""

    name: str
    kexec_arch: int  # KEXEC_ARCH_* << 16, as in the load's flags
    machine: int  # e_machine of the ELF core header
    header_align: int  # the header's start and kexec-tools' memsz rounding
    min_header_memsz: int  # the least memsz kexec-tools gives the header
    page: int
    kexec_tools: KexecToolsFacts

    def find_cmdline(self, segments: Sequence[Segment]) -> CommandLine:
        """The crash kernel's command line among the segments.

        :raises CmdlineError: none, or not one kexec-tools built.
        """

    def with_cmdline(self, buf: Buffer, line: CommandLine, text: str) -> bytes:
        """A copy of the line's segment with ``text`` as the command line.

        :raises CmdlineError: ``text`` does not fit.
        """

    def header_holes(self, segments: Sequence[Segment]) -> list[tuple[int, int]]:
        """[start, end) ranges the crash kernel takes as RAM, where a moved
        header may go (the caller cuts out the crash reservation and the
        segments that stay).

        :raises HeaderError, CmdlineError: the boot segment cannot be read.
        """

    def repoint(
        self, segments: Sequence[Segment], header: int, new: tuple[int, int]
    ) -> dict[int, bytes]:
        """The boot segment(s) rewritten to name the header at ``new``
        ([start, end)) instead of where segment ``header`` is: index to bytes.

        :raises HeaderError, CmdlineError: they cannot be rewritten.
        """

    def resize(self, segments: Sequence[Segment], header: int, size: int) -> dict[int, bytes]:
        """The boot segment(s) rewritten to give the header, where it is,
        ``size`` bytes (for a header rewritten in place); empty when the boot
        segment names no size (x86's ``elfcorehdr=``).

        :raises HeaderError, CmdlineError: they cannot be rewritten.
        """

    def kernel_extent(self, segments: Sequence[Segment]) -> tuple[int, int] | None:
        """The kernel segment whose zero-filled tail the crash kernel's boot
        does not need, and the memsz kexec-tools gave it: ``(index, extent)``.
        A reload may load it with memsz cut to its buffer
        (:mod:`kexecd.image.trim`), as long as nothing else lies in the
        extent. ``None`` where that is not known to hold (aarch64: not yet
        proven by a crash) or the segment cannot be told exactly.
        """


def _known() -> dict[int, Arch]:
    from kexecd.arch.aarch64 import AARCH64
    from kexecd.arch.x86_64 import X86_64

    return {X86_64.kexec_arch: X86_64, AARCH64.kexec_arch: AARCH64}


def host() -> Arch:
    """The architecture kexecd runs on.

    :raises SnapshotError: one kexecd has no rules for.
    """
    machine = os.uname().machine
    for arch in _known().values():
        if arch.name == machine:
            return arch
    raise SnapshotError(f"kexecd has no rules for {machine} crash images")


def of_flags(flags: int) -> Arch:
    """The architecture a ``kexec_load`` image was loaded for, from its flags
    (``KEXEC_ARCH_DEFAULT`` is the host's).

    :raises SnapshotError: an architecture kexecd has no rules for.
    """
    code = flags & KEXEC_ARCH_MASK
    if code == KEXEC_ARCH_DEFAULT:
        return host()
    arch = _known().get(code)
    if arch is None:
        raise SnapshotError(
            f"the image was loaded for architecture {code >> 16} (KEXEC_ARCH_*), which "
            "kexecd has no rules for"
        )
    return arch


def of_machine(machine: int) -> Arch:
    """The architecture of an ELF core header's ``e_machine``.

    :raises SnapshotError: an architecture kexecd has no rules for.
    """
    for arch in _known().values():
        if arch.machine == machine:
            return arch
    raise SnapshotError(f"kexecd has no rules for ELF machine {machine} core headers")
