# SPDX-License-Identifier: GPL-2.0-or-later
"""The daemon's runtime state: ``RUNTIME_DIR/state.json``, typed, versioned, replaced atomically.

:class:`DaemonState` is what the daemon remembers and ``kexecd status``
shows. Its JSON form carries ``"format"``; a file of another format, or one
that does not hold the fields with their types, is a :class:`StateFileError`
that names the file, never a ``KeyError``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from kexecd.errors import StateFileError, StateFormatError
from kexecd.files import ensure_dir, read_own_optional, timestamp, write_atomic

__all__ = [
    "FORMAT",
    "SOCKET",
    "STATE_FILE",
    "DaemonState",
    "ErrorRecord",
    "EventRecord",
    "LoadTiming",
    "UpdateRecord",
    "read_state",
    "write_state",
]

STATE_FILE = "state.json"
SOCKET = "kexecd.sock"
# 1: the unversioned dict of kexecd 0.1; 2: this layout, with "format"; 3:
# with the facts of the last plan (crash_loaded to reconciled).
FORMAT = 4
HISTORY = 100  # loads remembered
MAX_SIZE = 4 << 20


@dataclass
class EventRecord:
    """The last uevent the daemon saw."""

    time: str
    action: str
    subsystem: str
    devpath: str
    seqnum: int | None


@dataclass
class UpdateRecord:
    """One reconcile: why it ran, what it decided, what it cost.

    :ivar action: a :class:`kexecd.image.plan.Action` value, or ``"failed"``.
    :ivar latency_ms: from the first event of the burst to done, if events
        caused it.
    """

    time: str
    why: str
    action: str = ""
    reason: str = ""
    work_ms: float = 0.0
    changes: list[str] = field(default_factory=list)
    latency_ms: float | None = None
    error: str | None = None


@dataclass
class ErrorRecord:
    """The last failure, for people."""

    time: str
    message: str


@dataclass
class LoadTiming:
    """CLOCK_MONOTONIC times of one load, for benchmarks that line them up with events."""

    action: str
    first_event_mono: float | None
    start_mono: float
    done_mono: float
    load_ms: float | None


@dataclass
class DaemonState:
    """What the daemon remembers, and ``state.json`` holds.

    :ivar decision: the last decision's reason, for people.
    :ivar in_sync: whether the last reconcile left the crash kernel current
        (``None``: no crash kernel is loaded, so there is nothing to be in sync).
    :ivar retry_in_s: after a failure, how long until the next try.
    :ivar stopped: when the daemon stopped; ``None`` while it runs.

    The facts of the last plan (:class:`kexecd.image.plan.Plan`), recorded
    when it was made and again once it was carried out, so that a failed
    load leaves what is loaded and what the system has side by side
    (``None``: not known, or not visible, as in a ``kexec_file_load`` image):

    :ivar cpus: CPUs the system has now that a header needs a note for.
    :ivar ranges: RAM ranges the system has now.
    :ivar ram: bytes of RAM the system has now (in those ranges).
    :ivar header_cpus: CPUs the loaded header has a note for.
    :ivar header_ram: bytes of RAM the loaded header covers.
    :ivar phnum: program headers in the loaded header.
    :ivar capacity: program headers its segment can hold.
    :ivar crash_loaded: a crash kernel is loaded.
    :ivar kernel_updates: the kernel's own crash hotplug is active.
    :ivar syscall: ``kexec_load`` or ``kexec_file_load``: how the image was loaded.
    :ivar reconciled: when a reconcile (or adoption) last succeeded.
    :ivar kernel_drops: updates of the header it keeps that the kernel logged
        it dropped (:class:`kexecd.system.kmsg.Drop`), by kind: ``lock-busy``,
        ``too-large``, ``not-built``.
    :ivar kernel_drop: the kind of the last one (``None``: none yet).
    """

    pid: int = field(default_factory=os.getpid)
    started: str = field(default_factory=timestamp)
    source: str = "udev"
    events: int = 0
    reconciles: int = 0
    reloads: int = 0
    full_reloads: int = 0
    moves: int = 0
    skipped: int = 0
    failed: int = 0
    adoptions: int = 0
    adopted_from: str | None = None
    last_event: EventRecord | None = None
    last_update: UpdateRecord | None = None
    last_error: ErrorRecord | None = None
    decision: str | None = None
    in_sync: bool | None = None
    retry_in_s: float | None = None
    stopped: str | None = None
    last_event_mono: float | None = None
    cpus: int | None = None
    ranges: int | None = None
    history: list[LoadTiming] = field(default_factory=list)
    ram: int | None = None
    header_cpus: int | None = None
    header_ram: int | None = None
    phnum: int | None = None
    capacity: int | None = None
    crash_loaded: bool | None = None
    kernel_updates: bool | None = None
    syscall: str | None = None
    reconciled: str | None = None
    kernel_drops: dict[str, int] = field(default_factory=dict)
    kernel_drop: str | None = None

    def remember(self, timing: LoadTiming) -> None:
        """Add a load to the history, keeping the last :data:`HISTORY`."""
        self.history = [*self.history[-(HISTORY - 1) :], timing]

    def to_json(self) -> dict[str, Any]:
        """The JSON form, with ``"format"``."""
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: object, name: str = STATE_FILE) -> DaemonState:
        """Read the JSON form back.

        :raises StateFormatError: another version's format (an integer
            ``"format"`` other than :data:`FORMAT`).
        :raises StateFileError: no format, a missing field or a wrong type.
        """
        if not isinstance(data, dict):
            raise StateFileError(f"{name}: not a JSON object; {_FIX}")
        other = data.get("format")
        if isinstance(other, int) and not isinstance(other, bool) and other != FORMAT:
            raise StateFormatError(
                f"{name}: format {other}, not {FORMAT}: written by another kexecd version's "
                "daemon (an upgrade or a downgrade); the running daemon rewrites it when it "
                "restarts"
            )
        if other != FORMAT:
            raise StateFileError(
                f"{name}: format {data.get('format', 1)!r}, not {FORMAT} "
                f"(written by another kexecd version); {_FIX}"
            )
        try:
            values = {k: v for k, v in data.items() if k != "format"}
            state = _build(cls, values)
            state.last_event = _optional(EventRecord, values.get("last_event"))
            state.last_update = _optional(UpdateRecord, values.get("last_update"))
            state.last_error = _optional(ErrorRecord, values.get("last_error"))
            state.history = [_build(LoadTiming, h) for h in _list(values.get("history"))]
        except (TypeError, ValueError) as e:
            raise StateFileError(f"{name}: malformed ({e}); {_FIX}") from None
        return state


_FIX = "restart kexecd (systemctl restart kexecd) to rewrite it"
T = TypeVar("T")
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "str": (str,),
    "float": (int, float),
    "bool": (bool,),
    "list[str]": (list,),
    "dict[str, int]": (dict,),
}


def _build(cls: type[T], values: object) -> T:
    # Plain fields checked by type; nested records are filled in by the caller.
    if not isinstance(values, dict):
        raise TypeError(f"{cls.__name__} is not an object")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    items: dict[str, Any] = values
    for name, value in items.items():
        f = known.get(name)
        if f is None:
            raise ValueError(f"unknown field {name!r}")
        kind = str(f.type).removesuffix(" | None")
        if value is None and str(f.type).endswith(" | None"):
            kwargs[name] = None
        elif kind in _TYPES:
            if not isinstance(value, _TYPES[kind]) or (isinstance(value, bool) and kind != "bool"):
                raise TypeError(f"{name} must be {kind}, not {value!r}")
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise TypeError(f"{name} must be a list of strings")
            if isinstance(value, dict) and not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value.values()
            ):
                raise TypeError(f"{name} must map names to counts")
            kwargs[name] = value
        else:
            kwargs[name] = None  # a nested record or list, filled in later
    return cls(**kwargs)


def _optional(cls: type[T], value: object) -> T | None:
    return None if value is None else _build(cls, value)


def _list(value: object) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError("history is not a list")
    return value


def write_state(runtime_dir: Path, state: DaemonState) -> None:
    """Write ``state.json`` so that readers see the old or the new file, whole."""
    ensure_dir(runtime_dir)
    text = json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
    # /run is tmpfs: nothing outlives a reboot, so no fsync.
    write_atomic(runtime_dir / STATE_FILE, text.encode(), durable=False)


def read_state(runtime_dir: Path) -> DaemonState | None:
    """The daemon's last state, or ``None`` if it never wrote one.

    :raises StateFormatError: another version's state (:meth:`DaemonState.from_json`).
    :raises StateFileError: the file is unreadable, not JSON, or malformed.
    """
    path = runtime_dir / STATE_FILE
    got = read_own_optional(path, MAX_SIZE, StateFileError, f"remove it and {_FIX}")
    if got is None:
        return None
    data = got[0]
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise StateFileError(f"{path}: unreadable ({e}); {_FIX}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise StateFileError(f"{path}: not JSON ({e}); {_FIX}") from None
    return DaemonState.from_json(data, str(path))
