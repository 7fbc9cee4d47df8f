# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd run``: hotplug uevents in, an up-to-date crash kernel out.

One ``selectors`` loop waits on the uevent monitor, the control socket, a
signal pipe and two timers (the coalescing deadline, the watchdog). A burst
of events becomes one refresh, once events have stopped for ``settle_ms``
and never later than ``max_delay_ms`` after the first. On start the daemon
reconciles at once, so a hotplug that happened while it was down is caught.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kexecd import core
from kexecd.errors import KexecdError
from kexecd.files import timestamp
from kexecd.image import loader
from kexecd.image.plan import Action, Why
from kexecd.image.snapshot import FilesSignature, files_signature
from kexecd.service.adopt import adopt, needs_adoption, resolve_kexec_cmd
from kexecd.service.config import Config
from kexecd.service.monitor import Event, Monitor
from kexecd.service.notify import notify, watchdog_interval
from kexecd.service.statefile import (
    SOCKET,
    DaemonState,
    ErrorRecord,
    EventRecord,
    LoadTiming,
    UpdateRecord,
    write_state,
)
from kexecd.system.root import Root

__all__ = ["Coalescer", "Daemon"]

log = logging.getLogger("kexecd")


class Coalescer:
    """Turns a burst of events into one deadline.

    Due ``settle`` seconds after the last event, but never later than
    ``max_delay`` seconds after the first one of the burst.
    """

    def __init__(self, settle: float, max_delay: float) -> None:
        self.settle = settle
        self.max_delay = max_delay
        self.first: float | None = None
        self.last: float | None = None

    def event(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.last = now

    def deadline(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        return min(self.last + self.settle, self.first + self.max_delay)

    def take(self) -> float | None:
        """End the burst; return when it began."""
        first, self.first, self.last = self.first, None, None
        return first


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
        self.verified: FilesSignature | None = None
        self.stopping = False
        self.state = DaemonState(source=cfg.source)
        self.standing_aside = False
        self.kexec_cmd: Path | None = None  # the distro's record, when adopting

    # -- refreshing ------------------------------------------------------------

    def reconcile(self, why: str, first_event: float | None = None) -> UpdateRecord:
        """Refresh now; record what happened; return the record."""
        start = self.clock()
        self.state.reconciles += 1
        sig = files_signature(self.cfg.state_dir)
        record = UpdateRecord(time=timestamp(), why=why)
        try:
            r = loader.refresh(
                self.cfg.state_dir,
                root=self.root,
                backend=self.backend,
                verify=sig != self.verified,
                **self._tracer(),
            )
        except KexecdError as e:
            return self._failed(record, "refresh", e)
        self.verified = files_signature(self.cfg.state_dir) if r.loaded else sig
        return self._record(record, r, start, first_event)

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
                **self._tracer(),
            )
        except KexecdError as e:
            return self._failed(record, "adopt", e)
        self.state.adoptions += 1
        self.state.adopted_from = str(self.kexec_cmd)
        self.verified = files_signature(self.cfg.state_dir)
        for note in r.notes:
            log.warning("%s", note)
        return self._record(record, r.refresh, start, None, adopted=True)

    def _tracer(self) -> dict[str, Any]:
        return {} if self.tracer is None else {"tracer": self.tracer}

    def _failed(self, record: UpdateRecord, what: str, e: KexecdError) -> UpdateRecord:
        st = self.state
        st.failed += 1
        st.last_error = ErrorRecord(timestamp(), str(e))
        st.in_sync = False
        record.action, record.error = "failed", str(e)
        log.error("%s failed: %s", what, e, extra={"KEXECD_ACTION": "failed"})
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
        st.in_sync = True
        st.cpus, st.ranges = r.plan.cpus, r.plan.ranges
        if adopted:
            st.last_update = record
        elif action in (Action.NOTHING, Action.STAND_ASIDE):
            st.skipped += 1
        elif action is Action.FULL_RELOAD:
            st.full_reloads += 1
            st.last_update = record
        else:
            st.reloads += 1
            st.last_update = record
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
        st = self.state
        last = st.last_update
        tail = f"; last update {last.work_ms:.0f} ms" if last else ""
        if st.last_error and st.in_sync is False:
            return f"error: {st.last_error.message}"[:200]
        if self.standing_aside:
            return "standing aside: the kernel updates the header itself"
        shape = f"{st.cpus} CPUs, {st.ranges} ranges, " if st.cpus is not None else ""
        return f"in sync: {shape}{st.events} events, {st.reloads} reloads{tail}"

    def _publish(self) -> None:
        write_state(self.cfg.runtime_dir, self.state)
        notify(f"STATUS={self.summary()}")

    # -- events and the control socket ----------------------------------------

    def on_events(self, events: list[Event]) -> None:
        now = self.clock()
        for ev in events:
            self.state.events += 1
            self.state.last_event = EventRecord(
                timestamp(), ev.action, ev.subsystem, ev.devpath, ev.seqnum
            )
            log.debug("uevent %s %s", ev.action, ev.devpath)
            self.coalescer.event(now)
            self.state.last_event_mono = now

    def due(self) -> bool:
        deadline = self.coalescer.deadline()
        return deadline is not None and self.clock() >= deadline

    def run_due(self) -> UpdateRecord | None:
        if not self.due():
            return None
        first = self.coalescer.take()
        return self.reconcile("events", first)

    def handle_client(self, conn: socket.socket) -> None:
        """Answer one request on the control socket; root only (SO_PEERCRED)."""
        with conn:
            conn.settimeout(2)
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != 0:
                conn.sendall(b'{"error": "permission denied: root only"}\n')
                return
            try:
                line = conn.makefile("rb").readline(65536)
                req = json.loads(line or b"{}")
            except (OSError, ValueError):
                return
            cmd = req.get("cmd")
            if cmd == "status":
                reply: dict[str, Any] = {"ok": True, "state": self.state.to_json()}
            elif cmd == "refresh":
                reply = {"ok": True, "record": asdict(self.reconcile("request"))}
            else:
                reply = {"error": f"unknown command {cmd!r}; use status or refresh"}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")

    def _listen(self) -> socket.socket:
        self.cfg.runtime_dir.mkdir(parents=True, exist_ok=True)
        path = self.cfg.runtime_dir / SOCKET
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            server.bind(str(path))
        finally:
            os.umask(old)
        server.listen(8)
        server.setblocking(False)
        return server

    def _watch_kexec_cmd(self) -> int | None:
        # The distro rewrites its record on every load (kdump-config load,
        # reload, try-reload): watch its directory, do not poll the file.
        if not self.cfg.adopt:
            return None
        try:
            given = Path(self.cfg.kexec_cmd) if self.cfg.kexec_cmd else None
            self.kexec_cmd = resolve_kexec_cmd(self.root, given)
        except KexecdError as e:
            log.error("not adopting the distro's crash kernel: %s", e)
            return None
        if self.kexec_cmd is None:
            return None
        try:
            return core.watch_dir(self.kexec_cmd.parent)
        except OSError as e:
            log.warning(
                "cannot watch %s (%s): the distro's reloads are adopted when kexecd restarts",
                self.kexec_cmd.parent,
                e.strerror,
            )
            return None

    def stop(self) -> None:
        self.stopping = True

    def run(self, max_seconds: float | None = None) -> int:
        """The loop; returns 0 when stopped by SIGTERM or SIGINT (or ``max_seconds``)."""
        sel = selectors.DefaultSelector()
        server = self._listen()
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wfd)
        handlers = {
            s: signal.signal(s, lambda *_: self.stop()) for s in (signal.SIGTERM, signal.SIGINT)
        }
        sel.register(self.monitor.fileno(), selectors.EVENT_READ, "monitor")
        sel.register(server, selectors.EVENT_READ, "control")
        sel.register(rfd, selectors.EVENT_READ, "signal")
        wd = watchdog_interval()
        next_wd = self.clock() + wd if wd else None
        end = self.clock() + max_seconds if max_seconds is not None else None
        watch = self._watch_kexec_cmd()
        if watch is not None:
            sel.register(watch, selectors.EVENT_READ, "kexec_cmd")
        try:
            if self.adopt_if_needed("start") is None:
                self.reconcile("start")
            notify("READY=1")
            notify(f"STATUS={self.summary()}")
            while not self.stopping:
                now = self.clock()
                times = [t for t in (self.coalescer.deadline(), next_wd, end) if t is not None]
                timeout = max(0.0, min(times) - now) if times else None
                for key, _ in sel.select(timeout):
                    if key.data == "monitor":
                        self.on_events(self.monitor.drain())
                    elif key.data == "control":
                        with contextlib.suppress(BlockingIOError):
                            conn, _ = server.accept()
                            self.handle_client(conn)
                    elif key.data == "kexec_cmd":
                        assert watch is not None
                        core.drain_watch(watch)
                        self.adopt_if_needed("the distro's kexec_cmd changed")
                    else:
                        with contextlib.suppress(BlockingIOError):
                            os.read(rfd, 512)
                self.run_due()
                now = self.clock()
                if next_wd is not None and wd is not None and now >= next_wd:
                    notify("WATCHDOG=1")
                    next_wd = now + wd
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
            sel.close()
            server.close()
            with contextlib.suppress(FileNotFoundError):
                (self.cfg.runtime_dir / SOCKET).unlink()
            os.close(rfd)
            os.close(wfd)
            if watch is not None:
                os.close(watch)
        return 0
