# SPDX-License-Identifier: GPL-2.0-or-later
"""The plan: what is loaded, what the system needs now, and what to do about it.

:func:`make` is the one place that reads the kexec state, the loaded header
and the system, builds the header wanted now, compares the two and decides.
``kexecd refresh`` and the daemon execute a :class:`Plan`
(:func:`kexecd.image.loader.execute`), ``kexecd status`` renders one, the
daemon records one. :func:`decide` holds every decision rule and does no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kexecd.errors import SnapshotError
from kexecd.image import elfcore
from kexecd.image.changes import HeaderDiff, diff_headers
from kexecd.image.elfcore import CoreHeader
from kexecd.image.snapshot import Snapshot
from kexecd.system.kernel import KexecState, read_kexec_state
from kexecd.system.root import Root
from kexecd.system.state import SystemState, read_system

__all__ = ["Action", "Decision", "Plan", "Why", "decide", "make"]

# A uevent during the read means the system changed under us: read again, a
# few times at most (a burst that long is caught by the next event's refresh).
SEQNUM_RETRIES = 5


class Action(enum.Enum):
    """What a refresh does."""

    NOTHING = "nothing"  # the loaded header is current
    STAND_ASIDE = "stand-aside"  # the kernel updates the header itself
    RELOAD_HEADER = "reload-header"  # kexec_load with the new header (and digest)
    FULL_RELOAD = "full-reload"  # run the recorded kexec command again


class Why(enum.Enum):
    """Why that action: the rule that decided."""

    CURRENT = enum.auto()
    NOT_LOADED = enum.auto()
    UNCERTAIN = enum.auto()
    KERNEL_UPDATES = enum.auto()
    FILE_LOAD = enum.auto()
    NO_HEADER = enum.auto()
    TOO_BIG = enum.auto()
    NO_DIGEST = enum.auto()
    STALE = enum.auto()


@dataclass(frozen=True)
class Decision:
    """An action, the rule behind it, and the reason in words (for people only)."""

    action: Action
    why: Why
    reason: str


@dataclass(frozen=True)
class Plan:
    """Everything known about the crash image and the system at one moment.

    :ivar kexec: the kernel's kexec state, read after the system.
    :ivar loaded: the header loaded now; ``None`` when there is none to read
        (a file-loaded image, no header segment, or the kernel updates it).
    :ivar wanted: the header the system needs now (same conditions).
    :ivar current: the parsed ``loaded`` (the template ``wanted`` was built from).
    :ivar target: the parsed ``wanted``.
    :ivar diff: what ``wanted`` adds to and drops from ``loaded``.
    :ivar notes: what happened while planning, for people.
    """

    snapshot: Snapshot
    kexec: KexecState
    decision: Decision
    system: SystemState | None = None
    loaded: bytes | None = None
    wanted: bytes | None = None
    current: CoreHeader | None = None
    target: CoreHeader | None = None
    diff: HeaderDiff | None = None
    notes: tuple[str, ...] = ()

    @property
    def action(self) -> Action:
        return self.decision.action

    @property
    def in_sync(self) -> bool | None:
        """Whether the loaded header is what the system needs; ``None`` if unknown."""
        if self.loaded is None or self.wanted is None:
            return None
        return self.loaded == self.wanted

    @property
    def segment_bytes(self) -> int | None:
        """The header segment's size in memory: the most the header can grow to."""
        snap = self.snapshot
        return None if snap.header is None else snap.segments[snap.header].memsz

    @property
    def cpus(self) -> int | None:
        """CPU notes in the wanted header."""
        return None if self.system is None else len(self.system.cpus.notes)

    @property
    def ranges(self) -> int | None:
        """RAM ranges (PT_LOADs of memory) in the wanted header."""
        return None if self.target is None else len(self.target.ram)

    @property
    def room(self) -> int | None:
        """Program headers that still fit in the header segment."""
        cap = self.snapshot.header_capacity
        if cap is None or self.target is None:
            return None
        return cap - len(self.target.phdrs)


def decide(
    snap: Snapshot,
    loaded: bytes | None,
    wanted: bytes | None,
    kernel_updates: bool,
    *,
    crash_loaded: bool = True,
    uncertain: bool = False,
) -> Decision:
    """Choose what to do; every decision rule of kexecd is here.

    :param loaded: the header loaded now (``None`` for a file-loaded image).
    :param wanted: the header a fresh ``kexec -p`` would build now.
    :param kernel_updates: the kernel's own crash hotplug is active
        (``crash_hotplug`` reads 1, Linux 6.6+).
    :param crash_loaded: a crash kernel is loaded; when none is (the admin
        unloaded it), kexecd respects that and loads nothing.
    :param uncertain: a load was begun and not recorded: the kernel holds
        the recorded header or the new one, so it is loaded again.
    """
    if not crash_loaded:
        return Decision(
            Action.NOTHING,
            Why.NOT_LOADED,
            "no crash kernel is loaded: kexecd leaves it so (load one with 'kexecd load' "
            "or 'kexecd adopt', or the distro's kdump service)",
        )
    if kernel_updates:
        return Decision(
            Action.STAND_ASIDE, Why.KERNEL_UPDATES, "the kernel updates the header itself"
        )
    if snap.file_load:
        return Decision(
            Action.FULL_RELOAD,
            Why.FILE_LOAD,
            "the image was loaded with kexec_file_load, which only the kernel can rebuild",
        )
    if snap.header is None or loaded is None or wanted is None:
        return Decision(
            Action.FULL_RELOAD, Why.NO_HEADER, "no ELF core header among the loaded segments"
        )
    if wanted == loaded and not uncertain:
        return Decision(Action.NOTHING, Why.CURRENT, "the loaded header is current")
    memsz = snap.segments[snap.header].memsz
    if len(wanted) > memsz:
        return Decision(
            Action.FULL_RELOAD,
            Why.TOO_BIG,
            f"the header needs {len(wanted)} bytes but its segment holds {memsz}",
        )
    if snap.digest is None:
        return Decision(
            Action.FULL_RELOAD,
            Why.NO_DIGEST,
            "purgatory's SHA-256 digest was not found, so a new header cannot be vouched for",
        )
    how = "and purgatory's digest" if snap.digest.header_hashed else "(not hashed by purgatory)"
    if uncertain:
        return Decision(
            Action.RELOAD_HEADER,
            Why.UNCERTAIN,
            f"a load was interrupted before it was recorded: reload the header {how}",
        )
    return Decision(Action.RELOAD_HEADER, Why.STALE, f"reload the header {how}")


def make(
    snap: Snapshot,
    root: Root,
    kexec: KexecState | None = None,
    *,
    reload_unloaded: bool = False,
) -> Plan:
    """Read the system and the loaded image, build the header wanted now, decide.

    :param kexec: the kexec state, if the caller has just read it.
    :param reload_unloaded: load the image even though none is loaded (the
        daemon, after its own failed load left none).
    :raises SystemStateError: a file of the system is missing or malformed.
    :raises SnapshotError: the snapshot's loaded header is unreadable, or its
        segments lie outside this boot's crash kernel reservation.
    :raises HeaderError: the loaded header does not parse.
    """
    kexec = kexec or read_kexec_state(root)
    crash_loaded = kexec.crash_loaded or reload_unloaded
    if not crash_loaded or kexec.kernel_updates or snap.file_load or snap.header is None:
        return Plan(
            snap,
            kexec,
            decide(snap, None, None, kexec.kernel_updates, crash_loaded=crash_loaded),
        )
    loaded = snap.loaded_header()
    current = elfcore.parse(loaded, str(snap.path / "loaded-header.bin"))
    notes: list[str] = []
    for _ in range(SEQNUM_RETRIES):
        seqnum = kexec.uevent_seqnum
        system = read_system(root)
        wanted = elfcore.build(elfcore.spec_from_template(current, system))
        kexec = read_kexec_state(root)
        if kexec.uevent_seqnum == seqnum:
            break
        notes.append("the system changed while the header was built; built again")
    target = elfcore.parse(wanted)
    _check_placement(snap, system)
    return Plan(
        snap,
        kexec,
        decide(
            snap,
            loaded,
            wanted,
            kexec.kernel_updates,
            crash_loaded=crash_loaded,
            uncertain=snap.intent is not None,
        ),
        system=system,
        loaded=loaded,
        wanted=wanted,
        current=current,
        target=target,
        diff=diff_headers(current, target, system.cpus),
        notes=tuple(notes),
    )


def _check_placement(snap: Snapshot, system: SystemState) -> None:
    # Every segment must lie in this boot's "Crash kernel" reservation: a
    # snapshot from another boot (KASLR moves the reservation) would be
    # refused by the kernel at best (kernel/kexec_core.c
    # sanity_check_segment_list()).
    reserved = system.memory.crash_reserved
    for i, seg in enumerate(snap.segments):
        end = seg.mem + seg.memsz - 1
        if seg.memsz and not any(r.start <= seg.mem and end <= r.end for r in reserved):
            raise SnapshotError(
                f"{snap.path}: segment {i} at {seg.mem:#x}-{end:#x} lies outside the crash "
                "kernel reservation in /proc/iomem (a snapshot from another boot?); "
                "load again with 'kexecd load' or 'kexecd adopt'"
            )
