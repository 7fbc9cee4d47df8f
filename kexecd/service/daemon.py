# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd run``: hotplug uevents in, an up-to-date crash kernel out.

One ``selectors`` loop waits on the uevent monitor, the control socket and
its clients, a signal pipe, two inotify watches (the snapshot's files; the
distro's ``kexec_cmd``) and four timers (the coalescing deadline, the retry
after a failure, the watchdog, the heartbeat of ``kexecd.prom`` while it is
written). The first event after a quiet period is refreshed for at once;
the events that follow within ``settle_ms`` make one more refresh, once they
stop for ``settle_ms`` and never later than ``max_delay_ms`` after the first
of them (:class:`~kexecd.service.coalesce.Coalescer`). On
start the daemon adopts the distro's crash kernel if it loaded a new one,
else reconciles at once, so a hotplug that happened while it was down is
caught. Every reconcile is recorded in ``state.json`` and, for Prometheus,
in ``kexecd.prom`` (:mod:`kexecd.service.metrics`).

Trust: the snapshot's segments are hashed before a load unless they were
hashed since the last change the snapshot watch saw (a stat signature is no
proof: a file can be rewritten with its mtime restored). Only one daemon runs
per runtime directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kexecd import core
from kexecd.errors import KexecdError, LoadError
from kexecd.files import timestamp
from kexecd.image import loader, statedir
from kexecd.image.plan import Action, Plan, Why
from kexecd.image.snapshot import Snapshot, reopen
from kexecd.model import RangeType
from kexecd.service import control, metrics, udevmask, verdict
from kexecd.service.adopt import adopt, needs_adoption, resolve_kexec_cmd
from kexecd.service.coalesce import Backoff, Coalescer
from kexecd.service.config import Config
from kexecd.service.monitor import Event, Monitor
from kexecd.service.notify import notify, watchdog_interval
from kexecd.service.runtime import SnapshotWatch, claim, watch_kexec_cmd
from kexecd.service.statefile import (
    SOCKET,
    DaemonState,
    ErrorRecord,
    EventRecord,
    LoadTiming,
    UpdateRecord,
    write_state,
)
from kexecd.system.kmsg import KmsgWatch
from kexecd.system.packages import installed_version
from kexecd.system.root import Root
from kexecd.system.state import SystemState
from kexecd.timing import Spans

__all__ = ["Daemon", "changes_header"]

# Uevents after which the header kexec-tools would build is the same as
# before: onlining or offlining a memory block leaves /proc/iomem as it was
# (mm/memory_hotplug.c: the "System RAM" resource is registered when the
# memory is added and released when it is removed, online or not), and a
# CPU's crash_notes stays while it is present, online or not
# (drivers/base/cpu.c). Every other action (add, remove, bind, change ...)
# may change it.
_SAME_HEADER = frozenset(
    {("memory", "online"), ("memory", "offline"), ("cpu", "online"), ("cpu", "offline")}
)


# mm/memory_hotplug.c try_remove_memory() (5.10 to 6.12): the memory block
# devices go (their "remove" uevents) before the "System RAM" resource is
# released, after arch_remove_memory() has torn down the memory map: a
# refresh for those events can still read the range in /proc/iomem, and no
# later event says it went. Seen on 5.10 under QEMU TCG: 512 MiB released
# seconds after its last remove event. So a removed block whose range is
# still there is looked at again, every REMOVAL_POLL seconds, for at most
# REMOVAL_WAIT seconds.
REMOVAL_POLL = 0.25
REMOVAL_WAIT = 30.0
_MEMORY_BLOCK = re.compile(r"/devices/system/memory/memory(\d+)$")


def changes_header(ev: Event) -> bool:
    """Whether a uevent may change the ELF core header: only then is it refreshed for."""
    return (ev.subsystem, ev.action) not in _SAME_HEADER


log = logging.getLogger("kexecd")


class Daemon:
    """The event loop and what it remembers (:class:`DaemonState`, in ``state.json``)."""

    def __init__(
        self,
        cfg: Config,
        monitor: Monitor,
        *,
        backend: loader.Backend | None = None,
        clock: Callable[[], float] = time.monotonic,
        tracer: loader.Tracer | None = None,
    ) -> None:
        self.cfg = cfg
        self.monitor = monitor
        self.backend = backend or loader.KernelBackend()
        self.tracer = tracer
        self.clock = clock
        self.root = Root(cfg.root)
        self.coalescer = Coalescer(cfg.settle_ms / 1000, cfg.max_delay_ms / 1000)
        self.backoff = Backoff()
        self.verified = False  # hashed since the snapshot watch last saw a change
        self.snapshot: Snapshot | None = None  # kept open while the watch sees no change
        self.kernel_missed = False  # the kernel logged a dropped header update
        self.publish_due: float | None = None  # events counted, not yet in state.json
        self.snapshot_watch: SnapshotWatch | None = None
        self.lost_image = False  # our own failed load left no crash kernel
        self.stopping = False
        self.state = DaemonState(source=cfg.source)
        self.standing_aside = False
        self.kexec_cmd: Path | None = None  # the distro's record, when adopting
        self.hazards_logged: set[str] = set()
        self.exporter = metrics.Exporter(cfg.metrics_dir, clock=clock)
        self.kexec_tools: str | None = None  # its version, once kexecd.prom is written
        self.removed: dict[int, float] = {}  # removed memory block -> when to stop looking
        self.removal_due: float | None = None  # look again at /proc/iomem for them
        self.last_system: SystemState | None = None  # as the last plan read it
        self.verdict: verdict.Verdict | None = None  # of the last reconcile

    # -- refreshing ------------------------------------------------------------

    def reconcile(self, why: str, first_event: float | None = None) -> UpdateRecord:
        """Refresh now; record what happened; return the record."""
        start = self.clock()
        self.state.reconciles += 1
        record = UpdateRecord(time=timestamp(), why=why)
        if self.snapshot_watch is not None:
            self.snapshot_watch.rewatch()
        spans = Spans()
        try:
            r = loader.refresh(
                self.cfg.state_dir,
                root=self.root,
                backend=self.backend,
                verify=not self.verified,
                reload_unloaded=self.lost_image,
                acpi_no_memhotplug=self.cfg.crash_acpi_no_memhotplug,
                observe=self._saw,
                spans=spans,
                snapshot=self.snapshot if self.snapshot_watch is not None else None,
                kernel_missed=self.kernel_missed,
                **self._tracer(),
            )
        except KexecdError as e:
            self.snapshot = None
            return self._failed(record, "refresh", e)
        self.snapshot = r.plan.snapshot
        self.kernel_missed = False  # carried out (or the kernel no longer updates)
        if r.verified and self.snapshot_watch is not None:
            self.verified = True
        out = self._record(record, r, start, first_event)
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
            r = adopt(
                self.cfg.state_dir,
                root=self.root,
                kexec_cmd=self.kexec_cmd,
                backend=self.backend,
                acpi_no_memhotplug=self.cfg.crash_acpi_no_memhotplug,
                **self._tracer(),
            )
        except KexecdError as e:
            return self._failed(record, "adopt", e)
        self.state.adoptions += 1
        self.state.adopted_from = str(self.kexec_cmd)
        self.verified = False
        self.snapshot = None
        if self.snapshot_watch is not None:
            self.snapshot_watch.rewatch()
        for note in r.notes:
            log.warning("%s", note)
        return self._record(record, r.refresh, start, None, adopted=True)

    def _tracer(self) -> dict[str, Any]:
        return {} if self.tracer is None else {"tracer": self.tracer}

    def _saw(self, p: Plan, carried_out: bool = False) -> None:
        # The plan's facts, as made (the loaded header) or carried out (the
        # wanted one is loaded now).
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

    def _failed(self, record: UpdateRecord, what: str, e: KexecdError) -> UpdateRecord:
        st = self.state
        st.failed += 1
        st.last_error = ErrorRecord(timestamp(), str(e))
        self.verdict = verdict.failure(str(e))
        st.in_sync = self.verdict.in_sync
        if isinstance(e, LoadError) and e.image_lost:
            self.lost_image = True
            st.crash_loaded = False
        delay = self.backoff.failed(self.clock())
        st.retry_in_s = delay
        record.action, record.error = "failed", str(e)
        log.error(
            "%s failed: %s; trying again in %.0f s",
            what,
            e,
            delay,
            extra={"KEXECD_ACTION": "failed"},
        )
        self._publish()
        return record

    def _record(
        self,
        record: UpdateRecord,
        r: loader.RefreshResult,
        start: float,
        first_event: float | None,
        adopted: bool = False,
    ) -> UpdateRecord:
        st = self.state
        decision = r.decision
        action = decision.action
        done = self.clock()
        self.backoff.succeeded()
        st.retry_in_s = None
        if r.loaded:
            self.lost_image = False
        record.action = "adopt" if adopted else action.value
        record.reason = decision.reason
        record.work_ms = round((done - start) * 1000, 1)
        record.changes = r.diff.lines() if r.diff else []
        if first_event is not None:
            record.latency_ms = round((done - first_event) * 1000, 1)
        if r.loaded:
            load_ms = None if r.load_seconds is None else r.load_seconds * 1000
            st.remember(LoadTiming(action.value, first_event, start, done, load_ms))
        st.decision = decision.reason
        self.standing_aside = decision.why is Why.KERNEL_UPDATES
        amend_error = getattr(r, "amend_error", None)  # LEAD: replace with r.amend_error
        self.verdict = verdict.judge(r.plan, carried_out=True, amend_error=amend_error)
        st.in_sync = self.verdict.in_sync
        self._saw(r.plan, r.loaded)
        st.reconciled = timestamp()
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
        for note in r.notes:
            log.info("%s", note)
        if r.cmdline:  # the append, once: when it is loaded
            log.info("%s", r.cmdline, extra={"KEXECD_CMDLINE": r.cmdline})
        hazard = r.plan.cmdline.hazard if r.plan.cmdline else None
        if hazard and hazard not in self.hazards_logged:  # once per daemon
            self.hazards_logged.add(hazard)
            log.warning("%s", hazard)
        if adopted or action is not Action.NOTHING:
            log.info(
                "%s: %s%s",
                record.action,
                decision.reason,
                "; " + ", ".join(record.changes) if record.changes else "",
                extra={
                    "KEXECD_ACTION": record.action,
                    "KEXECD_WORK_MS": record.work_ms,
                    "KEXECD_LATENCY_MS": "" if record.latency_ms is None else record.latency_ms,
                },
            )
        self._publish()
        return record

    def summary(self) -> str:
        """The one-line STATUS= for systemd."""
        return verdict.summary(self.verdict, self.state)

    def _publish(self) -> None:
        self.publish_due = None
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

    # -- events -----------------------------------------------------------------

    def on_events(self, events: list[Event]) -> None:
        now = self.clock()
        for ev in events:
            self.state.events += 1
            self.state.last_event = EventRecord(
                timestamp(), ev.action, ev.subsystem, ev.devpath, ev.seqnum
            )
            log.debug("uevent %s %s", ev.action, ev.devpath)
            self.state.last_event_mono = now
            if changes_header(ev):
                self.coalescer.event(now)
            m = _MEMORY_BLOCK.search(ev.devpath)
            if ev.subsystem == "memory" and ev.action == "remove" and m:
                self.removed[int(m.group(1))] = now + REMOVAL_WAIT
        # Events that ask for no refresh are still counted in state.json and
        # kexecd.prom: once a burst of them settles, not once per event.
        if events and self.publish_due is None:
            self.publish_due = now + self.coalescer.settle

    def _watch_kernel_log(self) -> KmsgWatch | None:
        # Only a kernel with crash hotplug (Linux 6.6+: a crash_hotplug file)
        # can drop an update of its own.
        if not any(
            self.root.exists(f"sys/devices/system/{s}/crash_hotplug") for s in ("cpu", "memory")
        ):
            return None
        kmsg = KmsgWatch.open(self.root)
        if kmsg is None:
            log.info(
                "cannot read %s: an update of the header the kernel keeps that it drops "
                "would go unnoticed until the next hotplug",
                self.root.path("dev/kmsg"),
            )
        return kmsg

    def on_kernel_log(self, missed: bool) -> None:
        """New kernel log records were read; ``missed``: among them, the kernel
        saying it dropped an update of the header it keeps. Refresh then, as
        for an event: that image is loaded once by kexecd."""
        if not missed:
            return
        if not self.kernel_missed:
            log.warning(
                "the kernel dropped an update of the crash kernel's header "
                "(kexec_trylock() failed); loading a current one"
            )
        self.kernel_missed = True
        self.coalescer.event(self.clock())

    def due(self) -> bool:
        deadline = self.coalescer.deadline()
        return deadline is not None and self.clock() >= deadline

    def run_due(self) -> UpdateRecord | None:
        if self.due():
            first = self.coalescer.take()
            record = self.reconcile("events", first)
        elif self.backoff.due is not None and self.clock() >= self.backoff.due:
            self.backoff.due = None
            record = self.reconcile("retry after a failure")
        elif self.removal_due is not None and self.clock() >= self.removal_due:
            self.removal_due = None
            record = self.reconcile("a removed memory block was still in /proc/iomem")
        else:
            return None
        self.coalescer.finished(self.clock())
        self._follow_removals()
        return record

    def _follow_removals(self) -> None:
        # The removed blocks whose range the last refresh still read as RAM
        # are looked at again soon (see REMOVAL_WAIT); the others are done.
        if not self.removed:
            return
        now = self.clock()
        system = self.last_system
        if system is None:  # the kernel keeps the header, or kexecd reloads it whole
            self.removed.clear()
            return
        try:
            size = int(self.root.read_text("sys/devices/system/memory/block_size_bytes"), 16)
        except (KexecdError, OSError, ValueError):
            self.removed.clear()
            return
        ram = [r for r in system.memory.ranges if r.type is RangeType.RAM]
        for block, until in list(self.removed.items()):
            start, end = block * size, (block + 1) * size - 1
            if now >= until or not any(r.start <= end and start <= r.end for r in ram):
                del self.removed[block]
        if self.removed:
            self.removal_due = now + REMOVAL_POLL
            log.debug("removed memory still in /proc/iomem: blocks %s", sorted(self.removed))

    # -- watches ----------------------------------------------------------------

    def on_snapshot_change(self) -> None:
        assert self.snapshot_watch is not None
        if self.snapshot_watch.changed():
            self.verified = False
            self.snapshot = None

    def verify_ahead(self) -> None:
        """Hash the snapshot's segments while idle, so that the next event's
        refresh need not (half a second for a 60 MB kernel under emulation).

        Only with the snapshot watch running, which undoes it on any change;
        a failure is left for that refresh to report.
        """
        if self.verified or self.snapshot_watch is None:
            return
        try:
            with statedir.locked(self.cfg.state_dir, shared=True):
                snap = reopen(self.cfg.state_dir, self.snapshot)
                snap.verify()
        except KexecdError as e:
            log.debug("not verified ahead: %s", e)
            return
        self.snapshot, self.verified = snap, True

    def _watch_kexec_cmd(self) -> int | None:
        if not self.cfg.adopt:
            return None
        try:
            given = Path(self.cfg.kexec_cmd) if self.cfg.kexec_cmd else None
            self.kexec_cmd = resolve_kexec_cmd(self.root, given)
        except KexecdError as e:
            log.error("not adopting the distro's crash kernel: %s", e)
            return None
        return None if self.kexec_cmd is None else watch_kexec_cmd(self.kexec_cmd)

    def answer(self, cmd: str) -> dict[str, object]:
        """The reply to a control-socket command (already parsed and allowed)."""
        if cmd == "status":
            return {"ok": True, "state": self.state.to_json()}
        return {"ok": True, "record": asdict(self.reconcile("request"))}

    # -- the loop ---------------------------------------------------------------

    def stop(self) -> None:
        self.stopping = True

    def run(self, max_seconds: float | None = None) -> int:
        """The loop; returns 0 when stopped by SIGTERM or SIGINT (or ``max_seconds``).

        :raises ServiceError: another daemon runs with the same runtime directory.
        """
        instance = claim(self.cfg.runtime_dir)
        sel = selectors.DefaultSelector()
        server = control.Server(self.cfg.runtime_dir / SOCKET, self.clock, self.answer)
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wfd)
        handlers = {
            s: signal.signal(s, lambda *_: self.stop()) for s in (signal.SIGTERM, signal.SIGINT)
        }
        sel.register(self.monitor.fileno(), selectors.EVENT_READ, "monitor")
        sel.register(server.sock, selectors.EVENT_READ, "control")
        sel.register(rfd, selectors.EVENT_READ, "signal")
        wd = watchdog_interval()
        next_wd = self.clock() + wd if wd else None
        end = self.clock() + max_seconds if max_seconds is not None else None
        watch = self._watch_kexec_cmd()
        if watch is not None:
            sel.register(watch, selectors.EVENT_READ, "kexec_cmd")
        self.snapshot_watch = SnapshotWatch.start(self.cfg.state_dir)
        if self.snapshot_watch is not None:
            sel.register(self.snapshot_watch.fd, selectors.EVENT_READ, "snapshot")
        kmsg = self._watch_kernel_log()
        if kmsg is not None:
            sel.register(kmsg.fd, selectors.EVENT_READ, kmsg)
        try:
            if self.adopt_if_needed("start") is None:
                self.reconcile("start")
            notify("READY=1")  # after the first reconcile; the hashing ahead may follow
            notify(f"STATUS={self.summary()}")
            self.verify_ahead()
            while not self.stopping:
                now = self.clock()
                timers = [self.coalescer.deadline(), self.backoff.due, next_wd, end]
                timers.append(self.removal_due)
                timers.append(self.publish_due)
                timers += [self.exporter.deadline(), *server.deadlines()]
                times = [t for t in timers if t is not None]
                timeout = max(0.0, min(times) - now) if times else None
                for key, _ in sel.select(timeout):
                    self._dispatch(key.data, server, sel, watch, rfd)
                server.expire(sel)
                self.run_due()
                now = self.clock()
                if next_wd is not None and wd is not None and now >= next_wd:
                    notify("WATCHDOG=1")
                    next_wd = now + wd
                if self.publish_due is not None and now >= self.publish_due:
                    self._publish()
                if self.exporter.due():
                    self.export()
                if end is not None and now >= end:
                    break
        finally:
            notify("STOPPING=1")
            self.state.stopped = timestamp()
            with contextlib.suppress(OSError):
                write_state(self.cfg.runtime_dir, self.state)
            signal.set_wakeup_fd(old_wakeup)
            for s, h in handlers.items():
                signal.signal(s, h)
            server.close(sel)
            sel.close()
            for fd in (rfd, wfd, watch, instance):
                if fd is not None:
                    os.close(fd)
            if self.snapshot_watch is not None:
                self.snapshot_watch.close()
                self.snapshot_watch = None
            if kmsg is not None:
                kmsg.close()
        return 0

    def _dispatch(
        self,
        data: object,
        server: control.Server,
        sel: selectors.BaseSelector,
        watch: int | None,
        rfd: int,
    ) -> None:
        if data == "monitor":
            self.on_events(self.monitor.drain())
        elif data == "control":
            server.on_connect(sel)
        elif isinstance(data, control.Client):
            server.on_client(data, sel)
        elif isinstance(data, KmsgWatch):
            try:
                self.on_kernel_log(data.drain())
            except OSError as e:  # a kernel log that cannot be read is not a reason to stop
                log.warning("stopped reading %s: %s", self.root.path("dev/kmsg"), e.strerror)
                sel.unregister(data.fd)
                data.close()
        elif data == "snapshot":
            self.on_snapshot_change()
        elif data == "kexec_cmd":
            assert watch is not None
            core.drain_watch(watch)
            self.adopt_if_needed("the distro's kexec_cmd changed")
            self.verify_ahead()
        else:
            with contextlib.suppress(BlockingIOError):
                os.read(rfd, 512)
