# SPDX-License-Identifier: GPL-2.0-or-later
"""Taking over a distro-loaded crash kernel: kdump-tools' kexec_cmd, kexecd adopt,
the daemon's adoption at start and on change. Fake roots, a fake tracer and a
fake backend; the replay's shell is real (it runs a stand-in kexec)."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kexecd.cli import main
from kexecd.core import trace_kexec
from kexecd.errors import AdoptError, ConfigError
from kexecd.image.deps import Deps
from kexecd.image.plan import Action
from kexecd.image.refresher import Refresher
from kexecd.image.store import open_snapshot
from kexecd.service.adopt import AdoptResult, adopt, needs_adoption
from kexecd.service.config import Config
from kexecd.service.daemon import Daemon
from kexecd.service.monitor import Event
from kexecd.service.statefile import read_state
from kexecd.system.kdumptools import default_kexec_cmd, read_kexec_cmd, replay_argv
from kexecd.system.root import Root
from testbed.images import NO_MEMHOTPLUG, SETUP, image, loaded_root
from tests.unit import fakes
from tests.unit.fakes import FakeBackend, FakeMonitor, run_until, started, tracer_for

# What kdump-tools 1.8.1 writes, as seen on a bookworm host (FIELD-NOTES section 12).
DEBIAN = (
    '/sbin/kexec -p --command-line="root=/dev/vda rw console=ttyS0 reset_devices '
    'systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll usbcore.nousb" '
    "--initrd=/var/lib/kdump/initrd.img /var/lib/kdump/vmlinuz"
)
# With KDUMP_KEXEC_ARGS="-d --reuse-cmdline" and KDUMP_CMDLINE_APPEND quoting a value.
EXTRA_ARGS = (
    "/sbin/kexec -p -d --reuse-cmdline "
    "--command-line=\"root=UUID=1234 ro acpi_no_memhotplug dyndbg='file x.c +p'\" "
    "--initrd=/var/lib/kdump/initrd.img /var/lib/kdump/vmlinuz"
)
# Under Secure Boot kdump-config adds -s (kexec_file_load).
SECURE_BOOT = (
    '/sbin/kexec -p -s --command-line="root=/dev/sda1 reset_devices" '
    "--initrd=/var/lib/kdump/initrd.img /var/lib/kdump/vmlinuz"
)


def write_cmd(path: Path, line: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(line + "\n")
    path.chmod(mode)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A loaded fake root with kdump-tools installed (its defaults file)."""
    r = loaded_root("boot", tmp_path)
    (r / "etc/default").mkdir(parents=True)
    (r / "etc/default/kdump-tools").write_text("USE_KDUMP=1\n")
    return r


# -- kdump-tools' files ------------------------------------------------------------


def test_default_kexec_cmd_follows_kdump_coredir(tmp_path: Path) -> None:
    r = tmp_path / "r"
    assert default_kexec_cmd(Root(r)) is None  # kdump-tools not installed
    (r / "etc/default").mkdir(parents=True)
    defaults = r / "etc/default/kdump-tools"
    defaults.write_text("USE_KDUMP=1\n")
    assert default_kexec_cmd(Root(r)) == r / "var/crash/kexec_cmd"
    defaults.write_text('KDUMP_COREDIR="/srv/crash"  # dumps go here\nexport KDUMP_COREDIR\n')
    assert default_kexec_cmd(Root(r)) == r / "srv/crash/kexec_cmd"
    defaults.write_text("KDUMP_COREDIR=/a\n# KDUMP_COREDIR=/b\nexport KDUMP_COREDIR='/c'\n")
    assert default_kexec_cmd(Root(r)) == r / "c/kexec_cmd"
    for bad in ("KDUMP_COREDIR=$HOME/crash", "KDUMP_COREDIR=`pwd`", "KDUMP_COREDIR=rel/dir"):
        defaults.write_text(bad + "\n")
        with pytest.raises(ConfigError, match=r"kdump-tools:1: KDUMP_COREDIR=.*--kexec-cmd"):
            default_kexec_cmd(Root(r))


@pytest.mark.parametrize(
    ("line", "file_load", "initrd"),
    [
        (DEBIAN, False, "/var/lib/kdump/initrd.img"),
        (EXTRA_ARGS, False, None),
        (SECURE_BOOT, True, None),
    ],
)
def test_reads_real_kexec_cmd_lines(
    tmp_path: Path, line: str, file_load: bool, initrd: str | None
) -> None:
    cmd = read_kexec_cmd(write_cmd(tmp_path / "kexec_cmd", line))
    assert cmd.line == line and cmd.file_load is file_load
    assert cmd.words[0] == "/sbin/kexec" and cmd.words[-1] == "/var/lib/kdump/vmlinuz"
    if initrd:
        assert f"--initrd={initrd}" in cmd.words


@pytest.mark.parametrize("line", [DEBIAN, EXTRA_ARGS, SECURE_BOOT])
def test_replay_runs_the_line_as_kdump_config_does(tmp_path: Path, line: str) -> None:
    # The oracle: kdump-config's own 'eval $KEXEC_CMD', with a stand-in kexec
    # that writes the arguments it got, one per line.
    out = tmp_path / "args"
    kexec = tmp_path / "bin/kexec"
    kexec.parent.mkdir()
    kexec.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {out}\n')
    kexec.chmod(0o755)
    line = line.replace("/sbin/kexec", str(kexec))
    subprocess.run(["/bin/sh", "-c", "KEXEC_CMD=$1; eval $KEXEC_CMD", "sh", line], check=True)
    expected = out.read_text()
    out.unlink()
    cmd = read_kexec_cmd(write_cmd(tmp_path / "kexec_cmd", line))
    subprocess.run(replay_argv(cmd), check=True)
    assert out.read_text() == expected
    assert any(a.startswith("--command-line=") and " " in a for a in expected.splitlines())


def test_replay_is_traced_through_the_shell(tmp_path: Path, fake_kexec: Path) -> None:
    # kdump-config's eval, then a wrapper script: the crash load of the
    # grandchild is what the tracer records (skip mode: nothing reaches the kernel).
    kexec = tmp_path / "bin/kexec"
    kexec.parent.mkdir()
    kexec.write_text(f'#!/bin/sh\n"{fake_kexec}" crash\n')
    kexec.chmod(0o755)
    cmd = read_kexec_cmd(
        write_cmd(tmp_path / "kexec_cmd", DEBIAN.replace("/sbin/kexec", str(kexec)))
    )
    cap = trace_kexec(replay_argv(cmd), skip=True)
    assert cap.exit_code == 0 and cap.crash_loads == 1 and cap.result == 0


def test_refuses_unfit_kexec_cmd_files(tmp_path: Path) -> None:
    with pytest.raises(AdoptError, match="kexec_cmd: missing: no crash kernel was loaded"):
        read_kexec_cmd(tmp_path / "kexec_cmd")
    with pytest.raises(AdoptError, match="mode 0666: only a file that root alone can write"):
        read_kexec_cmd(write_cmd(tmp_path / "w/kexec_cmd", DEBIAN, 0o666))
    link = tmp_path / "link"
    link.symlink_to(write_cmd(tmp_path / "ok/kexec_cmd", DEBIAN))
    with pytest.raises(AdoptError, match="link: cannot open"):
        read_kexec_cmd(link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(AdoptError, match="fifo: not a regular file"):
        read_kexec_cmd(fifo)  # and no hang
    with pytest.raises(AdoptError, match="2 command lines, not one"):
        read_kexec_cmd(write_cmd(tmp_path / "two/kexec_cmd", DEBIAN + "\n" + DEBIAN))
    with pytest.raises(AdoptError, match="is not a 'kexec -p' command"):
        read_kexec_cmd(write_cmd(tmp_path / "rm/kexec_cmd", "rm -rf /"))
    big = tmp_path / "big/kexec_cmd"
    write_cmd(big, DEBIAN + " " + "x" * 70000)
    with pytest.raises(AdoptError, match="bytes, more than 65536"):
        read_kexec_cmd(big)


# -- kexecd adopt ------------------------------------------------------------------


def test_adopt_replays_kdump_tools_command(root: Path, tmp_path: Path) -> None:
    path = write_cmd(root / "var/crash/kexec_cmd", DEBIAN)
    tracer = tracer_for(image("boot"))
    state = tmp_path / "state"
    backend = FakeBackend()
    r = adopt(fakes.refresher(state, root=Root(root), backend=backend, tracer=tracer))
    assert tracer.calls == [replay_argv(read_kexec_cmd(path))]  # type: ignore[attr-defined]
    src = open_snapshot(state).source
    assert src is not None and src.path == str(path) and src.command == DEBIAN
    assert r.refresh.decision.action is Action.NOTHING and backend.loads == []
    assert needs_adoption(state, path) is None
    # kdump-config load (or reload) rewrites the file: adopt again.
    time.sleep(0.01)
    write_cmd(path, DEBIAN)
    assert "changed: the distro loaded the crash kernel again" in str(needs_adoption(state, path))


def test_adopt_after_a_hotplug_the_distro_missed(root: Path, tmp_path: Path) -> None:
    # The distro loaded at boot, memory and a CPU came (its rule masked), then
    # adopt: the replay builds the header for the system now, and the plan
    # finds it current at once. Nothing of the boot-time header is trusted.
    hot = loaded_root("hotadd", tmp_path)
    (hot / "etc/default").mkdir(parents=True)
    (hot / "etc/default/kdump-tools").write_text("")
    write_cmd(hot / "var/crash/kexec_cmd", DEBIAN)
    t = tracer_for(image("hotadd"))
    r = adopt(fakes.refresher(tmp_path / "s", root=Root(hot), tracer=t, backend=FakeBackend()))
    assert r.refresh.decision.action is Action.NOTHING and r.refresh.plan.in_sync


def test_adopt_refusals(root: Path, tmp_path: Path) -> None:
    t = tracer_for(image("boot"))
    state = tmp_path / "state"
    with pytest.raises(AdoptError, match="kexec_cmd: missing"):
        adopt(fakes.refresher(state, root=Root(root), tracer=t))
    bare = loaded_root("hotremove", tmp_path)
    with pytest.raises(AdoptError, match="kdump-tools is not installed; give the command file"):
        adopt(fakes.refresher(state, root=Root(bare), tracer=t))
    (root / "sys/kernel/kexec_crash_loaded").write_text("0\n")
    with pytest.raises(AdoptError, match="no crash kernel is loaded, so there is nothing"):
        adopt(fakes.refresher(state, root=Root(root), tracer=t))
    assert t.calls == [] and not state.exists()  # type: ignore[attr-defined]


def test_adopt_under_lockdown(root: Path, tmp_path: Path) -> None:
    lockdown = root / "sys/kernel/security/lockdown"
    lockdown.parent.mkdir(parents=True)
    lockdown.write_text("none [integrity] confidentiality\n")
    path = write_cmd(root / "var/crash/kexec_cmd", DEBIAN)
    t = tracer_for(image("boot"))
    with pytest.raises(
        AdoptError, match=r"locked down \(integrity\).*only the kernel's own crash"
    ):
        adopt(fakes.refresher(tmp_path / "s", root=Root(root), tracer=t))
    write_cmd(path, SECURE_BOOT)
    r = adopt(fakes.refresher(tmp_path / "s", root=Root(root), backend=FakeBackend(), tracer=t))
    assert any("locked down (integrity)" in n for n in r.notes)
    lockdown.write_text("[none] integrity confidentiality\n")
    write_cmd(path, DEBIAN)
    assert (
        adopt(
            fakes.refresher(tmp_path / "s", root=Root(root), backend=FakeBackend(), tracer=t)
        ).notes
        == []
    )


def test_adopt_a_given_command(root: Path, tmp_path: Path) -> None:
    t = tracer_for(image("boot"))
    argv = ["kdumpctl", "start"]
    r = adopt(
        fakes.refresher(tmp_path / "s", root=Root(root), backend=FakeBackend(), tracer=t),
        command=argv,
    )
    assert t.calls == [argv] and r.snapshot.source is None  # type: ignore[attr-defined]


def test_adopt_command_line(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["adopt", "--root", str(root), "--state-dir", str(tmp_path / "s")]
    assert main([*args, "--kexec-cmd", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kexecd adopt: " in err and "none: missing" in err


# -- the daemon --------------------------------------------------------------------


def test_daemon_adopts_at_start_and_when_the_distro_loads_again(
    root: Path, tmp_path: Path
) -> None:
    path = write_cmd(root / "var/crash/kexec_cmd", DEBIAN)
    state = tmp_path / "state"
    cfg = Config(state_dir=state, runtime_dir=tmp_path / "run", root=root, metrics_dir="")
    tracer = tracer_for(image("boot"))
    monitor = FakeMonitor()
    daemon = Daemon(cfg, monitor, backend=FakeBackend(), tracer=tracer)
    up = started(cfg)

    def reload() -> None:  # kdump-config reload, once the daemon runs
        while not up():
            time.sleep(0.01)
        time.sleep(0.05)
        write_cmd(path, SECURE_BOOT)

    t = threading.Thread(target=reload)
    t.start()
    run_until(daemon, monitor, lambda: daemon.state.adoptions >= 2)
    t.join()
    st = read_state(cfg.runtime_dir)
    assert st is not None and st.adoptions == 2 and st.adopted_from == str(path)
    assert st.last_update is not None and st.last_update.action == "adopt"
    assert "changed: the distro loaded the crash kernel again" in st.last_update.why
    assert len(tracer.calls) == 2  # type: ignore[attr-defined]
    snap = open_snapshot(state)
    assert snap.source is not None and snap.source.command == SECURE_BOOT


def test_daemon_without_kdump_tools_does_not_adopt(tmp_path: Path) -> None:
    r = loaded_root("boot", tmp_path)
    cfg = Config(
        state_dir=tmp_path / "state", runtime_dir=tmp_path / "run", root=r, metrics_dir=""
    )
    tracer = tracer_for(image("boot"))
    Daemon(cfg, FakeMonitor(), backend=FakeBackend(), tracer=tracer).run(max_seconds=0.1)
    st = read_state(cfg.runtime_dir)
    assert st is not None and st.adoptions == 0 and st.failed == 1  # no snapshot: as before
    assert tracer.calls == []  # type: ignore[attr-defined]


# -- kdump-tools' stock command line, amended --------------------------------------


@pytest.fixture
def hot_root(tmp_path: Path) -> Path:
    """kdump-tools installed on a host that can hot-add memory (ACPI)."""
    r = loaded_root("boot", tmp_path, memory_hotplug=True)
    (r / "etc/default").mkdir(parents=True)
    (r / "etc/default/kdump-tools").write_text("USE_KDUMP=1\n")
    write_cmd(r / "var/crash/kexec_cmd", DEBIAN)
    return r


def test_kexecd_adopt_appends_acpi_no_memhotplug(
    hot_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # kdump-tools' default line lacks the word (FIELD-NOTES 12): adopt appends
    # it in the same breath and says so.
    backend = FakeBackend()
    stock = image("boot", strip=NO_MEMHOTPLUG)

    def fake(refresher: Refresher, *args: Any) -> AdoptResult:
        deps = Deps(refresher.deps.root, backend, tracer_for(stock))
        return adopt(Refresher(refresher.store, deps, refresher.policy), *args)

    monkeypatch.setattr("kexecd.service.adopt.adopt", fake)
    state = tmp_path / "state"
    args = ["--root", str(hot_root), "--state-dir", str(state)]
    assert main(["adopt", *args]) == 0
    out = capsys.readouterr().out
    assert (
        "  then: reload-header: append acpi_no_memhotplug to the crash kernel's command line "
        "(this host can hot-add memory), and patch purgatory's digest" in out
    )
    assert (
        "  appended acpi_no_memhotplug to the crash kernel's command line (this host can "
        "hot-add memory); crash_acpi_no_memhotplug = false in kexecd.conf turns this off\n"
    ) in out
    ((_, _, segs),) = backend.loads
    assert segs[SETUP][0x5000:].rstrip(b"\0").endswith(b" elfcorehdr=1031540K acpi_no_memhotplug")
    assert open_snapshot(state).record.words() == ("acpi_no_memhotplug",)
    # Off in the config: adopted as it is, and the hazard said.
    off = tmp_path / "kexecd.conf"
    off.write_text("crash_acpi_no_memhotplug = false\n")
    assert main(["adopt", "--config", str(off), *args]) == 0
    out = capsys.readouterr().out
    assert "then: nothing: the loaded header is current" in out
    assert (
        "  hazard: the crash kernel's command line (as kexec-tools built it) lacks acpi_no_" in out
    )
    assert len(backend.loads) == 1


def test_daemon_adoption_appends_and_logs_it_once(
    hot_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    cfg = Config(state_dir=state, runtime_dir=tmp_path / "run", root=hot_root, metrics_dir="")
    backend = FakeBackend()
    tracer = tracer_for(image("boot", strip=NO_MEMHOTPLUG))
    monitor = FakeMonitor()
    daemon = Daemon(cfg, monitor, backend=backend, tracer=tracer)
    caplog.set_level(logging.INFO, logger="kexecd")

    def events() -> None:  # a reconcile after the adoption: nothing more to append
        while not started(cfg)():
            time.sleep(0.01)
        monitor.push(Event("online", "memory", "/devices/system/memory/memory8", 1))

    t = threading.Thread(target=events)
    t.start()
    run_until(daemon, monitor, lambda: daemon.state.reconciles >= 1)
    t.join()
    assert daemon.state.adoptions == 1 and len(backend.loads) == 1
    assert backend.loads[0][2][SETUP].rstrip(b"\0").endswith(b" acpi_no_memhotplug")
    appended = [r for r in caplog.records if r.getMessage().startswith("appended acpi_no_memh")]
    assert len(appended) == 1 and appended[0].KEXECD_CMDLINE  # type: ignore[attr-defined]


def test_daemon_with_the_setting_off_warns_once(
    hot_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    cfg = Config(
        state_dir=state,
        runtime_dir=tmp_path / "run",
        root=hot_root,
        crash_acpi_no_memhotplug=False,
        metrics_dir="",
    )
    backend = FakeBackend()
    tracer = tracer_for(image("boot", strip=NO_MEMHOTPLUG))
    daemon = Daemon(cfg, FakeMonitor(), backend=backend, tracer=tracer)
    caplog.set_level(logging.INFO, logger="kexecd")
    daemon.kexec_cmd = hot_root / "var/crash/kexec_cmd"  # as run() finds it
    assert daemon.adopt_if_needed("start") is not None
    daemon.reconcile("request")
    assert backend.loads == []
    warned = [r for r in caplog.records if "lacks acpi_no_memhotplug" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
