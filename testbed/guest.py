# SPDX-License-Identifier: GPL-2.0-or-later
"""A running test-bed guest: one face for its parts.

Each job has its own module and object; :class:`Guest` holds them and lets
a test call each method on the guest itself (``guest.hot_add_cpu()`` is
``guest.hotplug.hot_add_cpu()``):

- ``guest.agent`` (:mod:`testbed.transport`): commands in the guest, the logs;
- ``guest.hotplug`` (:mod:`testbed.hotplug`): CPUs, pc-dimms, virtio-mem;
- ``guest.kdump`` (:mod:`testbed.kdump`): crash loads, kexecd's daemon;
- :mod:`testbed.dumps`: the panic and the crash kernel's vmcore.

:func:`testbed.boot.boot` makes one.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from testbed import assets, dumps, guest_lock
from testbed.hotplug import Hotplug
from testbed.kdump import Kdump
from testbed.qemu import BootSpec, Machine
from testbed.qmp import QMP
from testbed.transport import Agent

__all__ = ["Guest"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")


class _Via(Generic[_T, _P, _R]):
    """A method of :class:`Guest` that is one of its parts':
    ``_Via("hotplug", Hotplug.hot_add_cpu)`` makes ``guest.hot_add_cpu(...)``
    call ``guest.hotplug.hot_add_cpu(...)``, with the same signature."""

    def __init__(self, part: str, method: Callable[Concatenate[_T, _P], _R]) -> None:
        self.part = part
        self.method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, guest: None, owner: type[Any]) -> _Via[_T, _P, _R]: ...

    @overload
    def __get__(self, guest: Guest, owner: type[Any] | None = None) -> Callable[_P, _R]: ...

    def __get__(
        self, guest: Guest | None, owner: type[Any] | None = None
    ) -> _Via[_T, _P, _R] | Callable[_P, _R]:
        if guest is None:
            return self
        bound = functools.partial(self.method, getattr(guest, self.part))
        return functools.update_wrapper(bound, self.method)


class Guest:
    """A running test-bed guest. Use :func:`testbed.boot.boot` to get one.

    :ivar boot_seconds: from starting QEMU to the agent's first message (a
        restored guest: to its first answer).
    :ivar restored: restored from a saved state (:mod:`testbed.saved`), not booted.
    :ivar ready_seconds: from starting QEMU until ready as the caller defines
        it (:func:`testbed.saved.settled_host`'s ``settle``); 0.0 if not measured.
    :ivar acpi_key: the shape whose upgraded ACPI tables it booted with.
    :ivar locked: holds the guest lock (:mod:`testbed.guest_lock`), let go by
        :meth:`close`.
    """

    def __init__(
        self,
        name: str,
        spec: BootSpec,
        agent: Agent,
        qmp: QMP,
        *,
        acpi_key: str | None = None,
        locked: bool = False,
    ) -> None:
        self.name = name
        self.spec = spec
        self.agent = agent
        agent.leftover_events = qmp.leftover_events
        self.qmp = qmp
        self.hotplug = Hotplug(agent, qmp, spec.machine)
        self.kdump = Kdump(agent, spec)
        self.acpi_key = acpi_key
        self.locked = locked
        self.boot_seconds = 0.0
        self.restored = False
        self.ready_seconds = 0.0

    # -- what it is -------------------------------------------------------------

    @property
    def machine(self) -> Machine:
        return self.spec.machine

    @property
    def kernel(self) -> assets.Kernel:
        return self.spec.kernel

    @property
    def initramfs(self) -> Path:
        """The crash kernel's initramfs (the guest's own initrd)."""
        return self.spec.initrd

    @property
    def kexec(self) -> str:
        """The kexec-tools binary the crash loads run (:data:`testbed.assets.KEXEC_TOOLS`)."""
        return self.spec.kexec

    @property
    def dimms(self) -> dict[str, tuple[int, int]]:
        """The pc-dimms plugged and not removed: QMP id -> (start, end)."""
        return self.hotplug.dimms

    # -- logs and commands: testbed.transport ---------------------------------

    @property
    def run_dir(self) -> Path:
        return self.agent.run_dir

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """QEMU."""
        return self.agent.proc

    @property
    def console_log(self) -> Path:
        return self.agent.console_log

    @property
    def qmp_log(self) -> Path:
        return self.agent.qmp_log

    @property
    def crash_log(self) -> Path:
        return self.agent.crash_log

    fail = _Via("agent", Agent.fail)
    run = _Via("agent", Agent.run)
    sh = _Via("agent", Agent.sh)
    read = _Via("agent", Agent.read)
    python = _Via("agent", Agent.python)

    # -- CPUs and memory: testbed.hotplug -------------------------------------

    online_cpus = _Via("hotplug", Hotplug.online_cpus)
    present_cpus = _Via("hotplug", Hotplug.present_cpus)
    hot_add_cpu = _Via("hotplug", Hotplug.hot_add_cpu)
    hot_remove_cpu = _Via("hotplug", Hotplug.hot_remove_cpu)
    set_cpu_online = _Via("hotplug", Hotplug.set_cpu_online)
    memory_block_size = _Via("hotplug", Hotplug.memory_block_size)
    memory_blocks = _Via("hotplug", Hotplug.memory_blocks)
    hot_add_memory = _Via("hotplug", Hotplug.hot_add_memory)
    hot_add_memories = _Via("hotplug", Hotplug.hot_add_memories)
    set_memory_online = _Via("hotplug", Hotplug.set_memory_online)
    hot_remove_memory = _Via("hotplug", Hotplug.hot_remove_memory)
    virtio_mem_ranges = _Via("hotplug", Hotplug.virtio_mem_ranges)
    virtio_mem_size = _Via("hotplug", Hotplug.virtio_mem_size)
    resize_virtio_mem = _Via("hotplug", Hotplug.resize_virtio_mem)

    # -- crash loads and kexecd: testbed.kdump --------------------------------

    kexec_argv = _Via("kdump", Kdump.kexec_argv)
    load_crash_kernel = _Via("kdump", Kdump.load_crash_kernel)
    capture_load = _Via("kdump", Kdump.capture_load)
    fresh_header = _Via("kdump", Kdump.fresh_header)
    kdump_tools_load = _Via("kdump", Kdump.kdump_tools_load)
    kexecd_load = _Via("kdump", Kdump.kexecd_load)
    start_daemon = _Via("kdump", Kdump.start_daemon)
    daemon_state = _Via("kdump", Kdump.daemon_state)

    # -- the crash: testbed.dumps ---------------------------------------------

    crash = _Via("agent", dumps.crash)
    panic = _Via("agent", dumps.panic)
    panic_until = _Via("agent", dumps.panic_until)
    crash_kernel_view = _Via("agent", dumps.crash_kernel_view)
    read_vmcore = _Via("agent", dumps.read_vmcore)

    # -- lifetime ---------------------------------------------------------------

    def close(self) -> None:
        """Quit QEMU (kill it if it does not), close the channels, let go of
        the guest lock."""
        proc = self.agent.proc
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                self.qmp.execute("quit")
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.agent.sock.close()
        self.qmp.close()
        if self.locked:
            self.locked = False
            guest_lock.release()
