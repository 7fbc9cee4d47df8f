# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd.prom``: the daemon's state for Prometheus, through node exporter's textfile collector.

Node exporter serves every ``*.prom`` file in its textfile directory
(``/var/lib/prometheus/node-exporter`` on Debian); the daemon writes
``kexecd.prom`` there (``metrics_dir`` in ``/etc/kexecd.conf``; ``""`` turns
it off, and a directory that does not exist means off too).

:func:`render` computes nothing: every value is a fact the daemon recorded
in its :class:`~kexecd.service.statefile.DaemonState` (the same ones
``kexecd status`` shows) or one of :class:`Host`. ``kexecd_in_sync`` is the
verdict's (:func:`kexecd.service.verdict.judge`), as the daemon's recorder
keeps it in ``DaemonState.in_sync``: the same verdict as ``STATUS=`` and
``kexecd status``'s exit code. The file is replaced by a
rename (mode 0644: node exporter runs as ``prometheus``) only when a value
changed, and at least every :data:`HEARTBEAT` seconds, with
``kexecd_heartbeat_timestamp_seconds``: a file written only on change never
ages, so without the heartbeat a daemon that died would look like a healthy
idle one. An alert tells them apart with ``time() -
kexecd_heartbeat_timestamp_seconds`` (``docs/kexecd.rules.yml``).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kexecd import __version__
from kexecd.files import unix_time, write_atomic
from kexecd.service.statefile import DaemonState
from kexecd.system.kmsg import Drop

__all__ = ["HEARTBEAT", "PROM_FILE", "Exporter", "Host", "heartbeat", "render"]

log = logging.getLogger("kexecd")

PROM_FILE = "kexecd.prom"
#: Seconds between two writes at most, while the daemon runs.
HEARTBEAT = 60.0
# kexecd.service's ProtectSystem=strict leaves writable only what existed
# when it started (ReadWritePaths=-/var/lib/prometheus/node-exporter).
SANDBOX = (
    "under kexecd.service, a metrics_dir created after kexecd started needs "
    "'systemctl restart kexecd', and another directory its own ReadWritePaths="
)

Value = int | float | bool | None


@dataclass(frozen=True)
class Host:
    """What the metrics say beyond the daemon's state.

    :ivar masked: kexecd masks the distro's per-event reload rule
        (:func:`kexecd.service.udevmask.masked`).
    :ivar kexec_tools: kexec-tools' version as the package manager has it
        (:func:`kexecd.system.packages.installed_version`), if known.
    """

    masked: bool
    kexec_tools: str | None


def _family(name: str, kind: str, help_: str, *samples: tuple[str, Value]) -> list[str]:
    # One metric family of the text format (HELP, TYPE, samples); a sample
    # whose value is not known is left out, the family stays.
    out = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        if value is not None:
            out.append(f"{name}{labels} {int(value) if isinstance(value, bool) else value}")
    return out


def _label(value: str) -> str:
    # The text format's label escapes: backslash, double quote, line feed.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 4)


def _unix(stamp: str | None) -> int | None:
    try:
        return None if stamp is None else unix_time(stamp)
    except ValueError:
        return None


def render(st: DaemonState, host: Host) -> str:
    """The metrics of ``st`` and ``host`` in Prometheus' text format, heartbeat aside."""
    last = st.last_update
    info = (
        f'{{version="{_label(__version__)}",syscall="{_label(st.syscall or "unknown")}",'
        f'kexec_tools="{_label(host.kexec_tools or "unknown")}"}}'
    )
    lines = [
        *_family(
            "kexecd_crash_kernel_loaded",
            "gauge",
            "Whether a crash kernel is loaded (/sys/kernel/kexec_crash_loaded), "
            "as of the last reconcile.",
            ("", st.crash_loaded),
        ),
        *_family(
            "kexecd_in_sync",
            "gauge",
            "Whether the loaded crash kernel's ELF core header (and command line) matches "
            "the system, as of the last reconcile; 0 after a failed one, and with no crash "
            "kernel loaded.",
            ("", bool(st.in_sync)),
        ),
        *_family(
            "kexecd_header_program_headers",
            "gauge",
            "Program headers in the loaded ELF core header.",
            ("", st.phnum),
        ),
        *_family(
            "kexecd_header_program_headers_limit",
            "gauge",
            "Program headers the header's segment holds; beyond it kexecd runs the "
            "kexec command again.",
            ("", st.capacity),
        ),
        *_family(
            "kexecd_header_cpus",
            "gauge",
            "CPUs the loaded header has a crash note for: whose registers a dump holds.",
            ("", st.header_cpus),
        ),
        *_family(
            "kexecd_system_cpus",
            "gauge",
            "CPUs the system has that the header needs a crash note for (every CPU with "
            "crash_notes, as kexec-tools counts them).",
            ("", st.cpus),
        ),
        *_family(
            "kexecd_header_ram_bytes",
            "gauge",
            "Bytes of RAM the loaded header covers: the memory a dump holds.",
            ("", st.header_ram),
        ),
        *_family(
            "kexecd_system_ram_bytes",
            "gauge",
            "Bytes of RAM the system has that the header must cover (System RAM in "
            "/proc/iomem, less the crash kernel's reservation).",
            ("", st.ram),
        ),
        *_family(
            "kexecd_events_total",
            "counter",
            "CPU and memory uevents the daemon received.",
            ("", st.events),
        ),
        *_family(
            "kexecd_reloads_total",
            "counter",
            "Loads of the crash kernel by the daemon: the header (and purgatory's digest) "
            "only, or full (the kexec command run again).",
            ('{kind="header"}', st.reloads),
            ('{kind="full"}', st.full_reloads),
        ),
        *_family(
            "kexecd_header_moves_total",
            "counter",
            "Header-only loads that moved the header to a bigger place in crashkernel "
            "memory (counted in kexecd_reloads_total too).",
            ("", st.moves),
        ),
        *_family(
            "kexecd_reload_failures_total",
            "counter",
            "Refreshes and adoptions that failed; each is tried again with backoff.",
            ("", st.failed),
        ),
        *_family(
            "kexecd_adoptions_total",
            "counter",
            "Crash kernels taken over from the distro (its kexec command replayed).",
            ("", st.adoptions),
        ),
        *_family(
            "kexecd_last_update_latency_seconds",
            "gauge",
            "From the first uevent of a burst to the crash kernel current, for the last "
            "update that events caused.",
            ("", _seconds(None if last is None else last.latency_ms)),
        ),
        *_family(
            "kexecd_last_update_duration_seconds",
            "gauge",
            "The last update's work: reading the system, building the header, loading.",
            ("", _seconds(None if last is None else last.work_ms)),
        ),
        *_family(
            "kexecd_last_reconcile_timestamp_seconds",
            "gauge",
            "When a reconcile last succeeded (Unix time; this file is written on change, "
            "so alert on time() - this).",
            ("", _unix(st.reconciled)),
        ),
        *_family(
            "kexecd_kernel_dropped_updates_total",
            "counter",
            "Updates of the header it keeps that the kernel logged it dropped, by why "
            "(lock-busy: kexec_trylock() failed; too-large: the new header outgrew its "
            "segment; not-built: it could not be built); kexecd then loads the image itself.",
            *((f'{{kind="{d.value}"}}', st.kernel_drops.get(d.value, 0)) for d in Drop),
        ),
        *_family(
            "kexecd_kernel_crash_hotplug",
            "gauge",
            "Whether the kernel updates the header itself (crash_hotplug reads 1, Linux "
            "6.6+); kexecd then stands aside.",
            ("", st.kernel_updates),
        ),
        *_family(
            "kexecd_distro_rule_masked",
            "gauge",
            "Whether kexecd masks the distro's per-event reload udev rule (0 also where "
            "there is no such rule).",
            ("", host.masked),
        ),
        *_family(
            "kexecd_info",
            "gauge",
            "kexecd's version, the call that loaded the crash kernel, kexec-tools' version.",
            (info, 1),
        ),
    ]
    return "\n".join(lines) + "\n"


def heartbeat(now: float) -> str:
    """The heartbeat family, for the time ``now`` (Unix time)."""
    return (
        "\n".join(
            _family(
                "kexecd_heartbeat_timestamp_seconds",
                "gauge",
                f"When the daemon last wrote this file (Unix time): at least every "
                f"{HEARTBEAT:.0f} s while it runs.",
                ("", int(now)),
            )
        )
        + "\n"
    )


class Exporter:
    """Writes ``kexecd.prom`` when a value changed, and at least every :data:`HEARTBEAT` s.

    :param directory: node exporter's textfile directory; ``""`` turns it off.
    :param clock: the daemon's clock (``time.monotonic``), for the heartbeat.
    :param wall: Unix time, for the heartbeat's value.
    """

    def __init__(
        self,
        directory: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory) if directory else None
        self.clock = clock
        self.wall = wall
        self.body: str | None = None  # the values in the file now
        self.tried: float | None = None  # clock() at the last attempt
        self.live = False  # the last attempt wrote the file
        self.trouble: str | None = None  # what was logged of the last failure

    @property
    def enabled(self) -> bool:
        """A directory is configured (it may not exist)."""
        return self.directory is not None

    @property
    def present(self) -> bool:
        """A directory is configured and there (a stat)."""
        return self.directory is not None and self.directory.is_dir()

    def due(self) -> bool:
        """The heartbeat (or, while the directory is missing, another look) is due."""
        return self.enabled and (self.tried is None or self.clock() >= self.tried + HEARTBEAT)

    def deadline(self) -> float | None:
        """When the next heartbeat is due, while the file is written (a loop timer):
        a missing directory costs the daemon no wake-up."""
        return None if not self.live or self.tried is None else self.tried + HEARTBEAT

    def publish(self, body: str) -> bool:
        """Write ``body`` and the heartbeat, unless the file holds ``body`` and no
        heartbeat is due; whether it wrote. Never raises: a failure is logged
        once, and tried again at the next call."""
        if self.directory is None or (body == self.body and self.live and not self.due()):
            return False
        self.tried = self.clock()
        path = self.directory / PROM_FILE
        try:
            write_atomic(path, (body + heartbeat(self.wall())).encode(), durable=False, mode=0o644)
        except OSError as e:
            self.live, self.body = False, None
            missing = e.errno == errno.ENOENT and not self.directory.is_dir()
            why = "missing" if missing else f"{path}: {e.strerror}" if e.strerror else str(e)
            if e.errno == errno.EROFS:
                why += f" ({SANDBOX})"
            if why != self.trouble:
                self.trouble = why
                if missing:
                    log.debug("no %s: %s does not exist (metrics_dir)", PROM_FILE, self.directory)
                else:
                    log.warning("cannot write %s; trying again later", why)
            return False
        self.live, self.body, self.trouble = True, body, None
        return True
