# SPDX-License-Identifier: GPL-2.0-or-later
"""Saved guest states: boot a guest once, let it settle, save it; restore it later
instead of booting again.

A saved state is a directory: ``vm.state`` (QEMU's migration stream, written
by ``migrate`` to ``exec:cat``) and ``disk.img`` (the guest's disk as it was
when the guest stopped). A restore copies the disk into a new run directory,
starts QEMU with the same machine and devices and ``-incoming``, and asks the
guest's agent, which said ready long ago, for an answer. The run directory's
paths (sockets, logs, the disk) may differ from the saved guest's; what the
guest sees may not (:func:`testbed.qemu.qemu_argv` is the one source of both).

Only guests without a 9p share can be saved: QEMU refuses to migrate a guest
that has one mounted. The Debian hosts (:mod:`testbed.debian_host`) boot
from a disk and qualify.

The guest's clock resumes at the time it was saved: a test that compares
guest time with the host's must not use a restored guest.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import CodeType

from testbed import debian_host
from testbed.boot import launch, new_run_dir
from testbed.debian_host import HostImage
from testbed.guest import Guest
from testbed.qemu import Machine, qemu_argv
from testbed.transport import TestbedError

__all__ = ["STATE", "restore_argv", "restore_host", "save", "settled_host"]

STATE = "vm.state"
DISK = "disk.img"
SAVE_TIMEOUT = 300.0
RESTORE_TIMEOUT = 120.0


def save(guest: Guest, where: Path) -> None:
    """Stop ``guest``, save its state and disk into ``where``, and let it run on.

    ``where`` appears whole or not at all (written beside it, then renamed).
    """
    tmp = where.with_name(where.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    qmp = guest.qmp
    qmp.execute("stop")
    try:
        qmp.execute("migrate", uri=f"exec:cat >{tmp / STATE}")
        if (status := qmp.wait_migration(SAVE_TIMEOUT)) != "completed":
            raise guest.fail(f"saving the guest's state: migration {status}")
        # Stopped and migrated: QEMU has flushed the disk and holds it inactive.
        debian_host.copy_disk(guest.run_dir / DISK, tmp / DISK)
    finally:
        qmp.execute("cont")
    shutil.rmtree(where, ignore_errors=True)
    tmp.rename(where)


def restore_argv(argv: list[str], where: Path) -> list[str]:
    """``argv`` (a guest's QEMU command line) made to restore the state saved in ``where``.

    :raises TestbedError: nothing is saved there.
    """
    if not (where / STATE).is_file() or not (where / DISK).is_file():
        raise TestbedError(f"no saved guest state in {where}")
    return [*argv, "-incoming", f"exec:cat {where / STATE}"]


def _key(settle: Callable[[Guest], None], machine: Machine, append: tuple[str, ...]) -> str:
    """What a saved host depends on besides its image: how it was settled (the
    function's code, not where it lives), the machine and the command line."""
    what = repr((settle.__qualname__, _code(settle.__code__), machine, append))
    return hashlib.sha256(what.encode()).hexdigest()[:16]


def _code(code: CodeType) -> tuple[object, ...]:
    """A code object's instructions, constants and names, nested code included
    (whose repr would name its address)."""
    consts = tuple(_code(c) if isinstance(c, CodeType) else c for c in code.co_consts)
    return (code.co_code, consts, code.co_names)


def restore_host(
    image: HostImage, name: str, where: Path, machine: Machine, append: tuple[str, ...]
) -> Guest:
    """The Debian host saved in ``where``, restored into a new run directory."""
    run_dir = new_run_dir(name)
    disk = run_dir / DISK
    debian_host.copy_disk(where / DISK, disk)
    spec = debian_host.host_spec(image, disk, machine, append)
    argv = restore_argv(qemu_argv(run_dir, spec), where)
    guest = launch(name, run_dir, spec, RESTORE_TIMEOUT, argv=argv)
    guest.restored = True
    return guest


def settled_host(
    image: HostImage,
    name: str,
    settle: Callable[[Guest], None],
    append: tuple[str, ...] = (),
    keep: bool = True,
) -> Guest:
    """A Debian host (:mod:`testbed.debian_host`) as ``settle`` leaves it after
    boot (it waits until the host is ready: kdump-tools loaded, say).

    ``guest.ready_seconds`` is how long boot and ``settle`` took (restored: how
    long the restore took). The first call boots it, calls ``settle`` and
    saves it beside the image
    (dropped with it); later calls restore it and call ``settle`` again, which
    finds it ready at once. A state that does not restore (another QEMU, say)
    is dropped and the host booted. ``keep=False``: not saved after a boot
    (no other test settles it so; saving costs 10-20 s), restored if saved.
    """
    machine = image.suite.machine
    where = image.disk.parent / f"saved-{_key(settle, machine, append)}"
    if (where / STATE).is_file():
        try:
            guest = restore_host(image, name, where, machine, append)
        except TestbedError as e:
            print(f"testbed: {name}: not restored from {where} ({e}); booting", file=sys.stderr)
            shutil.rmtree(where, ignore_errors=True)
        else:
            settle(guest)
            guest.ready_seconds = guest.boot_seconds
            return guest
    start = time.monotonic()
    guest = debian_host.boot_host(image, name, machine, append)
    settle(guest)
    guest.ready_seconds = time.monotonic() - start
    if keep:
        save(guest, where)
    return guest
