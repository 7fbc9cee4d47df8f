# SPDX-License-Identifier: GPL-2.0-or-later
"""A small synchronous QMP client that logs every message to a file."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class QMPError(RuntimeError):
    """QEMU answered a command with an error, or did not answer in time."""


class QMP:
    """One QMP connection: commands in order, events kept until asked for."""

    def __init__(self, path: Path, log: Path, timeout: float = 30.0) -> None:
        self._log = log.open("a", buffering=1)
        self._timeout = timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.connect(str(path))
                break
            except OSError:
                self._sock.close()
                if time.monotonic() > deadline:
                    raise QMPError(f"no QMP socket at {path} after {timeout} s") from None
                time.sleep(0.05)
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        self._read(deadline)  # the greeting
        self.execute("qmp_capabilities")

    def close(self) -> None:
        self._sock.close()
        self._log.close()

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QMPError("QMP read timed out")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise QMPError("QMP read timed out") from None
            if not chunk:
                raise QMPError("QEMU closed the QMP socket")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        self._log.write(f"{time.time():.3f} <- {line.decode(errors='replace')}\n")
        msg: dict[str, Any] = json.loads(line)
        return msg

    def leftover_events(self, wait: float = 1.0, last: int = 8) -> list[str]:
        """The names and data of the ``last`` events QEMU sent that nobody
        took (what it wrote before exiting stays readable): a ``SHUTDOWN``
        event says why it stopped."""
        deadline = time.monotonic() + wait
        got = list(self.events)
        self.events.clear()
        with contextlib.suppress(QMPError, OSError, ValueError):
            while True:
                got.append(self._read(deadline))
        events = [ev for ev in got if "event" in ev][-last:]
        return [f"{ev['event']} {json.dumps(ev.get('data', {}))}" for ev in events]

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run one QMP command and return its ``return`` value."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        text = json.dumps(msg)
        self._log.write(f"{time.time():.3f} -> {text}\n")
        self._sock.sendall(text.encode() + b"\n")
        deadline = time.monotonic() + self._timeout
        while True:
            reply = self._read(deadline)
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise QMPError(f"{command}: {reply['error'].get('desc', reply['error'])}")
            elif "return" in reply:
                return reply["return"]

    def wait_migration(self, timeout: float) -> str | None:
        """Poll ``query-migrate`` until the migration (out, or ``-incoming``)
        has ended; return its last status: ``"completed"``, ``"failed"``,
        ``"cancelled"``, or whatever it was (``None``: not begun) when
        ``timeout`` s passed."""
        deadline = time.monotonic() + timeout
        while True:
            status: str | None = self.execute("query-migrate").get("status")
            if status in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
                return status
            time.sleep(0.2)

    def wait_event(
        self,
        name: str,
        timeout: float,
        where: Callable[[dict[str, Any]], bool] | None = None,
        **data: Any,
    ) -> dict[str, Any]:
        """Wait for (or take an already received) event whose data matches:
        has the items ``data`` and, if given, ``where(data)`` is true."""

        def matches(ev: dict[str, Any]) -> bool:
            got = ev.get("data", {})
            return (
                ev["event"] == name
                and all(got.get(k) == v for k, v in data.items())
                and (where is None or where(got))
            )

        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if matches(ev):
                    self.events.remove(ev)
                    return ev
            try:
                ev = self._read(deadline)
            except QMPError:
                raise QMPError(f"no {name} event {data or ''} within {timeout} s") from None
            if "event" in ev:
                self.events.append(ev)
