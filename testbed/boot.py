# SPDX-License-Identifier: GPL-2.0-or-later
"""Booting test-bed guests: QEMU started under the guest lock, the agent waited
for, upgraded ACPI tables where the kernel needs them, a boot that panics
tried once more.

Two kinds of guest share :func:`launch`: the quick one of :func:`boot`
(Debian's kernel, a busybox initramfs, the host's root over 9p) and the
Debian host of :mod:`testbed.debian_host` (its own disk).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed import acpi, assets, guest_lock
from testbed.guest import Guest
from testbed.qemu import BootSpec, Machine, qemu_argv
from testbed.qmp import QMP
from testbed.transport import Agent, TestbedError

__all__ = [
    "BOOT_ATTEMPTS",
    "NEEDS_ACPI_UPGRADE",
    "GuestBootPanic",
    "boot",
    "boot_panic",
    "launch",
    "new_run_dir",
    "read_acpi_tables",
]

AGENT = Path(__file__).with_name("guest_agent.py")
# How long boot() waits for another guest on this machine to finish.
GUEST_LOCK_WAIT = 3600.0
# The kernels that boot with upgraded ACPI tables (testbed/acpi.py): 6.12
# drops the MADT's disabled CPUs under TCG unless the FADT claims ACPI 6.3
# and the MADT marks them Online Capable, so no CPU could be hot-added.
NEEDS_ACPI_UPGRADE = frozenset({"6.12"})


class GuestBootPanic(TestbedError):
    """The guest's kernel panicked before its agent answered.

    :ivar why: the console's first Oops or panic line.
    :ivar run_dir: the run directory, with the boot's logs.
    """

    def __init__(self, message: str, why: str, run_dir: Path) -> None:
        super().__init__(message)
        self.why = why
        self.run_dir = run_dir


# How often :func:`launch` starts a guest whose kernel panics while booting.
# QEMU 7.2's multi-threaded TCG can run a stale translation of kernel text
# being live-patched on another vCPU: Linux 6.12 then hits the int3 of a
# text_poke_bp() that has already ended ("Oops: int3" in sched_clock_cpu when
# "sched_clock: Marking stable" flips its static key, about 1 boot in 25 on
# 2 vCPUs, arch/x86/kernel/alternative.c). That is the emulator, not the code
# under test, so a boot that panics is tried once more; a second panic fails.
BOOT_ATTEMPTS = 2
_PANIC = "Kernel panic - not syncing:"
# The same hazard can leave the kernel spinning instead: seen in CI, a 6.1
# guest's console stopped at 1.2 s ("IP idents hash table entries") and its
# agent never answered. A kernel that prints nothing this long before the
# agent answers is stuck, not slow (busybox guests answer in 6-10 s, the
# Debian hosts in 30-65 s, printing all along), and is tried once more too.
BOOT_STALL = 120.0


def boot_panic(console_log: Path) -> str | None:
    """The first Oops or panic line of a guest console log, if its kernel panicked."""
    try:
        text = console_log.read_text(errors="replace")
    except OSError:
        return None
    if _PANIC not in text:
        return None
    for line in text.splitlines():
        if "Oops:" in line or "BUG:" in line or _PANIC in line:
            return line.split("] ", 1)[-1].strip()
    return None


def boot_stalled(console_log: Path, quiet: float, now: float | None = None) -> str | None:
    """Where a guest console log stopped, if it has not grown for ``quiet`` seconds."""
    try:
        age = (time.time() if now is None else now) - console_log.stat().st_mtime
    except OSError:
        return None
    if age < quiet:
        return None
    lines = console_log.read_text(errors="replace").strip().splitlines()
    last = lines[-1].split("] ", 1)[-1].strip() if lines else "nothing"
    return f"the console stopped {age:.0f} s ago at {last!r}"


def _first_message(agent: Agent, run_dir: Path, deadline: float) -> dict[str, Any]:
    # The agent's "ready", watching for a kernel that stopped printing.
    while True:
        try:
            return agent.recv(min(deadline, time.monotonic() + 5))
        except TestbedError:
            if time.monotonic() >= deadline or agent.proc.poll() is not None:
                raise
            why = boot_stalled(run_dir / "console.log", BOOT_STALL)
            if why is not None:
                raise GuestBootPanic(
                    f"the guest's kernel printed nothing for {BOOT_STALL:.0f} s", why, run_dir
                ) from None


def new_run_dir(name: str) -> Path:
    """A new directory for one guest's files and logs, in the cache's ``runs/``."""
    runs = assets.cache_dir() / "runs"
    runs.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs / f"{stamp}-{os.getpid()}-{len(list(runs.iterdir()))}"
    path.mkdir()
    (path / "name").write_text(name + "\n")
    return path


def boot(
    name: str = "guest",
    machine: Machine | None = None,
    timeout: float = 240.0,
    kernel_version: str = "6.1",
    append: Sequence[str] = (),
    kexec_tools: str = "2.0.25",
) -> Guest:
    """Boot a test-bed guest and wait for its agent (after any other guest has closed).

    :param machine: its shape; its ``acpi_upgrade`` (see :func:`launch`) is by
        default on for the kernels in :data:`NEEDS_ACPI_UPGRADE`.
    :param kernel_version: which of :data:`testbed.assets.KERNELS`.
    :param append: more words for the kernel command line.
    :param kexec_tools: which of :data:`testbed.assets.KEXEC_TOOLS` the guest's
        crash loads run (:attr:`Guest.kexec`).
    """
    kexec = assets.ensure_kexec_tools(kexec_tools)
    kernel = assets.ensure_kernel(kernel_version)
    initramfs = assets.build_initramfs(kernel)
    run_dir = new_run_dir(name)
    share = run_dir / "share"
    share.mkdir()
    machine = machine or Machine()
    if machine.acpi_upgrade is None:
        machine = dataclasses.replace(machine, acpi_upgrade=kernel_version in NEEDS_ACPI_UPGRADE)
    spec = BootSpec(
        machine,
        kernel,
        initramfs,
        append=(
            "console=ttyS0",
            f"kexecd.share={share}",
            f"kexecd.python={sys.executable}",
            f"kexecd.agent={AGENT}",
            *append,
        ),
        devices=(
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs",
            f"local,path={share},mount_tag=share,security_model=none,multidevs=remap",
        ),
        kexec=str(kexec),
    )
    return launch(name, run_dir, spec, timeout)


def read_acpi_tables(guest: Guest, names: Sequence[str] = acpi.TABLES) -> dict[str, bytes]:
    """The ACPI tables the guest's kernel uses (``/sys/firmware/acpi/tables``)."""
    return {
        name: base64.b64decode(guest.run(["base64", f"/sys/firmware/acpi/tables/{name}"]).stdout)
        for name in names
    }


def _acpi_tables(
    name: str, argv: list[str], spec: BootSpec, timeout: float
) -> tuple[str, dict[str, bytes]]:
    """The cache key and raw FADT and MADT of this QEMU shape: from the cache,
    or read from a guest booted once with the shape (and cached)."""
    shape = acpi.shape(argv)
    key = acpi.shape_key(shape)
    raw = acpi.load_cached(key)
    if raw is None:
        # The probe boots with the same options (the devices may name this
        # run's share: the guests are one after the other, never together).
        probe_dir = new_run_dir(f"{name} (reading the ACPI tables)")
        plain = dataclasses.replace(spec.machine, acpi_upgrade=False)
        probe = launch(
            f"{name}-acpi", probe_dir, dataclasses.replace(spec, machine=plain), timeout
        )
        try:
            raw = read_acpi_tables(probe)
        finally:
            probe.close()
        try:
            acpi.store(key, shape, raw)
        except acpi.AcpiError as e:
            raise TestbedError(f"QEMU's ACPI tables cannot be upgraded: {e}") from e
        shutil.rmtree(probe_dir, ignore_errors=True)
    return key, raw


def _check_acpi_upgrade(guest: Guest) -> None:
    # drivers/acpi/tables.c (6.12) logs each table it takes from the initrd.
    dmesg = guest.run(["dmesg"]).stdout
    missing = [t for t in acpi.TABLES if not re.search(rf"Table Upgrade: override \[{t}-", dmesg)]
    if missing:
        raise guest.fail(
            f"the kernel did not take the upgraded ACPI tables {', '.join(missing)} "
            f"(cache {acpi.cache_path(guest.acpi_key or '?')}); is CONFIG_ACPI_TABLE_UPGRADE on?"
        )


def launch(
    name: str, run_dir: Path, spec: BootSpec, timeout: float, argv: list[str] | None = None
) -> Guest:
    """Start QEMU with the test bed's machine shape, its QMP socket and the agent's
    virtio-serial port; wait for the agent (after any other guest has closed).

    With ``spec.machine.acpi_upgrade``, QEMU's FADT and MADT, upgraded so that
    disabled CPUs are hot-pluggable (:mod:`testbed.acpi`), go in front of the
    initrd. The tables of a new machine shape are read from a guest booted
    once without them, then cached. The guest's ``initramfs`` (the crash
    kernel's) stays ``spec.initrd``. Raises if the kernel did not take them.

    :param run_dir: where QEMU's sockets and the logs go (:func:`new_run_dir`).
    :param timeout: how long to wait for the agent, per boot.
    :param argv: the QEMU command line, if not :func:`testbed.qemu.qemu_argv`'s
        (the arm64 guests' of :mod:`testbed.arm64`).
    :raises GuestBootPanic: the kernel panicked or stalled while booting, twice.
    """
    argv = qemu_argv(run_dir, spec) if argv is None else argv
    key = None
    if spec.machine.acpi_upgrade:
        key, raw = _acpi_tables(name, argv, spec, timeout)
        argv[argv.index("-initrd") + 1] = str(acpi.upgraded_initrd(raw, spec.initrd))
    (run_dir / "qemu.argv").write_text(shlex.join(argv) + "\n")
    for attempt in range(1, BOOT_ATTEMPTS):
        try:
            return _start(name, run_dir, spec, argv, timeout, key)
        except GuestBootPanic as e:
            kept = _keep_logs(run_dir, f"boot{attempt}")
            print(
                f"testbed: {name}: the guest's kernel panicked or stalled while booting "
                f"({e.why}); booting it again (logs of that boot: {kept})",
                file=sys.stderr,
            )
    return _start(name, run_dir, spec, argv, timeout, key)


def _resume(qmp: QMP, agent: Agent, timeout: float) -> None:
    """Run a restored guest (:mod:`testbed.saved`): it was saved stopped, so
    wait until QEMU has read its state, continue it, and ask its agent (which
    said ready when it was saved) for an answer."""
    deadline = time.monotonic() + timeout
    if (status := qmp.wait_migration(timeout)) != "completed":
        raise agent.fail(f"restoring the saved state: migration {status}")
    qmp.execute("cont")
    agent.request({"op": "ping"}, max(1.0, deadline - time.monotonic()))


def _keep_logs(run_dir: Path, tag: str) -> Path:
    """Move a failed boot's console, QMP and crash logs aside as ``STEM.TAG.EXT``;
    return where the console went."""
    kept = run_dir / f"console.{tag}.log"
    for log in ("console.log", "qmp.log", "ttyS1.out"):
        # An arm64 guest's ttyS1.out is a link to its console.log: it stays.
        if (run_dir / log).exists() and not (run_dir / log).is_symlink():
            stem, _, ext = log.partition(".")
            (run_dir / log).rename(run_dir / f"{stem}.{tag}.{ext}")
    return kept


def _start(
    name: str, run_dir: Path, spec: BootSpec, argv: list[str], timeout: float, key: str | None
) -> Guest:
    """One try of :func:`launch`: run QEMU, wait for the agent's first message."""
    guest_lock.acquire(GUEST_LOCK_WAIT)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=(run_dir / "qemu.out").open("wb"),
            stderr=subprocess.STDOUT,
        )
    except BaseException:
        guest_lock.release()
        raise
    qmp: QMP | None = None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent = Agent(run_dir, proc, sock)
    try:
        qmp = QMP(run_dir / "qmp.sock", run_dir / "qmp.log")
        sock.connect(str(run_dir / "agent.sock"))
        guest = Guest(name, spec, agent, qmp, acpi_key=key, locked=True)
        if "-incoming" in argv:
            _resume(qmp, agent, timeout)
        else:
            ready = _first_message(agent, run_dir, time.monotonic() + timeout)
            if not ready.get("ready"):
                raise agent.fail(f"unexpected first message from the agent: {ready}")
        guest.boot_seconds = time.monotonic() - start
        if key is not None:
            _check_acpi_upgrade(guest)
        return guest
    except BaseException as e:
        proc.kill()
        proc.wait()
        guest_lock.release()
        sock.close()
        if qmp:
            qmp.close()
        if isinstance(e, TestbedError):
            why = boot_panic(run_dir / "console.log")
            if why is not None:
                raise GuestBootPanic(str(e), why, run_dir) from e
            raise
        raise TestbedError(f"booting the guest failed: {e}; logs in {run_dir}") from e
