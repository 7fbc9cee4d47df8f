# SPDX-License-Identifier: GPL-2.0-or-later
"""What the daemon remembers, and where it says it.

:class:`Recorder` keeps the :class:`~kexecd.service.statefile.DaemonState`
and the last :class:`~kexecd.service.verdict.Verdict`, updates them with what
each refresh, adoption or failure did, and publishes them: ``state.json``,
systemd's ``STATUS=`` (:func:`kexecd.service.verdict.summary`) and
``kexecd.prom`` (:mod:`kexecd.service.metrics`), which renders the verdict's
``in_sync`` as the state records it. It is the one writer of
``DaemonState.in_sync``: always the verdict's.
"""

from __future__ import annotations

import logging

from kexecd.errors import KexecdError, LoadError
from kexecd.files import timestamp
from kexecd.image.plan import Action, Plan
from kexecd.image.refresher import RefreshResult
from kexecd.service import metrics, udevmask, verdict
from kexecd.service.config import Config
from kexecd.service.loop import Alarm, Loop
from kexecd.service.monitor import Event
from kexecd.service.notify import notify
from kexecd.service.statefile import (
    DaemonState,
    ErrorRecord,
    EventRecord,
    LoadTiming,
    UpdateRecord,
    write_state,
)
from kexecd.system.kmsg import Drop, worst
from kexecd.system.packages import installed_version
from kexecd.system.root import Root
from kexecd.system.state import SystemState

__all__ = ["Recorder"]

log = logging.getLogger("kexecd")


class Recorder:
    """The daemon's :class:`DaemonState` and verdict, and their publication.

    :param loop: the daemon's loop, for its clock and two timers: events
        counted but not yet published, and ``kexecd.prom``'s heartbeat.
    """

    def __init__(self, cfg: Config, root: Root, loop: Loop) -> None:
        self.cfg = cfg
        self.root = root
        self.clock = loop.clock
        self.state = DaemonState(source=cfg.source)
        self.verdict: verdict.Verdict | None = None  # of the last reconcile
        self.exporter = metrics.Exporter(cfg.metrics_dir, clock=loop.clock)
        self.kexec_tools: str | None = None  # its version, once kexecd.prom is written
        self.last_system: SystemState | None = None  # as the last plan read it
        self._hazards_logged: set[str] = set()  # each logged once per daemon
        self._pending = Alarm(loop, self.publish)  # events counted, not yet in state.json
        self._heartbeat = Alarm(loop, self.export)
        # While the metrics directory is missing, another look at any wake-up
        # after a heartbeat's time, but no wake-up of its own.
        loop.after_each(self._look_again)

    # -- what happened -------------------------------------------------------------

    def saw(self, p: Plan, carried_out: bool = False) -> None:
        """The plan's facts, as made (the loaded header) or carried out (the
        wanted one is loaded now)."""
        st = self.state
        self.last_system = p.system
        st.cpus, st.ranges, st.ram = p.cpus, p.ranges, p.ram_bytes
        header = p.described(carried_out)
        st.header_cpus = None if header is None else header.cpus
        st.header_ram = None if header is None else header.ram_bytes
        st.phnum = None if header is None else len(header.phdrs)
        st.capacity = p.snapshot.header_capacity
        st.crash_loaded = p.kexec.crash_loaded or carried_out
        st.kernel_updates = p.kexec.kernel_updates
        st.syscall = p.snapshot.syscall

    def events(self, events: list[Event], now: float) -> None:
        """Count uevents that came at ``now``. Those that ask for no refresh
        are still counted in state.json and kexecd.prom: once a burst of them
        settles, not once per event."""
        for ev in events:
            self.state.events += 1
            self.state.last_event = EventRecord(
                timestamp(), ev.action, ev.subsystem, ev.devpath, ev.seqnum
            )
            log.debug("uevent %s %s", ev.action, ev.devpath)
            self.state.last_event_mono = now
        if events and self._pending.when is None:
            self._pending.set(now + self.cfg.settle_ms / 1000)

    def dropped(self, drops: set[Drop]) -> None:
        """The kernel logged that it dropped updates of the header it keeps."""
        st = self.state
        for kind in sorted(drops, key=lambda d: d.value):
            st.kernel_drops[kind.value] = st.kernel_drops.get(kind.value, 0) + 1
        last = worst(drops)
        if last is not None:
            st.kernel_drop = last.value
        self.publish()

    def failed(
        self, record: UpdateRecord, what: str, e: KexecdError, delay: float
    ) -> UpdateRecord:
        """A refresh or adoption failed; tried again in ``delay`` seconds."""
        st = self.state
        st.failed += 1
        st.last_error = ErrorRecord(timestamp(), str(e))
        self._judged(verdict.failure(str(e)))
        if isinstance(e, LoadError) and e.image_lost:
            st.crash_loaded = False
        st.retry_in_s = delay
        record.action, record.error = "failed", str(e)
        log.error(
            "%s failed: %s; trying again in %.0f s",
            what,
            e,
            delay,
            extra={"KEXECD_ACTION": "failed"},
        )
        self.publish()
        return record

    def succeeded(
        self,
        record: UpdateRecord,
        r: RefreshResult,
        start: float,
        first_event: float | None,
        adopted: bool = False,
    ) -> UpdateRecord:
        """A refresh (or adoption: ``adopted``) carried out ``r``'s plan."""
        st = self.state
        decision = r.decision
        done = self.clock()
        st.retry_in_s = None
        record.action = "adopt" if adopted else decision.action.value
        record.reason = decision.reason
        record.work_ms = round((done - start) * 1000, 1)
        record.changes = r.diff.lines() if r.diff else []
        if first_event is not None:
            record.latency_ms = round((done - first_event) * 1000, 1)
        if r.loaded:
            load_ms = None if r.load_seconds is None else r.load_seconds * 1000
            st.remember(LoadTiming(decision.action.value, first_event, start, done, load_ms))
        st.decision = decision.reason
        self._judged(verdict.judge(r.plan, carried_out=True, amend_error=r.amend_error))
        self.saw(r.plan, r.loaded)
        st.reconciled = timestamp()
        self._count(record, decision.action, adopted)
        self._log(record, r, adopted)
        self.publish()
        return record

    def _judged(self, v: verdict.Verdict) -> None:
        # The one place in_sync is recorded: the verdict's.
        self.verdict = v
        self.state.in_sync = v.in_sync

    def _count(self, record: UpdateRecord, action: Action, adopted: bool) -> None:
        st = self.state
        if adopted:
            st.last_update = record
        elif action in (Action.NOTHING, Action.STAND_ASIDE):
            st.skipped += 1
        elif action is Action.FULL_RELOAD:
            st.full_reloads += 1
            st.last_update = record
        else:
            st.reloads += 1
            if action is Action.RELOCATE:
                st.moves += 1
            st.last_update = record

    def _log(self, record: UpdateRecord, r: RefreshResult, adopted: bool) -> None:
        for note in r.notes:
            log.info("%s", note)
        if r.cmdline:  # the append, once: when it is loaded
            log.info("%s", r.cmdline, extra={"KEXECD_CMDLINE": r.cmdline})
        v = self.verdict
        for hazard in () if v is None else v.hazards:
            if hazard not in self._hazards_logged:  # once per daemon
                self._hazards_logged.add(hazard)
                log.warning("%s", hazard)
        if v is not None and v.in_sync is False:
            log.warning("%s", v.headline)
        if adopted or r.decision.action is not Action.NOTHING:
            log.info(
                "%s: %s%s",
                record.action,
                r.decision.reason,
                "; " + ", ".join(record.changes) if record.changes else "",
                extra={
                    "KEXECD_ACTION": record.action,
                    "KEXECD_WORK_MS": record.work_ms,
                    "KEXECD_LATENCY_MS": "" if record.latency_ms is None else record.latency_ms,
                },
            )

    # -- saying it -----------------------------------------------------------------

    def summary(self) -> str:
        """The one-line STATUS= for systemd."""
        return verdict.summary(self.verdict, self.state)

    def publish(self) -> None:
        """Write ``state.json``, send ``STATUS=``, write ``kexecd.prom`` if it changed."""
        self._pending.set(None)
        write_state(self.cfg.runtime_dir, self.state)
        notify(f"STATUS={self.summary()}")
        self.export()

    def export(self) -> None:
        """Write ``kexecd.prom`` if a value changed or the heartbeat is due."""
        if not self.exporter.enabled:
            return
        if self.kexec_tools is None and self.exporter.present:  # dpkg's status, read once
            self.kexec_tools = installed_version(self.root, "kexec-tools") or "unknown"
        masked = bool(udevmask.masked(self.root, self.cfg.runtime_dir))
        self.exporter.publish(metrics.render(self.state, metrics.Host(masked, self.kexec_tools)))
        self._heartbeat.set(self.exporter.deadline())

    def _look_again(self) -> None:
        if self.exporter.due():
            self.export()
