# SPDX-License-Identifier: GPL-2.0-or-later
"""The Refresher: bring the loaded crash image's header (and command line) up to date.

``kexecd refresh``, ``kexecd grow``, adoption, the daemon and the benchmarks
all go through :meth:`Refresher.refresh`: under the state directory's lock it
finishes a snapshot swap cut short, opens the snapshot (or keeps the one it
has open, if unchanged), makes the plan (:func:`kexecd.image.plan.make`) and
carries it out (:class:`~kexecd.image.executor.Executor`). When a new header
cannot be loaded safely it runs the recorded command again (never unloading
first); when ``kexec_load`` fails it loads the previous good segments again,
so the host keeps a crash kernel.

A Refresher lives as long as its user: the daemon keeps one, and with it the
open snapshot, whether it was hashed since the snapshot watch last saw a
change (:meth:`forget`), and what the last plan said.
"""

from __future__ import annotations

from kexecd.errors import KexecdError
from kexecd.image.decide import ASKED, Request, Why
from kexecd.image.deps import Deps
from kexecd.image.executor import Executor, RefreshResult
from kexecd.image.plan import Plan, Policy, make
from kexecd.image.snapshot import Snapshot
from kexecd.image.store import Store
from kexecd.system.state import SystemState
from kexecd.timing import Spans

__all__ = ["Deps", "Policy", "RefreshResult", "Refresher", "Request"]


class Refresher:
    """Refreshes the image of one state directory.

    :ivar snapshot: the snapshot as last opened, kept while unchanged.
    :ivar verified: its segments were hashed and matched since :meth:`forget`
        was last called; only a caller that watches the snapshot's files for
        changes (the daemon: ``keep_open``) may rely on it.
    :ivar last_plan: the plan of the last refresh, made even if carrying it
        out then failed (the daemon records what the system has).

    The system as the last plan read it is handed to the next one, which
    reads again only what may have changed since.
    """

    def __init__(
        self,
        store: Store,
        deps: Deps | None = None,
        policy: Policy | None = None,
        *,
        keep_open: bool = False,
    ) -> None:
        self.store = store
        self.deps = deps or Deps()
        self.policy = policy or Policy()
        self.keep_open = keep_open
        self.snapshot: Snapshot | None = None
        self.verified = False
        self.last_plan: Plan | None = None
        self._system: SystemState | None = None

    @property
    def standing_aside(self) -> bool:
        """The last plan left the header to the kernel, which keeps it."""
        p = self.last_plan
        return p is not None and p.decision.why is Why.KERNEL_UPDATES

    def forget(self) -> None:
        """The snapshot's files changed (or may have): open and hash them again."""
        self.snapshot, self.verified = None, False

    def refresh(self, request: Request = ASKED, spans: Spans | None = None) -> RefreshResult:
        """Make the plan and carry it out, under the state directory's lock.

        :raises SnapshotError: the snapshot is missing, corrupt or tampered with;
            nothing was loaded.
        :raises LoadError: the load failed; the message says what the kernel
            holds now.
        """
        start = self.deps.clock()
        spans = spans or Spans()
        self.last_plan = None
        with self.store.locked():
            spans.mark("lock")
            notes = [n for n in [self.store.recover()] if n]
            try:
                snap = self._open()
                spans.mark("open snapshot")
                self.last_plan = p = make(
                    snap, self.deps.root, request, self.policy, spans=spans, previous=self._system
                )
                self._system = p.system or self._system
                verify = not (self.keep_open and self.verified)
                r = Executor(self.store, self.deps, self.policy).run(p, request, spans, verify)
            except BaseException:
                self.snapshot = None
                raise
        if r.verified and self.keep_open:
            self.verified = True
        r.notes[:0] = notes
        r.seconds = self.deps.clock() - start
        return r

    def verify_ahead(self, wait: float | None = None) -> bool:
        """Hash the snapshot's segments now, while idle, so that the next
        refresh need not (half a second for a 60 MB kernel under emulation).

        :param wait: how long to wait for the state directory's lock (a
            writer holding it is changing the snapshot: it is hashed after).
        :returns: whether they verified (a failure is left for that refresh).
        """
        if self.verified or not self.keep_open:
            return self.verified
        try:
            with self.store.locked(shared=True, wait=wait):
                snap = self._open()
                self.store.verify(snap)
        except KexecdError:
            return False
        self.verified = True
        return True

    def _open(self) -> Snapshot:
        kept = self.snapshot if self.keep_open else None
        self.snapshot = self.store.reopen(kept)
        return self.snapshot
