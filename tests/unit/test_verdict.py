# SPDX-License-Identifier: GPL-2.0-or-later
"""One verdict: ``kexecd status`` (text, JSON, exit code), the daemon's
``STATUS=`` line and ``kexecd.prom``'s ``kexecd_in_sync`` all say the same
thing, for every decision rule (:class:`kexecd.image.plan.Why`) and every
hazard; and a full reload whose command-line amendment failed is stale in
all three."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from kexecd.cli import status as cli_status
from kexecd.image import loader, plan
from kexecd.image.plan import Action, Decision, Plan, Why
from kexecd.image.refresher import RefreshResult
from kexecd.image.store import open_snapshot
from kexecd.service import metrics, verdict
from kexecd.service.assess import report_of
from kexecd.service.config import Config
from kexecd.service.daemon import Daemon
from kexecd.service.loop import Loop
from kexecd.service.recorder import Recorder
from kexecd.service.statefile import DaemonState, UpdateRecord
from kexecd.service.verdict import EXIT_CURRENT, EXIT_ERROR, EXIT_NOT_LOADED, EXIT_STALE, Verdict
from kexecd.system.root import Root
from testbed.images import NO_MEMHOTPLUG, image, loaded_root
from tests.unit import fakes
from tests.unit.fakes import ARGV, FakeBackend, FakeMonitor, tracer_for
from tests.unit.test_metrics import parse
from tests.unit.test_relocate import _loaded_boot, _many_ranges

# -- the three renderings of one verdict ----------------------------------------------


def _status(p: Plan, v: Verdict) -> tuple[int, str, dict[str, object]]:
    """``kexecd status`` of plan ``p`` judged ``v``: exit code, text, JSON."""
    st = cli_status.Status(EXIT_CURRENT, "", True)
    cli_status._apply(st, report_of(p, v))
    return st.exit_code, cli_status.render(st), json.loads(cli_status.to_json(st))


def _prom_in_sync(st: DaemonState) -> float:
    families = parse(metrics.render(st, metrics.Host(masked=False, kexec_tools=None)))
    return families["kexecd_in_sync"][2][""]


def _assert_agree(v: Verdict, p: Plan, st: DaemonState, line: str) -> None:
    """Status (exit code, first line, JSON ``current``), the STATUS= line and
    ``kexecd_in_sync`` of the daemon's state ``st`` all follow ``v``."""
    code, text, d = _status(p, v)
    assert code == v.exit_code == d["exit_code"]
    assert d["current"] == v.in_sync == st.in_sync
    assert text.splitlines()[0] == f"crash kernel   {v.headline}"
    assert d["hazards"] == list(v.hazards)
    assert _prom_in_sync(st) == (1 if v.in_sync is True else 0)
    if v.in_sync is True:  # current: status 0, STATUS= says so, the metric 1
        assert code == EXIT_CURRENT
    if code == EXIT_CURRENT:
        assert line.startswith(("in sync: ", "standing aside: "))
    elif code == EXIT_NOT_LOADED:
        assert v.in_sync is None and line.startswith("no crash kernel loaded")
    elif code == EXIT_ERROR:
        assert v.in_sync is False and line.startswith("error: ")
    else:
        assert code == EXIT_STALE and v.in_sync is not True
        assert line == v.headline and line.startswith(("STALE: ", "UNCERTAIN: "))


def _recorded(tmp_path: Path, p: Plan, r: RefreshResult) -> Recorder:
    """A daemon's recorder after it carried out ``r`` (of plan ``p``)."""
    cfg = Config(state_dir=tmp_path / "state", runtime_dir=tmp_path / "run", metrics_dir="")
    rec = Recorder(cfg, Root(tmp_path), Loop())
    rec.succeeded(UpdateRecord(time="now", why="events"), r, 0.0, None)
    assert r.plan is p
    return rec


@pytest.fixture
def plans(tmp_path: Path) -> dict[str, Plan]:
    """Real plans of the boot image: current, stale (the hot-added system),
    blind (no header kexecd can read), and a command line to amend."""
    root, state = _loaded_boot(tmp_path)
    snap = open_snapshot(state)
    current = plan.make(snap, Root(root))
    stale = plan.make(snap, Root(loaded_root("hotadd", tmp_path)))
    blind = replace(
        current,
        facts=replace(current.facts, loaded=None, wanted=None),
        current=None,
        target=None,
        system=None,
    )
    hot = loaded_root("boot", tmp_path / "hot", memory_hotplug=True)
    cut = tmp_path / "cut"
    cap = image("boot", strip=NO_MEMHOTPLUG)
    loader.load(ARGV, cut, root=Root(hot), tracer=tracer_for(cap))
    cmdline = plan.make(open_snapshot(cut), Root(hot))
    assert (current.decision.why, stale.decision.why) == (Why.CURRENT, Why.STALE)
    assert cmdline.decision.why is Why.CMDLINE
    return {"current": current, "stale": stale, "blind": blind, "cmdline": cmdline}


# Every rule of plan.decide(), on the plan it decides for: the base plan
# and the action it takes.
RULES = [
    (Why.CURRENT, "current", Action.NOTHING),
    (Why.NOT_LOADED, "blind", Action.NOTHING),
    (Why.UNCERTAIN, "stale", Action.RELOAD_HEADER),
    (Why.KERNEL_UPDATES, "blind", Action.STAND_ASIDE),
    (Why.FILE_LOAD, "blind", Action.FULL_RELOAD),
    (Why.NO_HEADER, "blind", Action.FULL_RELOAD),
    (Why.TOO_BIG, "stale", Action.FULL_RELOAD),
    (Why.TOO_BIG, "stale", Action.RELOCATE),
    (Why.NO_DIGEST, "stale", Action.FULL_RELOAD),
    (Why.STALE, "stale", Action.RELOAD_HEADER),
    (Why.CMDLINE, "cmdline", Action.RELOAD_HEADER),
    (Why.GROW, "current", Action.RELOCATE),
    (Why.KERNEL_MISSED, "blind", Action.FULL_RELOAD),
    (Why.KERNEL_MISSED, "stale", Action.RELOAD_HEADER),
]


def test_every_rule_is_covered() -> None:
    assert {why for why, _, _ in RULES} == set(Why)


@pytest.mark.parametrize(("why", "base", "action"), RULES)
def test_renderings_agree_for_every_rule(
    plans: dict[str, Plan], tmp_path: Path, why: Why, base: str, action: Action
) -> None:
    p = replace(plans[base], decision=Decision(action, why, f"the rule {why.name}"))
    if why is Why.NOT_LOADED:
        facts = replace(p.facts, cmdline=None, crash_loaded=False)
        p = replace(p, facts=facts, kexec=replace(p.kexec, crash_loaded=False))
    # As status sees it, before anything is done ...
    made = verdict.judge(p)
    st = DaemonState(in_sync=made.in_sync)
    _assert_agree(made, p, st, verdict.summary(made, st))
    # ... and as the daemon records it once carried out.
    rec = _recorded(tmp_path, p, RefreshResult(p, loaded=action is not Action.NOTHING))
    done = rec.verdict
    assert done is not None
    _assert_agree(done, p, rec.state, rec.summary())
    expected = {Why.NOT_LOADED: None}.get(why, True)
    assert done.in_sync is expected and rec.state.in_sync is expected
    assert done.standing_aside is (why is Why.KERNEL_UPDATES)
    if why in (Why.STALE, Why.CMDLINE, Why.UNCERTAIN, Why.TOO_BIG, Why.NO_DIGEST):
        assert made.exit_code == EXIT_STALE and made.in_sync is not True


def test_a_failure_agrees(plans: dict[str, Plan]) -> None:
    v = verdict.failure("kexec_load failed: ENOMEM")
    st = DaemonState(in_sync=v.in_sync)
    line = verdict.summary(v, st)
    assert line == "error: kexec_load failed: ENOMEM"
    assert (v.exit_code, v.in_sync, _prom_in_sync(st)) == (EXIT_ERROR, False, 0)


# -- the hazards ----------------------------------------------------------------------


def test_too_big_hazards(plans: dict[str, Plan], tmp_path: Path) -> None:
    for action, tail in (
        (Action.RELOCATE, "the next refresh does it (one kexec_load)"),
        (Action.FULL_RELOAD, "the next refresh re-runs kexec"),
    ):
        p = replace(plans["stale"], decision=Decision(action, Why.TOO_BIG, "too big"))
        made = verdict.judge(p)
        assert made.hazards == (f"too big: {tail}",) and made.exit_code == EXIT_STALE
        st = DaemonState(in_sync=made.in_sync)
        _assert_agree(made, p, st, verdict.summary(made, st))
        # Carried out, the header moved or was loaded whole: no longer a hazard.
        rec = _recorded(tmp_path / action.value, p, RefreshResult(p, loaded=True))
        assert rec.verdict is not None and rec.verdict.hazards == ()
        _assert_agree(rec.verdict, p, rec.state, rec.summary())


def test_low_room_hazard(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root, state = _loaded_boot(tmp_path)
    _many_ranges(root, 270)
    fakes.refresh(state, root=Root(root), backend=FakeBackend(root=root))
    p = plan.make(open_snapshot(state), Root(root))
    low = (
        "only 14 of 291 program headers free (under 10%): 'kexecd grow --capacity 582' "
        "makes room ahead of a scale-up"
    )
    made = verdict.judge(p)
    assert made.hazards == (low,) and made.in_sync is True
    st = DaemonState(in_sync=made.in_sync)
    _assert_agree(made, p, st, verdict.summary(made, st))
    with caplog.at_level(logging.WARNING, logger="kexecd"):
        rec = _recorded(tmp_path, p, RefreshResult(p))
    assert rec.verdict is not None and rec.verdict.hazards == (low,)
    _assert_agree(rec.verdict, p, rec.state, rec.summary())
    assert low in caplog.messages  # the daemon says it too, once


def test_cmdline_hazard(tmp_path: Path) -> None:
    # No room for the word: kexecd cannot append it; current all the same.
    hot = loaded_root("boot", tmp_path, memory_hotplug=True)
    state = tmp_path / "state"
    cap = image("boot", strip=NO_MEMHOTPLUG, spare=10)
    loader.load(ARGV, state, root=Root(hot), tracer=tracer_for(cap))
    p = plan.make(open_snapshot(state), Root(hot))
    made = verdict.judge(p)
    (hazard,) = made.hazards
    assert "kexecd cannot append it" in hazard and made.exit_code == EXIT_CURRENT
    st = DaemonState(in_sync=made.in_sync)
    _assert_agree(made, p, st, verdict.summary(made, st))
    rec = _recorded(tmp_path, p, RefreshResult(p))
    assert rec.verdict is not None and rec.verdict.hazards == (hazard,)
    _assert_agree(rec.verdict, p, rec.state, rec.summary())


# -- a full reload whose amendment failed -------------------------------------------


def _amend_fails(tmp_path: Path) -> tuple[Daemon, Config, Path]:
    """A daemon whose next refresh is a full reload (the header outgrew its
    segment, which cannot move) on a host that can hot-add memory, with a
    kexec-tools line that lacks acpi_no_memhotplug: kexec-tools' load works,
    kexecd's amendment of the line after it fails (the kernel refuses it)."""
    cap = image("boot", strip=NO_MEMHOTPLUG)
    small = list(cap.segments)
    small[5] = replace(small[5], memsz=1024)  # hotadd's header needs 2048
    root = loaded_root("hotadd", tmp_path, memory_hotplug=True)
    state = tmp_path / "state"
    loader.load(
        ARGV, state, root=Root(root), tracer=tracer_for(replace(cap, segments=tuple(small)))
    )
    (tmp_path / "metrics").mkdir()
    cfg = Config(
        state_dir=state,
        runtime_dir=tmp_path / "run",
        root=root,
        metrics_dir=str(tmp_path / "metrics"),
    )
    tracer = tracer_for(image("hotadd", strip=NO_MEMHOTPLUG))
    daemon = Daemon(cfg, FakeMonitor(), backend=FakeBackend(fail=1), tracer=tracer)
    return daemon, cfg, root


def _assert_stale_everywhere(
    daemon: Daemon, cfg: Config, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    st = daemon.state
    assert st.in_sync is False and st.full_reloads == 1 and st.failed == 0
    assert daemon.summary().startswith(
        "STALE: the command line kexec-tools loaded could not be amended: "
    )
    prom = parse((Path(cfg.metrics_dir) / "kexecd.prom").read_text())
    assert prom["kexecd_in_sync"][2][""] == 0
    rc = cli_status.gather(cfg.state_dir, Root(root), cfg.runtime_dir)
    assert rc.exit_code == EXIT_STALE and rc.current is False
    assert rc.verdict.startswith("STALE: the next refresh will append acpi_no_memhotplug")


def test_a_failed_amendment_is_stale_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon, cfg, root = _amend_fails(tmp_path)
    assert daemon.reconcile("start").action == "full-reload"
    _assert_stale_everywhere(daemon, cfg, root, capsys)
