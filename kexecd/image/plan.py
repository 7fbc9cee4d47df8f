# SPDX-License-Identifier: GPL-2.0-or-later
"""The plan: what is loaded, what the system needs now, and what to do about it.

:func:`make` is the one place that reads the kexec state, the loaded header
and the system, builds the header wanted now, compares the two and decides.
``kexecd refresh`` and the daemon execute a :class:`Plan`
(:func:`kexecd.image.loader.execute`), ``kexecd status`` renders one, the
daemon records one. :func:`decide` holds every decision rule and does no I/O.

The plan also covers the crash kernel's command line: on a host that can
hot-add memory, a crash kernel without ``acpi_no_memhotplug`` takes the
hot-added DIMMs the dump covers as its own RAM (drivers/acpi/acpi_memhotplug.c:
the parameter keeps its scan handler from attaching), and makedumpfile then
fails ("Bad address"). Unless ``crash_acpi_no_memhotplug`` is off, kexecd
appends the word to the command line kexec-tools built; which words it
appended to the image loaded now is recorded with it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from functools import cached_property

from kexecd.errors import CmdlineError, HeaderError, SnapshotError
from kexecd.image import cmdline, elfcore, relocate
from kexecd.image.changes import HeaderDiff, diff_headers
from kexecd.image.cmdline import NO_MEMHOTPLUG, Amendment
from kexecd.image.elfcore import CoreHeader
from kexecd.image.relocate import capacity
from kexecd.image.snapshot import LOADED_HEADER, Snapshot
from kexecd.system.kernel import (
    KexecState,
    acpi_memory_hotplug,
    read_kexec_state,
    read_uevent_seqnum,
)
from kexecd.system.root import Root
from kexecd.system.state import SystemState, read_system
from kexecd.timing import Spans

__all__ = ["Action", "Decision", "Plan", "Why", "decide", "make"]

# A uevent during the read means the system changed under us: read again, a
# few times at most (a burst that long is caught by the next event's refresh).
SEQNUM_RETRIES = 5


class Action(enum.Enum):
    """What a refresh does."""

    NOTHING = "nothing"  # the loaded header is current
    STAND_ASIDE = "stand-aside"  # the kernel updates the header itself
    # kexec_load with the new header (and command line, and digest)
    RELOAD_HEADER = "reload-header"
    # kexec_load with the header moved to a bigger hole (kexecd.image.relocate)
    RELOCATE = "relocate"
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
    CMDLINE = enum.auto()  # the header is current, the command line is not
    GROW = enum.auto()  # an operator asked for room for more program headers
    KERNEL_MISSED = enum.auto()  # the kernel updates it, but dropped an update


@dataclass(frozen=True)
class Decision:
    """An action, the rule behind it, and the reason in words (for people only)."""

    action: Action
    why: Why
    reason: str


@dataclass(frozen=True)
class Plan:
    """Everything known about the crash image and the system at one moment.

    :ivar kexec: the kernel's kexec state, its uevent seqnum read after the system.
    :ivar loaded: the header loaded now; ``None`` when there is none to read
        (a file-loaded image, no header segment, or the kernel updates it).
    :ivar wanted: the header the system needs now (same conditions).
    :ivar current: the parsed ``loaded`` (the template ``wanted`` was built from).
    :ivar target: the parsed ``wanted``.
    :ivar cmdline: the crash kernel's command line (``None`` when no crash
        kernel is loaded).
    :ivar notes: what happened while planning, for people.
    :ivar move: where a header that outgrew its segment goes: (address,
        memsz), when a hole was found (:func:`kexecd.image.relocate.place`).
    """

    snapshot: Snapshot
    kexec: KexecState
    decision: Decision
    system: SystemState | None = None
    loaded: bytes | None = None
    wanted: bytes | None = None
    current: CoreHeader | None = None
    target: CoreHeader | None = None
    cmdline: Amendment | None = None
    notes: tuple[str, ...] = ()
    move: tuple[int, int] | None = None

    @property
    def action(self) -> Action:
        return self.decision.action

    @cached_property
    def diff(self) -> HeaderDiff | None:
        """What ``wanted`` adds to and drops from ``loaded``: for people, so
        worked out when first asked, after any load (at 32,768 ranges it
        costs more than the rest of the refresh)."""
        if self.current is None or self.target is None or self.system is None:
            return None
        return diff_headers(self.current, self.target, self.system.cpus)

    @property
    def in_sync(self) -> bool | None:
        """Whether the loaded header (and command line) is what kexecd would load
        now; ``None`` if unknown."""
        if self.loaded is None or self.wanted is None:
            return None
        c = self.cmdline
        return self.loaded == self.wanted and (c is None or c.loaded == c.wanted)

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
    def ram_bytes(self) -> int | None:
        """Bytes of RAM in the wanted header: the system's RAM now."""
        return None if self.target is None else self.target.ram_bytes

    @property
    def phnum(self) -> int | None:
        """Program headers in the wanted header."""
        return None if self.target is None else len(self.target.phdrs)

    def described(self, carried_out: bool = False) -> CoreHeader | None:
        """The header loaded now, or once the plan is carried out: what a dump
        would describe (``None`` where kexecd cannot see it)."""
        return self.target if carried_out else self.current

    @property
    def room(self) -> int | None:
        """Program headers that still fit in the header segment."""
        cap, phnum = self.snapshot.header_capacity, self.phnum
        return None if cap is None or phnum is None else cap - phnum


def decide(
    snap: Snapshot,
    loaded: bytes | None,
    wanted: bytes | None,
    kernel_updates: bool,
    *,
    crash_loaded: bool = True,
    uncertain: bool = False,
    cmdline: Amendment | None = None,
    kernel_missed: bool = False,
    move: tuple[int, int] | None = None,
    grow: int | None = None,
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
    :param cmdline: the command line loaded and the one wanted: when only
        they differ, the header is reloaded as it is, with the new line.
    :param kernel_missed: the kernel logged that it dropped an update of the
        header it keeps (:mod:`kexecd.system.kmsg`): what it holds is
        unknown, so kexecd loads the image itself once.
    :param move: a hole for a header that outgrew its segment (address,
        memsz): the header moves there instead of a full reload.
    :param grow: the program headers an operator wants room for (``kexecd
        grow``): with ``move``, the header moves there even if it fits.
    """
    if not crash_loaded:
        return Decision(
            Action.NOTHING,
            Why.NOT_LOADED,
            "no crash kernel is loaded: kexecd leaves it so (load one with 'kexecd load' "
            "or 'kexecd adopt', or the distro's kdump service)",
        )
    missed = "the kernel dropped an update of the header it keeps (kexec_trylock() failed)"
    if kernel_updates and not kernel_missed:
        return Decision(
            Action.STAND_ASIDE, Why.KERNEL_UPDATES, "the kernel updates the header itself"
        )
    if kernel_updates and (snap.file_load or snap.header is None or wanted is None):
        return Decision(
            Action.FULL_RELOAD, Why.KERNEL_MISSED, f"{missed}: load the image again, whole"
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
    change = "" if cmdline is None else cmdline.change
    room = capacity(snap.segments[snap.header].memsz)
    if grow is not None and grow > room and move is not None and movable(snap):
        to, size = move
        return Decision(
            Action.RELOCATE,
            Why.GROW,
            f"grow the header from room for {room} to {capacity(size)} program headers: "
            f"move it to {to:#x} ({size} bytes) and reload it with purgatory's digest",
        )
    if wanted == loaded and not uncertain and not change and not kernel_updates:
        return Decision(Action.NOTHING, Why.CURRENT, "the loaded header is current")
    memsz = snap.segments[snap.header].memsz
    if len(wanted) > memsz:
        outgrown = f"the header needs {len(wanted)} bytes but its segment holds {memsz}"
        if move is not None and movable(snap):
            to, size = move
            return Decision(
                Action.RELOCATE,
                Why.TOO_BIG,
                f"{outgrown}: move it to {to:#x} ({size} bytes, room for "
                f"{capacity(size)} program headers) and reload it with purgatory's digest",
            )
        return Decision(Action.FULL_RELOAD, Why.TOO_BIG, outgrown)
    if snap.digest is None:
        return Decision(
            Action.FULL_RELOAD,
            Why.NO_DIGEST,
            "purgatory's SHA-256 digest was not found, so a new header cannot be vouched for",
        )
    how = "and purgatory's digest" if snap.digest.header_hashed else "(not hashed by purgatory)"
    also = f"; {change}" if change else ""
    if kernel_updates:
        return Decision(
            Action.RELOAD_HEADER, Why.KERNEL_MISSED, f"{missed}: load a current one {how}{also}"
        )
    if uncertain:
        return Decision(
            Action.RELOAD_HEADER,
            Why.UNCERTAIN,
            f"a load was interrupted before it was recorded: reload the header {how}{also}",
        )
    if wanted != loaded:
        return Decision(Action.RELOAD_HEADER, Why.STALE, f"reload the header {how}{also}")
    return Decision(Action.RELOAD_HEADER, Why.CMDLINE, f"{change}, and patch purgatory's digest")


def make(
    snap: Snapshot,
    root: Root,
    kexec: KexecState | None = None,
    *,
    reload_unloaded: bool = False,
    acpi_no_memhotplug: bool = True,
    spans: Spans | None = None,
    kernel_missed: bool = False,
    grow: int | None = None,
) -> Plan:
    """Read the system and the loaded image, build the header wanted now, decide.

    :param kexec: the kexec state, if the caller has just read it.
    :param reload_unloaded: load the image even though none is loaded (the
        daemon, after its own failed load left none).
    :param acpi_no_memhotplug: the ``crash_acpi_no_memhotplug`` setting:
        append the word where the host can hot-add memory and the line lacks it.
    :param spans: where the time goes, step by step (the daemon's debug log).
    :param kernel_missed: the kernel dropped an update of a header it keeps
        (see :func:`decide`).
    :param grow: make room for this many program headers (``kexecd grow``),
        moving the header if it has less.
    :raises SystemStateError: a file of the system is missing or malformed.
    :raises SnapshotError: the snapshot's loaded header is unreadable, or its
        segments lie outside this boot's crash kernel reservation.
    :raises HeaderError: the loaded header does not parse.
    """
    spans = spans or Spans()
    kexec = kexec or read_kexec_state(root)
    if snap.asks_kernel_updates:  # whatever a busy kexec lock made sysfs say
        kexec = kexec.kernel_updating()
    spans.mark("kexec state")
    crash_loaded = kexec.crash_loaded or reload_unloaded
    stand_aside = kexec.kernel_updates and not kernel_missed
    if not crash_loaded or stand_aside or snap.file_load or snap.header is None:
        blocked = (
            "the kernel updates this image's header itself, so kexecd does not reload it"
            if stand_aside
            else "kexecd reloads this image only whole, by running its command again"
        )
        return Plan(
            snap,
            kexec,
            decide(
                snap,
                None,
                None,
                kexec.kernel_updates,
                crash_loaded=crash_loaded,
                kernel_missed=kernel_missed,
            ),
            cmdline=_cmdline(snap, root, acpi_no_memhotplug, blocked) if crash_loaded else None,
        )
    loaded = snap.loaded_header()
    current = elfcore.parse(loaded, str(snap.path / LOADED_HEADER))
    spans.mark("loaded header")
    notes: list[str] = []
    for _ in range(SEQNUM_RETRIES):
        seqnum = kexec.uevent_seqnum
        system = read_system(root, spans, snap.rules)
        wanted = elfcore.build(elfcore.spec_from_template(current, system))
        spans.mark("build")
        after = read_uevent_seqnum(root)
        kexec = replace(kexec, uevent_seqnum=after)
        spans.mark("seqnum")
        if after == seqnum:
            break
        notes.append("the system changed while the header was built; built again")
    target = elfcore.parse(wanted)
    spans.mark("parse wanted")
    _check_placement(snap, system)
    move = None
    memsz = snap.segments[snap.header].memsz
    asked = grow is not None and grow > capacity(memsz)
    if (len(wanted) > memsz or asked) and movable(snap):
        move = _hole(snap, system, len(target.phdrs), grow if asked else None)
        spans.mark("hole")
    line = _cmdline(snap, root, acpi_no_memhotplug, None)
    spans.mark("cmdline")
    plan = Plan(
        snap,
        kexec,
        decide(
            snap,
            loaded,
            wanted,
            kexec.kernel_updates,
            crash_loaded=crash_loaded,
            uncertain=snap.intent is not None,
            cmdline=line,
            kernel_missed=kernel_missed,
            move=move,
            grow=grow,
        ),
        system=system,
        loaded=loaded,
        wanted=wanted,
        current=current,
        target=target,
        cmdline=line,
        notes=tuple(notes),
        move=move,
    )
    spans.mark("decide")
    return plan


def _cmdline(snap: Snapshot, root: Root, enabled: bool, blocked: str | None) -> Amendment:
    # What is loaded and what is wanted of the command line; ``blocked``: why
    # kexecd will not reload this image itself, if it will not.
    hotplug = acpi_memory_hotplug(root)
    loaded = snap.loaded_words()
    if snap.file_load:
        why = "the kernel builds the boot parameters of a kexec_file_load image"
        return Amendment(None, loaded, (), hotplug, enabled, why, snap.cmdline)
    try:
        found = cmdline.find(snap.segments)
    except CmdlineError as e:
        return Amendment(None, loaded, (), hotplug, enabled, str(e))
    if not (hotplug and enabled) or cmdline.has(found.text, NO_MEMHOTPLUG):
        return Amendment(found, loaded, (), hotplug, enabled)
    problem = blocked
    if problem is None and snap.digest is None:
        problem = "purgatory's digest was not found, so a new command line cannot be vouched for"
    if problem is None:
        try:
            found.check_room(cmdline.appended(found.text, NO_MEMHOTPLUG))
        except CmdlineError as e:
            problem = str(e)
    if problem is not None:
        return Amendment(found, loaded, (), hotplug, enabled, problem)
    return Amendment(found, loaded, (NO_MEMHOTPLUG,), hotplug, enabled)


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


def movable(snap: Snapshot) -> bool:
    """Whether kexecd can move this image's header: a ``kexec_load`` image
    whose purgatory hashes the header and whose regions were found."""
    d = snap.digest
    return (
        not snap.file_load
        and snap.header is not None
        and snap.purgatory is not None
        and d is not None
        and d.header_hashed
        and d.regions_offset is not None
    )


def _hole(
    snap: Snapshot, system: SystemState, phnum: int, grow: int | None = None
) -> tuple[int, int] | None:
    # Where a grown header goes: a hole of the crash kernel reservation that
    # no other segment uses and that the crash kernel's e820 calls RAM. Sized
    # by the growth policy, or for exactly ``grow`` program headers (at least
    # ``phnum``) when an operator asked.
    assert snap.header is not None
    try:
        found = cmdline.find(snap.segments)
        e820 = relocate.read_e820(snap.segments[found.segment].buf)
    except (CmdlineError, HeaderError):
        return None
    if grow is not None:
        memsz = relocate.sized_memsz(max(grow, phnum))
    else:
        memsz = relocate.grown_memsz(phnum, snap.segments[snap.header].memsz)
    others = [s for i, s in enumerate(snap.segments) if i != snap.header]
    for r in system.memory.crash_reserved:
        at = relocate.place((r.start, r.end + 1), others, e820, memsz)
        if at is not None:
            return at, memsz
    return None
