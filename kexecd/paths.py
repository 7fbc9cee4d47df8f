# SPDX-License-Identifier: GPL-2.0-or-later
"""Where kexecd keeps its files unless told otherwise: the one place for default paths."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_METRICS_DIR",
    "DEFAULT_RUNTIME_DIR",
    "DEFAULT_STATE_DIR",
    "DISTRO_RULES",
]

#: The daemon's settings (TOML, optional).
DEFAULT_CONFIG = Path("/etc/kexecd.conf")
#: The snapshot of the loaded crash image; survives reboots.
DEFAULT_STATE_DIR = Path("/var/lib/kexecd")
#: ``state.json`` and the control socket of the running daemon.
DEFAULT_RUNTIME_DIR = Path("/run/kexecd")
#: Where node exporter's textfile collector reads ``*.prom`` files (Debian's
#: prometheus-node-exporter); the daemon writes ``kexecd.prom`` there.
DEFAULT_METRICS_DIR = Path("/var/lib/prometheus/node-exporter")
#: The distros' per-event reload rules, by name (the udev rules directories'
#: own paths are :mod:`kexecd.service.udevmask`'s): Debian's kdump-tools, and
#: Fedora's kexec-tools / kdump-utils.
DISTRO_RULES = ("50-kdump-tools.rules", "98-kexec.rules")
