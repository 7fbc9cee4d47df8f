# SPDX-License-Identifier: GPL-2.0-or-later
"""The guard that keeps crash-kernel loads and panics inside the test bed's guest.

Everything that runs ``kexec``, ``kexec_load`` or writes ``/proc/sysrq-trigger``
in the test bed calls :func:`require_guest` first. The guest is booted with
``kexecd.testbed=1`` on its kernel command line; no host is.
"""

from __future__ import annotations

from pathlib import Path

MARK = "kexecd.testbed=1"


class NotInGuestError(RuntimeError):
    """A guest-only step was asked for outside the test bed's guest."""


def in_guest(cmdline: Path = Path("/proc/cmdline")) -> bool:
    """Whether this kernel is a test-bed guest."""
    try:
        return MARK in cmdline.read_text().split()
    except OSError:
        return False


def require_guest(what: str, cmdline: Path = Path("/proc/cmdline")) -> None:
    """Refuse ``what`` unless this kernel is a test-bed guest."""
    if not in_guest(cmdline):
        raise NotInGuestError(
            f"refusing to {what}: {cmdline} lacks {MARK}, so this is not the "
            "kexecd test bed's guest (crash-kernel loads and panics run only there)"
        )
