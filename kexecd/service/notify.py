# SPDX-License-Identifier: GPL-2.0-or-later
"""systemd integration: sd_notify, the watchdog interval, and where logs go."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

__all__ = ["notify", "setup_logging", "watchdog_interval"]

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")


def notify(state: str) -> bool:
    """Send ``state`` (``READY=1``, ``STATUS=...``) to ``$NOTIFY_SOCKET``, if set.

    The protocol of sd_notify(3): one datagram to an AF_UNIX socket, whose
    name starts with ``@`` when it is abstract.
    """
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    # Never block the event loop on a busy notification socket.
    with socket.socket(
        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
    ) as s:
        try:
            s.sendto(state.encode(), addr)
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when the watchdog is ours to feed."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


class _Fields(logging.Filter):
    # stderr shows the structured fields as key=value after the message.
    def filter(self, record: logging.LogRecord) -> bool:
        fields = {k: v for k, v in record.__dict__.items() if k.startswith("KEXECD_")}
        record.fields = "".join(f" {k[7:].lower()}={v}" for k, v in fields.items())
        return True


def setup_logging(verbose: bool = False) -> logging.Logger:
    """Log to journald with structured fields when it is there, to stderr when not."""
    log = logging.getLogger("kexecd")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.handlers.clear()
    handler: logging.Handler | None = None
    if JOURNAL_SOCKET.exists() and not os.environ.get("KEXECD_LOG_STDERR"):
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="kexecd")
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(_Fields())
        handler.setFormatter(logging.Formatter("kexecd: %(message)s%(fields)s"))
    log.addHandler(handler)
    log.propagate = False
    return log
