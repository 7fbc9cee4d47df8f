# SPDX-License-Identifier: GPL-2.0-or-later
"""Loading: run kexec-tools under the tracer once, and keep what it loaded.

:func:`load` runs a ``kexec -p`` command (or a wrapper of it) under the
tracer and keeps its snapshot; from then on the
:class:`~kexecd.image.refresher.Refresher` reloads only the header.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from kexecd import core
from kexecd.errors import LoadError, TraceError
from kexecd.image.deps import Backend, Deps, KernelBackend, Tracer
from kexecd.image.manifest import Source
from kexecd.image.snapshot import Snapshot
from kexecd.image.store import Origin, Store
from kexecd.loads import KexecCall
from kexecd.system.kernel import read_kexec_state
from kexecd.system.root import Root

__all__ = [
    "Backend",
    "KernelBackend",
    "Tracer",
    "capture",
    "is_crash_load",
    "load",
    "load_locked",
]


def is_crash_load(argv: Sequence[str]) -> bool:
    """Whether a command may load a crash kernel, judged before it runs.

    Only a bare kexec-tools command is judged (it must have ``-p`` or
    ``--load-panic``; anything else would load a kernel for kexec reboot).
    A wrapper (a shell, ``kdump-config``, ``kdumpctl``) is judged after it
    ran, from the flags of the loads it made.
    """
    if not argv or os.path.basename(argv[0]) != "kexec":
        return True
    for arg in argv[1:]:
        if arg == "--":
            break
        if arg in ("-p", "--load-panic"):
            return True
    return False


def load(
    argv: Sequence[str],
    state_dir: Path,
    *,
    root: Root | None = None,
    tracer: Tracer = core.trace_kexec,
    source: Source | None = None,
) -> Snapshot:
    """Run a command that loads a crash kernel, capture its load, keep the snapshot.

    The command's whole process tree is traced; the last crash load it makes
    (``KEXEC_ON_CRASH`` / ``KEXEC_FILE_ON_CRASH`` in the call's flags) is
    what is kept.

    :param source: the distro's record of the command, when adopting.
    :raises TraceError: the command is not a crash-kernel load, failed, or
        loaded no crash kernel.
    :raises LoadError: it succeeded but no crash kernel is loaded.
    """
    deps = Deps(root=root or Root(), tracer=tracer)
    return capture(Store(state_dir), deps, Origin(argv, source))


def capture(store: Store, deps: Deps, origin: Origin) -> Snapshot:
    """:func:`load` with the state directory, collaborators and origin given.

    :raises TraceError, LoadError: as :func:`load`.
    """
    argv = origin.argv
    if not argv:
        raise TraceError("no kexec command given: kexecd load -- kexec -p KERNEL ...")
    if not is_crash_load(argv):
        raise TraceError(
            f"{' '.join(argv)}: not a crash-kernel load; kexecd keeps kdump current, so the "
            "command must load with -p/--load-panic"
        )
    store.ready()
    with store.locked():
        return load_locked(store, deps, origin)


def load_locked(store: Store, deps: Deps, origin: Origin) -> Snapshot:
    """:func:`load`, for a caller that holds the state directory's lock.

    :raises TraceError, LoadError: as :func:`load`.
    """
    who = origin.source.command[:200] if origin.source else origin.argv[0]
    cap = deps.tracer(origin.argv)
    if cap.exit_code != 0:
        raise TraceError(f"{who} exited {cap.exit_code}; nothing was recorded")
    if cap.crash_loads == 0 or cap.call is KexecCall.NONE:
        raise TraceError(
            f"{who} made no kexec_load or kexec_file_load call that loads a crash kernel "
            f"({cap.unloads} unloads, {cap.reboot_loads} loads for kexec reboot); give a "
            "command that loads one (kexec -p, kdump-config load)"
        )
    if cap.result == -errno.EINPROGRESS:
        raise TraceError(f"{who} died inside its crash load; nothing was recorded")
    if cap.result != 0:
        raise TraceError(f"{who}: the kernel refused the load (result {cap.result})")
    snap = store.create(cap, origin)
    if not read_kexec_state(deps.root).crash_loaded:
        raise LoadError(
            f"{who} succeeded but /sys/kernel/kexec_crash_loaded is not 1; "
            f"the snapshot is kept in {snap.path}"
        )
    return snap
