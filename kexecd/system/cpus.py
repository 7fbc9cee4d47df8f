# SPDX-License-Identifier: GPL-2.0-or-later
"""CPUs: the sysfs lists, and each CPU's crash_notes, as kexec-tools reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kexecd.errors import SystemStateError
from kexecd.model import Note
from kexecd.system.kernel import parse_u64
from kexecd.system.root import Root

__all__ = ["MAX_CPUS", "CpuNote", "Cpus", "cpu_limit", "parse_cpu_list", "read_cpus"]

CPU_DIR = "sys/devices/system/cpu"
# kexec-tools crashdump.c: MAX_NOTE_BYTES, used when crash_notes_size is absent.
DEFAULT_NOTE_SIZE = 1024
# The most CPU ids kexecd takes, on any architecture: the largest NR_CPUS of
# those it loads for (x86_64's CONFIG_MAXSMP 8192; arm64's is 4096), so that a
# bad cpu/possible cannot make kexecd allocate without bound. Below it, the
# kernel's own limit, cpu/kernel_max (NR_CPUS - 1), is the bound.
MAX_CPUS = 8192

_PART = re.compile(r"([0-9]+)(?:-([0-9]+))?")


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


def parse_cpu_list(text: str, path: str = "cpu list", limit: int = MAX_CPUS) -> list[int]:
    """Parse a sysfs CPU list such as ``0-2,5``.

    The kernel writes ascending, disjoint ids (``%*pbl``); anything else, and
    an id of ``limit`` or more, is refused, so the list stays bounded.

    :param limit: the number of CPU ids the kernel can have (``kernel_max + 1``).
    """
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        m = _PART.fullmatch(part.strip())
        if not m:
            raise SystemStateError(
                f"{path}: cannot parse {text.strip()[:80]!r}: expected a CPU list like "
                "'0-3,5'; pass the kernel's own CPU list"
            )
        ids = []
        for text_id in m.groups():
            if text_id is None:
                continue
            # Compared as text first: int() of a long string is slow, or refused.
            digits = text_id.lstrip("0") or "0"
            if len(digits) > len(str(limit)) or int(digits) >= limit:
                raise SystemStateError(
                    f"{path}: CPU {text_id[:40]} is past the highest CPU id, {limit - 1} "
                    f"({_limit_why(limit)}); pass the kernel's own CPU list"
                )
            ids.append(int(digits))
        first, last = ids[0], ids[-1]
        if last < first:
            raise SystemStateError(
                f"{path}: range {part[:80]!r} runs backwards; pass the kernel's own CPU list"
            )
        if cpus and first <= cpus[-1]:
            raise SystemStateError(
                f"{path}: {part[:80]!r} comes after CPU {cpus[-1]}: the kernel lists CPUs "
                "in ascending order, once each; pass the kernel's own CPU list"
            )
        cpus.extend(range(first, last + 1))
    return cpus


def _limit_why(limit: int) -> str:
    if limit == MAX_CPUS:
        return f"kexecd takes at most {MAX_CPUS} CPUs, the largest NR_CPUS it knows"
    return "cpu/kernel_max says so"


def cpu_limit(root: Root) -> int:
    """How many CPU ids the kernel can have: ``kernel_max + 1``, at most :data:`MAX_CPUS`.

    Without ``cpu/kernel_max`` (older kernels, fake roots), :data:`MAX_CPUS`.
    """
    rel = f"{CPU_DIR}/kernel_max"
    text = root.read_optional(rel)
    if text is None:
        return MAX_CPUS
    kernel_max = parse_u64(
        text,
        root.path(rel),
        what="the highest CPU id (NR_CPUS - 1)",
        fix="pass the kernel's sysfs",
    )
    return min(kernel_max + 1, MAX_CPUS)


def _list(root: Root, name: str, limit: int, required: bool = True) -> tuple[int, ...]:
    rel = f"{CPU_DIR}/{name}"
    if not required and not root.exists(rel):
        return ()
    return tuple(parse_cpu_list(root.read_text(rel), str(root.path(rel)), limit))


def _note(root: Root, cpu: int) -> Note | None:
    # kexec-tools crashdump.c get_crash_notes_per_cpu(): no cpuN/crash_notes
    # means the CPU is skipped; an unreadable or empty one is fatal.
    rel = f"{CPU_DIR}/cpu{cpu}/crash_notes"
    text = root.read_optional(rel)
    if text is None:
        return None
    fix = "pass the kernel's sysfs (crash_notes is root-only)"
    addr = parse_u64(
        text,
        root.path(rel),
        base=16,
        what="a hex physical address",
        fix=fix,
    )
    size = DEFAULT_NOTE_SIZE
    size_rel = f"{CPU_DIR}/cpu{cpu}/crash_notes_size"
    size_text = root.read_optional(size_rel)
    if size_text is not None:
        size = parse_u64(size_text, root.path(size_rel), what="a decimal size", fix=fix)
    return Note(addr, size)


def read_cpus(root: Root, previous: Cpus | None = None) -> Cpus:
    """Read the CPU lists and every probed CPU's crash_notes.

    :param previous: what an earlier call read under the same root. A CPU
        whose directory is listed now and whose note was read then is not
        read again: its crash_notes is where the kernel allocated that CPU's
        per-CPU note once, at boot, for every possible CPU
        (``crash_notes_memory_init()``: kernel/kexec_core.c in Linux 6.1,
        kernel/crash_core.c in later kernels), and its size is a constant.
        A memory event then reads no note, a CPU added only its own.
    :raises SystemStateError: a list or crash_notes file is malformed or
        unreadable (crash_notes is root-only).
    """
    # Listed only when there is a previous reading (a missing directory says
    # the same either way); otherwise seen to exist.
    listed = root.list_dir(CPU_DIR) if previous is not None else None
    if listed is None and not root.exists(CPU_DIR):
        raise SystemStateError(f"{root.path(CPU_DIR)}: missing; is sysfs mounted?")
    limit = cpu_limit(root)
    possible = _list(root, "possible", limit)
    known: dict[int, CpuNote] = {}
    if previous is not None and previous.nr_cpus_conf == len(possible):
        known = {n.cpu: n for n in previous.notes}
    else:
        listed = None  # another set of possible CPUs: every note read again
    notes = []
    for cpu in range(len(possible)):
        if listed is not None:
            if f"cpu{cpu}" not in listed:
                continue  # no directory, no crash_notes
            if (kept := known.get(cpu)) is not None:
                notes.append(kept)
                continue
        note = _note(root, cpu)
        if note is not None:
            notes.append(CpuNote(cpu, note))
    return Cpus(
        possible=possible,
        present=_list(root, "present", limit),
        online=_list(root, "online", limit),
        nr_cpus_conf=len(possible),
        notes=tuple(notes),
    )
