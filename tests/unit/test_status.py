# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd status``: its verdicts, exit codes, and both renderings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kexecd.cli import main
from kexecd.cli.status import describe_image
from kexecd.image import loader
from kexecd.loads import KexecCall, LoadCapture
from kexecd.service.config import Config
from kexecd.service.daemon import Daemon
from kexecd.system.root import Root
from testbed.images import NO_MEMHOTPLUG, image, loaded_root
from tests.unit import fakes
from tests.unit.fakes import ARGV, FakeBackend, FakeMonitor, tracer_for

CRASH_ARGV = [*ARGV[:-1], "--append=console=ttyS0 irqpoll nr_cpus=1 acpi_no_memhotplug"]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    root = Root(loaded_root("boot", tmp_path))
    loader.load(CRASH_ARGV, state, root=root, tracer=tracer_for(image("boot")))
    return state


def status(
    capsys: pytest.CaptureFixture[str], state: Path, root: Path, run: Path, *extra: str
) -> tuple[int, str]:
    rc = main(
        [
            "status",
            "--state-dir",
            str(state),
            "--root",
            str(root),
            "--runtime-dir",
            str(run),
            *extra,
        ]
    )
    return rc, capsys.readouterr().out


def test_describe_image() -> None:
    img = describe_image(("kexec", "-p", "/boot/vmlinuz", "--initrd", "/i.img", "--append=a b"))
    assert (img["kernel"], img["initrd"], img["cmdline"]) == ("/boot/vmlinuz", "/i.img", "a b")


def test_current(state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = status(capsys, state, loaded_root("boot", tmp_path), tmp_path / "run")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "crash kernel   loaded and current"
    assert "image          /boot/vmlinuz  initrd /boot/initrd.img  (kexec_load)" in lines
    assert any(line.startswith("header         2 CPUs, 3 RAM ranges") for line in lines)
    assert "daemon         not running (no state.json)" in lines
    assert "kernel support none: this kernel has no crash_hotplug (before Linux 6.6)" in lines
    assert "hazards        none" in lines
    # Every line is label, padding, value: aligned at column 15.
    assert all(len(line) > 15 and line[14] == " " for line in lines)


def test_stale_names_what_is_missing(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = status(capsys, state, loaded_root("hotadd", tmp_path), tmp_path / "run")
    assert rc == 1
    assert out.startswith("crash kernel   STALE: the loaded header does not match the system")
    assert "differs        + CPU 2  (missing from the loaded header)" in out
    assert (
        "differs        + 0x100000000-0x13fffffff (1 GiB)  (missing from the loaded header)" in out
    )
    rc, out = status(capsys, state, loaded_root("hotadd", tmp_path), tmp_path / "run", "--json")
    d = json.loads(out)
    assert rc == 1 and d["current"] is False and "+ CPU 2" in d["differences"]


def test_not_loaded(state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = loaded_root("boot", tmp_path)
    (root / "sys/kernel/kexec_crash_loaded").write_text("0\n")
    rc, out = status(capsys, state, root, tmp_path / "run")
    assert rc == 3 and out.startswith("crash kernel   no crash kernel loaded")


def test_error(state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (state / "snapshot/manifest.json").write_text("{")
    rc, out = status(capsys, state, loaded_root("boot", tmp_path), tmp_path / "run")
    assert rc == 2 and "manifest.json: unreadable" in out
    rc, out = status(capsys, tmp_path / "nothing", loaded_root("boot", tmp_path), tmp_path / "r")
    assert rc == 2 and "no snapshot" in out


def _stripped(tmp_path: Path, spare: int = 64, *, hotplug: bool = True) -> tuple[Path, Path]:
    """A state dir with kdump-tools' kind of line loaded (no acpi_no_memhotplug),
    and a root that can hot-add memory (or not)."""
    state = tmp_path / "state"
    root = loaded_root("boot", tmp_path, memory_hotplug=hotplug)
    cap = image("boot", strip=NO_MEMHOTPLUG, spare=spare)
    loader.load(ARGV, state, root=Root(root), tracer=tracer_for(cap))
    return state, root


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "kexecd.conf"
    path.write_text(text)
    return str(path)


def test_acpi_no_memhotplug_to_append(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, root = _stripped(tmp_path)
    rc, out = status(capsys, state, root, tmp_path / "run")
    assert rc == 1
    assert out.startswith(
        "crash kernel   STALE: the next refresh will append acpi_no_memhotplug to the crash "
        "kernel's command line (this host can hot-add memory)\n"
    )
    assert "to append      acpi_no_memhotplug: this host can hot-add memory" in out
    assert "hazards        none" in out


def test_acpi_no_memhotplug_appended(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, root = _stripped(tmp_path)
    fakes.refresh(state, root=Root(root), backend=FakeBackend())
    rc, out = status(capsys, state, root, tmp_path / "run")
    assert rc == 0 and out.startswith("crash kernel   loaded and current\n")
    lines = out.splitlines()
    line = next(x for x in lines if x.startswith("command line"))
    assert line.endswith(" elfcorehdr=1031540K acpi_no_memhotplug")  # the line as loaded
    assert (
        "appended       acpi_no_memhotplug, by kexecd: this host can hot-add memory "
        "(crash_acpi_no_memhotplug = false turns it off)" in lines
    )
    assert "hazards        none" in lines
    # The kexec-tools that made the load, whose rules the header follows.
    assert (
        "built by       kexec-tools 2.0.25: every 'System RAM ...' range, at most 32,768 ranges"
        in lines
    )
    rc, out = status(capsys, state, root, tmp_path / "run", "--json")
    d = json.loads(out)
    assert rc == 0 and d["acpi_no_memhotplug"] == "appended" and d["hazards"] == []
    assert d["image"]["cmdline"].endswith(" acpi_no_memhotplug")
    assert d["image"]["kexec_tools"] == "2.0.25"


def test_acpi_no_memhotplug_off_is_a_hazard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, root = _stripped(tmp_path)
    off = _config(tmp_path, "crash_acpi_no_memhotplug = false\n")
    rc, out = status(capsys, state, root, tmp_path / "run", "--config", off)
    assert rc == 0 and out.startswith("crash kernel   loaded and current\n")
    assert (
        "hazards        the crash kernel's command line (as kexec-tools built it) lacks "
        "acpi_no_memhotplug and this host can hot-add memory: the crash kernel may take "
        'hot-added memory as its own RAM and makedumpfile fail ("Bad address"); kexecd '
        "does not append it (crash_acpi_no_memhotplug = false)" in out
    )
    rc, out = status(capsys, state, root, tmp_path / "run", "--config", off, "--json")
    d = json.loads(out)
    assert rc == 0 and d["acpi_no_memhotplug"] == "off" and len(d["hazards"]) == 1
    # refresh reads the same file: nothing is appended.
    assert main(["refresh", "--config", off, "--state-dir", str(state), "--root", str(root)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_acpi_no_memhotplug_without_room(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, root = _stripped(tmp_path, spare=10)
    rc, out = status(capsys, state, root, tmp_path / "run")
    assert rc == 0 and out.startswith("crash kernel   loaded and current\n")
    assert (
        "kexecd cannot append it: the command line would grow by 19 bytes, but only 10 are "
        "free after it in its segment; add it to the distro's crash command line "
        "(KDUMP_CMDLINE_APPEND in /etc/default/kdump-tools)" in out
    )


def test_acpi_no_memhotplug_not_needed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, root = _stripped(tmp_path, hotplug=False)
    rc, out = status(capsys, state, root, tmp_path / "run", "--json")
    d = json.loads(out)
    assert rc == 0 and d["acpi_no_memhotplug"] == "not-needed" and d["hazards"] == []


def test_a_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _config(tmp_path, "crash_acpi_no_memhotplug = 1\n")
    for cmd in ("status", "refresh", "adopt"):
        assert main([cmd, "--config", bad]) == 2
        err = capsys.readouterr().err
        assert err == f"kexecd {cmd}: {bad}: crash_acpi_no_memhotplug must be a bool, not 1\n"


def test_with_the_daemons_state(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = loaded_root("hotadd", tmp_path)
    cfg = Config(state_dir=state, runtime_dir=tmp_path / "run", root=root, metrics_dir="")
    Daemon(cfg, FakeMonitor(), backend=FakeBackend()).run(max_seconds=0.05)
    rc, out = status(capsys, state, root, tmp_path / "run")
    assert rc == 0
    assert (
        "daemon (gone)  pid " in out and "0 events, 1 reloads, 0 full, 0 skipped, 0 failed" in out
    )
    assert "last update    " in out and " reload-header in " in out


def test_status_takes_its_directories_from_the_config(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = loaded_root("boot", tmp_path)
    conf = _config(
        tmp_path,
        f'state_dir = "{state}"\nroot = "{root}"\nruntime_dir = "{tmp_path / "run"}"\n',
    )
    assert main(["status", "--config", conf]) == 0
    assert capsys.readouterr().out.startswith("crash kernel   loaded and current\n")
    # An option given wins over the file.
    assert main(["status", "--config", conf, "--state-dir", str(tmp_path / "none")]) == 2
    assert "no snapshot" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("line", "extra", "state", "hazards"),
    [
        (b"root=/dev/sda1 acpi_no_memhotplug\0", (), "present", 0),
        # The command gives its line twice: kexecd cannot amend it.
        (b"root=/dev/sda1\0", ("--command-line=root=/dev/sda1",), "cannot", 1),
        # Once: the next (whole) reload appends the word to it.
        (b"root=/dev/sda1\0", (), "to-append", 0),
    ],
)
def test_a_file_loaded_line_is_read_from_the_call(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    line: bytes,
    extra: tuple[str, ...],
    state: str,
    hazards: int,
) -> None:
    # kexec_file_load (Secure Boot, Fedora's -s): the kernel builds the boot
    # parameters from the line given, which the tracer captured.
    cap = LoadCapture(
        KexecCall.KEXEC_FILE_LOAD,
        0,
        0,
        0,
        (),
        line,
        1,
        0,
        crash_loads=1,
        unloads=0,
        reboot_loads=0,
    )
    root = loaded_root("boot", tmp_path, memory_hotplug=True)
    argv = [*ARGV, *extra, "-s"]
    loader.load(argv, tmp_path / "state", root=Root(root), tracer=tracer_for(cap))
    rc, out = status(capsys, tmp_path / "state", root, tmp_path / "run", "--json")
    d = json.loads(out)
    assert d["acpi_no_memhotplug"] == state and len(d["hazards"]) == hazards
    assert rc == (1 if state == "to-append" else 0), out
    assert d["image"]["cmdline"] == line.rstrip(b"\0").decode()
    if hazards:
        assert "kexecd cannot append it: the kernel builds the boot parameters of a " in out
        assert "gives the crash kernel's command line 2 times" in out
