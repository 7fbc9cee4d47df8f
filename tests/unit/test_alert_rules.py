# SPDX-License-Identifier: GPL-2.0-or-later
"""docs/kexecd.rules.yml: promtool accepts it, its alerts fire on synthetic
series as tests/unit/kexecd.rules.test.yml expects, and it names only metrics
kexecd.prom has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from kexecd.service import metrics
from kexecd.service.statefile import DaemonState

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[1] / "docs" / "kexecd.rules.yml"
RULE_TESTS = HERE / "kexecd.rules.test.yml"
# The three (not in sync, not loaded, failures) and the dead daemon's.
ALERTS = {
    "KexecdCrashKernelStale",
    "KexecdCrashKernelNotLoaded",
    "KexecdReloadFailures",
    "KexecdDown",
}


def promtool_run(promtool: Path, *args: str | Path, cwd: Path = HERE) -> tuple[int, str]:
    p = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout + p.stderr


def test_promtool_checks_the_rules(promtool: Path) -> None:
    rc, out = promtool_run(promtool, "check", "rules", RULES)
    assert rc == 0 and "SUCCESS: 4 rules found" in out, out


def test_the_alerts_fire_on_synthetic_series(promtool: Path) -> None:
    rc, out = promtool_run(promtool, "test", "rules", RULE_TESTS)
    assert rc == 0 and "SUCCESS" in out, out
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M))
    assert alerts == ALERTS
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == alerts


def test_the_rules_name_only_metrics_kexecd_writes() -> None:
    written = metrics.render(DaemonState(), metrics.Host(False, None)) + metrics.heartbeat(0)
    families = set(re.findall(r"^# TYPE (\w+) ", written, re.M))
    for path in (RULES, RULE_TESTS):
        named = set(re.findall(r"\bkexecd_\w+", path.read_text()))
        assert named and named <= families, (path.name, named - families)


def test_the_rule_tests_would_catch_a_slower_alert(promtool: Path, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    slow = RULES.read_text().replace("for: 2m", "for: 10m")
    assert slow != RULES.read_text()
    (tmp_path / "docs/kexecd.rules.yml").write_text(slow)
    (tmp_path / "tests/unit").mkdir(parents=True)
    (tmp_path / "tests/unit" / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    rc, out = promtool_run(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path / "tests/unit")
    assert rc != 0 and "alertname: KexecdCrashKernelStale" in out, out
