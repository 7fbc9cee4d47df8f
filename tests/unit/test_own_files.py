# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 26, classes 1 and 5: kexecd's own files, read and written through one
opener and one writer (kexecd/files.py).

Class 1: a directory, a FIFO, a socket or a symlink where kexecd expects one
of its files gives one line naming the file, exit 2, and nothing written.
Class 5: a symlink planted at the name of a temporary file (or a directory
of kexecd's) is never followed: the write goes to the real name, the link's
target is untouched.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kexecd.cli import main
from kexecd.errors import KexecdError, OwnFileError, ServiceError, SnapshotError
from kexecd.files import ensure_dir, read_own, write_atomic
from kexecd.image.store import open_snapshot
from kexecd.service import metrics, runtime, statefile, udevmask
from kexecd.service.statefile import DaemonState
from kexecd.system.root import Root
from testbed.images import loaded_root
from tests.unit import fakes

KINDS = ["directory", "fifo", "socket", "symlink"]


def plant(path: Path, kind: str, elsewhere: Path) -> None:
    """Put a ``kind`` of non-regular file at ``path`` (whatever was there goes)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    if kind == "directory":
        path.mkdir()
        (path / "inside").write_text("x")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    else:
        elsewhere.write_bytes(b"the right bytes, elsewhere")
        path.symlink_to(elsewhere)


def tree(path: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``path`` with its mode, size and mtime: what a write changes."""
    out = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(path))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A loaded boot image, a hotadd root (a refresh would reload), fake kexec_load."""
    boot, state = fakes.loaded("boot", tmp_path)
    hotadd = loaded_root("hotadd", tmp_path)
    fakes.fake_kernel(monkeypatch)
    run = tmp_path / "run"
    run.mkdir()
    return {"state": state, "boot": boot, "hotadd": hotadd, "run": run, "tmp": tmp_path}


# -- class 1: every file of the state directory, every kind of non-regular file ----------

SNAPSHOT_FILES = [
    "manifest.json",
    *(f"seg-{i:02d}.bin" for i in (0, 3, 4, 5)),  # the boot capture's segments with bytes
    "loaded-header.bin",
    "loaded.json",
    "loading.json",
]


def one_line_naming(err: str, name: str) -> None:
    assert err.count("\n") == 1 and name in err and "Traceback" not in err, err
    assert "; " in err  # what is wrong; what to do


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", SNAPSHOT_FILES)
def test_refresh_refuses_a_non_regular_snapshot_file(
    host: dict[str, Path], name: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    snapdir = host["state"] / "snapshot"
    plant(snapdir / name, kind, host["tmp"] / "elsewhere")
    before = tree(host["state"])
    args = ["refresh", "--state-dir", str(host["state"]), "--root", str(host["hotadd"])]
    assert main(args) == 2
    one_line_naming(capsys.readouterr().err, name)
    assert tree(host["state"]) == before  # nothing written


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", SNAPSHOT_FILES)
def test_status_refuses_a_non_regular_snapshot_file(
    host: dict[str, Path], name: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(host["state"] / "snapshot" / name, kind, host["tmp"] / "elsewhere")
    args = ["--state-dir", str(host["state"]), "--root", str(host["boot"])]
    assert main(["status", *args, "--runtime-dir", str(host["run"])]) == 2
    out = capsys.readouterr().out
    assert name in out and "Traceback" not in out


@pytest.mark.parametrize("kind", KINDS)
def test_status_refuses_a_non_regular_state_json(
    host: dict[str, Path], kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(host["run"] / statefile.STATE_FILE, kind, host["tmp"] / "elsewhere")
    args = ["--state-dir", str(host["state"]), "--root", str(host["boot"])]
    assert main(["status", *args, "--runtime-dir", str(host["run"])]) == 2
    out = capsys.readouterr().out
    assert "state.json: " in out and "not a regular file" in out and "Traceback" not in out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["mask", "unmask"])
def test_udev_mask_record_not_a_regular_file(
    tmp_path: Path, command: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    plant(run / udevmask.RECORD, kind, tmp_path / "elsewhere")
    before = tree(tmp_path)
    assert main([command, "--root", str(tmp_path / "root"), "--runtime-dir", str(run)]) == 2
    one_line_naming(capsys.readouterr().err, udevmask.RECORD)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("kind", KINDS)
def test_daemon_lock_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    plant(tmp_path / runtime.INSTANCE_LOCK, kind, tmp_path / "elsewhere")
    with pytest.raises(ServiceError, match=r"daemon.lock: cannot open the daemon's lock") as e:
        runtime.claim(tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["fifo", "socket", "symlink"])
@pytest.mark.parametrize("name", ["state", "run"])
def test_a_directory_of_kexecd_that_is_not_one(
    host: dict[str, Path], name: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    where = host["tmp"] / f"{name}-bad"
    plant(where, kind, host["tmp"] / "elsewhere")
    args = ["--state-dir", str(where if name == "state" else host["state"])]
    run = where if name == "run" else host["run"]
    code = main(["status", *args, "--root", str(host["boot"]), "--runtime-dir", str(run)])
    assert code == 2 and "Traceback" not in capsys.readouterr().out
    with pytest.raises(OwnFileError, match=f"{where}: "):
        ensure_dir(where)


@pytest.mark.parametrize("kind", KINDS)
def test_the_one_reader(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "file"
    plant(path, kind, tmp_path / "elsewhere")
    with pytest.raises(SnapshotError, match=r"^.*/file: .*not a regular file.*; fix it$"):
        read_own(path, 100, SnapshotError, "fix it")
    path.unlink() if not path.is_dir() else shutil.rmtree(path)
    path.write_bytes(b"x" * 101)
    with pytest.raises(SnapshotError, match=r"file: 101 bytes, more than 100; fix it"):
        read_own(path, 100, SnapshotError, "fix it")
    path.chmod(0o666)
    with pytest.raises(SnapshotError, match=r"mode 0666: only a file that"):
        read_own(path, 1000, SnapshotError, "fix it", owner=os.geteuid())
    with pytest.raises(SnapshotError, match=r"file-missing: missing; fix it"):
        read_own(tmp_path / "file-missing", 100, SnapshotError, "fix it")


# -- class 5: no write follows a symlink planted in kexecd's directories -----------------


def _record_begin(h: dict[str, Path]) -> tuple[Path, Callable[[], Any]]:
    snap = open_snapshot(h["state"])
    return snap.path / "loading.json", lambda: snap.record.begin(snap.record.header())


def _record_done_header(h: dict[str, Path]) -> tuple[Path, Callable[[], Any]]:
    snap = open_snapshot(h["state"])
    header = snap.record.header()
    return snap.path / "loaded-header.bin", lambda: snap.record.done(header, None, "test")


def _record_done_json(h: dict[str, Path]) -> tuple[Path, Callable[[], Any]]:
    snap = open_snapshot(h["state"])
    header = snap.record.header()
    return snap.path / "loaded.json", lambda: snap.record.done(header, None, "test")


def _record_whole(h: dict[str, Path]) -> tuple[Path, Callable[[], Any]]:
    snap = open_snapshot(h["state"])
    return snap.path / "loaded.json", lambda: snap.record.done_whole("test")


def _state_json(h: dict[str, Path]) -> tuple[Path, Callable[[], Any]]:
    return h["run"] / "state.json", lambda: statefile.write_state(h["run"], DaemonState())


def _udev_record(h: dict[str, Path]) -> tuple[Path, Callable[[], Any]]:
    return h["run"] / udevmask.RECORD, lambda: udevmask.mask(Root(h["boot"]), h["run"])


def _metrics(h: dict[str, Path]) -> tuple[Path, Callable[[], Any]]:
    (h["tmp"] / "metrics").mkdir(exist_ok=True)
    exporter = metrics.Exporter(str(h["tmp"] / "metrics"))
    return h["tmp"] / "metrics" / metrics.PROM_FILE, lambda: exporter.publish("body\n")


def _refresh(h: dict[str, Path]) -> tuple[Path, Callable[[], Any]]:
    # A whole refresh that reloads the header: its intent, header and record.
    args = ["refresh", "--state-dir", str(h["state"]), "--root", str(h["hotadd"])]
    return h["state"] / "snapshot/loaded.json", lambda: main(args)


WRITERS: dict[str, Callable[[dict[str, Path]], tuple[Path, Callable[[], Any]]]] = {
    "loading.json": _record_begin,
    "loaded-header.bin": _record_done_header,
    "loaded.json": _record_done_json,
    "loaded.json (a file load)": _record_whole,
    "state.json": _state_json,
    "udev-masks.json": _udev_record,
    "kexecd.prom": _metrics,
    "kexecd refresh": _refresh,
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_symlink_at_the_temporary_name_is_not_followed(
    host: dict[str, Path], writer: str
) -> None:
    target, write = WRITERS[writer](host)
    victim = host["tmp"] / "victim"
    victim.write_bytes(b"not kexecd's")
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.symlink_to(victim)
    write()
    assert victim.read_bytes() == b"not kexecd's"
    assert not os.path.lexists(tmp)
    assert target.is_file() and not target.is_symlink() and target.stat().st_size > 0


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_directory_at_the_temporary_name_is_one_line(
    host: dict[str, Path], writer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target, write = WRITERS[writer](host)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.mkdir()
    try:
        result = write()
    except KexecdError as e:
        assert str(e).startswith(f"{tmp}: a directory where kexecd writes its temporary file")
    else:  # the metrics log it and try again later; the command line says it
        said = capsys.readouterr().err
        assert result in (False, 2) and (writer == "kexecd.prom" or f"{tmp}: " in said)
    assert tmp.is_dir()


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_a_directory_of_kexecd_that_is_a_symlink_is_not_written(tmp_path: Path, kind: str) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "run"
    if kind == "symlink":
        link.symlink_to(real)
    else:
        link.write_text("x")
    with pytest.raises(OwnFileError, match=f"{link}: "):
        statefile.write_state(link, DaemonState())
    with pytest.raises((OwnFileError, NotADirectoryError)):
        write_atomic(link / "state.json", b"x")
    assert list(real.iterdir()) == []


def test_a_stale_temporary_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / ".f.tmp").write_bytes(b"left by a crash")
    write_atomic(tmp_path / "f", b"new", durable=True, mode=0o640)
    assert (tmp_path / "f").read_bytes() == b"new" and not (tmp_path / ".f.tmp").exists()
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640


def test_a_directory_at_the_name_itself(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    with pytest.raises(OwnFileError, match=r"/f: a directory where kexecd writes a file"):
        write_atomic(tmp_path / "f", b"new")
    assert not (tmp_path / ".f.tmp").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_state_dir_lock_not_a_regular_file(
    host: dict[str, Path], kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(host["state"] / ".lock", kind, host["tmp"] / "elsewhere")
    before = tree(host["state"])
    args = ["refresh", "--state-dir", str(host["state"]), "--root", str(host["hotadd"])]
    assert main(args) == 2
    one_line_naming(capsys.readouterr().err, ".lock")
    assert tree(host["state"]) == before


@pytest.mark.parametrize("kind", ["directory", "fifo", "socket"])
def test_config_file_not_a_regular_file(
    host: dict[str, Path], kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = host["tmp"] / "kexecd.conf"
    plant(conf, kind, host["tmp"] / "elsewhere")
    args = ["--config", str(conf), "--state-dir", str(host["state"]), "--root", str(host["boot"])]
    assert main(["refresh", *args]) == 2  # and no wait on the FIFO
    one_line_naming(capsys.readouterr().err, "kexecd.conf")


def test_config_file_may_be_a_symlink(
    host: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # /etc/kexecd.conf is the admin's, not kexecd's directory: a link is followed.
    real = host["tmp"] / "managed.conf"
    real.write_text("crash_acpi_no_memhotplug = false\n")
    conf = host["tmp"] / "kexecd.conf"
    conf.symlink_to(real)
    args = ["--config", str(conf), "--state-dir", str(host["state"]), "--root", str(host["boot"])]
    assert main(["refresh", "--dry-run", *args]) == 0


@pytest.mark.parametrize("seen", [0, 10, 4999])
def test_a_file_grown_since_fstat_is_read_whole_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seen: int
) -> None:
    # read_own() reads what fstat() said and a byte more, then on to the limit.
    from kexecd import files

    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 20)  # 5,120 bytes
    real = os.fstat

    def smaller(fd: int) -> os.stat_result:
        st = real(fd)
        return os.stat_result((*st[:6], seen, *st[7:10]))

    monkeypatch.setattr(files.os, "fstat", smaller)
    data, _ = files.read_own(path, 8192, OwnFileError, "fix")
    assert data == path.read_bytes()
    with pytest.raises(OwnFileError, match="more than 5000 bytes"):
        files.read_own(path, 5000, OwnFileError, "fix")
