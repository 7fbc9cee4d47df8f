# SPDX-License-Identifier: GPL-2.0-or-later
"""Carrying out a plan: nothing, the header reloaded, the header moved (or the
kernel segment cut: :mod:`kexecd.image.trim`), or the command again; one load
with rollback under all of them.

Every ``kexec_load`` kexecd makes goes through :meth:`Executor._load`: the
intent is recorded first (killed between the load and the record, the next
run knows the loaded header is uncertain), and when the kernel refuses, the
previous image is loaded again so the host keeps a crash kernel
(:meth:`Executor._rollback`). The caller holds the state directory's lock.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from kexecd.errors import KexecdError, LoadError, SnapshotError
from kexecd.image import plan, relocate, rerun, trim
from kexecd.image.changes import HeaderDiff
from kexecd.image.cmdline import Amendment
from kexecd.image.decide import Action, Decision, Request, Why
from kexecd.image.deps import Deps
from kexecd.image.loader import load_locked
from kexecd.image.plan import Plan, Policy
from kexecd.image.purgatory import DigestLocation, digest_of, patched, rebased
from kexecd.image.snapshot import Snapshot
from kexecd.image.store import Origin, Store
from kexecd.kparams import appended
from kexecd.loads import LoadCapture, Segment
from kexecd.system.kernel import read_kexec_state
from kexecd.timing import Spans

__all__ = ["Executor", "RefreshResult", "image_with"]


@dataclass
class RefreshResult:
    """What a refresh did, and the plan it carried out.

    :ivar load_seconds: time inside the ``kexec_load`` call, if one was made.
    :ivar cmdline: what the load did to the crash kernel's command line, in
        words ("" for nothing).
    :ivar amend_error: after a whole reload, why the words kexecd appends
        could not be put back on the command line kexec-tools loaded (the
        crash kernel is then loaded, but not as kexecd wants it).
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
    amend_error: str | None = None

    @property
    def decision(self) -> Decision:
        return self.plan.decision

    @property
    def diff(self) -> HeaderDiff | None:
        return self.plan.diff


def image_with(
    snap: Snapshot, line: Amendment | None, header: bytes, words: Sequence[str]
) -> tuple[list[Segment], bytes | None]:
    """The snapshot's segments with ``header``, ``words`` appended to the command
    line kexec-tools built, and purgatory's digest patched to match. Returns
    the new digest, or ``None`` when purgatory is unchanged.

    :raises SnapshotError: words to append but no line or digest to vouch.
    """
    segs = list(snap.segments)
    assert snap.header is not None
    segs[snap.header] = replace(segs[snap.header], buf=header)
    loc = snap.digest
    changed = [snap.header] if loc is not None and loc.header_hashed else []
    # What names the header's size (arm64: the DTB's linux,elfcorehdr, which
    # the capture kernel reserves exactly; x86: nothing).
    for i, buf in snap.arch.resize(segs, snap.header, len(header)).items():
        if bytes(buf) != bytes(segs[i].buf):
            segs[i] = replace(segs[i], buf=buf)
            changed.append(i)
    if words:
        found = None if line is None else line.found
        if found is None or loc is None:
            raise SnapshotError(
                f"{snap.path}: no command line to append {' '.join(words)} to, or no digest "
                "to vouch for it; run 'kexecd load' again"
            )
        text = found.text
        for word in words:
            text = appended(text, word)
        i = found.segment
        segs[i] = replace(segs[i], buf=snap.arch.with_cmdline(segs[i].buf, found, text))
        changed.append(i)
    if not changed or loc is None or snap.purgatory is None:
        return segs, None
    new = digest_of(loc, segs, snap.purgatory, snap.header, changed)
    purg = snap.purgatory
    segs[purg] = replace(segs[purg], buf=patched(segs[purg].buf, loc, new))
    return segs, new


def _words(p: Plan) -> tuple[str, ...]:
    return () if p.cmdline is None else p.cmdline.wanted


class Executor:
    """Carries plans out against one state directory, with one set of collaborators."""

    def __init__(self, store: Store, deps: Deps, policy: Policy) -> None:
        self.store, self.deps, self.policy = store, deps, policy

    def run(self, p: Plan, request: Request, spans: Spans, verify: bool = True) -> RefreshResult:
        """Carry ``p`` out.

        :param verify: check every segment's SHA-256 first; the daemon skips
            it when nothing in the snapshot changed since it last verified.
            A dry run verifies, loads nothing: what a real run would refuse,
            a dry run refuses too.
        :raises SnapshotError: the snapshot does not verify; nothing was loaded.
        :raises LoadError: the load failed; the message says what the kernel
            holds now.
        """
        result = RefreshResult(p, dry_run=request.dry_run, notes=list(p.notes))
        action = p.action
        if action in (Action.RELOAD_HEADER, Action.RELOCATE) and (verify or request.dry_run):
            self.store.verify(p.snapshot)
            result.verified = True
            spans.mark("verify")
        if action in (Action.NOTHING, Action.STAND_ASIDE) or request.dry_run:
            return result
        if action is Action.FULL_RELOAD:
            self._full_reload(p, request, result)
            spans.mark("full reload")
            return result
        if not p.kexec.crash_loaded:
            result.notes.append("no crash kernel was loaded; loading the snapshot's image")
        c = self._cut(p.snapshot)
        if action is Action.RELOCATE or c is not None:
            self._rewrite(p, result, spans, c)
        else:
            self._reload_header(p, result, spans)
        return result

    def _reload_header(self, p: Plan, result: RefreshResult, spans: Spans) -> None:
        assert p.wanted is not None
        segs, digest = image_with(p.snapshot, p.cmdline, p.wanted, _words(p))
        spans.mark("digest")
        self._load(p, segs, result, spans)
        p.snapshot.record.done(p.wanted, digest, "kexecd refresh", _words(p))
        spans.mark("record")
        result.cmdline = "" if p.cmdline is None else p.cmdline.done

    def _cut(self, snap: Snapshot) -> trim.Cut | None:
        # The kernel segment to load without its zero tail, unless the policy
        # keeps kexec-tools' memsz or it is cut already.
        if not self.policy.trim_kernel or snap.purgatory is None or snap.header is None:
            return None
        return trim.cut(snap.segments, snap.kernel_extent, snap.arch.page, snap.digest)

    def _rewrite(self, p: Plan, result: RefreshResult, spans: Spans, c: trim.Cut | None) -> None:
        # kexec-tools' own segments are rewritten (the header moved to the
        # plan's hole: relocate.relocated; the kernel segment cut:
        # trim.trimmed) into a new snapshot beside the current one, kexecd's
        # words go on the line, and the kernel gets it in one kexec_load.
        # Only once it took it does the new snapshot replace the current one;
        # if it refused, the previous image is loaded again as after any
        # failed refresh. Killed in between, the current snapshot's intent
        # makes the next run plan again: the rewrite is redone.
        snap, wanted = p.snapshot, p.wanted
        assert wanted is not None and snap.digest is not None
        assert snap.header is not None and snap.purgatory is not None
        segs: Sequence[Segment] = snap.segments
        loc: DigestLocation | None = snap.digest
        hows = []
        relocated = None
        if p.move is not None:
            move = relocate.Move(snap.header, snap.purgatory, snap.digest, *p.move)
            moved = relocate.relocated(snap.arch, segs, move, wanted)
            hows.append(f"header moved from {moved.old[0]:#x} to {move.mem:#x}")
            segs = moved.segments
            loc = rebased(snap.digest, segs, snap.purgatory, snap.header)
            relocated = (moved.old[0], move.mem, move.memsz)
        if c is not None:
            segs, loc = trim.trimmed(segs, c, snap.purgatory, snap.header, snap.digest)
            hows.append(f"kernel segment {c.index} loaded {c.cut} bytes long, not {c.memsz}")
            result.notes.append(
                f"the kernel segment is loaded {c.cut} bytes long from now on, not the "
                f"{c.memsz} kexec-tools gave it: the kernel no longer zero-fills "
                f"{(c.memsz - c.cut) >> 20} MiB on each load (keep_kernel_memsz = false)"
            )
        verb = "kexecd relocate" if p.move is not None else "kexecd refresh"
        how = f"{verb} ({'; '.join(hows)})"
        cap = LoadCapture.one_load(snap.entry, snap.flags, segs)
        origin = Origin(snap.argv, snap.source, snap.kexec_tools, how, loc, same_as=snap)
        new = self.store.prepare(cap, origin)
        hashed = snap.digest.header_hashed
        if new.header is None or new.digest is None or new.digest.header_hashed != hashed:
            raise LoadError(
                f"{new.path}: the rewritten image does not verify (purgatory's digest not "
                "found); nothing was loaded"
            )
        spans.mark("rewrite")
        line = p.cmdline
        if line is not None and line.found is not None:
            line = replace(line, found=new.arch.find_cmdline(new.segments))
        image, new_digest = image_with(new, line, wanted, _words(p))
        spans.mark("digest")
        self._load(p, image, result, spans)
        self.store.commit().record.done(wanted, new_digest, how, _words(p))
        spans.mark("record")
        result.relocated = relocated
        result.cmdline = "" if line is None else line.done

    def _full_reload(self, p: Plan, request: Request, result: RefreshResult) -> None:
        if p.snapshot.file_load:
            # The kernel builds the boot parameters from the line the command
            # gives: kexecd's words go into the command (kexecd.image.kexecargs).
            words = _words(p)
            argv, source = rerun.command(p.snapshot, words)  # refused before anything runs
            load_locked(self.store, self.deps, Origin(argv, source, words=words))
            result.loaded = True
            result.cmdline = "" if p.cmdline is None else p.cmdline.done
            return
        argv, source = rerun.command(p.snapshot)  # refused here, before anything runs
        snap = load_locked(self.store, self.deps, Origin(argv, source))
        result.loaded = True
        # kexec-tools loaded its own command line again: what kexecd appends
        # to it goes back at once, with the same request and policy, not at
        # the next event.
        try:
            after = plan.make(snap, self.deps.root, request, self.policy)
            if after.decision.why is not Why.CMDLINE:
                return
            again = self.run(after, request, Spans())
        except KexecdError as e:
            result.amend_error = str(e)
            result.notes.append(f"the command line kexec-tools loaded could not be amended: {e}")
            return
        result.notes += again.notes
        result.cmdline = again.cmdline

    def _load(self, p: Plan, segs: Sequence[Segment], result: RefreshResult, spans: Spans) -> None:
        # Say what is about to be loaded first, then load; roll back on failure.
        assert p.wanted is not None
        p.snapshot.record.begin(p.wanted, _words(p))
        spans.mark("intent")
        start = self.deps.clock()
        try:
            self.deps.backend.load(p.snapshot.entry, p.snapshot.flags, segs)
        except OSError as e:
            self._rollback(p, e)
        result.load_seconds = self.deps.clock() - start
        result.loaded = True
        spans.mark("kexec_load")

    def _rollback(self, p: Plan, error: OSError) -> None:
        # kernel/kexec.c (6.1): kexec_load fails before touching the crash image
        # when it is busy (EBUSY from kexec_trylock), unpermitted or malformed;
        # once do_kexec_load() has run, the old image is freed first and a
        # failure leaves none. /sys/kernel/kexec_crash_loaded tells which.
        snap, loaded = p.snapshot, p.loaded
        assert loaded is not None
        why = f"kexec_load failed: {error.strerror}"
        was = () if p.cmdline is None else p.cmdline.loaded
        if read_kexec_state(self.deps.root).crash_loaded:
            snap.record.done(loaded, None, "kexecd refresh (kept after a failed load)", was)
            busy = " (it was busy)" if error.errno == errno.EBUSY else ""
            raise LoadError(
                f"{why}; the kernel kept the previous image{busy}; it will be tried again"
            ) from error
        segs, _ = image_with(snap, p.cmdline, loaded, was)
        try:
            self.deps.backend.load(snap.entry, snap.flags, segs)
        except OSError as e2:
            raise LoadError(
                f"{why}; loading the previous image again failed too: {e2.strerror}; "
                "NO CRASH KERNEL IS LOADED: run 'kexecd load' again",
                image_lost=True,
            ) from error
        snap.record.done(loaded, None, "kexecd refresh (the previous image, loaded again)", was)
        raise LoadError(f"{why}; the previous image was loaded again") from error
