# SPDX-License-Identifier: GPL-2.0-or-later
"""The agent channel's report when QEMU's end closes (testbed.transport), and
the QMP events left unread (testbed.qmp): a silent QEMU exit says how it ended."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testbed.qmp import QMP
from testbed.transport import Agent, TestbedError


def _agent(tmp_path: Path, argv: list[str]) -> tuple[Agent, socket.socket]:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(argv)
    return Agent(tmp_path, proc, ours), theirs


@pytest.mark.parametrize(("exited", "what"), [(True, "did not answer"), (False, "channel closed")])
def test_an_ended_qemu_is_named_with_its_exit_status_and_its_last_events(
    tmp_path: Path, exited: bool, what: str
) -> None:
    # QEMU gone before the agent is read, or its end of the channel closing first.
    agent, theirs = _agent(tmp_path, [sys.executable, "-c", "import time; time.sleep(0.5)"])
    agent.leftover_events = lambda: ['SHUTDOWN {"reason": "guest-reset"}']
    if exited:
        agent.proc.wait()
    theirs.close()
    with pytest.raises(TestbedError) as e:
        agent.recv(time.monotonic() + 30)
    first = str(e.value).splitlines()[0]
    assert what in first
    assert "QEMU exited with status 0" in first
    assert 'SHUTDOWN {"reason": "guest-reset"}' in first
    assert str(tmp_path / "qemu.log") in first


def test_a_closed_channel_of_a_running_qemu_says_so(tmp_path: Path) -> None:
    agent, theirs = _agent(tmp_path, [sys.executable, "-c", "import time; time.sleep(30)"])
    asked = []
    agent.leftover_events = lambda: asked.append(1) or []
    theirs.close()
    try:
        with pytest.raises(TestbedError, match=r"QEMU still runs 10 s later"):
            agent.recv(time.monotonic() + 30)
    finally:
        agent.proc.kill()
        agent.proc.wait()
    assert asked == []  # QEMU has not ended: its QMP socket is not drained


def test_qmp_keeps_the_events_qemu_wrote_before_it_closed(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def qemu() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b'{"QMP": {}}\n')
            conn.recv(4096)  # qmp_capabilities
            conn.sendall(b'{"return": {}}\n')
            for n in range(10):
                conn.sendall(
                    json.dumps({"event": "RTC_CHANGE", "data": {"n": n}}).encode() + b"\n"
                )
            conn.sendall(
                json.dumps({"event": "SHUTDOWN", "data": {"reason": "guest-reset"}}).encode()
                + b"\n"
            )

    t = threading.Thread(target=qemu)
    t.start()
    qmp = QMP(path, tmp_path / "qmp.log")
    t.join()
    try:
        # The last eight only: the older ones are not why it ended.
        assert qmp.leftover_events() == [
            *(f'RTC_CHANGE {{"n": {n}}}' for n in range(3, 10)),
            'SHUTDOWN {"reason": "guest-reset"}',
        ]
        assert qmp.leftover_events() == []
    finally:
        qmp.close()
        server.close()
