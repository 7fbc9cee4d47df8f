# SPDX-License-Identifier: GPL-2.0-or-later
"""What ``kexecd run`` opens around the daemon's loop, and closes after it.

:func:`running` claims the runtime directory, opens the loop and registers
each source with its callback: the uevent monitor, the control socket, the
signal pipe, the watchdog, the end of a bounded run, the distro's
``kexec_cmd`` watch, the snapshot watch and the kernel log. On the way out
it says STOPPING=1, records when the daemon stopped, and closes them all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from kexecd import core
from kexecd.errors import KexecdError
from kexecd.files import timestamp
from kexecd.service import control
from kexecd.service.adopt import resolve_kexec_cmd
from kexecd.service.loop import Alarm, Loop
from kexecd.service.notify import notify, watchdog_interval
from kexecd.service.runtime import SnapshotWatch, claim, watch_kexec_cmd
from kexecd.service.statefile import SOCKET, write_state
from kexecd.system.kernel import read_kexec_state
from kexecd.system.kmsg import KmsgWatch

if TYPE_CHECKING:
    from kexecd.service.daemon import Daemon

__all__ = ["running"]

log = logging.getLogger("kexecd")


@contextlib.contextmanager
def running(daemon: Daemon, max_seconds: float | None = None) -> Iterator[None]:
    """The daemon's sources in its loop, for the time of the ``with``.

    :raises ServiceError: another daemon runs with the same runtime directory.
    """
    cfg, loop = daemon.cfg, daemon.loop
    instance = claim(cfg.runtime_dir)
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, instance)
        loop.open()
        stack.callback(loop.close)
        server = control.Server(cfg.runtime_dir / SOCKET, loop, daemon.answer)
        stack.callback(server.close)
        _signals(stack, daemon)
        loop.add_reader(daemon.monitor.fileno(), lambda: daemon.on_events(daemon.monitor.drain()))
        _watchdog(loop)
        if max_seconds is not None:
            loop.call_at(loop.clock() + max_seconds, daemon.stop)
        _kexec_cmd(stack, daemon)
        _snapshot_watch(stack, daemon)
        _kernel_log(stack, daemon)
        stack.callback(_stopped, daemon)
        yield


def _stopped(daemon: Daemon) -> None:
    notify("STOPPING=1")
    daemon.state.stopped = timestamp()
    with contextlib.suppress(OSError):
        write_state(daemon.cfg.runtime_dir, daemon.state)


def _signals(stack: contextlib.ExitStack, daemon: Daemon) -> None:
    # SIGTERM and SIGINT stop the loop; the wakeup pipe ends its wait.
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    stack.callback(os.close, rfd)
    stack.callback(os.close, wfd)
    stack.callback(signal.set_wakeup_fd, signal.set_wakeup_fd(wfd))
    for s in (signal.SIGTERM, signal.SIGINT):
        stack.callback(signal.signal, s, signal.signal(s, lambda *_: daemon.stop()))
    daemon.loop.add_reader(rfd, partial(_drain, rfd))


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.read(fd, 512)


def _watchdog(loop: Loop) -> None:
    # WATCHDOG=1 at half of WATCHDOG_USEC.
    interval = watchdog_interval()
    if not interval:
        return

    def tick() -> None:
        notify("WATCHDOG=1")
        alarm.set(loop.clock() + interval)

    alarm = Alarm(loop, tick)
    alarm.set(loop.clock() + interval)


def _kexec_cmd(stack: contextlib.ExitStack, daemon: Daemon) -> None:
    # The distro's record of its kexec command, watched for adoption.
    cfg = daemon.cfg
    if not cfg.adopt:
        return
    try:
        given = Path(cfg.kexec_cmd) if cfg.kexec_cmd else None
        daemon.kexec_cmd = resolve_kexec_cmd(daemon.root, given)
    except KexecdError as e:
        log.error("not adopting the distro's crash kernel: %s", e)
        return
    fd = None if daemon.kexec_cmd is None else watch_kexec_cmd(daemon.kexec_cmd)
    if fd is None:
        return
    stack.callback(os.close, fd)

    def changed() -> None:
        core.drain_watch(fd)
        daemon.adopt_if_needed("the distro's kexec_cmd changed")
        daemon.verify_ahead()

    daemon.loop.add_reader(fd, changed)


def _snapshot_watch(stack: contextlib.ExitStack, daemon: Daemon) -> None:
    watch = SnapshotWatch.start(daemon.cfg.state_dir)
    if watch is None:
        return
    daemon.session.watch = watch

    def close() -> None:
        watch.close()
        daemon.session.watch = None

    stack.callback(close)
    daemon.loop.add_reader(watch.fd, daemon.on_snapshot_change)


def _kernel_log(stack: contextlib.ExitStack, daemon: Daemon) -> None:
    # Only a kernel with crash hotplug (Linux 6.6+: a crash_hotplug file)
    # can drop an update of its own.
    root = daemon.root
    try:
        hotplug = read_kexec_state(root).crash_hotplug
    except KexecdError:  # there, but unreadable: watch all the same
        hotplug = True
    if not hotplug:
        return
    kmsg = KmsgWatch.open(root)
    if kmsg is None:
        log.info(
            "cannot read %s: an update of the header the kernel keeps that it drops "
            "would go unnoticed until the next hotplug",
            root.path("dev/kmsg"),
        )
        return
    stack.callback(kmsg.close)
    daemon.loop.add_reader(kmsg.fd, partial(daemon.read_kernel_log, kmsg))
