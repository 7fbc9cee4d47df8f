# SPDX-License-Identifier: GPL-2.0-or-later
"""The snapshot: kexec-tools' load, captured once, as an immutable image.

A :class:`Snapshot` is the manifest (:mod:`kexecd.image.manifest`) with its
segments mapped read-only from the state directory, and what is derived from
them once: the architecture, the header slot, whether the header can move.
Where its files live and how they are swapped is the :class:`~kexecd.image.store.Store`'s;
what is loaded from it, the :class:`~kexecd.image.record.LoadRecord`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from kexecd.arch import Arch, of_flags
from kexecd.image.manifest import Manifest, Program, Source
from kexecd.image.purgatory import DigestLocation
from kexecd.image.record import LoadRecord
from kexecd.image.relocate import capacity
from kexecd.loads import Segment
from kexecd.system.kexectools import HeaderRules, rules_for

__all__ = ["KERNEL_UPDATE_FLAGS", "Snapshot", "Source"]

# include/uapi/linux/kexec.h: KEXEC_UPDATE_ELFCOREHDR, KEXEC_CRASH_HOTPLUG_SUPPORT.
KERNEL_UPDATE_FLAGS = 0x4 | 0x8


@dataclass(frozen=True)
class Snapshot:
    """A loaded crash image as kexecd knows it.

    :ivar path: the snapshot directory.
    :ivar manifest: what ``manifest.json`` says (checked as untrusted input).
    :ivar segments: the segments in kexec_load order, their buffers mapped
        read-only from the snapshot's files (nothing is read until used).
    :ivar durable: the state directory is on a disk, not on tmpfs, which a
        reboot empties anyway: what must reach the disk is fsync'd.
    :ivar ordered: its file system writes a file renamed over another before
        the rename (:func:`kexecd.files.replacing_is_ordered`): the load
        record's replacements need no fsync (:mod:`kexecd.image.record`).
    :ivar ident: the identity of the snapshot directory, its manifest and
        segment files when it was opened (:meth:`Store.unchanged`).
    """

    path: Path
    manifest: Manifest
    segments: tuple[Segment, ...]
    durable: bool = True
    ordered: bool = False
    ident: tuple[int, ...] = ()

    # What the manifest says, read through.
    @property
    def argv(self) -> tuple[str, ...]:
        return self.manifest.argv

    @property
    def file_load(self) -> bool:
        """The image came from kexec_file_load: it can only be reloaded whole."""
        return self.manifest.file_load

    @property
    def entry(self) -> int:
        return self.manifest.entry

    @property
    def flags(self) -> int:
        return self.manifest.flags

    @property
    def header(self) -> int | None:
        """The index of the ELF core header segment, if any."""
        return self.manifest.header

    @property
    def purgatory(self) -> int | None:
        """The index of the segment holding the entry point."""
        return self.manifest.purgatory

    @property
    def digest(self) -> DigestLocation | None:
        """Where purgatory's SHA-256 is, if it was found."""
        return self.manifest.digest

    @property
    def source(self) -> Source | None:
        """The distro's record of the command, when adopted."""
        return self.manifest.source

    @property
    def program(self) -> Program | None:
        """The kexec binary that made the load, if it was kexec-tools itself."""
        return self.manifest.program

    @property
    def kexec_tools(self) -> str | None:
        """The version of the kexec-tools that made the load, if known."""
        return self.manifest.kexec_tools

    @property
    def cmdline(self) -> str | None:
        """The command line given to kexec_file_load (kexec_load images carry
        theirs in a segment: :meth:`kexecd.arch.Arch.find_cmdline`)."""
        line = self.manifest.cmdline
        return None if line is None else line.rstrip("\0")

    @property
    def sha256(self) -> tuple[str, ...]:
        """Each segment buffer's SHA-256 as the manifest records it."""
        return tuple(s.sha256 for s in self.manifest.segments)

    # What is derived.
    @cached_property
    def arch(self) -> Arch:
        """The architecture the image was loaded for (``KEXEC_ARCH_*`` in its flags)."""
        return of_flags(self.flags)

    @cached_property
    def kernel_extent(self) -> tuple[int, int] | None:
        """The kernel segment's index and the memory its boot uses
        (:meth:`kexecd.arch.Arch.kernel_extent`), found once per snapshot."""
        return self.arch.kernel_extent(self.segments)

    @property
    def record(self) -> LoadRecord:
        """What is loaded from this snapshot, as recorded."""
        return LoadRecord(self.path, self.durable, self.ordered)

    @property
    def asks_kernel_updates(self) -> bool:
        """The load asked the kernel to keep its header current (Linux 6.6+):
        a kexec_file_load, or a kexec_load with ``KEXEC_UPDATE_ELFCOREHDR``
        (6.6-6.9 on x86) or ``KEXEC_CRASH_HOTPLUG_SUPPORT`` (6.10+), which
        kexec-tools 2.0.28+ passes with ``--hotplug``. A kernel without the
        feature refuses those flags (kernel/kexec.c kexec_load_check()), so a
        load that succeeded with them has it."""
        return self.file_load or bool(self.flags & KERNEL_UPDATE_FLAGS)

    @property
    def rules(self) -> HeaderRules:
        """How the kexec-tools that made the load builds the header, by the
        architecture the image was loaded for (:attr:`arch`)."""
        return rules_for(self.kexec_tools, self.arch)

    @property
    def syscall(self) -> str:
        """The call that loaded the image: ``kexec_load`` or ``kexec_file_load``."""
        return "kexec_file_load" if self.file_load else "kexec_load"

    @property
    def header_memsz(self) -> int | None:
        """The header segment's size in memory: the most the header can grow to."""
        return None if self.header is None else self.segments[self.header].memsz

    @property
    def header_capacity(self) -> int | None:
        """How many program headers fit in the header segment's memsz."""
        memsz = self.header_memsz
        return None if memsz is None else capacity(memsz)

    @property
    def movable(self) -> bool:
        """Whether kexecd can move this image's header: a ``kexec_load`` image
        whose purgatory hashes the header and whose regions were found."""
        d = self.digest
        return (
            not self.file_load
            and self.header is not None
            and self.purgatory is not None
            and d is not None
            and d.header_hashed
            and d.regions_offset is not None
        )
