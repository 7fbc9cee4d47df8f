# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd status``: is a crash kernel loaded, and does its header match the system?

Works without the daemon, from the snapshot and the system; adds what the
daemon recorded in ``state.json`` when there is one. Exit codes: 0 loaded and
current, 1 stale, 2 error, 3 no crash kernel loaded.

``--json`` is an interface for scripts: its ``"schema"`` field is
:data:`SCHEMA`, and ``docs/status.schema.json`` (JSON Schema, draft 2020-12)
describes every field of this version's output.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kexecd.errors import KexecdError, LockBusy, StateFormatError
from kexecd.model import human
from kexecd.service import udevmask, verdict
from kexecd.service.config import Config, load_config
from kexecd.service.report import Report, describe_image
from kexecd.service.statefile import DaemonState, read_state
from kexecd.service.verdict import EXIT_CURRENT, EXIT_ERROR, EXIT_NOT_LOADED, EXIT_STALE
from kexecd.system.kexecstate import KexecState, read_kexec_state
from kexecd.system.root import Root

__all__ = [
    "EXIT_CURRENT",
    "EXIT_ERROR",
    "EXIT_NOT_LOADED",
    "EXIT_STALE",
    "SCHEMA",
    "Status",
    "describe_image",
    "gather",
    "serve",
]

#: The version of ``status --json``'s form. It goes up when a field is removed
#: or renamed, or changes its type or meaning; a field may be added without
#: it (readers ignore fields they do not know). docs/status.schema.json
#: describes this version, and the daemon's ``state.json`` inside it (whose
#: own ``"format"`` is :data:`kexecd.service.statefile.FORMAT`).
SCHEMA = 1
# How long status waits for a writer (load, refresh, adopt) to finish.
LOCK_WAIT = 10.0


@dataclass
class Status:
    """Everything ``kexecd status`` reports."""

    exit_code: int
    verdict: str
    loaded: bool
    image: dict[str, Any] = field(default_factory=dict)
    current: bool | None = None
    differences: list[str] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)
    kernel_support: str = ""
    daemon: DaemonState | None = None
    hazards: list[str] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    error: str | None = None
    # Why the daemon's state.json was not read: another version's format
    # (kexecd.errors.StateFormatError), as during a package upgrade.
    daemon_note: str | None = None
    # Where acpi_no_memhotplug stands (kexecd.image.cmdline.Amendment.no_memhotplug).
    acpi_no_memhotplug: str | None = None


def _support(kstate: KexecState) -> str:
    if kstate.cpu_crash_hotplug is None and kstate.memory_crash_hotplug is None:
        return "none: this kernel has no crash_hotplug (before Linux 6.6)"
    if not kstate.kernel_updates:
        return "available, not active for this image (crash_hotplug reads 0)"
    return "the kernel updates the header itself (crash_hotplug reads 1)"


def gather(
    state_dir: Path,
    root: Root,
    runtime_dir: Path,
    *,
    acpi_no_memhotplug: bool = True,
    lock_wait: float | None = LOCK_WAIT,
) -> Status:
    """Look at the system, the snapshot and the daemon's state; never raises
    but :class:`~kexecd.errors.LockBusy` when ``lock_wait`` is ``None``.

    :param acpi_no_memhotplug: the ``crash_acpi_no_memhotplug`` setting.
    :param lock_wait: how long to wait for a writer (load, refresh, adopt) to
        finish; ``None``: not at all, and raise (the daemon, whose loop must
        not wait: the command line then makes the status itself).
    """
    note = None
    try:
        kstate = read_kexec_state(root)
        try:
            daemon = read_state(runtime_dir)
        except StateFormatError as e:
            # The daemon of another version wrote it (a package upgrade in
            # progress): the verdict does not depend on it.
            daemon, note = None, str(e)
    except KexecdError as e:
        v = verdict.failure(str(e))
        return Status(v.exit_code, v.headline, False, error=str(e))
    support = _support(kstate)
    if not kstate.crash_loaded:
        v = verdict.not_loaded()
        return Status(
            v.exit_code, v.headline, False, kernel_support=support, daemon=daemon, daemon_note=note
        )
    st = Status(EXIT_CURRENT, "", True, kernel_support=support, daemon=daemon, daemon_note=note)
    st.masked = udevmask.masked(root, runtime_dir)
    st.hazards += udevmask.hazards(root)
    try:
        report = _assess(state_dir, root, kstate, acpi_no_memhotplug, lock_wait)
    except KexecdError as e:
        if lock_wait is None and isinstance(e, LockBusy):
            raise
        v = verdict.failure(str(e))
        st.exit_code, st.verdict, st.error = v.exit_code, v.headline, str(e)
        return st
    _apply(st, report)
    return st


def _assess(
    state_dir: Path, root: Root, kstate: KexecState, acpi_no_memhotplug: bool, wait: float | None
) -> Report:
    # The engine, imported only when a crash kernel is loaded.
    from kexecd.service.assess import assess

    return assess(state_dir, root, kstate, acpi_no_memhotplug=acpi_no_memhotplug, wait=wait or 0.0)


def _apply(st: Status, r: Report) -> None:
    # The report's part of the status, whichever process made it.
    st.image, st.acpi_no_memhotplug = r.image, r.acpi_no_memhotplug
    st.current, st.exit_code, st.verdict = r.in_sync, r.exit_code, r.headline
    st.hazards += r.hazards
    st.differences = list(r.differences)
    st.header = r.header
    st.error = r.error


def serve(own: Config, request: dict[str, object]) -> dict[str, object]:
    """The daemon's answer to ``{"cmd": "report"}`` from :mod:`kexecd.cli.quick`:
    the status that command would print, made by :func:`gather` here, where
    the engine is loaded already.

    The request carries the command's ``--config`` and options as given
    (absolute paths, or ``null``) and ``json``; the settings they make must
    name this daemon's state, root and runtime directories, absolute: the
    same files, read now. Otherwise, or when a writer holds the state
    directory's lock, the answer is an error, and the command makes the
    status itself.
    """
    paths = {k: request.get(k) for k in ("config", "state_dir", "root", "runtime_dir")}
    as_json = request.get("json")
    if not isinstance(paths["config"], str) or not isinstance(as_json, bool):
        return {"error": "a report request names its config and json"}
    if not all(v is None or (isinstance(v, str) and os.path.isabs(v)) for v in paths.values()):
        return {"error": "a report request's paths are absolute, or null"}
    options = {k: None if v is None else Path(str(v)) for k, v in paths.items() if k != "config"}
    try:
        cfg = load_config(Path(str(paths["config"])), **options)
    except KexecdError as e:
        return {"error": str(e)}
    if _where(cfg) is None or _where(cfg) != _where(own):
        return {"error": "not this daemon's directories: the command reads them itself"}
    try:
        st = gather(
            cfg.state_dir,
            Root(cfg.root),
            cfg.runtime_dir,
            acpi_no_memhotplug=cfg.crash_acpi_no_memhotplug,
            lock_wait=None,
        )
    except LockBusy as e:
        return {"error": str(e)}
    return {
        "ok": True,
        "exit_code": st.exit_code,
        "output": to_json(st) if as_json else render(st),
    }


def _where(cfg: Config) -> tuple[str, ...] | None:
    # The directories a status reads, resolved; None if one is relative
    # (relative to the daemon's directory, not the command's).
    dirs = (str(cfg.state_dir), str(cfg.root), str(cfg.runtime_dir))
    if not all(os.path.isabs(d) for d in dirs):
        return None
    return tuple(os.path.realpath(d) for d in dirs)


def daemon_running(state: DaemonState) -> bool:
    """Whether the daemon that wrote ``state`` still runs (not stopped, its pid alive)."""
    if state.stopped:
        return False
    return Path(f"/proc/{state.pid}").exists()


_NO_MEMHOTPLUG = {
    "appended": (
        "appended",
        "acpi_no_memhotplug, by kexecd: this host can hot-add memory "
        "(crash_acpi_no_memhotplug = false turns it off)",
    ),
    "to-append": (
        "to append",
        "acpi_no_memhotplug: this host can hot-add memory; the next refresh (or the "
        "daemon) appends it",
    ),
}


def render(st: Status) -> str:
    """The short aligned report a person reads at a glance."""
    rows: list[tuple[str, str]] = [("crash kernel", st.verdict)]
    rows += _image_rows(st)
    if st.header:
        h = st.header
        rows.append(
            (
                "header",
                f"{h['cpus']} CPUs, {h['ram_ranges']} RAM ranges ({human(h['ram'])}); "
                f"{h['phnum']} of {h['capacity']} program headers, at {h['address']:#x}",
            )
        )
    for diff in st.differences:
        why = "  (missing from the loaded header)" if diff.startswith("+") else "  (gone)"
        rows.append(("differs", diff + why))
    if st.daemon:
        rows += _daemon_rows(st.daemon)
    elif st.daemon_note:
        rows.append(("daemon", f"state unread: {st.daemon_note}"))
    else:
        rows.append(("daemon", "not running (no state.json)"))
    rows.append(("kernel support", st.kernel_support))
    rows.append(
        (
            "udev mask",
            ", ".join(st.masked) + " (the distro's per-event reload)" if st.masked else "none",
        )
    )
    rows.append(("hazards", "none" if not st.hazards else st.hazards[0]))
    rows += [("", h) for h in st.hazards[1:]]
    return "\n".join(f"{k:<15}{v}" for k, v in rows)


def _image_rows(st: Status) -> list[tuple[str, str]]:
    if not st.image:
        return []
    img = st.image
    rows = [
        ("image", f"{img.get('kernel')}  initrd {img.get('initrd')}  ({img.get('syscall')})"),
        ("command line", str(img.get("cmdline"))),
    ]
    note = _NO_MEMHOTPLUG.get(st.acpi_no_memhotplug or "")
    if note:
        rows.append(note)
    rows.append(("loaded", f"{img.get('loaded')} by {img.get('how')}"))
    if img.get("adopted_from"):
        rows.append(("adopted from", str(img["adopted_from"])))
    if img.get("header_rules"):
        rows.append(("built by", str(img["header_rules"])))
    return rows


def _daemon_rows(d: DaemonState) -> list[tuple[str, str]]:
    moved = f" ({d.moves} moved the header)" if d.moves else ""
    rows = [
        (
            "daemon" if daemon_running(d) else "daemon (gone)",
            f"pid {d.pid} since {d.started}: {d.events} events, {d.reloads} reloads{moved}, "
            f"{d.full_reloads} full, {d.skipped} skipped, {d.failed} failed",
        )
    ]
    if d.last_event:
        e = d.last_event
        rows.append(("last event", f"{e.time} {e.action} {e.devpath}"))
    if d.last_update:
        u = d.last_update
        lat = "" if u.latency_ms is None else f", {u.latency_ms:.0f} ms after the first event"
        rows.append(("last update", f"{u.time} {u.action} in {u.work_ms:.0f} ms{lat}"))
    if d.kernel_drops:
        counts = ", ".join(f"{k} {n}" for k, n in sorted(d.kernel_drops.items()))
        rows.append(("kernel dropped", f"{counts} (the last: {d.kernel_drop})"))
    if d.last_error:
        rows.append(("last error", f"{d.last_error.time} {d.last_error.message}"))
    if d.retry_in_s and not d.stopped:
        rows.append(("retry", f"in {d.retry_in_s:.0f} s after the failure (backing off)"))
    return rows


def to_json(st: Status) -> str:
    """The ``--json`` form (:data:`SCHEMA`; docs/status.schema.json)."""
    d = {"schema": SCHEMA, **asdict(st)}
    d["daemon"] = st.daemon.to_json() if st.daemon else None
    return json.dumps(d, indent=2)
