# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd status``: is a crash kernel loaded, and does its header match the system?

Works without the daemon, from the snapshot and the system; adds what the
daemon recorded in ``state.json`` when there is one. Exit codes: 0 loaded and
current, 1 stale, 2 error, 3 no crash kernel loaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kexecd.cli.inspect import human
from kexecd.errors import KexecdError
from kexecd.image import elfcore
from kexecd.image.changes import diff_headers
from kexecd.image.snapshot import open_snapshot
from kexecd.service.statefile import read_state
from kexecd.system.kernel import read_kexec_state
from kexecd.system.root import Root
from kexecd.system.state import read_system

__all__ = ["EXIT_CURRENT", "EXIT_ERROR", "EXIT_NOT_LOADED", "EXIT_STALE", "Status", "gather"]

EXIT_CURRENT, EXIT_STALE, EXIT_ERROR, EXIT_NOT_LOADED = 0, 1, 2, 3


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
    daemon: dict[str, Any] | None = None
    hazards: list[str] = field(default_factory=list)
    error: str | None = None


def describe_image(argv: tuple[str, ...]) -> dict[str, Any]:
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


def gather(state_dir: Path, root: Root, runtime_dir: Path) -> Status:
    """Look at the system, the snapshot and the daemon's state; never raises."""
    try:
        kstate = read_kexec_state(root)
    except KexecdError as e:
        return Status(EXIT_ERROR, f"error: {e}", False, error=str(e))
    daemon = read_state(runtime_dir)
    support = "the kernel updates the header itself (crash_hotplug reads 1)"
    if kstate.cpu_crash_hotplug is None and kstate.memory_crash_hotplug is None:
        support = "none: this kernel has no crash_hotplug (before Linux 6.6)"
    elif not (kstate.cpu_crash_hotplug or kstate.memory_crash_hotplug):
        support = "available, not active for this image (crash_hotplug reads 0)"
    if not kstate.crash_loaded:
        return Status(
            EXIT_NOT_LOADED, "no crash kernel loaded", False, kernel_support=support, daemon=daemon
        )
    st = Status(EXIT_CURRENT, "", True, kernel_support=support, daemon=daemon)
    try:
        snap = open_snapshot(state_dir)
        st.image = describe_image(snap.argv)
        st.image["syscall"] = "kexec_file_load" if snap.file_load else "kexec_load"
        info = snap.loaded_info()
        st.image["loaded"], st.image["how"] = info.get("time"), info.get("how")
        cmdline = st.image.get("cmdline") or ""
        if "acpi_no_memhotplug" not in cmdline.split():
            st.hazards.append(
                "the crash kernel's command line lacks acpi_no_memhotplug: it may online "
                "hot-added DIMMs and write over memory it should dump"
            )
        if kstate.cpu_crash_hotplug or kstate.memory_crash_hotplug:
            st.current = True
            st.verdict = "loaded; the kernel keeps the header current"
            return st
        if snap.file_load or snap.header is None:
            st.verdict = "loaded; header not visible (kexec_file_load): reloaded whole on change"
            return st
        loaded = snap.loaded_header()
        template = elfcore.parse(loaded)
        state = read_system(root)
        wanted = elfcore.build(elfcore.spec_from_template(template, state))
        want = elfcore.parse(wanted)
        cap = snap.header_capacity or 0
        st.header = {
            "cpus": len(state.cpus.notes),
            "ram_ranges": len(want.ram),
            "ram": sum(p.memsz for p in want.ram),
            "phnum": len(want.phdrs),
            "capacity": cap,
            "bytes": len(wanted),
            "segment_bytes": snap.segments[snap.header].memsz,
        }
        if len(wanted) > snap.segments[snap.header].memsz:
            st.hazards.append(
                f"the header needs {len(wanted)} bytes, its segment holds "
                f"{snap.segments[snap.header].memsz}: the next refresh re-runs kexec"
            )
        elif cap - len(want.phdrs) < 16:
            st.hazards.append(f"only {cap - len(want.phdrs)} program headers of room left")
        st.current = wanted == loaded
        if not st.current:
            st.differences = diff_headers(template, want, state.cpus).lines()
            st.exit_code = EXIT_STALE
            st.verdict = "STALE: the loaded header does not match the system"
        else:
            st.verdict = "loaded and current"
    except KexecdError as e:
        st.exit_code = EXIT_ERROR
        st.error = str(e)
        st.verdict = f"error: {e}"
    return st


def daemon_running(state: dict[str, Any]) -> bool:
    """Whether the daemon that wrote ``state`` still runs (not stopped, its pid alive)."""
    if state.get("stopped"):
        return False
    return Path(f"/proc/{state.get('pid')}").exists()


def render(st: Status) -> str:
    """The short aligned report a person reads at a glance."""
    rows: list[tuple[str, str]] = [("crash kernel", st.verdict)]
    if st.image:
        img = st.image
        rows.append(
            ("image", f"{img.get('kernel')}  initrd {img.get('initrd')}  ({img.get('syscall')})")
        )
        rows.append(("command line", str(img.get("cmdline"))))
        rows.append(("loaded", f"{img.get('loaded')} by {img.get('how')}"))
    if st.header:
        h = st.header
        rows.append(
            (
                "header",
                f"{h['cpus']} CPUs, {h['ram_ranges']} RAM ranges ({human(h['ram'])}); "
                f"{h['phnum']} of {h['capacity']} program headers",
            )
        )
    for diff in st.differences:
        why = "  (missing from the loaded header)" if diff.startswith("+") else "  (gone)"
        rows.append(("differs", diff + why))
    if st.daemon:
        d = st.daemon
        running = daemon_running(d)
        rows.append(
            (
                "daemon" if running else "daemon (gone)",
                f"pid {d['pid']} since {d['started']}: {d['events']} events, "
                f"{d['reloads']} reloads, {d['full_reloads']} full, {d['skipped']} skipped, "
                f"{d['failed']} failed",
            )
        )
        if d.get("last_event"):
            e = d["last_event"]
            rows.append(("last event", f"{e['time']} {e['action']} {e['devpath']}"))
        if d.get("last_update"):
            u = d["last_update"]
            lat = f", {u['latency_ms']:.0f} ms after the first event" if "latency_ms" in u else ""
            rows.append(
                ("last update", f"{u['time']} {u['action']} in {u['work_ms']:.0f} ms{lat}")
            )
        if d.get("last_error"):
            rows.append(("last error", f"{d['last_error']['time']} {d['last_error']['message']}"))
    else:
        rows.append(("daemon", "not running (no state.json)"))
    rows.append(("kernel support", st.kernel_support))
    rows.append(("hazards", "none" if not st.hazards else st.hazards[0]))
    rows += [("", h) for h in st.hazards[1:]]
    return "\n".join(f"{k:<15}{v}" for k, v in rows)


def to_json(st: Status) -> str:
    return json.dumps(asdict(st), indent=2)
