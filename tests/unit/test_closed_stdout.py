# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 26, class 2: a reader that went away (``kexecd COMMAND | head -1``).

One mechanism, in :func:`kexecd.cli.main.main`: every command's output is
flushed inside it, a ``BrokenPipeError`` points stdout at ``/dev/null`` and
the exit code is 141 (128 + SIGPIPE, as a shell reports ``yes | head -1``).
Every command and every output path is run here with a stdout whose reader
closed first: in this process (fakes for the kernel and the tracer), and in
a child process for the flush at the interpreter's exit.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kexecd.cli import main
from kexecd.cli.main import CLOSED_PIPE
from kexecd.image import deps, loader
from kexecd.service import adopt as adopt_mod
from kexecd.system.root import Root
from testbed.images import image, loaded_root
from tests.unit import fakes
from tests.unit.data import DATA
from tests.unit.fakes import ARGV, tracer_for

REPO = Path(__file__).resolve().parents[2]
SEG = str(DATA / "boot/load/seg-05.bin")  # the boot capture's ELF core header


@contextlib.contextmanager
def closed_stdout() -> Iterator[None]:
    """``sys.stdout`` writes into a pipe whose reader has closed: EPIPE.

    Set inside the test (pytest's own capture sets ``sys.stdout`` again
    between a fixture's setup and the call)."""
    r, w = os.pipe()
    os.close(r)
    saved = sys.stdout
    out = io.TextIOWrapper(io.FileIO(w, "w"), encoding="utf-8")
    sys.stdout = out
    try:
        yield
    finally:
        sys.stdout = saved
        with contextlib.suppress(OSError):
            out.close()


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A loaded boot image and fake roots; loads and traces go to fakes."""
    boot, state = fakes.loaded("boot", tmp_path)
    hotadd = loaded_root("hotadd", tmp_path)
    (boot / "etc/default").mkdir(parents=True)
    backend = fakes.fake_kernel(monkeypatch)
    real_load, real_adopt = loader.load, adopt_mod.adopt

    def load(argv: Any, state_dir: Path) -> Any:
        return real_load(argv, state_dir, root=Root(boot), tracer=tracer_for(image("boot")))

    def adopt(refresher: Any, *args: Any) -> Any:
        d = deps.Deps(refresher.deps.root, backend, tracer_for(image("boot")))
        return real_adopt(type(refresher)(refresher.store, d, refresher.policy), *args)

    monkeypatch.setattr(loader, "load", load)
    monkeypatch.setattr(adopt_mod, "adopt", adopt)
    run = tmp_path / "run"
    return {
        "state": str(state),
        "boot": str(boot),
        "hotadd": str(hotadd),
        "run": str(run),
        "new": str(tmp_path / "new"),
    }


COMMANDS = {
    "load": ["load", "--state-dir", "{new}", "--", *ARGV],
    "adopt": ["adopt", "--state-dir", "{state}", "--root", "{boot}", "--", *ARGV],
    "refresh, nothing to do": ["refresh", "--state-dir", "{state}", "--root", "{boot}"],
    "refresh, dry run": ["refresh", "--dry-run", "--state-dir", "{state}", "--root", "{hotadd}"],
    "refresh, reloaded": ["refresh", "--state-dir", "{state}", "--root", "{hotadd}"],
    "grow, dry run": [
        "grow",
        "--capacity",
        "1000",
        "--dry-run",
        "--state-dir",
        "{state}",
        "--root",
        "{boot}",
    ],
    "grow": ["grow", "--capacity", "1000", "--state-dir", "{state}", "--root", "{boot}"],
    "grow, nothing to do": [
        "grow",
        "--capacity",
        "1",
        "--state-dir",
        "{state}",
        "--root",
        "{boot}",
    ],
    "status": ["status", "--state-dir", "{state}", "--root", "{boot}", "--runtime-dir", "{run}"],
    "status --json": [
        "status",
        "--json",
        "--state-dir",
        "{state}",
        "--root",
        "{boot}",
        "--runtime-dir",
        "{run}",
    ],
    "inspect FILE": ["inspect", SEG],
    "inspect --json FILE": ["inspect", "--json", SEG],
    "inspect --system": ["inspect", "--system", "--root", "{boot}"],
    "inspect --loaded": ["inspect", "--loaded", "--state-dir", "{state}"],
    "mask": ["mask", "--root", "{boot}", "--runtime-dir", "{run}"],
    "unmask": ["unmask", "--root", "{boot}", "--runtime-dir", "{run}"],
}
SUBCOMMANDS = ["load", "adopt", "refresh", "grow", "mask", "unmask", "run", "status", "inspect"]
HELP = {"--version": ["--version"], "--help": ["--help"]} | {
    f"{c} --help": [c, "--help"] for c in SUBCOMMANDS
}


def _args(template: list[str], paths: dict[str, str]) -> list[str]:
    return [a.format(**paths) for a in template]


def test_every_subcommand_is_covered() -> None:
    from kexecd.cli.dispatch import build as _parser

    sub = next(a for a in _parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(SUBCOMMANDS)  # type: ignore[arg-type]
    covered = {args[0] for args in COMMANDS.values()} | {"run"}  # run prints only its help
    assert covered == set(SUBCOMMANDS)


@pytest.mark.parametrize("case", list(COMMANDS))
def test_a_closed_stdout_in_process(
    case: str, host: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with closed_stdout():
        code = main(_args(COMMANDS[case], host))
    assert code == CLOSED_PIPE
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("case", list(HELP))
def test_help_to_a_closed_stdout_in_process(case: str) -> None:
    # argparse prints and exits; the flush in main() still meets the pipe.
    with closed_stdout():
        try:
            code = main(HELP[case])
        except SystemExit as e:
            code = e.code  # type: ignore[assignment]
    assert code in (0, CLOSED_PIPE)


def _child(args: list[str]) -> subprocess.CompletedProcess[str]:
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the child writes a byte
    try:
        return subprocess.run(
            [sys.executable, "-m", "tests.unit.guarded_cli", *args],
            stdout=w,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            check=False,
            timeout=60,
            # Buffered, as from a shell: the flush at exit is what fails.
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        )
    finally:
        os.close(w)


CHILD = [c for c in COMMANDS if c not in ("load", "adopt", "refresh, reloaded", "grow")]


@pytest.mark.parametrize("case", CHILD + list(HELP))
def test_a_closed_stdout_in_a_process(case: str, tmp_path: Path) -> None:
    # What a child can run without fakes (no load, no trace): the flush at the
    # interpreter's exit is the one left to fail, and main() does it first.
    boot, state = fakes.loaded("boot", tmp_path)
    paths = {
        "state": str(state),
        "boot": str(boot),
        "hotadd": str(loaded_root("hotadd", tmp_path)),
        "run": str(tmp_path / "run"),
    }
    p = _child(_args(COMMANDS[case], paths) if case in COMMANDS else HELP[case])
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr, p.stderr
    assert p.returncode == CLOSED_PIPE, p.stderr
