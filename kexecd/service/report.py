# SPDX-License-Identifier: GPL-2.0-or-later
"""What the plan says of the loaded image, as ``kexecd status`` shows it.

A :class:`Report` is the part of ``kexecd status`` that needs the engine: the
image as the snapshot describes it, and the verdict
(:func:`kexecd.service.verdict.judge`) on a plan made now.
:func:`kexecd.service.assess.assess` makes one. This module imports nothing
heavy: ``kexecd status`` imports it at start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Report", "describe_image"]


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
