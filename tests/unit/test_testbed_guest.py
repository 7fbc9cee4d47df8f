# SPDX-License-Identifier: GPL-2.0-or-later
"""The test bed's Guest is a face for its parts: each method it offers is one
part's, reached through the agent's channel (here a socket pair, no QEMU);
the QEMU command line carries the machine shape and the guest's mark."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import dumps
from testbed.assets import Kernel
from testbed.guest import Guest, _Via
from testbed.guest_safety import MARK
from testbed.hotplug import Hotplug
from testbed.kdump import CRASH_APPEND, Kdump
from testbed.qemu import VIRTIO_MEM_ID, BootSpec, Machine, qemu_argv
from testbed.transport import Agent, TestbedError


class _Running:
    """Stands in for the QEMU process: still running."""

    def poll(self) -> None:
        return None


class _NoQMP:
    """Stands in for the QMP connection: no event left."""

    def leftover_events(self) -> list[str]:
        return []


@pytest.fixture
def wired(tmp_path: Path) -> Iterator[tuple[Guest, socket.socket]]:
    """A guest whose agent channel's other end is the test's."""
    ours, theirs = socket.socketpair()
    kernel = Kernel("linux-image-test", tmp_path / "vmlinuz", tmp_path / "modules")
    spec = BootSpec(Machine(), kernel, tmp_path / "initrd", kexec="/opt/kexec")
    agent = Agent(tmp_path, _Running(), theirs)  # type: ignore[arg-type]
    yield Guest("t", spec, agent, qmp=_NoQMP()), ours  # type: ignore[arg-type]
    ours.close()
    theirs.close()


def _answer(peer: socket.socket, id: int, stdout: str) -> None:
    reply = {"id": id, "rc": 0, "stdout": stdout, "stderr": "", "seconds": 0.01}
    peer.sendall(json.dumps(reply).encode() + b"\n")


def _request(peer: socket.socket) -> dict[str, Any]:
    line = peer.recv(65536).split(b"\n", 1)[0]
    req: dict[str, Any] = json.loads(line)
    return req


def test_every_delegated_method_is_a_parts() -> None:
    parts = {"agent": Agent, "hotplug": Hotplug, "kdump": Kdump}
    vias = {n: v for n, v in vars(Guest).items() if isinstance(v, _Via)}
    assert len(vias) == 32
    for name, via in vias.items():
        if via.part == "agent" and via.method is getattr(dumps, name, None):
            continue
        assert getattr(parts[via.part], name) is via.method, name


def test_a_hotplug_method_reads_sysfs_through_the_agent(
    wired: tuple[Guest, socket.socket],
) -> None:
    guest, peer = wired
    _answer(peer, 1, "0-1,3\n")
    assert guest.online_cpus() == [0, 1, 3]
    req = _request(peer)
    assert (req["op"], req["argv"]) == ("run", ["cat", "/sys/devices/system/cpu/online"])


def test_a_failed_command_names_the_logs(wired: tuple[Guest, socket.socket]) -> None:
    guest, peer = wired
    guest.console_log.write_text("line 1\nthe last console line\n")
    _answer(peer, 1, "")  # kexec -p
    _answer(peer, 2, "0\n")  # /sys/kernel/kexec_crash_loaded
    with pytest.raises(TestbedError, match="no crash kernel is loaded") as raised:
        guest.load_crash_kernel()
    assert str(guest.console_log) in str(raised.value)
    assert "the last console line" in str(raised.value)


def test_the_crash_load_runs_the_guests_kexec(wired: tuple[Guest, socket.socket]) -> None:
    guest, _ = wired
    argv = guest.kexec_argv("quiet", ["-c"])
    assert argv == [
        "/opt/kexec",
        "-p",
        "-c",
        str(guest.kernel.vmlinuz),
        f"--initrd={guest.initramfs}",
        f"--append={CRASH_APPEND} quiet",
    ]
    assert guest.kexec == "/opt/kexec" and guest.dimms == {}


def test_the_qemu_command_line_carries_the_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    kernel = Kernel("linux-image-test", tmp_path / "vmlinuz", tmp_path / "modules")
    machine = Machine(smp=1, maxcpus=3, virtio_mem_mib=512, crashkernel="192M")
    spec = BootSpec(machine, kernel, tmp_path / "initrd", append=("a=1",), devices=("-x", "y"))
    argv = qemu_argv(tmp_path, spec)
    assert argv[argv.index("-smp") + 1] == "1,maxcpus=3"
    assert argv[argv.index("-append") + 1] == f"a=1 crashkernel=192M panic=1 {MARK}"
    assert argv[argv.index("-initrd") + 1] == str(tmp_path / "initrd")
    assert argv[argv.index("-x") : argv.index("-x") + 2] == ["-x", "y"]
    assert any(a.startswith(f"virtio-mem-pci,id={VIRTIO_MEM_ID},") for a in argv)
    # A silent exit on a guest reset (-no-reboot) leaves its reason in qemu.log.
    assert argv[argv.index("-d") + 1] == "cpu_reset"
    assert argv[argv.index("-D") + 1] == str(tmp_path / "qemu.log")
    with pytest.raises(TestbedError, match="maxmem"):
        qemu_argv(tmp_path, BootSpec(Machine(maxmem_mib=1024, virtio_mem_mib=1), kernel, tmp_path))
