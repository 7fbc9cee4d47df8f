# SPDX-License-Identifier: GPL-2.0-or-later
"""Loading: capture kexec-tools' load once, then reload only the header.

:func:`load` runs a ``kexec -p`` command under the tracer and keeps its
snapshot. :func:`refresh` builds the header for the system now and, when it
differs, issues ``kexec_load`` with the snapshot's segments, only the header
and purgatory's 32-byte digest changed (and the command line, where kexecd
appends a word to it: :mod:`kexecd.image.plan`). When that cannot be done
safely it runs the recorded command again (never unloading first). When
``kexec_load`` fails it loads the previous good segments again, so the host
keeps a crash kernel.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from kexecd import core
from kexecd.errors import KexecdError, LoadError, SnapshotError, TraceError
from kexecd.image import cmdline, plan, relocate, statedir
from kexecd.image.changes import HeaderDiff
from kexecd.image.cmdline import Amendment
from kexecd.image.plan import Action, Decision, Plan, Why
from kexecd.image.purgatory import digest_of, patched, rebased
from kexecd.image.snapshot import Snapshot, Source, commit, create, prepare, recover, reopen
from kexecd.loads import KexecCall, LoadCapture, Segment
from kexecd.system.kernel import read_kexec_state
from kexecd.system.root import Root
from kexecd.timing import Spans

__all__ = [
    "Backend",
    "KernelBackend",
    "RefreshResult",
    "execute",
    "is_crash_load",
    "load",
    "refresh",
]

Tracer = Callable[[Sequence[str]], LoadCapture]


class Backend(Protocol):
    """What issues the load: the kernel, or a fake in tests."""

    def load(self, entry: int, flags: int, segments: Sequence[Segment]) -> None:
        """Load the image; raise :class:`OSError` when the kernel refuses."""


class KernelBackend:
    """``kexec_load(2)`` through the C core."""

    def load(self, entry: int, flags: int, segments: Sequence[Segment]) -> None:
        core.kexec_load(entry, flags, segments)


def is_crash_load(argv: Sequence[str]) -> bool:
    """Whether a command may load a crash kernel, judged before it runs.

    Only a bare kexec-tools command is judged (it must have ``-p`` or
    ``--load-panic``; anything else would load a kernel for kexec reboot).
    A wrapper (a shell, ``kdump-config``, ``kdumpctl``) is judged after it
    ran, from the flags of the loads it made.
    """
    if not argv or os.path.basename(argv[0]) != "kexec":
        return True
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
    source: Source | None = None,
) -> Snapshot:
    """Run a command that loads a crash kernel, capture its load, keep the snapshot.

    The command's whole process tree is traced; the last crash load it makes
    (``KEXEC_ON_CRASH`` / ``KEXEC_FILE_ON_CRASH`` in the call's flags) is
    what is kept.

    :param source: the distro's record of the command, when adopting.
    :raises TraceError: the command is not a crash-kernel load, failed, or
        loaded no crash kernel.
    :raises LoadError: it succeeded but no crash kernel is loaded.
    """
    if not argv:
        raise TraceError("no kexec command given: kexecd load -- kexec -p KERNEL ...")
    if not is_crash_load(argv):
        raise TraceError(
            f"{' '.join(argv)}: not a crash-kernel load; kexecd keeps kdump current, so the "
            "command must load with -p/--load-panic"
        )
    who = source.command[:200] if source else argv[0]
    statedir.ready(state_dir)
    with statedir.locked(state_dir):
        return _load_locked(argv, who, state_dir, root, tracer, source)


def _load_locked(
    argv: Sequence[str],
    who: str,
    state_dir: Path,
    root: Root | None,
    tracer: Tracer,
    source: Source | None,
) -> Snapshot:
    cap = tracer(argv)
    if cap.exit_code != 0:
        raise TraceError(f"{who} exited {cap.exit_code}; nothing was recorded")
    if cap.crash_loads == 0 or cap.call is KexecCall.NONE:
        raise TraceError(
            f"{who} made no kexec_load or kexec_file_load call that loads a crash kernel "
            f"({cap.unloads} unloads, {cap.reboot_loads} loads for kexec reboot); give a "
            "command that loads one (kexec -p, kdump-config load)"
        )
    if cap.result == -errno.EINPROGRESS:
        raise TraceError(f"{who} died inside its crash load; nothing was recorded")
    if cap.result != 0:
        raise TraceError(f"{who}: the kernel refused the load (result {cap.result})")
    snap = create(state_dir, argv, cap, source)
    if not read_kexec_state(root or Root()).crash_loaded:
        raise LoadError(
            f"{who} succeeded but /sys/kernel/kexec_crash_loaded is not 1; "
            f"the snapshot is kept in {snap.path}"
        )
    return snap


@dataclass
class RefreshResult:
    """What a refresh did, and the plan it carried out.

    :ivar load_seconds: time inside the ``kexec_load`` call, if one was made.
    :ivar cmdline: what the load did to the crash kernel's command line, in
        words ("" for nothing).
    """

    plan: Plan
    loaded: bool = False
    dry_run: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    load_seconds: float | None = None
    verified: bool = False  # the snapshot's segments were hashed and matched
    cmdline: str = ""
    relocated: tuple[int, int, int] | None = None  # header moved: (from, to, memsz)

    @property
    def decision(self) -> Decision:
        return self.plan.decision

    @property
    def diff(self) -> HeaderDiff | None:
        return self.plan.diff


def _image(
    snap: Snapshot,
    line: Amendment | None,
    header: bytes,
    words: Sequence[str],
    *,
    digest: bool = True,
) -> tuple[list[Segment], bytes | None]:
    """The snapshot's segments with ``header``, ``words`` appended to the command
    line kexec-tools built, and purgatory's digest patched to match (unless
    ``digest`` is false: the test bed's control experiment). Returns the new
    digest, or ``None`` when purgatory is unchanged."""
    segs = list(snap.segments)
    assert snap.header is not None
    segs[snap.header] = replace(segs[snap.header], buf=header)
    loc = snap.digest
    changed = [snap.header] if loc is not None and loc.header_hashed else []
    if words:
        found = None if line is None else line.found
        if found is None or loc is None:
            raise SnapshotError(
                f"{snap.path}: no command line to append {' '.join(words)} to, or no digest "
                "to vouch for it; run 'kexecd load' again"
            )
        text = found.text
        for word in words:
            text = cmdline.appended(text, word)
        i = found.segment
        segs[i] = replace(segs[i], buf=cmdline.patched(segs[i].buf, found, text))
        changed.append(i)
    if not changed or not digest or loc is None or snap.purgatory is None:
        return segs, None
    new = digest_of(loc, segs, snap.purgatory, snap.header, changed)
    purg = snap.purgatory
    segs[purg] = replace(segs[purg], buf=patched(segs[purg].buf, loc, new))
    return segs, new


def refresh(
    state_dir: Path,
    *,
    root: Root | None = None,
    backend: Backend | None = None,
    dry_run: bool = False,
    tracer: Tracer = core.trace_kexec,
    patch_digest: bool = True,
    verify: bool = True,
    reload_unloaded: bool = False,
    acpi_no_memhotplug: bool = True,
    observe: Callable[[Plan], None] | None = None,
    spans: Spans | None = None,
    snapshot: Snapshot | None = None,
    kernel_missed: bool = False,
    grow: int | None = None,
) -> RefreshResult:
    """Bring the loaded crash image's header (and command line) up to date.

    Holds the state directory's lock, makes the plan
    (:func:`kexecd.image.plan.make`) and carries it out with :func:`execute`;
    the other parameters are theirs.

    :param observe: called with the plan before it is carried out (the
        daemon records what is loaded and what the system has, even when
        the load then fails).
    :param spans: where the time goes, step by step (the daemon's debug log).
    :param snapshot: the snapshot as opened by an earlier refresh (the
        daemon keeps it); used if it is still the one in ``state_dir``
        (:meth:`Snapshot.unchanged`), else the snapshot is opened again.
    :param kernel_missed: the kernel dropped an update of the header it
        keeps: load the image once even though it updates it
        (:func:`kexecd.image.plan.decide`).
    :param grow: make room for this many program headers (``kexecd grow``).

    :raises SnapshotError: the snapshot is missing, corrupt or tampered with;
        nothing was loaded.
    :raises LoadError: the load failed; the message says what the kernel
        holds now.
    """
    start = time.monotonic()
    spans = spans or Spans()
    root = root or Root()
    with statedir.locked(state_dir):
        spans.mark("lock")
        notes = [n for n in [recover(state_dir)] if n]
        snap = reopen(state_dir, snapshot)
        spans.mark("open snapshot")
        p = plan.make(
            snap,
            root,
            reload_unloaded=reload_unloaded,
            acpi_no_memhotplug=acpi_no_memhotplug,
            spans=spans,
            kernel_missed=kernel_missed,
            grow=grow,
        )
        if observe is not None:
            observe(p)
        r = execute(
            p,
            state_dir,
            root=root,
            backend=backend,
            dry_run=dry_run,
            tracer=tracer,
            patch_digest=patch_digest,
            verify=verify,
            start=start,
            spans=spans,
        )
    r.notes[:0] = notes
    return r


def execute(
    p: Plan,
    state_dir: Path,
    *,
    root: Root,
    backend: Backend | None = None,
    dry_run: bool = False,
    tracer: Tracer = core.trace_kexec,
    patch_digest: bool = True,
    verify: bool = True,
    start: float | None = None,
    spans: Spans | None = None,
) -> RefreshResult:
    """Carry out a plan: nothing, a header-only reload, or the recorded command again.

    The caller holds the state directory's lock.

    :param dry_run: decide and verify, load nothing: what a real run would
        refuse, a dry run refuses too.
    :param patch_digest: only for the test bed's control experiment: leave
        purgatory's digest stale (the crash kernel then hangs at panic).
    :param verify: check every segment's SHA-256 first; the daemon skips it
        when nothing in the snapshot changed since it last verified.
    :param start: when the work began (``time.monotonic()``), for the timing.
    :param spans: where the time goes, step by step.
    """
    start = time.monotonic() if start is None else start
    spans = spans or Spans()
    backend = backend or KernelBackend()
    result = RefreshResult(p, dry_run=dry_run, notes=list(p.notes))
    action = p.decision.action
    if action in (Action.RELOAD_HEADER, Action.RELOCATE) and (verify or dry_run):
        p.snapshot.verify()
        result.verified = True
        spans.mark("verify")
    if action in (Action.NOTHING, Action.STAND_ASIDE) or dry_run:
        result.seconds = time.monotonic() - start
        return result
    if action is Action.FULL_RELOAD:
        snap = load(p.snapshot.argv, state_dir, root=root, tracer=tracer, source=p.snapshot.source)
        result.loaded = True
        _amend_after_full_reload(p, snap, result, state_dir, root, backend, tracer, patch_digest)
        spans.mark("full reload")
        result.seconds = time.monotonic() - start
        return result

    snap, wanted, loaded = p.snapshot, p.wanted, p.loaded
    assert wanted is not None and loaded is not None
    if not p.kexec.crash_loaded:
        result.notes.append("no crash kernel was loaded; loading the snapshot's image")
    if action is Action.RELOCATE:
        _relocate(p, state_dir, root, backend, result, spans, patch_digest)
        result.seconds = time.monotonic() - start
        return result
    line = p.cmdline
    words = () if line is None else line.wanted
    segs, digest = _image(snap, line, wanted, words, digest=patch_digest)
    spans.mark("digest")
    # Say what is about to be loaded first: killed between the load and the
    # record, the next run knows the loaded header is uncertain.
    snap.record_intent(wanted, words)
    spans.mark("intent")
    load_start = time.monotonic()
    try:
        backend.load(snap.entry, snap.flags, segs)
    except OSError as e:
        _failed(snap, line, backend, loaded, root, e)
    result.load_seconds = time.monotonic() - load_start
    spans.mark("kexec_load")
    snap.record_loaded(wanted, digest, "kexecd refresh", words)
    spans.mark("record")
    result.loaded = True
    result.cmdline = "" if line is None else line.done
    result.seconds = time.monotonic() - start
    return result


def _relocate(
    p: Plan,
    state_dir: Path,
    root: Root,
    backend: Backend,
    result: RefreshResult,
    spans: Spans,
    patch_digest: bool,
) -> None:
    # The header moves to the plan's hole: kexec-tools' own segments are
    # rewritten (relocate.relocated) into a new snapshot beside the current
    # one, kexecd's words go on the line, and the kernel gets it in one
    # kexec_load. Only once it took it does the new snapshot replace the
    # current one; if it refused, the previous image is loaded again as after
    # any failed refresh. Killed in between, the current snapshot's intent
    # makes the next run plan again: the move is redone.
    snap, wanted, loaded = p.snapshot, p.wanted, p.loaded
    assert wanted is not None and loaded is not None and p.move is not None
    assert snap.header is not None and snap.purgatory is not None and snap.digest is not None
    mem, memsz = p.move
    moved = relocate.relocated(
        snap.segments,
        header=snap.header,
        purgatory_index=snap.purgatory,
        location=snap.digest,
        new_header=wanted,
        mem=mem,
        memsz=memsz,
    )
    cap = LoadCapture.one_load(snap.entry, snap.flags, moved.segments)
    how = f"kexecd relocate (header moved from {moved.old[0]:#x} to {mem:#x})"
    new = prepare(
        state_dir,
        snap.argv,
        cap,
        snap.source,
        kexec_tools=snap.kexec_tools,
        how=how,
        digest=rebased(snap.digest, moved.segments, snap.purgatory, snap.header),
        same_as=snap,
    )
    if new.header != snap.header or new.digest is None or not new.digest.header_hashed:
        raise LoadError(
            f"{new.path}: the moved image does not verify (purgatory's digest not found); "
            "nothing was loaded"
        )
    spans.mark("relocate")
    line = p.cmdline
    words = () if line is None else line.wanted
    if line is not None:
        line = replace(line, found=cmdline.find(new.segments))
    segs, digest = _image(new, line, wanted, words, digest=patch_digest)
    spans.mark("digest")
    snap.record_intent(wanted, words)
    load_start = time.monotonic()
    try:
        backend.load(new.entry, new.flags, segs)
    except OSError as e:
        _failed(snap, p.cmdline, backend, loaded, root, e)
    result.load_seconds = time.monotonic() - load_start
    spans.mark("kexec_load")
    done = commit(state_dir)
    done.record_loaded(wanted, digest, how, words)
    spans.mark("record")
    result.loaded = True
    result.relocated = (moved.old[0], mem, memsz)
    result.cmdline = "" if line is None else line.done


def _amend_after_full_reload(
    p: Plan,
    snap: Snapshot,
    result: RefreshResult,
    state_dir: Path,
    root: Root,
    backend: Backend,
    tracer: Tracer,
    patch_digest: bool,
) -> None:
    # kexec-tools loaded its own command line again: what kexecd appends to
    # it goes back at once, not at the next event.
    enabled = p.cmdline.enabled if p.cmdline is not None else True
    try:
        after = plan.make(snap, root, acpi_no_memhotplug=enabled)
        if after.decision.why is not Why.CMDLINE:
            return
        again = execute(
            after,
            state_dir,
            root=root,
            backend=backend,
            tracer=tracer,
            patch_digest=patch_digest,
        )
    except KexecdError as e:
        result.notes.append(f"the command line kexec-tools loaded could not be amended: {e}")
        return
    result.notes += again.notes
    result.cmdline = again.cmdline


def _failed(
    snap: Snapshot,
    line: Amendment | None,
    backend: Backend,
    loaded: bytes,
    root: Root,
    error: OSError,
) -> None:
    # kernel/kexec.c (6.1): kexec_load fails before touching the crash image
    # when it is busy (EBUSY from kexec_trylock), unpermitted or malformed;
    # once do_kexec_load() has run, the old image is freed first and a
    # failure leaves none. /sys/kernel/kexec_crash_loaded tells which.
    why = f"kexec_load failed: {error.strerror}"
    was = () if line is None else line.loaded
    if read_kexec_state(root).crash_loaded:
        snap.record_loaded(loaded, None, "kexecd refresh (kept after a failed load)", was)
        busy = " (it was busy)" if error.errno == errno.EBUSY else ""
        raise LoadError(
            f"{why}; the kernel kept the previous image{busy}; it will be tried again"
        ) from error
    segs, _ = _image(snap, line, loaded, was)
    try:
        backend.load(snap.entry, snap.flags, segs)
    except OSError as e2:
        raise LoadError(
            f"{why}; loading the previous image again failed too: {e2.strerror}; "
            "NO CRASH KERNEL IS LOADED: run 'kexecd load' again",
            image_lost=True,
        ) from error
    snap.record_loaded(loaded, None, "kexecd refresh (the previous image, loaded again)", was)
    raise LoadError(f"{why}; the previous image was loaded again") from error
