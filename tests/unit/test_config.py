# SPDX-License-Identifier: GPL-2.0-or-later
"""/etc/kexecd.conf, logging, and sd_notify plumbing."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from kexecd.cli import main
from kexecd.errors import ConfigError
from kexecd.paths import DEFAULT_CONFIG
from kexecd.service import config, notify
from kexecd.service.config import Config, load_config


def test_defaults_when_the_default_file_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "kexecd.conf"
    monkeypatch.setattr(config, "DEFAULT_CONFIG", missing)
    assert load_config(missing) == Config()
    assert str(DEFAULT_CONFIG) == "/etc/kexecd.conf"


def test_file_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "kexecd.conf"
    f.write_text('state_dir = "/srv/kexecd"\nsource = "kernel"\nsettle_ms = 50\n')
    cfg = load_config(f, source=None, root=tmp_path)
    assert cfg.state_dir == Path("/srv/kexecd") and cfg.source == "kernel"
    assert cfg.settle_ms == 50 and cfg.max_delay_ms == 3000 and cfg.root == tmp_path
    assert cfg.crash_acpi_no_memhotplug is True
    f.write_text("crash_acpi_no_memhotplug = false\n")
    assert load_config(f).crash_acpi_no_memhotplug is False


def test_metrics_dir(tmp_path: Path) -> None:
    # node exporter's textfile directory on Debian by default; "" turns it off.
    assert Config().metrics_dir == "/var/lib/prometheus/node-exporter"
    f = tmp_path / "kexecd.conf"
    f.write_text('metrics_dir = ""\n')
    assert load_config(f).metrics_dir == ""
    f.write_text('metrics_dir = "/srv/textfiles"\n')
    assert load_config(f).metrics_dir == "/srv/textfiles"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("state_dir = ", "not TOML"),
        ("colour = 1\n", "unknown key 'colour'"),
        ('settle_ms = "fast"\n', "settle_ms must be a int"),
        ("settle_ms = true\n", "settle_ms must be a int"),
        ('crash_acpi_no_memhotplug = "no"\n', "crash_acpi_no_memhotplug must be a bool"),
        ('source = "netlink"\n', "source must be 'udev' or 'kernel'"),
        ("metrics_dir = false\n", "metrics_dir must be a str"),
        ('metrics_dir = "textfiles"\n', 'metrics_dir must be an absolute path, or ""'),
        ("settle_ms = 4000\n", "need 0 < settle_ms <= max_delay_ms"),
    ],
)
def test_bad_config_names_the_file(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "kexecd.conf"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_config(f)
    assert str(e.value).startswith(str(f))


def test_missing_named_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing"):
        load_config(tmp_path / "nope.conf")


def test_run_with_a_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "kexecd.conf"
    f.write_text("colour = 1\n")
    assert main(["run", "--config", str(f)]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err


def test_notify_and_watchdog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.notify("READY=1") is False
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify.notify("READY=1") is True
        assert s.recv(100) == b"READY=1"
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert notify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert notify.watchdog_interval() is None


def test_logs_to_stderr_with_fields(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(notify, "JOURNAL_SOCKET", tmp_path / "no-journal")
    log = notify.setup_logging()
    log.info("reloaded", extra={"KEXECD_ACTION": "reload-header", "KEXECD_WORK_MS": 12})
    assert capsys.readouterr().err == "kexecd: reloaded action=reload-header work_ms=12\n"


def test_logs_to_the_journal_when_it_is_there(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from systemd.journal import JournalHandler

    journal = tmp_path / "journal.sock"
    journal.touch()
    monkeypatch.setattr(notify, "JOURNAL_SOCKET", journal)
    monkeypatch.delenv("KEXECD_LOG_STDERR", raising=False)
    log = notify.setup_logging()
    assert [type(h) for h in log.handlers] == [JournalHandler]
    logging.getLogger("kexecd").handlers.clear()
