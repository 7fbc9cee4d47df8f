# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 26, classes 3 and 4: what the manifest says is not what kexecd runs or loads.

Class 3: a segment's file is named as kexecd names it (``seg-NN.bin`` of its
own index) or the manifest is refused before anything is loaded: no path
leads ``refresh`` to bytes outside the snapshot directory.
Class 4: a full reload runs kexec-tools itself (the binary that made the
snapshot, by its recorded identity) or, for an adopted image, the distro's
record read and checked again; never a command from the manifest alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kexecd.cli import main
from kexecd.errors import AdoptError, SnapshotError
from kexecd.image import deps, loader, rerun
from kexecd.image.deps import Deps
from kexecd.image.plan import Action
from kexecd.image.refresher import Refresher
from kexecd.image.store import MANIFEST, SNAPSHOT, Store, open_snapshot
from kexecd.service.adopt import adopt
from kexecd.system.kdumptools import read_kexec_cmd, replay_argv
from kexecd.system.root import Root
from testbed.images import image, loaded_root
from tests.unit import fakes
from tests.unit.fakes import ARGV, KEXEC, FakeBackend, tracer_for

FIX = "load it again with 'kexecd load -- kexec -p ...' or take the distro's over with"


def _edit(state: Path, **fields: Any) -> dict[str, Any]:
    path = state / SNAPSHOT / MANIFEST
    m: dict[str, Any] = json.loads(path.read_text())
    m.update(fields)
    path.write_text(json.dumps(m))
    return m


def _set_segment(state: Path, index: int, key: str, value: object) -> None:
    # One field of one segment's record in the manifest, as an attacker would.
    segments = json.loads((state / SNAPSHOT / MANIFEST).read_text())["segments"]
    segments[index][key] = value
    _edit(state, segments=segments)


# -- class 3: segment file names ---------------------------------------------------------


@pytest.fixture
def loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    _, state = fakes.loaded("boot", tmp_path)
    hotadd = loaded_root("hotadd", tmp_path)
    backend = fakes.fake_kernel(monkeypatch)
    return {"state": state, "hotadd": hotadd, "backend": backend, "tmp": tmp_path}


BAD_NAMES: list[object] = [
    "../seg-05.bin",
    "../../outside.bin",
    "/etc/passwd",
    "/tmp/seg-05.bin",
    "sub/seg-05.bin",
    "./seg-05.bin",
    "seg-05.bin/",
    "..",
    ".",
    "",
    "seg-04.bin",  # another segment's file
    "seg-5.bin",
    "seg-005.bin",
    "SEG-05.bin",
    "seg-05.bin\0",
    "seg-05.bin ",
    None,
    5,
    ["seg-05.bin"],
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_segment_file_not_named_as_kexecd_names_it(
    loaded: dict[str, Any], name: object, capsys: pytest.CaptureFixture[str]
) -> None:
    state: Path = loaded["state"]
    _set_segment(state, 5, "file", name)
    with pytest.raises(SnapshotError, match=r"segment 5 file must be 'seg-05.bin'"):
        open_snapshot(state)
    assert main(["refresh", "--state-dir", str(state), "--root", str(loaded["hotadd"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json: malformed: segment 5 file" in err
    assert loaded["backend"].loads == []  # refused before anything was loaded


@pytest.mark.parametrize("index", [4, 6, -1, "5", None, True])
def test_a_segment_index_not_its_place(loaded: dict[str, Any], index: object) -> None:
    state: Path = loaded["state"]
    _set_segment(state, 5, "index", index)
    with pytest.raises(SnapshotError, match=r"segment 5 index must be 5"):
        open_snapshot(state)


def test_bytes_outside_the_snapshot_are_never_loaded(loaded: dict[str, Any]) -> None:
    # The case: the right SHA-256 for bytes put outside the snapshot.
    state: Path = loaded["state"]
    outside = loaded["tmp"] / "outside.bin"
    outside.write_bytes((state / SNAPSHOT / "seg-05.bin").read_bytes())
    m = json.loads((state / SNAPSHOT / MANIFEST).read_text())
    m["segments"][5]["file"] = str(outside)
    (state / SNAPSHOT / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(SnapshotError, match="malformed"):
        fakes.refresh(state, root=Root(loaded["hotadd"]), backend=loaded["backend"])
    assert loaded["backend"].loads == []


# -- class 4: what a full reload runs ----------------------------------------------------


def _too_big(tmp_path: Path, argv: list[str] | None = None) -> tuple[Path, Root]:
    """A snapshot whose header segment is too small for hotadd: a full reload."""
    cap = image("boot")
    small = list(cap.segments)
    small[5] = replace(small[5], memsz=1024)
    root = Root(loaded_root("hotadd", tmp_path))
    state = tmp_path / "state"
    cap = replace(cap, segments=tuple(small))
    loader.load(argv or ARGV, state, root=root, tracer=tracer_for(cap))
    return state, root


def test_the_kexec_binary_is_recorded_and_run_by_its_path(tmp_path: Path) -> None:
    state, root = _too_big(tmp_path)
    prog = open_snapshot(state).program
    assert prog is not None and prog.path == str(KEXEC) and prog.size == KEXEC.stat().st_size
    tracer = tracer_for(image("hotadd"))
    r = fakes.refresh(state, root=root, backend=FakeBackend(), tracer=tracer)
    assert r.decision.action is Action.FULL_RELOAD
    assert tracer.calls == [(str(KEXEC), *ARGV[1:])]  # type: ignore[attr-defined]


EVIL: dict[str, dict[str, Any]] = {
    "a shell": {"argv": ["/bin/sh", "-c", "touch /tmp/kexecd-pwned", "-p"]},
    "another program named kexec": {"argv": ["/tmp/kexec", "-p", "/boot/vmlinuz"]},
    "kexec by name, not the one recorded": {"argv": ["kexec", "-p", "/boot/vmlinuz"]},
    "no -p": {"argv": [str(KEXEC), "-l", "/boot/vmlinuz"]},
    "-p only after --": {"argv": [str(KEXEC), "-l", "--", "-p"]},
    "no identity (an older kexecd)": {"program": None},
    "an identity of other bytes": {
        "program": {"path": str(KEXEC), "size": 20, "sha256": "0" * 64}
    },
    "an identity of another path": {
        "program": {"path": "/bin/sh", "size": 20, "sha256": "0" * 64}
    },
}


@pytest.mark.parametrize("case", list(EVIL))
def test_a_full_reload_runs_nothing_but_kexec_tools(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state, root = _too_big(tmp_path)
    _edit(state, **EVIL[case])
    tracer = tracer_for(image("hotadd"))
    with pytest.raises(SnapshotError, match=r"a full reload runs only the kexec-tools") as e:
        fakes.refresh(state, root=root, backend=FakeBackend(), tracer=tracer)
    assert "\n" not in str(e.value) and FIX in str(e.value) and "nothing was run" in str(e.value)
    assert tracer.calls == []  # type: ignore[attr-defined]


def test_a_changed_or_unsafe_kexec_binary(tmp_path: Path) -> None:
    fake = tmp_path / "bin/kexec"
    fake.parent.mkdir()
    fake.write_bytes(KEXEC.read_bytes())
    state, root = _too_big(tmp_path / "a", [str(fake), *ARGV[1:]])
    assert open_snapshot(state).program is not None
    for how in ("upgraded", "group-writable", "a symlink"):
        if how == "upgraded":
            fake.write_bytes(b"\0kexec-tools 2.0.26\0")
        elif how == "group-writable":
            fake.write_bytes(KEXEC.read_bytes())
            fake.chmod(0o775)
        else:
            fake.unlink()
            fake.symlink_to(KEXEC)
        tracer = tracer_for(image("hotadd"))
        with pytest.raises(SnapshotError, match=r"kexec"):
            fakes.refresh(state, root=root, backend=FakeBackend(), tracer=tracer)
        assert tracer.calls == [], how  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "argv",
    [["/bin/sh", "-c", f"exec {KEXEC} -p x"], ["kexec-wrapper", "-p"], [str(KEXEC), "-p"]],
)
def test_no_identity_for_a_wrapper_or_a_program_not_kexec_tools(argv: list[str]) -> None:
    ok = argv[0] == str(KEXEC)
    assert (rerun.identify(argv, KEXEC.read_bytes()) is not None) is ok
    assert rerun.identify(argv, b"\0not kexec-tools\0") is None
    assert rerun.identify(argv, None) is None


def test_cli_refresh_says_how_to_load_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state, root = _too_big(tmp_path)
    _edit(state, program=None)
    monkeypatch.setattr(deps.KernelBackend, "load", lambda self, *a: None)
    assert main(["refresh", "--state-dir", str(state), "--root", str(root.path("."))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and FIX in err and "Traceback" not in err


# -- class 4, adopted: the distro's record, read again -------------------------------------

DEBIAN = '/sbin/kexec -p --command-line="root=/dev/vda" --initrd=/i /v'


def _adopted(tmp_path: Path) -> tuple[Path, Root, Any]:
    hot = loaded_root("hotadd", tmp_path)
    (hot / "etc/default").mkdir(parents=True)
    (hot / "etc/default/kdump-tools").write_text("USE_KDUMP=1\n")
    cmd = hot / "var/crash/kexec_cmd"
    cmd.parent.mkdir(parents=True)
    cmd.write_text(DEBIAN + "\n")
    cap = image("boot")
    small = list(cap.segments)
    small[5] = replace(small[5], memsz=1024)
    tracer = tracer_for(replace(cap, segments=tuple(small)))
    state = tmp_path / "state"
    refresher = Refresher(Store(state), Deps(Root(hot), FakeBackend(), tracer))
    adopt(refresher, cmd)
    return state, Root(hot), tracer


def test_an_adopted_image_reruns_the_distros_record(tmp_path: Path) -> None:
    state, root, tracer = _adopted(tmp_path)
    replay = replay_argv(read_kexec_cmd(root.path("var/crash/kexec_cmd")))
    # The adoption, then the full reload its refresh made: the record both times.
    assert tracer.calls == [replay, replay]
    _edit(state, argv=["/bin/sh", "-c", "touch /tmp/kexecd-pwned"])
    tracer = tracer_for(image("hotadd"))
    r = fakes.refresh(state, root=root, backend=FakeBackend(), tracer=tracer)
    assert r.decision.action is Action.FULL_RELOAD
    assert tracer.calls == [replay]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("content", "mode", "match"),
    [
        ("rm -rf /", 0o644, "is not a 'kexec -p' command"),
        (DEBIAN, 0o666, "only a file that root alone can write"),
        (DEBIAN + "\n" + DEBIAN, 0o644, "2 command lines, not one"),
        (None, 0o644, "missing"),
    ],
)
def test_an_adopted_image_whose_record_became_unfit(
    tmp_path: Path, content: str | None, mode: int, match: str
) -> None:
    state, root, _ = _adopted(tmp_path)
    cmd = root.path("var/crash/kexec_cmd")
    if content is None:
        cmd.unlink()
    else:
        cmd.write_text(content + "\n")
        cmd.chmod(mode)
    tracer = tracer_for(image("hotadd"))
    with pytest.raises(AdoptError, match=match) as e:
        fakes.refresh(state, root=root, backend=FakeBackend(), tracer=tracer)
    assert "\n" not in str(e.value) and "kexecd adopt" in str(e.value)
    assert tracer.calls == []  # type: ignore[attr-defined]
    assert os.path.exists(state / SNAPSHOT / MANIFEST)
