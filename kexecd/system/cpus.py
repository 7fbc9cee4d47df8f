# SPDX-License-Identifier: GPL-2.0-or-later
"""CPUs: the sysfs lists, and each CPU's crash_notes, as kexec-tools reads them."""

from __future__ import annotations

from dataclasses import dataclass

from kexecd.errors import SystemStateError
from kexecd.model import Note
from kexecd.system.root import Root

__all__ = ["CpuNote", "Cpus", "parse_cpu_list", "read_cpus"]

CPU_DIR = "sys/devices/system/cpu"
# kexec-tools crashdump.c: MAX_NOTE_BYTES, used when crash_notes_size is absent.
DEFAULT_NOTE_SIZE = 1024


@dataclass(frozen=True)
class CpuNote:
    """A CPU's crash_notes buffer."""

    cpu: int
    note: Note


@dataclass(frozen=True)
class Cpus:
    """What sysfs says of the CPUs.

    :ivar nr_cpus_conf: glibc's ``sysconf(_SC_NPROCESSORS_CONF)``, which
        kexec-tools uses: glibc 2.36 counts ``cpu/possible``.
    :ivar notes: the crash_notes of CPU ids ``0 .. nr_cpus_conf - 1`` whose
        directory exists, in id order, as kexec-tools probes them.
    """

    possible: tuple[int, ...]
    present: tuple[int, ...]
    online: tuple[int, ...]
    nr_cpus_conf: int
    notes: tuple[CpuNote, ...]


def parse_cpu_list(text: str, path: str = "cpu list") -> list[int]:
    """Parse a sysfs CPU list such as ``0-2,5``."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise SystemStateError(
                f"{path}: cannot parse {text.strip()!r}: expected a CPU list like '0-3,5'"
            ) from None
        if last < first:
            raise SystemStateError(f"{path}: range {part!r} runs backwards")
        cpus.extend(range(first, last + 1))
    return cpus


def _list(root: Root, name: str, required: bool = True) -> tuple[int, ...]:
    rel = f"{CPU_DIR}/{name}"
    if not required and not root.exists(rel):
        return ()
    return tuple(parse_cpu_list(root.read_text(rel), str(root.path(rel))))


def _note(root: Root, cpu: int) -> Note | None:
    # kexec-tools crashdump.c get_crash_notes_per_cpu(): no cpuN/crash_notes
    # means the CPU is skipped; an unreadable or empty one is fatal.
    rel = f"{CPU_DIR}/cpu{cpu}/crash_notes"
    if not root.exists(rel):
        return None
    text = root.read_text(rel).strip()
    try:
        addr = int(text, 16)
    except ValueError:
        raise SystemStateError(
            f"{root.path(rel)}: cannot parse {text!r}: expected a hex physical address"
        ) from None
    size = DEFAULT_NOTE_SIZE
    size_rel = f"{CPU_DIR}/cpu{cpu}/crash_notes_size"
    if root.exists(size_rel):
        size_text = root.read_text(size_rel).strip()
        try:
            size = int(size_text)
        except ValueError:
            raise SystemStateError(
                f"{root.path(size_rel)}: cannot parse {size_text!r}: expected a decimal size"
            ) from None
    return Note(addr, size)


def read_cpus(root: Root) -> Cpus:
    """Read the CPU lists and every probed CPU's crash_notes.

    :raises SystemStateError: a list or crash_notes file is malformed or
        unreadable (crash_notes is root-only).
    """
    if not root.exists(CPU_DIR):
        raise SystemStateError(f"{root.path(CPU_DIR)}: missing; is sysfs mounted?")
    possible = _list(root, "possible")
    notes = []
    for cpu in range(len(possible)):
        note = _note(root, cpu)
        if note is not None:
            notes.append(CpuNote(cpu, note))
    return Cpus(
        possible=possible,
        present=_list(root, "present"),
        online=_list(root, "online"),
        nr_cpus_conf=len(possible),
        notes=tuple(notes),
    )
