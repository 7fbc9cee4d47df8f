# SPDX-License-Identifier: GPL-2.0-or-later
"""Loading: capture kexec-tools' load once, then reload only the header.

:func:`load` runs a ``kexec -p`` command under the tracer and keeps its
snapshot. :func:`refresh` builds the header for the system now and, when it
differs, issues ``kexec_load`` with the snapshot's segments, only the header
and purgatory's 32-byte digest changed. When that cannot be done safely it
runs the recorded command again (never unloading first). When ``kexec_load``
fails it loads the previous good segments again, so the host keeps a crash
kernel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kexecd import core
from kexecd.core import Buffer, KexecCall, LoadCapture
from kexecd.errors import LoadError, TraceError
from kexecd.image import elfcore
from kexecd.image.changes import HeaderDiff, diff_headers
from kexecd.image.plan import Action, Decision, decide
from kexecd.image.purgatory import Seg, digest_after_header, patched
from kexecd.image.snapshot import Snapshot, create, open_snapshot
from kexecd.system.kernel import read_kexec_state
from kexecd.system.root import Root
from kexecd.system.state import read_system

__all__ = ["Backend", "KernelBackend", "RefreshResult", "is_crash_load", "load", "refresh"]

Tracer = Callable[[Sequence[str]], LoadCapture]


class Backend(Protocol):
    """What issues the load: the kernel, or a fake in tests."""

    def load(self, entry: int, flags: int, segments: Sequence[tuple[Buffer, int, int]]) -> None:
        """Load the image; raise :class:`OSError` when the kernel refuses."""


class KernelBackend:
    """``kexec_load(2)`` through the C core."""

    def load(self, entry: int, flags: int, segments: Sequence[tuple[Buffer, int, int]]) -> None:
        core.kexec_load(entry, flags, segments)


def is_crash_load(argv: Sequence[str]) -> bool:
    """Whether a kexec-tools command loads a crash kernel (``-p``/``--load-panic``)."""
    for arg in argv[1:]:
        if arg == "--":
            break
        if arg in ("-p", "--load-panic"):
            return True
    return False


def load(
    argv: Sequence[str],
    state_dir: Path,
    *,
    root: Root | None = None,
    tracer: Tracer = core.trace_kexec,
) -> Snapshot:
    """Run a ``kexec -p`` command, capture its load, keep the snapshot.

    :raises TraceError: the command is not a crash-kernel load, failed, or
        made no kexec syscall.
    :raises LoadError: it succeeded but no crash kernel is loaded.
    """
    if not argv:
        raise TraceError("no kexec command given: kexecd load -- kexec -p KERNEL ...")
    if not is_crash_load(argv):
        raise TraceError(
            f"{' '.join(argv)}: not a crash-kernel load; kexecd keeps kdump current, so the "
            "command must load with -p/--load-panic"
        )
    cap = tracer(argv)
    if cap.exit_code != 0:
        raise TraceError(f"{argv[0]} exited {cap.exit_code}; nothing was recorded")
    if cap.call is KexecCall.NONE:
        raise TraceError(f"{argv[0]} made no kexec_load or kexec_file_load call")
    if cap.result != 0:
        raise TraceError(f"{argv[0]}: the kernel refused the load (result {cap.result})")
    snap = create(state_dir, argv, cap)
    if not read_kexec_state(root or Root()).crash_loaded:
        raise LoadError(
            f"{argv[0]} succeeded but /sys/kernel/kexec_crash_loaded is not 1; "
            f"the snapshot is kept in {snap.path}"
        )
    return snap


@dataclass
class RefreshResult:
    """What a refresh did, and why."""

    decision: Decision
    diff: HeaderDiff | None = None
    loaded: bool = False
    dry_run: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    cpus: int | None = None  # CPU notes and RAM ranges of the header wanted now
    ranges: int | None = None
    load_seconds: float | None = None  # time inside the kexec_load call


def _segments(
    snap: Snapshot, segs: list[Seg], header: bytes, purgatory: Buffer | None
) -> list[Seg]:
    segs = list(segs)
    assert snap.header is not None
    segs[snap.header] = (header, segs[snap.header][1], segs[snap.header][2])
    if purgatory is not None and snap.purgatory is not None:
        segs[snap.purgatory] = (purgatory, segs[snap.purgatory][1], segs[snap.purgatory][2])
    return segs


def _with_digest(snap: Snapshot, segs: list[Seg], header: bytes) -> tuple[list[Seg], bytes | None]:
    """The segments with ``header``, and purgatory's digest patched to match."""
    loc = snap.digest
    if loc is None or not loc.header_hashed:
        return _segments(snap, segs, header, None), None
    assert snap.header is not None and snap.purgatory is not None
    digest = digest_after_header(loc, segs, snap.purgatory, snap.header, header)
    purg = patched(segs[snap.purgatory][0], loc, digest)
    return _segments(snap, segs, header, purg), digest


def refresh(
    state_dir: Path,
    *,
    root: Root | None = None,
    backend: Backend | None = None,
    dry_run: bool = False,
    tracer: Tracer = core.trace_kexec,
    patch_digest: bool = True,
    verify: bool = True,
) -> RefreshResult:
    """Bring the loaded crash image's header up to date with the system.

    :param patch_digest: only for the test bed's control experiment: leave
        purgatory's digest stale (the crash kernel then hangs at panic).
    :param verify: check every segment's SHA-256 first; the daemon does it
        once, and again only when the snapshot's files change.
    :raises SnapshotError: the snapshot is missing, corrupt or tampered with;
        nothing was loaded.
    :raises LoadError: the load failed; the message says whether the
        previous image was loaded again.
    """
    start = time.monotonic()
    root = root or Root()
    backend = backend or KernelBackend()
    snap = open_snapshot(state_dir)
    kstate = read_kexec_state(root)
    kernel_updates = bool(kstate.cpu_crash_hotplug or kstate.memory_crash_hotplug)
    result_notes: list[str] = []
    counts: tuple[int | None, int | None] = (None, None)
    loaded = wanted = None
    diff = None
    if not snap.file_load and snap.header is not None and not kernel_updates:
        loaded = snap.loaded_header()
        template = elfcore.parse(loaded, str(snap.path / "loaded-header.bin"))
        # If a uevent arrives while the system is read, read it again.
        for _ in range(5):
            seqnum = kstate.uevent_seqnum
            state = read_system(root)
            wanted = elfcore.build(elfcore.spec_from_template(template, state))
            kstate = read_kexec_state(root)
            if kstate.uevent_seqnum == seqnum:
                break
            result_notes.append("the system changed while the header was built; built again")
        assert wanted is not None
        want = elfcore.parse(wanted)
        diff = diff_headers(template, want, state.cpus)
        counts = (len(state.cpus.notes), len(want.ram))
    decision = decide(snap, loaded, wanted, kernel_updates)
    result = RefreshResult(
        decision, diff, dry_run=dry_run, notes=result_notes, cpus=counts[0], ranges=counts[1]
    )
    if decision.action in (Action.NOTHING, Action.STAND_ASIDE) or dry_run:
        result.seconds = time.monotonic() - start
        return result
    if decision.action is Action.FULL_RELOAD:
        load(snap.argv, state_dir, root=root, tracer=tracer)
        result.loaded = True
        result.seconds = time.monotonic() - start
        return result

    assert wanted is not None and loaded is not None
    if verify:
        snap.verify()
    if not kstate.crash_loaded:
        result.notes.append("no crash kernel was loaded; loading the snapshot's image")
    original = snap.segs()
    segs, digest = _with_digest(snap, original, wanted)
    if not patch_digest:
        segs, digest = _segments(snap, original, wanted, None), None
    load_start = time.monotonic()
    try:
        backend.load(snap.entry, snap.flags, segs)
    except OSError as e:
        _rollback(snap, original, backend, loaded, e)
    result.load_seconds = time.monotonic() - load_start
    snap.record_loaded(wanted, digest, "kexecd refresh")
    result.loaded = True
    result.seconds = time.monotonic() - start
    return result


def _rollback(
    snap: Snapshot, original: list[Seg], backend: Backend, loaded: bytes, error: OSError
) -> None:
    segs, _ = _with_digest(snap, original, loaded)
    try:
        backend.load(snap.entry, snap.flags, segs)
    except OSError as e2:
        raise LoadError(
            f"kexec_load failed: {error.strerror}; loading the previous image again failed "
            f"too: {e2.strerror}; NO CRASH KERNEL IS LOADED: run 'kexecd load' again"
        ) from error
    raise LoadError(
        f"kexec_load failed: {error.strerror}; the previous image was loaded again"
    ) from error
