# SPDX-License-Identifier: GPL-2.0-or-later
"""What the plan says of the loaded image, as ``kexecd status`` shows it.

A :class:`Report` is the part of ``kexecd status`` that needs the engine: the
image as the snapshot describes it, and the verdict
(:func:`kexecd.service.verdict.judge`) on a plan made now.
:func:`kexecd.service.assess.assess` makes one, in ``kexecd status`` itself
or in the running daemon, whose engine is loaded already: :func:`ask` gets
it over the control socket (``{"cmd": "report"}``), so that a short
``kexecd status`` imports neither the C core nor the refresh engine. Both
ways it is the same function on the same files, read when asked: no answer
is kept anywhere, so none can be out of date.

This module imports nothing heavy: ``kexecd status`` imports it at start.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Report", "Settings", "ask", "describe_image"]

# How long ``kexecd status`` waits for the daemon's answer: as long as it
# waits for the state directory's lock, which a refresh in progress holds.
ASK_TIMEOUT = 10.0
MAX_ANSWER = 1 << 20


@dataclass(frozen=True)
class Settings:
    """What an answer depends on besides the system: the daemon answers for
    its own, and ``kexecd status`` takes the answer only if they are its own."""

    state_dir: str
    root: str
    acpi_no_memhotplug: bool

    @classmethod
    def of(cls, state_dir: Path, root: Path | str, acpi_no_memhotplug: bool) -> Settings:
        """The settings with both directories resolved (symlinks, ``..``)."""
        return cls(os.path.realpath(state_dir), os.path.realpath(root), acpi_no_memhotplug)


@dataclass(frozen=True)
class Report:
    """The verdict on a plan made now, and the image as ``status`` shows it.

    :ivar in_sync: :attr:`kexecd.service.verdict.Verdict.in_sync`.
    :ivar exit_code: the verdict's exit code.
    :ivar headline: the verdict's headline.
    :ivar hazards: the verdict's hazards (those of the udev rules are not here).
    :ivar differences: the verdict's differences.
    :ivar image: the ``image`` of ``status --json``.
    :ivar header: the ``header`` of ``status --json`` (empty when not visible).
    :ivar acpi_no_memhotplug: where ``acpi_no_memhotplug`` stands, if known.
    :ivar error: why no plan could be made (the verdict is then a failure).
    """

    in_sync: bool | None
    exit_code: int
    headline: str
    hazards: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    image: dict[str, Any] = field(default_factory=dict)
    header: dict[str, int | None] = field(default_factory=dict)
    acpi_no_memhotplug: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form the daemon sends."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> Report:
        """Read the daemon's answer back, every field checked.

        :raises ValueError: not a report of this version.
        """
        if not isinstance(data, dict) or set(data) != {f for f in cls.__dataclass_fields__}:
            raise ValueError("not a report")
        in_sync, code = data["in_sync"], data["exit_code"]
        if not (in_sync is None or isinstance(in_sync, bool)):
            raise ValueError("in_sync")
        if not isinstance(code, int) or isinstance(code, bool) or code not in (0, 1, 2, 3):
            raise ValueError("exit_code")
        header = data["header"]
        if not isinstance(header, dict) or not all(
            v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in header.values()
        ):
            raise ValueError("header")
        image = data["image"]
        if not isinstance(image, dict) or not all(_image_value(v) for v in image.values()):
            raise ValueError("image")
        return cls(
            in_sync,
            code,
            _str(data["headline"]),
            _strings(data["hazards"]),
            _strings(data["differences"]),
            image,
            header,
            _optional_str(data["acpi_no_memhotplug"]),
            _optional_str(data["error"]),
        )


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def _optional_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _strings(value: object) -> list[str]:
    if not isinstance(value, list):
        raise ValueError("not a list")
    return [_str(v) for v in value]


def _image_value(value: object) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, str) for v in value)
    return value is None or isinstance(value, str)


def describe_image(argv: Sequence[str]) -> dict[str, Any]:
    """Kernel, initrd and command line from a ``kexec -p`` command."""
    image: dict[str, Any] = {
        "command": list(argv),
        "kernel": None,
        "initrd": None,
        "cmdline": None,
    }
    args = list(argv[1:])
    i = 0
    while i < len(args):
        a = args[i]
        for opt, key in (
            ("--initrd", "initrd"),
            ("--ramdisk", "initrd"),
            ("--append", "cmdline"),
            ("--command-line", "cmdline"),
        ):
            if a.startswith(opt + "="):
                image[key] = a.split("=", 1)[1]
                break
            if a == opt and i + 1 < len(args):
                image[key] = args[i + 1]
                i += 1
                break
        else:
            if not a.startswith("-") and image["kernel"] is None:
                image["kernel"] = a
        i += 1
    return image


def answer(report: Report, settings: Settings) -> dict[str, object]:
    """The daemon's reply to ``{"cmd": "report"}``."""
    return {"ok": True, "report": report.to_json(), "settings": asdict(settings)}


def ask(path: Path, settings: Settings, timeout: float = ASK_TIMEOUT) -> Report | None:
    """The running daemon's report, made now, for ``settings``; ``None`` when
    there is no daemon on ``path``, it does not answer in ``timeout`` seconds,
    it could not make one (it says why, and ``status`` finds out the same), it
    answers for other settings, or its answer is not a report of this version
    (another version's daemon, during an upgrade)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(b'{"cmd": "report"}\n')
            data = _read_line(s)
    except OSError:  # no socket, refused (a daemon gone), timed out
        return None
    with contextlib.suppress(ValueError, RecursionError):
        reply = json.loads(data)
        if (
            isinstance(reply, dict)
            and reply.get("ok") is True
            and reply.get("settings") == asdict(settings)
        ):
            return Report.from_json(reply.get("report"))
    return None


def _read_line(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) <= MAX_ANSWER:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data
