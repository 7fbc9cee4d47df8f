# SPDX-License-Identifier: GPL-2.0-or-later
"""What the package manager says is installed: dpkg's status file, under a root."""

from __future__ import annotations

from kexecd.errors import SystemStateError
from kexecd.system.root import Root

__all__ = ["installed_version"]

DPKG_STATUS = "var/lib/dpkg/status"
# Debian 12's status file is a few MiB; a larger one is not dpkg's.
MAX_STATUS = 64 << 20


def installed_version(root: Root, package: str) -> str | None:
    """The version dpkg records for ``package`` if it is installed, else ``None``
    (not installed, not a dpkg system, or a status file that makes no sense).

    Reads the whole status file: call it once, not on every event.
    """
    try:
        data = root.read_bytes(DPKG_STATUS, MAX_STATUS + 1)
    except SystemStateError:
        return None
    if len(data) > MAX_STATUS:
        return None
    # deb-control(5): stanzas separated by blank lines, "Field: value" lines.
    wanted = f"Package: {package}\n"
    for stanza in data.decode("utf-8", errors="replace").split("\n\n"):
        if not (stanza + "\n").startswith(wanted) and f"\n{wanted}" not in stanza + "\n":
            continue
        fields = dict(
            line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[:1] != " "
        )
        if fields.get("Package", "").strip() != package:
            continue
        if fields.get("Status", "").split()[-1:] == ["installed"]:
            version = fields.get("Version", "").strip()
            return version or None
    return None
