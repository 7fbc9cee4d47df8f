# SPDX-License-Identifier: GPL-2.0-or-later
"""Masking the distro's per-event reload rule while kexecd keeps the crash kernel.

The distros reload the whole crash kernel from a udev rule on every CPU and
memory event; with kexecd running that is wasted work at best and a race at
worst. udev reads a rules file of a given name from the first of
``/etc/udev/rules.d``, ``/run/udev/rules.d``, ``/usr/lib/udev/rules.d`` (and
``/lib/udev/rules.d``) that has it, and a symlink to ``/dev/null`` masks it
(udev(7)). So a symlink in ``/run`` masks the packaged rule until the next
boot, touching no file the distro owns; an admin's file in ``/etc`` of the
same name still wins, and is reported as a hazard.

What kexecd created is recorded in its runtime directory, and only that is
removed on unmask, so an admin's own mask is never taken away.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kexecd.errors import ServiceError
from kexecd.files import ensure_dir, read_own_optional, write_atomic
from kexecd.paths import DISTRO_RULES
from kexecd.system.root import Root

__all__ = ["RULES", "MaskReport", "hazards", "mask", "masked", "reload_udev", "unmask"]

#: The distros' per-event reload rules (FIELD-NOTES section 8):
#: Debian and Ubuntu kdump-tools, Fedora and RHEL kdump-utils / kexec-tools.
RULES = DISTRO_RULES
#: SUSE's kdump copies its rule into /run itself on every load.
SUSE_RULE = "70-kdump.rules"
PACKAGED = ("usr/lib/udev/rules.d", "lib/udev/rules.d")
RUNTIME = "run/udev/rules.d"
ADMIN = "etc/udev/rules.d"
RECORD = "udev-masks.json"

Reload = Callable[[], str | None]


def reload_udev() -> str | None:
    """``udevadm control --reload``; the error, for people, or ``None``."""
    import subprocess  # only here: keep the command line's start-up light

    try:
        p = subprocess.run(
            ["udevadm", "control", "--reload"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"udevadm control --reload: {e}"
    if p.returncode != 0:
        return f"udevadm control --reload exited {p.returncode}: {p.stderr.strip()[:200]}"
    return None


@dataclass
class MaskReport:
    """What :func:`mask` or :func:`unmask` did and could not do."""

    masked: list[str] = field(default_factory=list)
    unmasked: list[str] = field(default_factory=list)
    hazards: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"masked {r} (a symlink to /dev/null in /run/udev/rules.d)" for r in self.masked]
        out += [f"unmasked {r}" for r in self.unmasked]
        return out + self.hazards


def _is_null_link(path: Path) -> bool:
    try:
        return os.readlink(path) == "/dev/null"
    except OSError:
        return False


def _record(runtime_dir: Path) -> list[str]:
    # What kexecd masked; a record that is not a regular file is refused.
    got = read_own_optional(
        runtime_dir / RECORD, 65536, ServiceError, "remove it, then run 'kexecd mask' again"
    )
    try:
        names = json.loads(got[0]) if got is not None else []
    except (ValueError, RecursionError):
        return []
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and n in RULES]


def hazards(root: Root) -> list[str]:
    """What keeps a mask from working: an admin's rule in /etc, SUSE's rule in /run."""
    out = []
    for name in RULES:
        admin = root.path(ADMIN) / name
        if admin.exists() and not _is_null_link(admin) and _packaged(root, name):
            out.append(
                f"{admin} overrides kexecd's mask of {name}: the distro's reload still runs "
                "on every hotplug event; remove it, or make it a symlink to /dev/null"
            )
    suse = root.path(RUNTIME) / SUSE_RULE
    if suse.is_file() and not suse.is_symlink():
        out.append(
            f"{suse}: SUSE's kdump copies this rule into /run on every load, so kexecd "
            "cannot mask it; its reloads race with kexecd's"
        )
    return out


def _packaged(root: Root, name: str) -> bool:
    return any((root.path(d) / name).exists() for d in PACKAGED)


def mask(root: Root, runtime_dir: Path, reload: Reload | None = None) -> MaskReport:
    """Mask each installed distro reload rule with a symlink in ``/run/udev/rules.d``.

    Records what it created in ``runtime_dir``; an existing file of that name
    in ``/run`` (an admin's mask, or anything else) is left alone.
    """
    report = MaskReport(hazards=hazards(root))
    ours = _record(runtime_dir)
    rundir = root.path(RUNTIME)
    for name in RULES:
        if not _packaged(root, name):
            continue
        link = rundir / name
        if name in ours and _is_null_link(link):
            report.masked.append(name)
            continue
        if os.path.lexists(link):
            continue  # not ours: leave it
        rundir.mkdir(parents=True, exist_ok=True)
        os.symlink("/dev/null", link)
        report.masked.append(name)
    ensure_dir(runtime_dir)
    write_atomic(runtime_dir / RECORD, json.dumps(report.masked).encode(), durable=False)
    if report.masked:
        error = (reload or reload_udev)()
        if error:
            report.hazards.append(f"the mask waits for udev to reload its rules: {error}")
    return report


def unmask(root: Root, runtime_dir: Path, reload: Reload | None = None) -> MaskReport:
    """Remove the masks :func:`mask` recorded (and only those), then reload udev."""
    report = MaskReport()
    for name in _record(runtime_dir):
        link = root.path(RUNTIME) / name
        if _is_null_link(link):
            link.unlink()
            report.unmasked.append(name)
    with contextlib.suppress(FileNotFoundError):
        (runtime_dir / RECORD).unlink()
    if report.unmasked:
        error = (reload or reload_udev)()
        if error:
            report.hazards.append(error)
    return report


def masked(root: Root, runtime_dir: Path) -> list[str]:
    """The distro rules kexecd masks now (recorded, and the symlink in place)."""
    return [n for n in _record(runtime_dir) if _is_null_link(root.path(RUNTIME) / n)]
