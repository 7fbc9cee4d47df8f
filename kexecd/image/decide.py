# SPDX-License-Identifier: GPL-2.0-or-later
"""Every decision rule of kexecd, in one pure function.

:func:`decide` takes :class:`Facts` (what was read: :func:`kexecd.image.facts.gather`)
and a :class:`Request` (what the caller asks) and returns a :class:`Decision`.
It does no I/O, so it is tested from tables of hand-built facts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kexecd.image.cmdline import Amendment
from kexecd.image.relocate import capacity
from kexecd.system.kmsg import Drop

__all__ = ["ASKED", "Action", "Decision", "Drop", "Facts", "Request", "Why", "decide", "missed"]


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
class Request:
    """What one refresh is asked to do, beyond bringing the header up to date.

    :ivar dry_run: decide and verify, load nothing.
    :ivar reload_unloaded: load the image even though none is loaded (the
        daemon, after its own failed load left none); otherwise kexecd
        respects an admin's unload.
    :ivar kernel_missed: the kernel logged that it dropped an update of the
        header it keeps, and why (:class:`kexecd.system.kmsg.Drop`): what it
        holds is unknown, so kexecd loads the image itself once.
    :ivar grow: make room for this many program headers (``kexecd grow``),
        moving the header if it has less.
    """

    dry_run: bool = False
    reload_unloaded: bool = False
    kernel_missed: Drop | None = None
    grow: int | None = None


ASKED = Request()  # a plain refresh: bring the header up to date, nothing more


@dataclass(frozen=True)
class Facts:
    """What a decision rests on, as read at one moment.

    :ivar crash_loaded: a crash kernel is loaded (or the request reloads one).
    :ivar kernel_updates: the kernel keeps this image's header itself.
    :ivar file_load: the image came from ``kexec_file_load``.
    :ivar header_memsz: the header segment's size in memory (``None``: no
        header segment).
    :ivar loaded: the header loaded now (``None`` where kexecd cannot see it).
    :ivar wanted: the header a fresh ``kexec -p`` would build now.
    :ivar digest: purgatory's digest was found; ``header_hashed``: the
        header is among what it covers.
    :ivar movable: the header can move (:attr:`Snapshot.movable`).
    :ivar uncertain: a load was begun and not recorded.
    :ivar cmdline: the command line loaded and the one wanted.
    :ivar move: a hole for a header that outgrew its segment (address, memsz).
    """

    crash_loaded: bool
    kernel_updates: bool
    file_load: bool = False
    header_memsz: int | None = None
    loaded: bytes | None = None
    wanted: bytes | None = None
    digest: bool = False
    header_hashed: bool = False
    movable: bool = False
    uncertain: bool = False
    cmdline: Amendment | None = None
    move: tuple[int, int] | None = None


def missed(drop: Drop) -> str:
    """The words for a dropped update of the kernel's header, for reasons."""
    return f"the kernel dropped an update of the header it keeps ({drop.said})"


def _whole(f: Facts, drop: Drop | None) -> Decision | None:
    # The rules that leave kexecd nothing to patch: nothing loaded, the
    # kernel's own updates, images reloaded only whole.
    if not f.crash_loaded:
        return Decision(
            Action.NOTHING,
            Why.NOT_LOADED,
            "no crash kernel is loaded: kexecd leaves it so (load one with 'kexecd load' "
            "or 'kexecd adopt', or the distro's kdump service)",
        )
    change = "" if f.cmdline is None else f.cmdline.change
    if f.file_load and change:
        # Even where the kernel keeps the header: it keeps the line its command gave.
        return Decision(
            Action.FULL_RELOAD,
            Why.CMDLINE,
            f"{change}: load the image again, whole, its command amended (the kernel "
            "builds a kexec_file_load image's boot parameters from the line given)",
        )
    if f.kernel_updates and drop is None:
        return Decision(
            Action.STAND_ASIDE, Why.KERNEL_UPDATES, "the kernel updates the header itself"
        )
    blind = f.file_load or f.header_memsz is None or f.wanted is None
    if f.kernel_updates and drop is not None and (blind or drop is Drop.TOO_LARGE):
        # A file-loaded image gets a header sized anew by the kernel. A
        # kexec_load --hotplug one whose kernel-built header outgrew the
        # segment: purgatory leaves the header out of its hash, so kexecd
        # does not move it (relocate.relocated() moves hashed headers only);
        # kexec-tools sizes the segment again from crash_elfcorehdr_size.
        return Decision(
            Action.FULL_RELOAD, Why.KERNEL_MISSED, f"{missed(drop)}: load the image again, whole"
        )
    if f.file_load:
        return Decision(
            Action.FULL_RELOAD,
            Why.FILE_LOAD,
            "the image was loaded with kexec_file_load, which only the kernel can rebuild",
        )
    if blind or f.loaded is None:
        return Decision(
            Action.FULL_RELOAD, Why.NO_HEADER, "no ELF core header among the loaded segments"
        )
    return None


def _grown(f: Facts, grow: int | None, memsz: int) -> Decision | None:
    # An operator asked for room for more program headers than fit.
    room = capacity(memsz)
    if grow is None or grow <= room or f.move is None or not f.movable:
        return None
    to, size = f.move
    return Decision(
        Action.RELOCATE,
        Why.GROW,
        f"grow the header from room for {room} to {capacity(size)} program headers: "
        f"move it to {to:#x} ({size} bytes) and reload it with purgatory's digest",
    )


def _outgrown(f: Facts, memsz: int, wanted: bytes) -> Decision | None:
    # The header needs more than its segment holds: it moves, or the image
    # is loaded again whole.
    if len(wanted) <= memsz:
        return None
    outgrown = f"the header needs {len(wanted)} bytes but its segment holds {memsz}"
    if f.move is not None and f.movable:
        to, size = f.move
        return Decision(
            Action.RELOCATE,
            Why.TOO_BIG,
            f"{outgrown}: move it to {to:#x} ({size} bytes, room for "
            f"{capacity(size)} program headers) and reload it with purgatory's digest",
        )
    return Decision(Action.FULL_RELOAD, Why.TOO_BIG, outgrown)


def decide(f: Facts, request: Request = ASKED) -> Decision:
    """Choose what to do; every decision rule of kexecd is here."""
    drop = request.kernel_missed
    early = _whole(f, drop)
    if early is not None:
        return early
    assert f.header_memsz is not None and f.wanted is not None and f.loaded is not None
    change = "" if f.cmdline is None else f.cmdline.change
    grown = _grown(f, request.grow, f.header_memsz)
    if grown is not None:
        return grown
    if f.wanted == f.loaded and not f.uncertain and not change and not f.kernel_updates:
        return Decision(Action.NOTHING, Why.CURRENT, "the loaded header is current")
    outgrown = _outgrown(f, f.header_memsz, f.wanted)
    if outgrown is not None:
        return outgrown
    if not f.digest:
        return Decision(
            Action.FULL_RELOAD,
            Why.NO_DIGEST,
            "purgatory's SHA-256 digest was not found, so a new header cannot be vouched for",
        )
    how = "and purgatory's digest" if f.header_hashed else "(not hashed by purgatory)"
    also = f"; {change}" if change else ""
    if f.kernel_updates:
        what = missed(drop or Drop.LOCK_BUSY)
        return Decision(
            Action.RELOAD_HEADER, Why.KERNEL_MISSED, f"{what}: load a current one {how}{also}"
        )
    if f.uncertain:
        return Decision(
            Action.RELOAD_HEADER,
            Why.UNCERTAIN,
            f"a load was interrupted before it was recorded: reload the header {how}{also}",
        )
    if f.wanted != f.loaded:
        return Decision(Action.RELOAD_HEADER, Why.STALE, f"reload the header {how}{also}")
    return Decision(Action.RELOAD_HEADER, Why.CMDLINE, f"{change}, and patch purgatory's digest")
