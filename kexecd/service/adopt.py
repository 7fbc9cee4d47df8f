# SPDX-License-Identifier: GPL-2.0-or-later
"""Taking over the crash kernel a distro loaded, with nothing changed in the distro's files.

kexecd cannot read a loaded image back out of the kernel, and never trusts a
header it did not load itself. So adopting means running the distro's own
command again under the tracer, in pass mode: kexec-tools loads over the
image in place (``kexec_load`` with ``KEXEC_ON_CRASH`` replaces the crash
image; nothing is unloaded first), with a header built from the system as it
is now, and the snapshot records exactly those segments. Then the plan is
made at once, as after any load.

Where the command comes from:

* Debian and Ubuntu: kdump-tools' ``$KDUMP_COREDIR/kexec_cmd``
  (:mod:`kexecd.system.kdumptools`), replayed as ``kdump-config`` ran it;
* any distro: a command given on the command line (``kdumpctl start``, ...).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kexecd.errors import AdoptError, KexecdError
from kexecd.image.loader import capture
from kexecd.image.refresher import Refresher, RefreshResult
from kexecd.image.snapshot import Snapshot, Source
from kexecd.image.store import Origin, Store
from kexecd.system.kdumptools import default_kexec_cmd, read_kexec_cmd, replay_argv
from kexecd.system.kernel import read_kexec_state, read_lockdown
from kexecd.system.root import Root

__all__ = ["AdoptResult", "adopt", "needs_adoption"]

LOCKDOWN_NOTE = (
    "the kernel is locked down ({mode}): it refuses kexec_load, so no header can be "
    "reloaded from userspace; only the kernel's own crash hotplug (Linux 6.6+, "
    "crash_hotplug reads 1) keeps such an image current"
)


@dataclass
class AdoptResult:
    """What an adoption did: the snapshot it took and the refresh right after."""

    snapshot: Snapshot
    refresh: RefreshResult
    load_seconds: float
    seconds: float
    notes: list[str]


def resolve_kexec_cmd(root: Root, kexec_cmd: Path | None) -> Path | None:
    """The distro's command file: the one given, else kdump-tools' if it is installed."""
    return kexec_cmd if kexec_cmd is not None else default_kexec_cmd(root)


def needs_adoption(state_dir: Path, kexec_cmd: Path) -> str | None:
    """Why the crash kernel in the kernel is not the snapshot's, or ``None``.

    The distro rewrites its command file on every load, so a file that is
    not the one the snapshot was taken from means the distro loaded since.
    """
    try:
        st = kexec_cmd.stat()
    except OSError:
        return None  # the distro has not loaded (or is not installed)
    try:
        snap = Store(state_dir).open()
    except KexecdError as e:
        return f"no usable snapshot ({e})"
    src = snap.source
    if src is None or src.path != str(kexec_cmd):
        return f"the snapshot was not taken from {kexec_cmd}"
    if tuple(src.signature) != (st.st_ino, st.st_size, st.st_mtime_ns):
        return f"{kexec_cmd} changed: the distro loaded the crash kernel again"
    return None


def adopt(
    refresher: Refresher, kexec_cmd: Path | None = None, command: Sequence[str] | None = None
) -> AdoptResult:
    """Take over the loaded crash kernel: replay its command traced, then reconcile.

    The reconcile amends the crash kernel's command line too (kdump-tools'
    default lacks ``acpi_no_memhotplug``): :func:`kexecd.image.plan.make`.

    :param refresher: the state directory, collaborators and settings.
    :param kexec_cmd: the distro's command file (default: kdump-tools').
    :param command: a command to replay instead of reading a file.
    :raises AdoptError: nothing to adopt, or the command file is unfit.
    :raises TraceError: the replay failed or loaded no crash kernel; the
        kernel keeps whatever it had.
    """
    start = time.monotonic()
    root = refresher.deps.root
    notes: list[str] = []
    if not read_kexec_state(root).crash_loaded:
        raise AdoptError(
            "no crash kernel is loaded, so there is nothing to adopt; load kdump first "
            "(kdump-config load, kdumpctl start) or use 'kexecd load -- kexec -p ...'"
        )
    source: Source | None = None
    file_load = False
    if command:
        argv = list(command)
    else:
        path = resolve_kexec_cmd(root, kexec_cmd)
        if path is None:
            raise AdoptError(
                f"{root.path('etc/default/kdump-tools')}: missing, so kdump-tools is not "
                "installed; give the command file (--kexec-cmd FILE) or the command "
                "(kexecd adopt -- COMMAND...)"
            )
        cmd = read_kexec_cmd(path)
        argv, file_load = replay_argv(cmd), cmd.file_load
        source = Source(str(cmd.path), cmd.line, cmd.sha256, cmd.signature)
    mode = read_lockdown(root)
    if mode is not None:
        if not file_load and command is None:
            raise AdoptError(LOCKDOWN_NOTE.format(mode=mode) + "; nothing was adopted")
        notes.append(LOCKDOWN_NOTE.format(mode=mode))
    load_start = time.monotonic()
    snap = capture(refresher.store, refresher.deps, Origin(argv, source))
    load_seconds = time.monotonic() - load_start
    if snap.file_load and mode is None:
        notes.append(
            "loaded with kexec_file_load: kexecd stands aside where the kernel updates the "
            "header (crash_hotplug reads 1), else it reloads the whole image on change"
        )
    refresher.forget()
    refreshed = refresher.refresh()
    return AdoptResult(snap, refreshed, load_seconds, time.monotonic() - start, notes)
