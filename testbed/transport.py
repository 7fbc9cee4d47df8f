# SPDX-License-Identifier: GPL-2.0-or-later
"""The connection to a test-bed guest's agent (:mod:`testbed.guest_agent`).

One JSON object a line over the guest's virtio-serial port: commands run in
the guest and what they did, a panic on request. Every wait has a deadline
and fails with :class:`TestbedError` naming the run's logs.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Agent", "Result", "TestbedError"]


class TestbedError(RuntimeError):
    """A test-bed step failed; the message names the logs to read."""

    __test__ = False  # not a pytest class, whatever its name


@dataclass
class Result:
    """What a command run in the guest did."""

    argv: list[str]
    rc: int | None
    stdout: str
    stderr: str
    seconds: float

    def check(self) -> Result:
        if self.rc != 0:
            raise TestbedError(
                f"guest command {shlex.join(self.argv)} exited {self.rc}\n"
                f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
            )
        return self


class Agent:
    """The guest agent's channel, and the QEMU process it runs in.

    :param run_dir: the run directory, with the console, QMP and crash logs.
    :param proc: QEMU.
    :param sock: connected to the agent's virtio-serial port.
    """

    def __init__(self, run_dir: Path, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.run_dir = run_dir
        self.proc = proc
        self.sock = sock
        self._buf = b""
        self._next_id = 0
        #: Unread QMP events, asked for once QEMU has ended (set by the guest).
        self.leftover_events: Callable[[], list[str]] = list

    # -- logs and failures ------------------------------------------------

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def qmp_log(self) -> Path:
        return self.run_dir / "qmp.log"

    @property
    def crash_log(self) -> Path:
        return self.run_dir / "ttyS1.out"

    def fail(self, what: str) -> TestbedError:
        """An error naming the logs of this run, with the console's tail."""
        tail = ""
        if self.console_log.exists():
            lines = self.console_log.read_text(errors="replace").splitlines()
            tail = "\n".join(lines[-25:])
        return TestbedError(
            f"{what}\n  console log: {self.console_log}\n  QMP log:     {self.qmp_log}\n"
            f"  crash out:   {self.crash_log}\n--- console tail ---\n{tail}"
        )

    def _exit_of_qemu(self, wait: float = 10.0) -> str:
        """How QEMU ended once its end of a channel closed: its exit status
        (a guest reset under ``-no-reboot`` exits 0, silently; see
        ``qemu.log`` for "Triple fault"), or that it still runs after ``wait`` s."""
        try:
            rc = self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            return f" (QEMU still runs {wait:g} s later)"
        events = "; ".join(self.leftover_events()) or "none"
        return (
            f" (QEMU exited with status {rc}; its last QMP events: {events}; "
            f"resets in {self.run_dir / 'qemu.log'})"
        )

    # -- messages -----------------------------------------------------------

    def recv(self, deadline: float) -> dict[str, Any]:
        """The agent's next message; raises once ``deadline`` (monotonic) has
        passed or QEMU has exited."""
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise self.fail(
                    "the guest agent did not answer"
                    + (self._exit_of_qemu(0) if self.proc.poll() is not None else "")
                )
            self.sock.settimeout(min(left, 1.0))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise self.fail("the guest agent's channel closed" + self._exit_of_qemu())
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def request(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request (an ``id`` is added); return the agent's answer to it."""
        self._next_id += 1
        req["id"] = self._next_id
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            reply = self.recv(deadline)
            if reply.get("id") == self._next_id:
                return reply

    # -- commands -------------------------------------------------------------

    def run(
        self,
        argv: list[str] | str,
        *,
        timeout: float = 120.0,
        input: str | None = None,
        env: dict[str, str] | None = None,
        check: bool = True,
    ) -> Result:
        """Run a command in the guest (a string runs under ``sh -c``)."""
        if isinstance(argv, str):
            argv = ["sh", "-c", argv]
        reply = self.request(
            {"op": "run", "argv": argv, "input": input, "timeout": timeout, "env": env or {}},
            timeout + 30,
        )
        if reply.get("timeout"):
            raise self.fail(f"guest command {shlex.join(argv)} timed out after {timeout} s")
        res = Result(argv, reply["rc"], reply["stdout"], reply["stderr"], reply["seconds"])
        return res.check() if check else res

    def sh(self, script: str, timeout: float = 120.0) -> str:
        """Run a shell script in the guest; return its stdout; raise if it fails."""
        return self.run(script, timeout=timeout).stdout

    def read(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    def python(self, *args: str, timeout: float = 300.0, check: bool = True) -> Result:
        """Run this checkout's venv Python in the guest."""
        return self.run([sys.executable, *args], timeout=timeout, check=check)
