# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd load`` and ``kexecd refresh``: what they print, and their exit codes."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kexecd.errors import KexecdError, LoadError
from kexecd.service.config import Config, load_config
from kexecd.system.root import Root

if TYPE_CHECKING:  # each command imports what it uses: start-up is most of a short command
    from kexecd.image.plan import Plan
    from kexecd.image.refresher import RefreshResult
    from kexecd.image.snapshot import Snapshot

__all__ = ["adopt", "load", "mask", "refresh", "run", "settings", "status", "unmask"]


def _err(cmd: str, e: Exception) -> None:
    print(f"kexecd {cmd}: {e}", file=sys.stderr)


def settings(cmd: str, config: Path, **options: Any) -> Config | None:
    """The settings of ``config`` with the options given on the command line
    (``None`` ones are not given); ``None`` after saying why when the file is bad."""
    try:
        return load_config(config, **options)
    except KexecdError as e:
        _err(cmd, e)
        return None


def _amended(r: RefreshResult) -> None:
    # What a refresh did to the crash kernel's command line, or what it left
    # missing: its own lines, not notes.
    if r.cmdline:
        print(f"  {r.cmdline}; crash_acpi_no_memhotplug = false in kexecd.conf turns this off")
    hazard = None if r.plan.cmdline is None else r.plan.cmdline.hazard
    if hazard:
        print(f"  hazard: {hazard}")


def load(argv: Sequence[str], state_dir: Path) -> int:
    """``kexecd load``: 0 once a crash kernel is loaded; 1 if it is not; 2 on bad input."""
    from kexecd.image import loader

    try:
        snap = loader.load(argv, state_dir)
    except LoadError as e:
        _err("load", e)
        return 1
    except KexecdError as e:
        _err("load", e)
        return 2
    print(f"kexecd load: crash kernel loaded ({_how(snap)}); snapshot in {snap.path}")
    return 0


def adopt(cfg: Config, kexec_cmd: Path | None, command: Sequence[str]) -> int:
    """``kexecd adopt``: 0 once kexecd keeps the distro's crash kernel; 1 if a load
    failed; 2 on bad input (nothing to adopt, an unfit command file)."""
    from kexecd.image.refresher import Deps, Refresher
    from kexecd.image.store import Store
    from kexecd.service.adopt import adopt as take_over

    if kexec_cmd is None and cfg.kexec_cmd:
        kexec_cmd = Path(cfg.kexec_cmd)
    try:
        refresher = Refresher(Store(cfg.state_dir), Deps(root=Root(cfg.root)), cfg.policy)
        r = take_over(refresher, kexec_cmd, command or None)
    except LoadError as e:
        _err("adopt", e)
        return 1
    except KexecdError as e:
        _err("adopt", e)
        return 2
    snap = r.snapshot
    what = snap.source.command if snap.source else " ".join(command)
    print(
        f"kexecd adopt: took over the crash kernel of: {what}\n"
        f"  replayed in {r.load_seconds * 1000:.0f} ms ({_how(snap)}); snapshot in {snap.path}"
    )
    d = r.refresh.decision
    print(f"  then: {d.action.value}: {d.reason} ({r.refresh.seconds * 1000:.0f} ms)")
    _amended(r.refresh)
    for note in [*r.notes, *r.refresh.notes]:
        print(f"  note: {note}")
    return 0


def _how(snap: Snapshot) -> str:
    if snap.file_load:
        how = "kexec_file_load: refreshes will re-run the command whole"
    elif snap.header is None:
        how = "kexec_load, but no ELF core header was found: refreshes will re-run the command"
    else:
        loc = snap.digest
        digest = (
            "purgatory's digest not found: refreshes will re-run the command"
            if loc is None
            else f"purgatory digest at +{loc.digest_offset:#x}"
            + ("" if loc.header_hashed else " (header not hashed)")
        )
        how = (
            f"kexec_load, {len(snap.segments)} segments; header is segment {snap.header}, "
            f"room for {snap.header_capacity} program headers; {digest}"
        )
    return how


def refresh(cfg: Config, *, dry_run: bool = False, grow: int | None = None) -> int:
    """``kexecd refresh`` (and ``kexecd grow --capacity N``, with ``grow``): 0 when
    current or reloaded; 1 when a load failed; 2 on bad input, or a header that
    cannot grow."""
    from kexecd.image.plan import Action, Why
    from kexecd.image.refresher import Deps, Refresher, Request
    from kexecd.image.store import Store

    what = "refresh" if grow is None else "grow"
    try:
        refresher = Refresher(Store(cfg.state_dir), Deps(root=Root(cfg.root)), cfg.policy)
        r = refresher.refresh(Request(dry_run=dry_run, grow=grow))
    except LoadError as e:
        _err(what, e)
        return 1
    except KexecdError as e:
        _err(what, e)
        return 2
    ms = r.seconds * 1000
    action = r.decision.action
    room = r.plan.snapshot.header_capacity
    if grow is not None and r.decision.why is not Why.GROW and (room or 0) < grow:
        print(
            f"kexecd grow: the header cannot grow to {grow} program headers (room for "
            f"{room or 0}): {_why_not_movable(r.plan)}; nothing was loaded",
            file=sys.stderr,
        )
        return 2
    if grow is not None and r.decision.why is not Why.GROW:
        print(f"kexecd grow: nothing to do: the header has room for {room} program headers")
    elif action is Action.NOTHING:
        print(f"kexecd {what}: nothing to do: {r.decision.reason} ({ms:.0f} ms)")
    elif action is Action.STAND_ASIDE:
        print(f"kexecd {what}: nothing to do: {r.decision.reason}")
    elif r.dry_run:
        print(f"kexecd {what}: would {r.decision.reason} (dry run, nothing loaded)")
    elif action is Action.FULL_RELOAD:
        print(f"kexecd {what}: re-ran the kexec command because {r.decision.reason} ({ms:.0f} ms)")
    else:
        print(f"kexecd {what}: {r.decision.reason}: done in {ms:.0f} ms")
    _amended(r)
    for note in r.notes:
        print(f"  note: {note}")
    if r.diff:
        for line in r.diff.lines():
            print(f"  {line}")
    return 0


def _why_not_movable(p: Plan) -> str:
    # Why kexecd cannot move this image's header (Snapshot.movable is false,
    # or no hole was found).
    snap = p.snapshot
    if p.decision.why.name in ("KERNEL_UPDATES", "NOT_LOADED", "FILE_LOAD", "NO_HEADER"):
        return str(p.decision.reason)
    if not snap.movable:
        d = snap.digest
        if d is not None and not d.header_hashed:
            return (
                "the header is not in purgatory's hash (kexec -p --hotplug): the kernel sizes it"
            )
        return "purgatory's digest or its regions were not found in the loaded image"
    return "no hole that big in the crash kernel reservation (crashkernel=) is free"


def run(
    config: Path,
    *,
    state_dir: Path | None,
    runtime_dir: Path | None,
    root: Path | None,
    source: str | None,
    verbose: bool,
) -> int:
    """``kexecd run``: the daemon. 0 when stopped by a signal; 2 on bad settings."""
    from kexecd.cli import status as st
    from kexecd.service.daemon import Daemon
    from kexecd.service.monitor import UdevMonitor
    from kexecd.service.notify import setup_logging

    try:
        cfg = load_config(
            config, state_dir=state_dir, runtime_dir=runtime_dir, root=root, source=source
        )
    except KexecdError as e:
        _err("run", e)
        return 2
    log = setup_logging(verbose)
    monitor = UdevMonitor(cfg.source)
    log.info("watching cpu and memory uevents (%s); snapshot in %s", cfg.source, cfg.state_dir)
    try:
        # 'kexecd status' asks the daemon, whose engine is loaded (cli/quick.py).
        return Daemon(cfg, monitor, report=partial(st.serve, cfg)).run()
    except KexecdError as e:
        _err("run", e)
        return 2


def status(cfg: Config, as_json: bool) -> int:
    """``kexecd status``: 0 loaded and current, 1 stale, 2 error, 3 no crash kernel."""
    from kexecd.cli import status as st

    report = st.gather(
        cfg.state_dir,
        Root(cfg.root),
        cfg.runtime_dir,
        acpi_no_memhotplug=cfg.crash_acpi_no_memhotplug,
    )
    print(st.to_json(report) if as_json else st.render(report))
    return report.exit_code


def mask(root: Root, runtime_dir: Path) -> int:
    """``kexecd mask``: mask the distro's per-event reload rule; 0, or 2 if it could not."""
    return _udev("mask", root, runtime_dir, "no distro reload rule is installed: nothing to mask")


def unmask(root: Root, runtime_dir: Path) -> int:
    """``kexecd unmask``: remove the masks ``kexecd mask`` made; 0, or 2 if it could not."""
    return _udev("unmask", root, runtime_dir, "nothing masked by kexecd")


def _udev(cmd: str, root: Root, runtime_dir: Path, nothing: str) -> int:
    from kexecd.service import udevmask

    how = udevmask.mask if cmd == "mask" else udevmask.unmask
    try:
        report = how(root, runtime_dir)
    except (OSError, KexecdError) as e:
        _err(cmd, e)
        return 2
    for line in report.lines() or [nothing]:
        print(f"kexecd {cmd}: {line}")
    return 0
