# SPDX-License-Identifier: GPL-2.0-or-later
"""The one verdict: is the crash kernel current, and what stands in the way.

:func:`judge` turns a :class:`~kexecd.image.plan.Plan` into a
:class:`Verdict`: whether the loaded crash kernel is in sync, the exit code
of ``kexecd status``, the hazards and the one-line headline. Everything that
says whether the crash kernel is current asks it:

* ``kexecd status`` (text and ``--json``) judges the plan it makes;
* the daemon judges each plan it carries out (``carried_out``) and records
  the verdict's ``in_sync`` in its :class:`~kexecd.service.statefile.DaemonState`,
  which ``kexecd.prom``'s ``kexecd_in_sync`` renders, and :func:`summary`
  makes systemd's ``STATUS=`` line of that same verdict.

It lives in ``service/`` (above ``cli/``, below ``image/`` in the layers of
docs/ARCHITECTURE.md): the daemon and the command line both import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine: kexecd status imports this module without it
    from kexecd.image.plan import Plan
    from kexecd.service.statefile import DaemonState

__all__ = [
    "EXIT_CURRENT",
    "EXIT_ERROR",
    "EXIT_NOT_LOADED",
    "EXIT_STALE",
    "Verdict",
    "failure",
    "judge",
    "not_loaded",
    "summary",
]

#: ``kexecd status``'s exit codes: loaded and current, stale (or uncertain),
#: an error, no crash kernel loaded (docs/kexecd.8, EXIT STATUS).
EXIT_CURRENT, EXIT_STALE, EXIT_ERROR, EXIT_NOT_LOADED = 0, 1, 2, 3

_NOT_VISIBLE = "loaded; header not visible (kexec_file_load): reloaded whole on change"
_UNCERTAIN = (
    "UNCERTAIN: a load was interrupted before it was recorded; the next refresh "
    "(or the daemon at start) loads the header again"
)
# Below a tenth of the header's capacity free, status warns ahead of a scale-up.
_LOW_ROOM = 10


@dataclass(frozen=True)
class Verdict:
    """Whether the crash kernel is current, and why not.

    :ivar in_sync: the loaded header (and command line) is what kexecd would
        load now; ``None``: unknown, or no crash kernel is loaded.
    :ivar exit_code: ``kexecd status``'s exit code (:data:`EXIT_CURRENT` ...).
    :ivar headline: the one line for people (``kexecd status``'s first row).
    :ivar hazards: what may cost a dump later, for people.
    :ivar differences: what the loaded header misses or has too much of.
    :ivar standing_aside: the kernel keeps the header current itself.
    """

    in_sync: bool | None
    exit_code: int
    headline: str
    hazards: tuple[str, ...] = ()
    differences: tuple[str, ...] = ()
    standing_aside: bool = False


def not_loaded() -> Verdict:
    """No crash kernel is loaded: nothing to be in sync."""
    return Verdict(None, EXIT_NOT_LOADED, "no crash kernel loaded")


def failure(message: str) -> Verdict:
    """What is loaded is not known to be current: reading or loading failed."""
    return Verdict(False, EXIT_ERROR, f"error: {message}")


def judge(p: Plan, *, carried_out: bool = False, amend_error: str | None = None) -> Verdict:
    """The verdict on a plan, as made (``kexecd status``) or once carried out
    (the daemon, after a successful refresh or adoption).

    :param carried_out: the plan's action was done: the wanted header is loaded.
    :param amend_error: after a full reload, why the command line kexec-tools
        loaded could not be amended (it then lacks what kexecd appends).
    """
    from kexecd.image.plan import Why

    why = p.decision.why
    line = p.cmdline
    hazards: tuple[str, ...] = (line.hazard,) if line is not None and line.hazard else ()
    if why is Why.NOT_LOADED:
        return not_loaded()
    if why is Why.KERNEL_UPDATES:
        headline = "loaded; the kernel keeps the header current"
        return Verdict(True, EXIT_CURRENT, headline, hazards, standing_aside=True)
    if carried_out:
        return _carried_out(p, hazards, amend_error)
    visible = p.target is not None and p.wanted is not None
    if visible:
        hazards += _size_hazards(p)
    if why is Why.CMDLINE and line is not None:  # a file load's too, amended whole
        stale = f"STALE: the next refresh will {line.change}"
        return Verdict(p.in_sync, EXIT_STALE, stale, hazards)
    if not visible:
        return Verdict(None, EXIT_CURRENT, _NOT_VISIBLE, hazards)
    current = p.in_sync
    if why is Why.UNCERTAIN:
        return Verdict(None, EXIT_STALE, _UNCERTAIN, hazards)
    if not current:
        stale = "STALE: the loaded header does not match the system"
        differences = tuple(p.diff.lines()) if p.diff else ()
        return Verdict(current, EXIT_STALE, stale, hazards, differences)
    return Verdict(current, EXIT_CURRENT, "loaded and current", hazards)


def _carried_out(p: Plan, hazards: tuple[str, ...], amend_error: str | None) -> Verdict:
    from kexecd.image.plan import Action

    if amend_error is not None:
        stale = f"STALE: the command line kexec-tools loaded could not be amended: {amend_error}"
        return Verdict(False, EXIT_STALE, stale, hazards)
    if p.action in (Action.NOTHING, Action.RELOAD_HEADER):  # the same segment as planned
        hazards += _size_hazards(p)
    return Verdict(True, EXIT_CURRENT, "loaded and current", hazards)


def _size_hazards(p: Plan) -> tuple[str, ...]:
    # The header outgrew its segment, or nearly fills it.
    from kexecd.image.plan import Action, Why

    why, reason = p.decision.why, p.decision.reason
    if why is Why.TOO_BIG and p.action is Action.RELOCATE:
        return (f"{reason}: the next refresh does it (one kexec_load)",)
    if why is Why.TOO_BIG:
        return (f"{reason}: the next refresh re-runs kexec",)
    cap = p.snapshot.header_capacity or 0
    if p.room is not None and p.room * _LOW_ROOM < cap:
        return (
            f"only {p.room} of {cap} program headers free (under 10%): 'kexecd grow "
            f"--capacity {2 * cap}' makes room ahead of a scale-up",
        )
    return ()


def summary(v: Verdict | None, st: DaemonState) -> str:
    """systemd's one-line ``STATUS=`` of the daemon: its last verdict ``v``
    (``None`` before the first reconcile) with the counts of ``st``."""
    if v is not None and v.exit_code == EXIT_ERROR:
        message = st.last_error.message if st.last_error else v.headline.removeprefix("error: ")
        retry = f" (retrying in {st.retry_in_s:.0f} s)" if st.retry_in_s else ""
        return f"error: {message}"[:170] + retry
    if v is not None and v.exit_code == EXIT_NOT_LOADED:
        return "no crash kernel loaded: nothing to keep current"
    if v is not None and v.exit_code != EXIT_CURRENT:  # stale, or uncertain
        return v.headline[:200]
    if v is not None and v.standing_aside:
        return "standing aside: the kernel updates the header itself"
    last = st.last_update
    tail = f"; last update {last.work_ms:.0f} ms" if last else ""
    shape = f"{st.cpus} CPUs, {st.ranges} ranges, " if st.cpus is not None else ""
    return f"in sync: {shape}{st.events} events, {st.reloads} reloads{tail}"
