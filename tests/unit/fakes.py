# SPDX-License-Identifier: GPL-2.0-or-later
"""The unit tier's stand-ins: the kernel's kexec_load, the tracer, the uevent
monitor and systemd's notify socket. Every unit test that needs one takes it
from here."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kexecd import core
from kexecd.image import loader
from kexecd.image.deps import Backend, Deps, KernelBackend, Tracer
from kexecd.image.plan import Policy
from kexecd.image.refresher import Refresher, RefreshResult, Request
from kexecd.image.store import Store
from kexecd.loads import LoadCapture, Segment
from kexecd.service.config import Config
from kexecd.service.daemon import Daemon
from kexecd.service.monitor import Event
from kexecd.system.root import Root
from testbed.images import image, loaded_root

__all__ = [
    "ARGV",
    "KEXEC",
    "FakeBackend",
    "FakeMonitor",
    "FakeSystemd",
    "added",
    "daemon_env",
    "run_until",
    "started",
    "switch_root",
    "tracer_for",
]

# A stand-in for kexec-tools 2.0.25 on disk: its bytes are the program the
# captures say made their load (testbed.images), so a full reload's check
# that the command still leads to that binary (kexecd.image.rerun) holds.
KEXEC = Path(__file__).resolve().parent / "bin" / "kexec"
ARGV = [str(KEXEC), "-p", "/boot/vmlinuz", "--initrd=/boot/initrd.img", "--append=x"]


class FakeBackend:
    """Records every load; fails the first ``fail`` of them with ``error``.

    With a fake ``root``, it keeps ``sys/kernel/kexec_crash_loaded`` as the
    kernel would (kernel/kexec.c, 6.1): EBUSY comes before anything is
    touched; any later failure has freed the old crash image already.
    """

    def __init__(self, fail: int = 0, root: Path | None = None, error: int = errno.ENOMEM) -> None:
        self.loads: list[tuple[int, int, list[bytes]]] = []
        self.fail = fail
        self.root = root
        self.error = error

    def load(self, entry: int, flags: int, segments: Sequence[Segment]) -> None:
        self.loads.append((entry, flags, [bytes(s.buf) for s in segments]))
        failed = len(self.loads) <= self.fail
        if self.root is not None and not (failed and self.error == errno.EBUSY):
            (self.root / "sys/kernel/kexec_crash_loaded").write_text("0\n" if failed else "1\n")
        if failed:
            raise OSError(self.error, os.strerror(self.error))


def refresh(
    state: Path,
    *,
    root: Root | None = None,
    backend: Backend | None = None,
    tracer: Tracer | None = None,
    acpi_no_memhotplug: bool = True,
    **asked: Any,
) -> RefreshResult:
    """One refresh of ``state`` as ``kexecd refresh`` makes it, with these
    collaborators and settings; ``asked``: the :class:`Request`'s fields."""
    r = refresher(state, root=root, backend=backend, tracer=tracer)
    r.policy = Policy(acpi_no_memhotplug)
    return r.refresh(Request(**asked))


def refresher(
    state: Path,
    *,
    root: Root | None = None,
    backend: Backend | None = None,
    tracer: Tracer | None = None,
) -> Refresher:
    """A :class:`Refresher` of ``state`` with these collaborators (the real
    ones where ``None``: the autouse guard keeps tests from the kernel's)."""
    deps = Deps(root or Root(), backend or KernelBackend(), tracer or core.trace_kexec)
    return Refresher(Store(state), deps)


def tracer_for(cap: LoadCapture) -> loader.Tracer:
    """A tracer that records the commands it was given and answers ``cap``."""
    calls: list[Sequence[str]] = []

    def trace(argv: Sequence[str]) -> LoadCapture:
        calls.append(argv)
        return cap

    trace.calls = calls  # type: ignore[attr-defined]
    return trace


def loaded(name: str, tmp: Path) -> tuple[Path, Path]:
    """A capture's fake root (:func:`testbed.images.loaded_root`) and the state
    directory ``tmp/state`` that ``kexecd load`` of :data:`ARGV` filled, traced
    as the capture's load: (root, state)."""
    root = loaded_root(name, tmp)
    state = tmp / "state"
    loader.load(ARGV, state, root=Root(root), tracer=tracer_for(image(name)))
    return root, state


def fake_kernel(monkeypatch: Any) -> FakeBackend:
    """Every :class:`KernelBackend` load goes to the returned fake instead
    (``monkeypatch``: pytest's)."""
    backend = FakeBackend()
    monkeypatch.setattr(KernelBackend, "load", lambda self, *a: backend.load(*a))
    return backend


class FakeMonitor:
    """Events pushed by the test, signalled through a pipe like a netlink socket."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK)
        self.queue: list[Event] = []
        self.lock = threading.Lock()

    def fileno(self) -> int:
        return self.r

    def push(self, *events: Event) -> None:
        with self.lock:
            self.queue.extend(events)
        os.write(self.w, b"x")

    def wake(self) -> None:
        """Wake the daemon's loop with no event (to see that it should stop)."""
        os.write(self.w, b"x")

    def drain(self) -> list[Event]:
        with contextlib.suppress(BlockingIOError):
            os.read(self.r, 4096)
        with self.lock:
            out, self.queue = self.queue, []
        return out


def run_until(
    daemon: Daemon, monitor: FakeMonitor, done: Callable[[], bool], timeout: float = 30.0
) -> int:
    """Run the daemon until ``done()`` holds (polled from a thread), then stop it.

    Deterministic on a loaded machine, unlike a fixed run time; ``timeout``
    only bounds a test that would otherwise hang.
    """

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            time.sleep(0.01)
        daemon.stop()
        monitor.wake()

    t = threading.Thread(target=watch)
    t.start()
    try:
        return daemon.run(max_seconds=timeout + 5)
    finally:
        t.join()


def started(cfg: Config) -> Callable[[], bool]:
    """Whether the daemon has published its first state (its start reconcile is done)."""
    return lambda: (cfg.runtime_dir / "state.json").exists()


def daemon_env(tmp: Path, settle_ms: int, max_delay_ms: int) -> Config:
    """A loaded boot image, ``tmp/root``: a symlink :func:`switch_root` moves
    between the boot and hotadd captures' fake roots, and ``tmp/metrics`` for
    ``kexecd.prom``."""
    for name in ("boot", "hotadd"):
        loaded_root(name, tmp)
    root = tmp / "root"
    root.symlink_to(tmp / "root-boot")
    state = tmp / "state"
    loader.load(ARGV, state, root=Root(root), tracer=tracer_for(image("boot")))
    (tmp / "metrics").mkdir()
    return Config(
        state_dir=state,
        runtime_dir=tmp / "run",
        root=root,
        settle_ms=settle_ms,
        max_delay_ms=max_delay_ms,
        metrics_dir=str(tmp / "metrics"),
    )


def switch_root(tmp: Path, name: str) -> None:
    """Point ``tmp/root`` at the ``name`` capture's fake root, atomically."""
    link = tmp / "root.new"
    link.symlink_to(tmp / f"root-{name}")
    os.replace(link, tmp / "root")


def added(block: int) -> Event:
    """The uevent of memory block ``block`` appearing: its range is in
    /proc/iomem from then on (onlining it later changes nothing there)."""
    return Event("add", "memory", f"/devices/system/memory/memory{block}", 1000 + block)


class FakeSystemd:
    """A NOTIFY_SOCKET that a thread reads as systemd would."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []
        self.done = False
        self.thread = threading.Thread(target=self._read)
        self.thread.start()

    def _read(self) -> None:
        while not self.done:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def stop(self) -> list[str]:
        time.sleep(0.1)
        self.done = True
        self.thread.join()
        self.sock.close()
        return self.messages


def kernel_updates(root: Path) -> None:
    """Make a fake root's kernel one that keeps loaded headers current
    (``crash_hotplug`` reads 1 for CPUs and memory: Linux 6.6+)."""
    for s in ("cpu", "memory"):
        (root / f"sys/devices/system/{s}/crash_hotplug").write_text("1\n")


def root_reads(monkeypatch: Any) -> list[str]:
    """Every file a :class:`Root` reads from now on, by its path relative to
    the root (``monkeypatch``: pytest's); the reads still happen."""
    seen: list[str] = []
    real = Root._read

    def spy(self: Root, rel: str, limit: int) -> bytes | None:
        seen.append(rel)
        return real(self, rel, limit)

    monkeypatch.setattr(Root, "_read", spy)
    return seen
