# SPDX-License-Identifier: GPL-2.0-or-later
"""The plan: what is loaded, what the system needs now, and what to do about it.

:func:`make` is the one place that reads the kexec state, the loaded header
and the system (:mod:`kexecd.image.facts`), builds the header wanted now and
hands the facts to :func:`kexecd.image.decide.decide`. The
:class:`~kexecd.image.refresher.Refresher` carries a :class:`Plan` out,
``kexecd status`` renders one, the daemon records one.

The plan also covers the crash kernel's command line: on a host that can
hot-add memory, a crash kernel without ``acpi_no_memhotplug`` takes the
hot-added DIMMs the dump covers as its own RAM (drivers/acpi/acpi_memhotplug.c:
the parameter keeps its scan handler from attaching), and makedumpfile then
fails ("Bad address"). Unless ``crash_acpi_no_memhotplug`` is off, kexecd
appends the word to the command line kexec-tools built; which words it
appended to the image loaded now is recorded with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

from kexecd.image import elfcore, facts
from kexecd.image.changes import HeaderDiff, diff_headers
from kexecd.image.cmdline import Amendment
from kexecd.image.decide import ASKED, Action, Decision, Facts, Request, Why, decide
from kexecd.image.elfcore import CoreHeader
from kexecd.image.record import LOADED_HEADER
from kexecd.image.relocate import capacity
from kexecd.image.snapshot import Snapshot
from kexecd.system.kernel import KexecState, read_kexec_state
from kexecd.system.root import Root
from kexecd.system.state import SystemState
from kexecd.timing import Spans

__all__ = ["DEFAULT_POLICY", "Action", "Decision", "Plan", "Policy", "Request", "Why", "make"]


@dataclass(frozen=True)
class Policy:
    """The settings a refresh follows, built once from the configuration.

    :ivar acpi_no_memhotplug: ``crash_acpi_no_memhotplug``: append the word
        where the host can hot-add memory and the line lacks it.
    :ivar trim_kernel: not ``keep_kernel_memsz``: reload the kernel segment
        without the zero-filled tail kexec-tools gave it
        (:mod:`kexecd.image.trim`).
    """

    acpi_no_memhotplug: bool = True
    trim_kernel: bool = True


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Plan:
    """Everything known about the crash image and the system at one moment.

    :ivar kexec: the kernel's kexec state, its uevent seqnum read after the system.
    :ivar facts: what the decision rests on (the headers loaded and wanted,
        the command line, the hole for a move).
    :ivar current: the parsed loaded header (the template the wanted one was
        built from).
    :ivar target: the parsed wanted header.
    :ivar notes: what happened while planning, for people.
    """

    snapshot: Snapshot
    kexec: KexecState
    facts: Facts
    decision: Decision
    system: SystemState | None = None
    current: CoreHeader | None = None
    target: CoreHeader | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def action(self) -> Action:
        return self.decision.action

    @property
    def loaded(self) -> bytes | None:
        """The header loaded now; ``None`` when there is none to read (a
        file-loaded image, no header segment, or the kernel updates it)."""
        return self.facts.loaded

    @property
    def wanted(self) -> bytes | None:
        """The header the system needs now (same conditions)."""
        return self.facts.wanted

    @property
    def cmdline(self) -> Amendment | None:
        """The crash kernel's command line (``None`` when no crash kernel is loaded)."""
        return self.facts.cmdline

    @property
    def move(self) -> tuple[int, int] | None:
        """Where a header that outgrew its segment goes: (address, memsz)."""
        return self.facts.move

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
        return self.snapshot.header_memsz

    @property
    def cpus(self) -> int | None:
        """CPU notes in the wanted header."""
        return None if self.system is None else len(self.system.cpus.notes)

    @property
    def ranges(self) -> int | None:
        """RAM ranges (PT_LOADs of memory) in the wanted header."""
        return None if self.target is None else self.target.nr_ram

    @property
    def ram_bytes(self) -> int | None:
        """Bytes of RAM in the wanted header: the system's RAM now."""
        return None if self.target is None else self.target.ram_bytes

    @property
    def phnum(self) -> int | None:
        """Program headers in the wanted header."""
        return None if self.target is None else self.target.phnum

    def described(self, carried_out: bool = False) -> CoreHeader | None:
        """The header loaded now, or once the plan is carried out: what a dump
        would describe (``None`` where kexecd cannot see it)."""
        return self.target if carried_out else self.current

    @property
    def room(self) -> int | None:
        """Program headers that still fit in the header segment."""
        cap, phnum = self.snapshot.header_capacity, self.phnum
        return None if cap is None or phnum is None else cap - phnum


def _base(snap: Snapshot, kexec: KexecState, request: Request) -> Facts:
    # What is known before the loaded header is read.
    d = snap.digest
    return Facts(
        crash_loaded=kexec.crash_loaded or request.reload_unloaded,
        kernel_updates=kexec.kernel_updates,
        file_load=snap.file_load,
        header_memsz=snap.header_memsz,
        digest=d is not None,
        header_hashed=d is not None and d.header_hashed,
        movable=snap.movable,
    )


def make(
    snap: Snapshot,
    root: Root,
    request: Request = ASKED,
    policy: Policy = DEFAULT_POLICY,
    kexec: KexecState | None = None,
    spans: Spans | None = None,
    previous: SystemState | None = None,
) -> Plan:
    """Read the system and the loaded image, build the header wanted now, decide.

    :param kexec: the kexec state, if the caller has just read it.
    :param spans: where the time goes, step by step (the daemon's debug log).
    :param previous: the system as the caller's last plan read it; what
        cannot have changed is not read again.
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
    base = _base(snap, kexec, request)
    stand_aside = base.kernel_updates and request.kernel_missed is None
    if not base.crash_loaded or stand_aside or snap.file_load or snap.header is None:
        blocked = (
            "the kernel updates this image's header itself, so kexecd does not reload it"
            if stand_aside
            else "kexecd reloads this image only whole, by running its command again"
        )
        line = facts.amendment(snap, root, policy.acpi_no_memhotplug, blocked)
        f = replace(base, cmdline=line if base.crash_loaded else None)
        return Plan(snap, kexec, f, decide(f, request))
    loaded = snap.record.header()
    current = elfcore.parse(loaded, str(snap.path / LOADED_HEADER))
    spans.mark("loaded header")
    built = facts.build_wanted(snap, root, current, kexec, spans, previous)
    facts.check_placement(snap, built.system)
    move = None
    memsz = base.header_memsz
    assert memsz is not None
    asked = request.grow is not None and request.grow > capacity(memsz)
    if (len(built.wanted) > memsz or asked) and snap.movable:
        grow = request.grow if asked else None
        move = facts.hole(snap, built.system, built.target.phnum, grow)
        spans.mark("hole")
    line = facts.amendment(snap, root, policy.acpi_no_memhotplug, None)
    spans.mark("cmdline")
    uncertain = snap.record.intent() is not None
    f = replace(
        base, loaded=loaded, wanted=built.wanted, uncertain=uncertain, cmdline=line, move=move
    )
    plan = Plan(
        snap, built.kexec, f, decide(f, request), built.system, current, built.target, built.notes
    )
    spans.mark("decide")
    return plan
