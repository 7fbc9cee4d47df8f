# SPDX-License-Identifier: GPL-2.0-or-later
"""The reading half of a plan: the header wanted now, the command line, a hole.

:func:`kexecd.image.plan.make` calls these and hands what they read to
:func:`kexecd.image.decide.decide`. Every read is under a
:class:`~kexecd.system.root.Root`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kexecd.arch import CommandLine
from kexecd.errors import CmdlineError, HeaderError, SnapshotError
from kexecd.image import elfcore, relocate, trim
from kexecd.image.cmdline import NO_MEMHOTPLUG, Amendment
from kexecd.image.elfcore import CoreHeader
from kexecd.image.kexecargs import amended_line, with_words
from kexecd.image.snapshot import Snapshot
from kexecd.kparams import appended, has, without_tail
from kexecd.system.kernel import KexecState, acpi_memory_hotplug, read_uevent_seqnum
from kexecd.system.root import Root
from kexecd.system.state import SystemState, read_system
from kexecd.timing import Spans

__all__ = ["Built", "amendment", "build_wanted", "check_placement", "find_line", "hole"]

# A uevent during the read means the system changed under us: read again, a
# few times at most (a burst that long is caught by the next event's refresh).
SEQNUM_RETRIES = 5


@dataclass(frozen=True)
class Built:
    """The system as read, and the header it needs.

    :ivar kexec: the kexec state, its uevent seqnum read after the system.
    """

    kexec: KexecState
    system: SystemState
    wanted: bytes
    target: CoreHeader
    notes: tuple[str, ...]


def build_wanted(
    snap: Snapshot,
    root: Root,
    current: CoreHeader,
    kexec: KexecState,
    spans: Spans,
    previous: SystemState | None = None,
) -> Built:
    """Read the system and build the header a fresh ``kexec -p`` would build,
    again if a uevent came in the meantime.

    :param previous: the system as an earlier refresh read it
        (:func:`~kexecd.system.state.read_system`).
    """
    notes: list[str] = []
    for _ in range(SEQNUM_RETRIES):
        seqnum = kexec.uevent_seqnum
        system = read_system(root, spans, snap.rules, previous)
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
    return Built(kexec, system, wanted, target, tuple(notes))


def find_line(snap: Snapshot) -> CommandLine | CmdlineError:
    """The crash command line kexec-tools built, or why it cannot be read."""
    try:
        return snap.arch.find_cmdline(snap.segments)
    except CmdlineError as e:
        return e


def _file_amendment(
    snap: Snapshot, loaded: tuple[str, ...], hotplug: bool, enabled: bool
) -> Amendment:
    # The kernel builds a file-loaded image's boot parameters from the line its
    # command gives, so kexecd's words go into the command, which a whole
    # reload runs again (kexecd.image.kexecargs); the line traced then holds them.
    given = snap.cmdline
    if given is None:
        why = "the line given to kexec_file_load was not recorded"
        return Amendment(None, loaded, (), hotplug, enabled, why)
    built = without_tail(given, loaded)
    if not (hotplug and enabled) or has(built, NO_MEMHOTPLUG):
        return Amendment(None, loaded, (), hotplug, enabled, given=built)
    try:
        if snap.source is not None:
            amended_line(snap.source.command, (NO_MEMHOTPLUG,))
        else:
            with_words(snap.argv, (NO_MEMHOTPLUG,))
    except CmdlineError as e:
        why = f"the kernel builds the boot parameters of a kexec_file_load image, and {e}"
        return Amendment(None, loaded, (), hotplug, enabled, why, built)
    return Amendment(None, loaded, (NO_MEMHOTPLUG,), hotplug, enabled, given=built)


def amendment(snap: Snapshot, root: Root, enabled: bool, blocked: str | None) -> Amendment:
    """What is loaded and what is wanted of the command line.

    :param enabled: the ``crash_acpi_no_memhotplug`` setting.
    :param blocked: why kexecd will not reload this image itself, if it will not.
    """
    hotplug = acpi_memory_hotplug(root)
    loaded = snap.record.words()
    if snap.file_load:
        return _file_amendment(snap, loaded, hotplug, enabled)
    found = find_line(snap)
    if isinstance(found, CmdlineError):
        return Amendment(None, loaded, (), hotplug, enabled, str(found))
    if not (hotplug and enabled) or has(found.text, NO_MEMHOTPLUG):
        return Amendment(found, loaded, (), hotplug, enabled)
    problem = blocked
    if problem is None and snap.digest is None:
        problem = "purgatory's digest was not found, so a new command line cannot be vouched for"
    if problem is None:
        try:
            found.check_room(appended(found.text, NO_MEMHOTPLUG))
        except CmdlineError as e:
            problem = str(e)
    if problem is not None:
        return Amendment(found, loaded, (), hotplug, enabled, problem)
    return Amendment(found, loaded, (NO_MEMHOTPLUG,), hotplug, enabled)


def check_placement(snap: Snapshot, system: SystemState) -> None:
    """Every segment must lie in this boot's "Crash kernel" reservation: a
    snapshot from another boot (KASLR moves the reservation) would be refused
    by the kernel at best (kernel/kexec_core.c sanity_check_segment_list()).

    :raises SnapshotError: one does not.
    """
    reserved = system.memory.crash_reserved
    for i, seg in enumerate(snap.segments):
        end = seg.mem + seg.memsz - 1
        if seg.memsz and not any(r.start <= seg.mem and end <= r.end for r in reserved):
            raise SnapshotError(
                f"{snap.path}: segment {i} at {seg.mem:#x}-{end:#x} lies outside the crash "
                "kernel reservation in /proc/iomem (a snapshot from another boot?); "
                "load again with 'kexecd load' or 'kexecd adopt'"
            )


def hole(
    snap: Snapshot, system: SystemState, phnum: int, grow: int | None
) -> tuple[int, int] | None:
    """Where a grown header goes: a hole of the crash kernel reservation that
    no other segment uses and that the crash kernel takes as RAM. Sized by the
    growth policy, or for exactly ``grow`` program headers (at least
    ``phnum``) when an operator asked."""
    arch, memsz = snap.arch, snap.header_memsz
    assert snap.header is not None and memsz is not None
    try:
        holes = arch.header_holes(snap.segments)
    except (CmdlineError, HeaderError):
        return None
    if grow is not None:
        size = relocate.sized_memsz(arch, max(grow, phnum))
    else:
        size = relocate.grown_memsz(arch, phnum, memsz)
    # A cut kernel segment (kexecd.image.trim) still needs its whole extent.
    used = trim.occupied(snap.segments, snap.kernel_extent)
    others = [s for i, s in enumerate(used) if i != snap.header]
    for r in system.memory.crash_reserved:
        at = relocate.place((r.start, r.end + 1), others, holes, size, arch.page)
        if at is not None:
            return at, size
    return None
