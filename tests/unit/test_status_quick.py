# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd status`` made by the running daemon (``kexecd.cli.quick``): the
same output and exit code as the command's own, for the system as it is
when asked; the command's own when the daemon cannot answer; and no engine
imported by the command when it does."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from kexecd.cli import main, quick
from kexecd.cli import status as cli_status
from kexecd.cli.dispatch import build
from kexecd.image import loader, statedir
from kexecd.service import control
from kexecd.service.config import Config
from kexecd.service.daemon import Daemon
from kexecd.service.statefile import SOCKET, read_state
from kexecd.system.root import Root
from testbed.images import image, loaded_root
from tests.unit.fakes import ARGV, FakeBackend, FakeMonitor, tracer_for

CRASH_ARGV = [*ARGV[:-1], "--append=console=ttyS0 irqpoll nr_cpus=1 acpi_no_memhotplug"]
HEAVY = ("kexecd._core", "_cffi_backend", "elftools", "kexecd.core", "kexecd.image.plan")


def _serve(cfg: Config) -> None:
    # The daemon, in a child: no events (FakeMonitor), no kexec_load (FakeBackend).
    Daemon(cfg, FakeMonitor(), backend=FakeBackend(), report=partial(cli_status.serve, cfg)).run(
        max_seconds=120
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Config]:
    """A daemon serving its control socket, over a root (a symlink the test
    may point elsewhere) where the loaded crash kernel is current."""
    state = tmp_path / "state"
    boot = loaded_root("boot", tmp_path)
    loader.load(CRASH_ARGV, state, root=Root(boot), tracer=tracer_for(image("boot")))
    (tmp_path / "root").symlink_to(boot)
    cfg = Config(
        state_dir=state, runtime_dir=tmp_path / "run", root=tmp_path / "root", metrics_dir=""
    )
    proc = multiprocessing.get_context("fork").Process(target=_serve, args=(cfg,))
    proc.start()
    try:
        deadline = time.monotonic() + 30
        while not _ready(cfg):
            assert proc.is_alive() and time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        yield cfg
    finally:
        if proc.pid is not None and proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)
        proc.join(30)


def _ready(cfg: Config) -> bool:
    try:
        st = read_state(cfg.runtime_dir)
    except Exception:  # half there: try again
        return False
    return st is not None and st.reconciled is not None and (cfg.runtime_dir / SOCKET).exists()


def _args(cfg: Config, *extra: str) -> list[str]:
    return [
        "status",
        "--state-dir",
        str(cfg.state_dir),
        "--root",
        str(cfg.root),
        "--runtime-dir",
        str(cfg.runtime_dir),
        *extra,
    ]


def _both(
    cfg: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *extra: str
) -> tuple[tuple[int, str], tuple[int, str]]:
    """``kexecd status`` answered by the daemon (this process makes none: its
    gather raises), then made by this process (no daemon asked)."""

    def made_here(*_: object, **__: object) -> cli_status.Status:
        raise AssertionError("status made by the command, not the daemon")

    with monkeypatch.context() as m:
        m.setattr(cli_status, "gather", made_here)
        quick_rc = main(_args(cfg, *extra))
        quick_out = capsys.readouterr().out
    with monkeypatch.context() as m:
        m.setattr(quick, "status", lambda *_: None)
        own_rc = main(_args(cfg, *extra))
        own_out = capsys.readouterr().out
    return (quick_rc, quick_out), (own_rc, own_out)


@pytest.mark.parametrize("extra", [(), ("--json",)])
def test_in_sync_as_the_command_says(
    daemon: Config,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: tuple[str, ...],
) -> None:
    fast, own = _both(daemon, capsys, monkeypatch, *extra)
    assert fast == own
    assert fast[0] == 0
    if extra:
        d = json.loads(fast[1])
        assert d["current"] is True and d["daemon"]["pid"] != os.getpid()
    else:
        assert fast[1].startswith("crash kernel   loaded and current\n")
        assert "\ndaemon         pid " in fast[1]


@pytest.mark.parametrize("extra", [(), ("--json",)])
def test_stale_since_the_daemon_looked(
    daemon: Config,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: tuple[str, ...],
) -> None:
    # The system changed and no event told the daemon: its state.json says
    # in sync, the status it makes when asked says what the system has now.
    hotadd = loaded_root("hotadd", tmp_path)
    (tmp_path / "root").unlink()
    (tmp_path / "root").symlink_to(hotadd)
    st = read_state(daemon.runtime_dir)
    assert st is not None and st.in_sync is True
    fast, own = _both(daemon, capsys, monkeypatch, *extra)
    assert fast == own
    assert fast[0] == 1
    assert "+ CPU 2" in fast[1]


def test_an_unreadable_snapshot_as_the_command_says(
    daemon: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (daemon.state_dir / "snapshot/manifest.json").write_text("{")
    fast, own = _both(daemon, capsys, monkeypatch)
    assert fast == own
    assert fast[0] == 2 and "manifest.json: unreadable" in fast[1]


def test_not_loaded_as_the_command_says(
    daemon: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (daemon.root / "sys/kernel/kexec_crash_loaded").write_text("0\n")
    fast, own = _both(daemon, capsys, monkeypatch)
    assert fast == own
    assert fast[0] == 3 and fast[1].startswith("crash kernel   no crash kernel loaded")


def test_other_directories_are_read_by_the_command(
    daemon: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other-state"
    args = _args(daemon)
    args[args.index("--state-dir") + 1] = str(other)
    conf = tmp_path / "kexecd.conf"
    conf.write_text("")
    assert quick.status(conf, other, daemon.root, daemon.runtime_dir, False) is None
    assert capsys.readouterr().out == ""
    assert main(args) == 2
    assert "no snapshot" in capsys.readouterr().out


def test_a_held_lock_is_waited_for_by_the_command(
    daemon: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The daemon's loop never waits for a writer: the command does, as
    # without a daemon.
    conf = tmp_path / "kexecd.conf"
    conf.write_text("")
    ask = partial(quick.status, conf, daemon.state_dir, daemon.root, daemon.runtime_dir, False)
    with statedir.locked(daemon.state_dir):
        assert ask() is None
    assert capsys.readouterr().out == ""
    assert ask() == 0
    assert capsys.readouterr().out.startswith("crash kernel   loaded and current\n")


def test_no_daemon_no_answer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    ask = partial(quick.status, tmp_path / "none.conf", tmp_path / "s", tmp_path, run, False)
    assert ask() is None  # no socket
    with socket.socket(socket.AF_UNIX) as s:  # a socket nobody listens on: a daemon gone
        s.bind(str(run / SOCKET))
    assert ask() is None
    assert capsys.readouterr().out == ""


def test_the_daemon_checks_the_request(daemon: Config, tmp_path: Path) -> None:
    serve = partial(cli_status.serve, daemon)
    (tmp_path / "kexecd.conf").write_text("")
    good = {
        "config": str(tmp_path / "kexecd.conf"),
        "state_dir": str(daemon.state_dir),
        "root": str(daemon.root),
        "runtime_dir": str(daemon.runtime_dir),
        "json": False,
    }
    assert serve(good)["ok"] is True
    assert "error" in serve({**good, "json": "yes"})
    assert "error" in serve({**good, "config": None})
    assert "error" in serve({**good, "config": str(tmp_path / "none.conf")})
    assert "error" in serve({**good, "root": "relative/root"})
    assert "error" in serve({**good, "state_dir": str(tmp_path)})
    assert control.parse_request(b'{"cmd": "report", "json": true}') == (
        "report",
        {"cmd": "report", "json": True},
    )
    cfg = Config(state_dir=daemon.state_dir, runtime_dir=tmp_path / "r2", metrics_dir="")
    assert "error" in Daemon(cfg, FakeMonitor(), backend=FakeBackend()).answer("report", good)


def test_the_command_imports_no_engine_when_the_daemon_answers(daemon: Config) -> None:
    code = (
        "import json, sys\n"
        "from kexecd.cli.main import main\n"
        f"rc = main({_args(daemon)!r})\n"
        "print(json.dumps([rc, sorted(sys.modules)]), file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    rc, modules = json.loads(out.stderr.splitlines()[-1])
    assert rc == 0 and out.stdout.startswith("crash kernel   loaded and current\n")
    assert [m for m in modules if m.startswith(HEAVY)] == []
    # Not even the dataclasses of the settings and the state, nor the parser.
    assert "dataclasses" not in modules and "kexecd.service.config" not in modules
    assert "argparse" not in modules and "kexecd.cli.dispatch" not in modules


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--json"],
        ["--root", "/r", "--state-dir=/s", "--runtime-dir", "/run/x", "--config", "/c"],
        ["--root=/a", "--root=/b", "--json", "--json"],
        ["--state-dir", "rel/s"],
    ],
)
def test_plain_options_read_as_argparse_reads_them(args: list[str]) -> None:
    got = quick.options(args)
    ns = build().parse_args(["status", *args])
    assert got == {
        "config": str(ns.config),
        "state_dir": None if ns.state_dir is None else str(ns.state_dir),
        "root": ns.root,
        "runtime_dir": None if ns.runtime_dir is None else str(ns.runtime_dir),
        "as_json": ns.json,
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--js"],  # an abbreviation
        ["--root"],
        ["--root="],
        ["--root", "-x"],
        ["--json=1"],
        ["-h"],
        ["--", "x"],
        ["extra"],
    ],
)
def test_other_forms_are_left_to_argparse(args: list[str]) -> None:
    assert quick.options(args) is None


def test_an_abbreviation_still_asks_the_daemon(
    daemon: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def made_here(*_: object, **__: object) -> cli_status.Status:
        raise AssertionError("status made by the command, not the daemon")

    monkeypatch.setattr(cli_status, "gather", made_here)
    args = _args(daemon)
    args[args.index("--runtime-dir")] = "--runtime"  # argparse takes it
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("crash kernel   loaded and current\n")


def test_the_configs_runtime_dir_finds_the_daemon(
    daemon: Config,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf = tmp_path / "kexecd.conf"
    conf.write_text(f'# the daemon\'s\nruntime_dir = "{daemon.runtime_dir}"\n')
    args = ["status", "--config", str(conf), "--state-dir", str(daemon.state_dir)]
    args += ["--root", str(daemon.root)]
    with monkeypatch.context() as m:
        m.setattr(cli_status, "gather", lambda *_, **__: pytest.fail("made by the command"))
        assert main(args) == 0
    assert capsys.readouterr().out.startswith("crash kernel   loaded and current\n")
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)  # never read: it would not end
    assert quick.status(fifo, daemon.state_dir, daemon.root, None, False) is None
