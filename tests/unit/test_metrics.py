# SPDX-License-Identifier: GPL-2.0-or-later
"""kexecd.prom: rendered from the daemon's state, checked by promtool, written
only when a value changed or the heartbeat is due, off without its directory."""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kexecd import __version__
from kexecd.service import metrics, udevmask
from kexecd.service.config import Config
from kexecd.service.daemon import Daemon
from kexecd.service.metrics import HEARTBEAT, Exporter, Host, render
from kexecd.service.statefile import DaemonState, UpdateRecord
from kexecd.system.packages import installed_version
from kexecd.system.root import Root
from tests.unit.fakes import (
    FakeBackend,
    FakeMonitor,
    added,
    daemon_env,
    run_until,
    started,
    switch_root,
)

Families = dict[str, tuple[str, str, dict[str, float]]]

STATE = DaemonState(
    pid=1,
    events=16,
    reconciles=5,
    reloads=2,
    full_reloads=1,
    moves=1,
    skipped=1,
    failed=4,
    adoptions=1,
    last_update=UpdateRecord(
        "2026-11-25T19:33:52Z", "events", "reload-header", "why", 239.0, [], 340.5
    ),
    in_sync=True,
    cpus=3,
    ranges=5,
    ram=1878514688,
    header_cpus=2,
    header_ram=1341643776,
    phnum=9,
    capacity=291,
    crash_loaded=True,
    kernel_updates=False,
    syscall="kexec_load",
    reconciled="2026-11-25T19:33:52Z",
    kernel_drops={"lock-busy": 3, "too-large": 1},
    kernel_drop="too-large",
)
HOST = Host(masked=True, kexec_tools="1:2.0.25-3+deb12u3")
# Every family, its type and its samples for STATE and HOST.
EXPECTED: dict[str, tuple[str, dict[str, float]]] = {
    "kexecd_crash_kernel_loaded": ("gauge", {"": 1}),
    "kexecd_in_sync": ("gauge", {"": 1}),
    "kexecd_header_program_headers": ("gauge", {"": 9}),
    "kexecd_header_program_headers_limit": ("gauge", {"": 291}),
    "kexecd_header_cpus": ("gauge", {"": 2}),
    "kexecd_system_cpus": ("gauge", {"": 3}),
    "kexecd_header_ram_bytes": ("gauge", {"": 1341643776}),
    "kexecd_system_ram_bytes": ("gauge", {"": 1878514688}),
    "kexecd_events_total": ("counter", {"": 16}),
    "kexecd_reloads_total": ("counter", {'{kind="header"}': 2, '{kind="full"}': 1}),
    "kexecd_header_moves_total": ("counter", {"": 1}),
    "kexecd_reload_failures_total": ("counter", {"": 4}),
    "kexecd_adoptions_total": ("counter", {"": 1}),
    "kexecd_last_update_latency_seconds": ("gauge", {"": 0.3405}),
    "kexecd_last_update_duration_seconds": ("gauge", {"": 0.239}),
    "kexecd_last_reconcile_timestamp_seconds": ("gauge", {"": 1795635232}),
    "kexecd_kernel_dropped_updates_total": (
        "counter",
        {'{kind="lock-busy"}': 3, '{kind="not-built"}': 0, '{kind="too-large"}': 1},
    ),
    "kexecd_kernel_crash_hotplug": ("gauge", {"": 0}),
    "kexecd_distro_rule_masked": ("gauge", {"": 1}),
    "kexecd_info": (
        "gauge",
        {f'{{version="{__version__}",syscall="kexec_load",kexec_tools="1:2.0.25-3+deb12u3"}}': 1},
    ),
    "kexecd_heartbeat_timestamp_seconds": ("gauge", {"": 1795635300}),
}


def parse(text: str) -> Families:
    """The text format's families: name -> (HELP, TYPE, {labels: value})."""
    out: Families = {}
    for line in text.splitlines():
        m = re.fullmatch(r"# (HELP|TYPE) (\w+) (.+)", line)
        if m:
            kind, name, value = m.groups()
            help_, type_, samples = out.get(name, ("", "", {}))
            out[name] = (value, type_, samples) if kind == "HELP" else (help_, value, samples)
            continue
        m = re.fullmatch(r"(\w+)(\{.*\})? (\S+)", line)
        assert m, f"not a sample: {line!r}"
        out[m.group(1)][2][m.group(2) or ""] = float(m.group(3))
    return out


def families(path: Path) -> Families:
    return parse(path.read_text())


def test_every_metric_is_rendered_with_help_and_type() -> None:
    got = parse(render(STATE, HOST) + metrics.heartbeat(1795635300.7))
    assert list(got) == list(EXPECTED)  # in this order, none more
    for name, (help_, type_, samples) in got.items():
        assert len(help_) > 20, name
        assert type_ == EXPECTED[name][0], name
        assert samples == pytest.approx(EXPECTED[name][1]), name
    for name, (_, type_, _) in got.items():  # Prometheus' naming conventions
        assert name.startswith("kexecd_")
        assert name.endswith("_total") == (type_ == "counter"), name


def test_what_is_not_known_is_left_out() -> None:
    # Before a plan, or for a kexec_file_load image (no header to read): the
    # families stay, their samples go; the info label says "unknown".
    got = parse(render(DaemonState(pid=1), Host(masked=False, kexec_tools=None)))
    assert list(got) == list(EXPECTED)[:-1]
    assert got["kexecd_header_cpus"][2] == {} and got["kexecd_crash_kernel_loaded"][2] == {}
    assert got["kexecd_in_sync"][2] == {"": 0}
    assert got["kexecd_info"][2] == {
        f'{{version="{__version__}",syscall="unknown",kexec_tools="unknown"}}': 1
    }


def test_label_values_are_escaped() -> None:
    text = render(STATE, Host(masked=False, kexec_tools='2.0"25\\x\ny'))
    assert 'kexec_tools="2.0\\"25\\\\x\\ny"' in text


def test_promtool_checks_the_rendered_file(promtool: Path) -> None:
    for st in (STATE, DaemonState(pid=1)):
        text = render(st, HOST) + metrics.heartbeat(time.time())
        p = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert (p.returncode, p.stdout + p.stderr) == (0, "")


def test_promtool_would_catch_a_bad_name(promtool: Path) -> None:
    text = render(STATE, HOST).replace("kexecd_events_total", "kexecd_events")
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert p.returncode != 0 and 'should have "_total" suffix' in p.stdout + p.stderr


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_written_only_when_a_value_changed_or_the_heartbeat_is_due(tmp_path: Path) -> None:
    clock, wall = Clock(), Clock()
    out = Exporter(str(tmp_path), clock=clock, wall=wall)
    prom = tmp_path / "kexecd.prom"
    assert out.publish(render(STATE, HOST)) and out.deadline() == 1000 + HEARTBEAT
    before = prom.stat().st_mtime_ns
    time.sleep(0.01)
    clock.now += HEARTBEAT - 1
    assert not out.publish(render(STATE, HOST))  # the same values
    assert prom.stat().st_mtime_ns == before
    assert not out.due()
    changed = DaemonState(**{**STATE.__dict__, "events": 17})
    assert out.publish(render(changed, HOST))
    assert families(prom)["kexecd_events_total"][2] == {"": 17}
    assert families(prom)["kexecd_heartbeat_timestamp_seconds"][2] == {"": 1000}
    clock.now += HEARTBEAT
    wall.now += HEARTBEAT
    assert out.due() and out.publish(render(changed, HOST))  # the heartbeat
    assert families(prom)["kexecd_heartbeat_timestamp_seconds"][2] == {"": 1000 + HEARTBEAT}
    assert [p.name for p in tmp_path.iterdir()] == ["kexecd.prom"]


def test_readable_by_node_exporter_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)  # kexecd.service's UMask=
    try:
        Exporter(str(tmp_path)).publish(render(STATE, HOST))
    finally:
        os.umask(old)
    assert (tmp_path / "kexecd.prom").stat().st_mode & 0o777 == 0o644


def test_off_without_its_directory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert not Exporter("").enabled and not Exporter("").due()
    assert not Exporter("").publish(render(STATE, HOST))
    caplog.set_level(logging.DEBUG, logger="kexecd")
    clock = Clock()
    where = tmp_path / "node-exporter"
    out = Exporter(str(where), clock=clock)
    for _ in range(3):
        assert not out.publish(render(STATE, HOST))
        clock.now += HEARTBEAT
    assert out.deadline() is None  # no timer wakes the daemon for it
    assert not where.exists()
    (log,) = caplog.records  # one debug line, no warning
    assert log.levelno == logging.DEBUG and "does not exist (metrics_dir)" in log.getMessage()
    where.mkdir()  # node exporter installed later: the next look writes
    assert out.due() and out.publish(render(STATE, HOST))
    assert (where / "kexecd.prom").exists()


def test_a_failed_write_is_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    where = tmp_path / "file"
    where.write_text("")  # not a directory
    clock = Clock()
    out = Exporter(str(where), clock=clock)
    for _ in range(3):
        assert not out.publish(render(STATE, HOST))
        clock.now += HEARTBEAT
    (log,) = caplog.records
    assert log.levelno == logging.WARNING and "kexecd.prom: Not a directory" in log.getMessage()


def test_a_read_only_directory_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Node exporter installed after kexecd started: the unit's sandbox has
    # the new directory read-only.
    def read_only(path: Path, data: bytes, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(metrics, "write_atomic", read_only)
    assert not Exporter(str(tmp_path)).publish(render(STATE, HOST))
    (log,) = caplog.records
    assert "Read-only file system (under kexecd.service, a metrics_dir created after" in (
        log.getMessage()
    )
    assert "needs 'systemctl restart kexecd'" in log.getMessage()


def test_kexec_tools_version_from_dpkg(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    root = Root(tmp_path)
    assert installed_version(root, "kexec-tools") is None  # not a dpkg system
    status.write_text(
        "Package: kexec-tools-doc\nStatus: install ok installed\nVersion: 9\n\n"
        "Package: kexec-tools\nStatus: install ok installed\nPriority: optional\n"
        "Description: tools\n more: text\nVersion: 1:2.0.25-3+deb12u3\n\n"
        "Package: kdump-tools\nStatus: deinstall ok config-files\nVersion: 1:1.8.1\n"
    )
    assert installed_version(root, "kexec-tools") == "1:2.0.25-3+deb12u3"
    assert installed_version(root, "kdump-tools") is None  # removed, not purged
    assert installed_version(root, "makedumpfile") is None
    for junk in (b"\0\xff\n\n:::", b"Package: kexec-tools\nStatus:\n", b"Package: kexec-tools"):
        status.write_bytes(junk)
        assert installed_version(root, "kexec-tools") is None


def test_the_daemon_writes_after_each_reconcile(tmp_path: Path) -> None:
    # A failed load: the file says what the dump would miss, then the retry.
    cfg = daemon_env(tmp_path, settle_ms=50, max_delay_ms=300)
    hot = tmp_path / "root-hotadd"
    (hot / "var/lib/dpkg").mkdir(parents=True)
    (hot / "var/lib/dpkg/status").write_text(
        "Package: kexec-tools\nStatus: install ok installed\nVersion: 1:2.0.25-3\n"
    )
    (hot / "lib/udev/rules.d").mkdir(parents=True)
    (hot / "lib/udev/rules.d/50-kdump-tools.rules").write_text("\n")
    udevmask.mask(Root(hot), cfg.runtime_dir, reload=lambda: None)
    switch_root(tmp_path, "hotadd")
    daemon = Daemon(cfg, FakeMonitor(), backend=FakeBackend(fail=1, root=hot))
    prom = tmp_path / "metrics/kexecd.prom"
    assert daemon.reconcile("start").action == "failed"
    got = families(prom)

    def value(name: str) -> float:
        return got[name][2][""]

    assert value("kexecd_in_sync") == 0 and value("kexecd_crash_kernel_loaded") == 1
    assert (value("kexecd_header_cpus"), value("kexecd_system_cpus")) == (2, 3)
    assert value("kexecd_system_ram_bytes") - value("kexecd_header_ram_bytes") == 1 << 30
    assert value("kexecd_reload_failures_total") == 1
    assert value("kexecd_distro_rule_masked") == 1
    assert "kexecd_last_reconcile_timestamp_seconds" not in [n for n in got if got[n][2]]
    (info,) = got["kexecd_info"][2]
    assert 'syscall="kexec_load"' in info and 'kexec_tools="1:2.0.25-3"' in info
    assert daemon.reconcile("retry").action == "reload-header"
    got = families(prom)
    assert value("kexecd_in_sync") == 1 and value("kexecd_header_cpus") == 3
    assert value("kexecd_header_ram_bytes") == value("kexecd_system_ram_bytes")
    assert got["kexecd_reloads_total"][2] == {'{kind="header"}': 1, '{kind="full"}': 0}
    assert value("kexecd_header_program_headers") == 10
    assert abs(value("kexecd_last_reconcile_timestamp_seconds") - time.time()) < 5


def test_events_and_latency_reach_the_file(tmp_path: Path) -> None:
    cfg = daemon_env(tmp_path, settle_ms=50, max_delay_ms=300)
    monitor, backend = FakeMonitor(), FakeBackend()
    daemon = Daemon(cfg, monitor, backend=backend)

    def hotplug() -> None:
        while not started(cfg)():
            time.sleep(0.01)
        switch_root(tmp_path, "hotadd")
        monitor.push(added(32), added(33))

    t = threading.Thread(target=hotplug)
    t.start()
    run_until(daemon, monitor, lambda: bool(backend.loads) and not daemon.due())
    t.join()
    got = families(tmp_path / "metrics/kexecd.prom")
    assert got["kexecd_events_total"][2] == {"": 2}
    (latency,) = got["kexecd_last_update_latency_seconds"][2].values()
    (duration,) = got["kexecd_last_update_duration_seconds"][2].values()
    assert 0 < duration <= latency < 1


def test_the_heartbeat_wakes_an_idle_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No event, no watchdog: the file is still rewritten every HEARTBEAT.
    monkeypatch.setattr(metrics, "HEARTBEAT", 0.1)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    cfg = daemon_env(tmp_path, settle_ms=50, max_delay_ms=300)
    daemon = Daemon(cfg, FakeMonitor(), backend=FakeBackend())
    writes: list[float] = []
    publish = daemon.exporter.publish

    def counted(body: str) -> bool:
        wrote = publish(body)
        if wrote:
            writes.append(time.monotonic())
        return wrote

    monkeypatch.setattr(daemon.exporter, "publish", counted)
    daemon.run(max_seconds=0.65)
    assert 4 <= len(writes) <= 8, writes
    assert daemon.state.reconciles == 1  # a heartbeat is no reconcile


def test_a_missing_directory_costs_no_wakeup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "HEARTBEAT", 0.05)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    cfg = daemon_env(tmp_path, settle_ms=50, max_delay_ms=300)
    cfg = Config(**{**cfg.__dict__, "metrics_dir": str(tmp_path / "none")})
    daemon = Daemon(cfg, FakeMonitor(), backend=FakeBackend())
    looks: list[float] = []
    publish = daemon.exporter.publish
    monkeypatch.setattr(daemon.exporter, "publish", lambda b: looks.append(0) or publish(b))
    daemon.run(max_seconds=0.4)
    # The reconcile at start, and at most one more look when the loop wakes
    # for its end: a heartbeat timer would have made about 8.
    assert daemon.exporter.deadline() is None and len(looks) <= 2
    assert daemon.kexec_tools is None  # nor a read of dpkg's status
