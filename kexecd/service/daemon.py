# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd run``: hotplug uevents in, an up-to-date crash kernel out.

One loop (:class:`~kexecd.service.loop.Loop`) holds every source, each with
its callback: the uevent monitor, the control socket and its clients, a
signal pipe, two inotify watches (the snapshot's files; the distro's
``kexec_cmd``), the kernel log where the kernel keeps the header, and the
timers (the coalescing deadline, the retry after a failure, the look again
at removed memory, the watchdog, the publication of counted events, the
heartbeat of ``kexecd.prom``, each client's deadline). The first event after
a quiet period is refreshed for at once; the events that follow within
the quiet period (``settle_ms`` plus the longer of the time the last reload
took and the burst's longest pause so far) make one
more refresh, once they pause for that long and never later than
``max_delay_ms`` after the first of them
(:class:`~kexecd.service.coalesce.Coalescer`). On start the daemon adopts
the distro's crash kernel if it loaded a new one, else reconciles at once,
so a hotplug that happened while it was down is caught. Every reconcile is
judged (:mod:`kexecd.service.verdict`) and recorded
(:class:`~kexecd.service.recorder.Recorder`: ``state.json``, ``STATUS=``,
``kexecd.prom``).

The parts: :mod:`~kexecd.service.loop` (readiness and timers),
:mod:`~kexecd.service.intake` (which events ask for a refresh),
:mod:`~kexecd.service.removals` (removed memory still in ``/proc/iomem``),
:mod:`~kexecd.service.session` (what the daemon saw of the image),
:mod:`~kexecd.service.recorder` (what is remembered and published).

Trust: the snapshot's segments are hashed before a load unless they were
hashed since the last change the snapshot watch saw (a stat signature is no
proof: a file can be rewritten with its mtime restored). Only one daemon runs
per runtime directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from kexecd.errors import KexecdError, LoadError
from kexecd.files import timestamp
from kexecd.image.deps import Backend, Deps, KernelBackend, Tracer
from kexecd.image.refresher import Refresher, RefreshResult, Request
from kexecd.image.store import Store
from kexecd.service import metrics
from kexecd.service.adopt import AdoptResult, adopt, needs_adoption
from kexecd.service.coalesce import Backoff, Coalescer
from kexecd.service.config import Config
from kexecd.service.intake import changes_header
from kexecd.service.loop import Alarm, Loop
from kexecd.service.monitor import Event, Monitor
from kexecd.service.notify import notify
from kexecd.service.recorder import Recorder
from kexecd.service.removals import RemovalFollower
from kexecd.service.running import running
from kexecd.service.session import ImageSession
from kexecd.service.statefile import DaemonState, UpdateRecord
from kexecd.system.kmsg import Drop, KmsgWatch
from kexecd.system.root import Root
from kexecd.timing import Spans

__all__ = ["Daemon", "changes_header"]

log = logging.getLogger("kexecd")
# How long after the last change to the snapshot the daemon hashes it again.
VERIFY_AFTER_S = 0.25


class Daemon:
    """The refreshes, what triggers them, and what is recorded of them.

    :meth:`run` opens the loop's sources (:mod:`kexecd.service.running`),
    reconciles (or adopts) and runs the loop; the tests drive
    :meth:`on_events`, :meth:`run_due` and :meth:`reconcile` directly, on a
    fake ``clock``.
    """

    def __init__(
        self,
        cfg: Config,
        monitor: Monitor,
        *,
        backend: Backend | None = None,
        clock: Callable[[], float] = time.monotonic,
        tracer: Tracer | None = None,
        report: Callable[[dict[str, object]], dict[str, object]] | None = None,
    ) -> None:
        self.cfg = cfg
        # The answer to {"cmd": "report"}: kexecd status made here, whose
        # engine is loaded (the command line's, kexecd.cli.status.serve).
        self.report = report
        self.monitor = monitor
        self.clock = clock
        self.root = Root(cfg.root)
        deps = Deps(self.root, backend or KernelBackend(), clock=clock)
        if tracer is not None:
            deps = Deps(self.root, deps.backend, tracer, clock)
        # The open image and whether it was hashed: kept open only while the
        # snapshot watch runs (ImageSession.watch).
        self.refresher = Refresher(Store(cfg.state_dir), deps, cfg.policy)
        self.loop = Loop(clock)
        self.coalescer = Coalescer(cfg.settle_ms / 1000, cfg.max_delay_ms / 1000)
        self.backoff = Backoff()
        self.removals = RemovalFollower()
        self.session = ImageSession()
        self.recorder = Recorder(cfg, self.root, self.loop)
        self.kexec_cmd: Path | None = None  # the distro's record, when adopting
        self._loaded = False  # the last reconcile loaded an image (the coalescer times it)
        self.stopping = False
        # What triggers a refresh, in order: when it is due, the refresh, its
        # timer in the loop (moved by _rearm() whenever a source changed).
        triggers: tuple[tuple[Callable[[], float | None], Callable[[], UpdateRecord]], ...] = (
            (self.coalescer.deadline, self._refresh_for_events),
            (lambda: self.backoff.due, self._retry),
            (lambda: self.removals.due, self._look_again),
        )
        self._triggers = [(when, go, Alarm(self.loop, go)) for when, go in triggers]
        # The snapshot changed (a rewrite of its own: a moved header, a cut
        # kernel; or another kexecd's load): hashed again once it is quiet.
        self._verify_later = Alarm(self.loop, lambda: self.verify_ahead(wait=0.0))

    @property
    def state(self) -> DaemonState:
        """What the daemon remembers (``state.json``)."""
        return self.recorder.state

    @property
    def exporter(self) -> metrics.Exporter:
        return self.recorder.exporter

    @property
    def kexec_tools(self) -> str | None:
        return self.recorder.kexec_tools

    def summary(self) -> str:
        """The one-line STATUS= for systemd."""
        return self.recorder.summary()

    # -- the image layer: one method per call --------------------------------------

    def _call_refresh(self, spans: Spans) -> RefreshResult:
        s = self.session
        self.refresher.keep_open = s.watch is not None
        request = Request(reload_unloaded=s.lost_image, kernel_missed=s.kernel_missed)
        try:
            return self.refresher.refresh(request, spans)
        except KexecdError:
            if self.refresher.last_plan is not None:  # what the system has, all the same
                self.recorder.saw(self.refresher.last_plan)
            raise

    def _call_adopt(self, kexec_cmd: Path) -> AdoptResult:
        return adopt(self.refresher, kexec_cmd)

    def _call_verify(self, wait: float | None = None) -> bool:
        self.refresher.keep_open = True
        return self.refresher.verify_ahead(wait)

    def _forget(self) -> None:
        # The snapshot's files changed, or were replaced: open and hash them again.
        self.refresher.forget()

    # -- refreshing ------------------------------------------------------------

    def reconcile(self, why: str, first_event: float | None = None) -> UpdateRecord:
        """Refresh now; record what happened; return the record."""
        start = self.clock()
        self.state.reconciles += 1
        self._loaded = False
        record = UpdateRecord(time=timestamp(), why=why)
        if self.session.watch is not None:
            self.session.watch.rewatch()
        spans = Spans()
        try:
            r = self._call_refresh(spans)
        except KexecdError as e:
            return self._failed(record, "refresh", e)
        self.session.refreshed(loaded=r.loaded)
        self._loaded = r.loaded
        out = self._succeeded(record, r, start, first_event)
        spans.mark("publish")
        log.debug("refresh (%s) %s", r.decision.action.value, spans)
        return out

    def adopt_if_needed(self, why: str) -> UpdateRecord | None:
        """Take over the distro's crash kernel if it loaded one the snapshot is not of.

        :returns: the record of the adoption, or ``None`` if none was needed.
        """
        if self.kexec_cmd is None:
            return None
        try:
            reason = needs_adoption(self.cfg.state_dir, self.kexec_cmd)
        except KexecdError as e:
            return self._failed(UpdateRecord(time=timestamp(), why=why), "adopt", e)
        if reason is None:
            return None
        start = self.clock()
        record = UpdateRecord(time=timestamp(), why=f"{why}: {reason}")
        log.info("adopting the crash kernel of %s: %s", self.kexec_cmd, reason)
        try:
            r = self._call_adopt(self.kexec_cmd)
        except KexecdError as e:
            return self._failed(record, "adopt", e)
        self.state.adoptions += 1
        self.state.adopted_from = str(self.kexec_cmd)
        self._forget()
        if self.session.watch is not None:
            self.session.watch.rewatch()
        for note in r.notes:
            log.warning("%s", note)
        return self._succeeded(record, r.refresh, start, None, adopted=True)

    def _failed(self, record: UpdateRecord, what: str, e: KexecdError) -> UpdateRecord:
        if isinstance(e, LoadError) and e.image_lost:
            self.session.lost_image = True
        delay = self.backoff.failed(self.clock())
        out = self.recorder.failed(record, what, e, delay)
        self._rearm()
        return out

    def _succeeded(
        self,
        record: UpdateRecord,
        r: RefreshResult,
        start: float,
        first_event: float | None,
        adopted: bool = False,
    ) -> UpdateRecord:
        self.backoff.succeeded()
        out = self.recorder.succeeded(record, r, start, first_event, adopted)
        self._rearm()
        return out

    def verify_ahead(self, wait: float | None = None) -> None:
        """Hash the snapshot's segments while idle, so that the next event's
        refresh need not (half a second for a 60 MB kernel under emulation).

        Only with the snapshot watch running, which undoes it on any change;
        a failure is left for that refresh to report.

        :param wait: how long to wait for the state directory's lock.
        """
        if self.session.watch is None:
            return
        if not self._call_verify(wait):
            log.debug("not verified ahead")

    # -- what triggers a refresh ---------------------------------------------------

    def on_events(self, events: list[Event]) -> None:
        """Uevents read from the monitor: counted, and refreshed for if they
        may change the header."""
        now = self.clock()
        for ev in events:
            if changes_header(ev):
                self.coalescer.event(now)
            self.removals.saw(ev, now)
        self.recorder.events(events, now)
        self._rearm()

    def on_kernel_log(self, drops: set[Drop]) -> None:
        """New kernel log records were read; ``drops``: among them, the kernel
        saying it dropped an update of the header it keeps, and why. Refresh
        then, as for an event: that image is loaded once by kexecd (how,
        by the kind: :func:`kexecd.image.decide.decide`)."""
        if not drops:
            return
        if self.session.dropped(drops):
            log.warning(
                "the kernel dropped an update of the crash kernel's header (%s); "
                "loading a current one",
                ", ".join(sorted(d.said for d in drops)),
                extra={"KEXECD_KERNEL_DROP": ",".join(sorted(d.value for d in drops))},
            )
        self.recorder.dropped(drops)
        self.coalescer.event(self.clock())
        self._rearm()

    def on_snapshot_change(self) -> None:
        """The snapshot watch saw something in the state directory."""
        if self.session.changed():
            self._forget()
            self._verify_later.set(self.clock() + VERIFY_AFTER_S)

    def due(self) -> bool:
        """A refresh for events is due."""
        deadline = self.coalescer.deadline()
        return deadline is not None and self.clock() >= deadline

    def run_due(self) -> UpdateRecord | None:
        """The refresh due now, if one is: for events, a retry, or a look again
        at removed memory (in that order); the loop's timers call the same."""
        now = self.clock()
        for when, refresh, alarm in self._triggers:
            at = when()
            if at is not None and now >= at:
                alarm.set(None)
                return refresh()
        return None

    def _refresh_for_events(self) -> UpdateRecord:
        first = self.coalescer.take(self.clock())
        return self._after_refresh(self.reconcile("events", first), first)

    def _retry(self) -> UpdateRecord:
        self.backoff.due = None
        return self._after_refresh(self.reconcile("retry after a failure"))

    def _look_again(self) -> UpdateRecord:
        # The reload that finds the range gone is the removal's: timed from its events.
        why = "a removed memory block was still in /proc/iomem"
        first = self.removals.first_event
        return self._after_refresh(self.reconcile(why, first), first)

    def _after_refresh(self, record: UpdateRecord, first: float | None = None) -> UpdateRecord:
        now = self.clock()
        self.coalescer.finished(now, loaded=self._loaded)
        self.removals.follow(self.root, self.recorder.last_system, now, first)
        self._rearm()
        return record

    def _rearm(self) -> None:
        # Each trigger's timer at its source's time now.
        for when, _, alarm in self._triggers:
            alarm.set(when())

    # -- the loop ---------------------------------------------------------------

    def answer(self, cmd: str, request: dict[str, object] | None = None) -> dict[str, object]:
        """The reply to a control-socket command (already parsed and allowed)."""
        if cmd == "status":
            return {"ok": True, "state": self.state.to_json()}
        if cmd == "report":
            if self.report is None:
                return {"error": "this daemon makes no report"}
            return self.report(request or {})
        return {"ok": True, "record": asdict(self.reconcile("request"))}

    def read_kernel_log(self, watch: KmsgWatch) -> None:
        """The kernel log is readable: look for a dropped update in it."""
        try:
            self.on_kernel_log(watch.drain())
        except OSError as e:  # a kernel log that cannot be read is not a reason to stop
            log.warning("stopped reading %s: %s", self.root.path("dev/kmsg"), e.strerror)
            self.loop.remove(watch.fd)
            watch.close()

    def stop(self) -> None:
        self.stopping = True

    def run(self, max_seconds: float | None = None) -> int:
        """The loop; returns 0 when stopped by SIGTERM or SIGINT (or ``max_seconds``).

        :raises ServiceError: another daemon runs with the same runtime directory.
        """
        with running(self, max_seconds):
            if self.adopt_if_needed("start") is None:
                self.reconcile("start")
            notify("READY=1")  # after the first reconcile; the hashing ahead may follow
            notify(f"STATUS={self.summary()}")
            self.verify_ahead()
            while not self.stopping:
                self.loop.run_once()
        return 0
