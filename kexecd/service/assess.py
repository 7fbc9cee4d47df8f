# SPDX-License-Identifier: GPL-2.0-or-later
"""Make ``kexecd status``'s :class:`~kexecd.service.report.Report`: a plan now, judged.

The one function that both ``kexecd status`` (without a daemon) and the
daemon (asked over its control socket) call; it imports the refresh engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kexecd.errors import KexecdError
from kexecd.image import plan
from kexecd.image.plan import Plan
from kexecd.image.snapshot import Snapshot
from kexecd.image.store import Store
from kexecd.service import verdict
from kexecd.service.report import Report, describe_image
from kexecd.service.verdict import Verdict
from kexecd.system.kernel import KexecState
from kexecd.system.root import Root

__all__ = ["assess", "report_of"]


def assess(
    state_dir: Path, root: Root, kstate: KexecState, *, acpi_no_memhotplug: bool, wait: float
) -> Report:
    """Open the snapshot under the state directory's shared lock, make the
    plan for the system now and judge it. What fails once the lock is held
    is the report's ``error``, with as much of the image as was read.

    :param kstate: the kexec state, just read (a crash kernel is loaded).
    :param acpi_no_memhotplug: the ``crash_acpi_no_memhotplug`` setting.
    :param wait: how long to wait for a writer (load, refresh, adopt) to finish.
    :raises KexecdError: the lock could not be taken (held too long, an
        unfit state directory).
    """
    store = Store(state_dir)
    with store.locked(shared=True, wait=wait):
        image: dict[str, Any] = {}
        try:
            return _judged(store.open(), root, kstate, acpi_no_memhotplug, image)
        except KexecdError as e:
            v = verdict.failure(str(e))
            return Report(None, v.exit_code, v.headline, image=image, error=str(e))


def _judged(
    snap: Snapshot, root: Root, kstate: KexecState, acpi_no_memhotplug: bool, image: dict[str, Any]
) -> Report:
    # Fills in ``image`` as it goes: what a failure leaves is reported.
    src = snap.source
    image.update(describe_image(src.words if src else snap.argv))
    if src:
        image["adopted_from"] = src.path
    image["syscall"] = snap.syscall
    if not snap.file_load:  # the kernel builds a file-loaded image's header
        image["kexec_tools"] = snap.kexec_tools
        image["header_rules"] = snap.rules.describe()
    info = snap.record.info()
    image["loaded"], image["how"] = _text(info.get("time")), _text(info.get("how"))
    policy = plan.Policy(acpi_no_memhotplug=acpi_no_memhotplug)
    p = plan.make(snap, root, policy=policy, kexec=kstate)
    line = p.cmdline
    no_memhotplug = None
    if line is not None:
        # The line in the boot parameters as loaded (elfcorehdr= and what
        # kexecd appended included), where it can be read.
        image["cmdline"] = line.text or image["cmdline"]
        no_memhotplug = line.no_memhotplug
    return report_of(p, verdict.judge(p), image, no_memhotplug)


def report_of(
    p: Plan, v: Verdict, image: dict[str, Any] | None = None, no_memhotplug: str | None = None
) -> Report:
    """The report of plan ``p`` judged ``v``: the verdict, and the header
    unless it is not visible or the kernel keeps it.

    :param image: the image as the snapshot describes it.
    :param no_memhotplug: where ``acpi_no_memhotplug`` stands.
    """
    header: dict[str, int | None] = {}
    if p.target is not None and p.wanted is not None and not v.standing_aside:
        header = {
            "cpus": p.cpus,
            "ram_ranges": p.ranges,
            "ram": p.ram_bytes,
            "phnum": p.phnum,
            "capacity": p.snapshot.header_capacity or 0,
            "bytes": len(p.wanted),
            "segment_bytes": p.segment_bytes,
            "address": p.snapshot.segments[p.snapshot.header or 0].mem,
        }
    return Report(
        v.in_sync,
        v.exit_code,
        v.headline,
        list(v.hazards),
        list(v.differences),
        {} if image is None else image,
        header,
        no_memhotplug,
    )


def _text(value: object) -> str | None:
    # A string from loaded.json, which the schema promises is one.
    return value if isinstance(value, str) else None
