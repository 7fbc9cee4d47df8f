# SPDX-License-Identifier: GPL-2.0-or-later
"""Plain data shared by the modules: memory ranges, notes, header specs.

No I/O and no C here; :mod:`kexecd.core` turns these into C structures.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "PT_LOAD",
    "PT_NOTE",
    "Backup",
    "HeaderSpec",
    "KernelText",
    "MemRange",
    "Note",
    "Phdr",
    "RangeType",
    "human",
    "shell_words",
]

PT_LOAD = 1
PT_NOTE = 4


class RangeType(enum.IntEnum):
    """The kinds of range kexec-tools collects from /proc/iomem (kexec/kexec.h)."""

    RAM = 0
    RESERVED = 1
    ACPI = 2
    ACPI_NVS = 3
    PMEM = 6
    PRAM = 11


@dataclass(frozen=True, order=True)
class MemRange:
    """A physical memory range; ``end`` is inclusive, as in /proc/iomem."""

    start: int
    end: int
    type: RangeType = RangeType.RAM

    @property
    def size(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class Note:
    """An ELF note's physical address and size."""

    addr: int
    size: int


@dataclass(frozen=True)
class KernelText:
    """The kernel text mapping: physical start, virtual start, size."""

    paddr: int
    vaddr: int
    size: int


@dataclass(frozen=True)
class Backup:
    """The low-memory range purgatory copies before the dump, and where to.

    kexec-tools crashdump-x86.c: the first RAM range ending at or below
    640 KiB is copied to the backup segment, and its PT_LOAD points there.
    """

    src_start: int
    src_size: int
    start: int


@dataclass(frozen=True)
class HeaderSpec:
    """Everything an ELF core header is built from.

    :ivar nr_cpus_conf: glibc's ``sysconf(_SC_NPROCESSORS_CONF)``; it sizes
        the buffer, whatever the number of ``cpu_notes``.
    :ivar ranges: every range kexec-tools collected, in its order, with the
        crash kernel's taken out; only RAM ones become PT_LOADs, but all count
        in the buffer size. A refresh's are held by the C core
        (:class:`kexecd.core.RangeTable`).
    """

    machine: int
    nr_cpus_conf: int
    cpu_notes: tuple[Note, ...]
    vmcoreinfo: Note | None
    kernel: KernelText | None
    ranges: Sequence[MemRange]
    page_offset: int
    backup: Backup | None
    align: int = 1024


@dataclass(frozen=True)
class Phdr:
    """One ELF64 program header."""

    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


def human(size: int) -> str:
    """A size for people: ``4.0 KiB``, ``512 MiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            if unit == "B":
                return f"{size} B"
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def shell_words(command: str) -> list[str]:
    """``command``'s words as a shell splits them; on whitespace if its quotes do not close."""
    import shlex

    try:
        return shlex.split(command)
    except ValueError:
        return command.split()
