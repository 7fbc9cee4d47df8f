# SPDX-License-Identifier: GPL-2.0-or-later
"""acpi_no_memhotplug for a kexec_file_load image: the kernel builds its boot
parameters from the line the command gives, so kexecd amends the command and
reloads the image whole, once, even where the kernel keeps the header (Debian
13's stock ``kexec -p``, a file load on Linux 6.12)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import pytest

from kexecd.errors import CmdlineError
from kexecd.image import loader
from kexecd.image.kexecargs import amended_line, with_words
from kexecd.image.plan import Action, Why
from kexecd.image.store import Store
from kexecd.loads import KexecCall, LoadCapture
from kexecd.system.root import Root
from testbed.images import loaded_root
from tests.unit import fakes
from tests.unit.fakes import ARGV, KEXEC, FakeBackend, kernel_updates

WORD = "acpi_no_memhotplug"
# kdump-tools 1:1.10.7's kexec_cmd, as kdump-config writes it.
KDUMP_LINE = (
    '/sbin/kexec -p --command-line="root=/dev/vda rw console=ttyS0 reset_devices '
    'systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll usbcore.nousb" '
    "--initrd=/var/lib/kdump/initrd.img /var/lib/kdump/vmlinuz"
)


def test_the_one_line_option_gets_the_word() -> None:
    assert with_words(["kexec", "-p", "--append=a b", "k"], [WORD]) == [
        "kexec",
        "-p",
        f"--append=a b {WORD}",
        "k",
    ]
    # The value as the next word, and the other name of the same option.
    assert with_words(["kexec", "--command-line", "a", "k"], [WORD])[2] == f"a {WORD}"
    # A word already there is not added again (a command amended before).
    assert with_words(["kexec", f"--append=a {WORD}"], [WORD]) == ["kexec", f"--append=a {WORD}"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["kexec", "-p", "k"], "0 times"),
        # kexec-tools takes the last one: amending the first would do nothing.
        (["kexec", "--append=a", "--command-line=b"], "2 times"),
        (["kexec", "--comm=a"], "abbreviates --comm"),
        (["kexec", "--append"], "has no value"),
        (["kexec", "--append=a -- init-arg"], "--"),
    ],
)
def test_a_line_kexecd_cannot_amend_is_refused(args: list[str], said: str) -> None:
    with pytest.raises(CmdlineError, match=said):
        with_words(args, [WORD])


def test_a_recorded_shell_line_is_amended_and_requoted() -> None:
    out = amended_line(KDUMP_LINE, [WORD])
    words = shlex.split(out)
    assert words[2].startswith("--command-line=root=/dev/vda rw ")
    assert words[2].endswith(f"usbcore.nousb {WORD}")
    assert words[:2] == ["/sbin/kexec", "-p"] and words[3:] == shlex.split(KDUMP_LINE)[3:]
    # kdump-config's eval of the unquoted expansion reads it the same way.
    assert shlex.split(" ".join(out.split())) == words


@pytest.mark.parametrize(
    "line", [KDUMP_LINE + " $EXTRA", KDUMP_LINE + "; reboot", '/sbin/kexec -p --append="a']
)
def test_a_shell_line_with_more_than_words_is_refused(line: str) -> None:
    with pytest.raises(CmdlineError):
        amended_line(line, [WORD])


def _file_load(line: bytes) -> LoadCapture:
    return LoadCapture(
        KexecCall.KEXEC_FILE_LOAD, 0, 0, 0, (), line, 1, 0, 1, 0, 0, KEXEC.read_bytes()
    )


class Echo:
    """A tracer whose file load carries the line of the command it ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str]) -> LoadCapture:
        self.calls.append(tuple(argv))
        line = next(a.split("=", 1)[1] for a in argv if a.startswith("--append="))
        return _file_load(line.encode() + b"\0")


def _kept_by_kernel(tmp_path: Path) -> tuple[Path, Path, Echo]:
    root = loaded_root("boot", tmp_path, memory_hotplug=True)
    kernel_updates(root)
    state, echo = tmp_path / "state", Echo()
    loader.load([*ARGV, "-s"], state, root=Root(root), tracer=echo)
    return root, state, echo


def test_a_kernel_kept_file_load_is_reloaded_once_with_the_word(tmp_path: Path) -> None:
    root, state, echo = _kept_by_kernel(tmp_path)
    backend = FakeBackend()
    r = fakes.refresh(state, root=Root(root), backend=backend, tracer=echo)
    assert r.decision.action is Action.FULL_RELOAD and r.decision.why is Why.CMDLINE
    assert r.loaded and f"appended {WORD}" in r.cmdline
    assert echo.calls[-1] == (*ARGV[:-1], f"--append=x {WORD}", "-s")
    snap = Store(state).open()
    assert snap.cmdline == f"x {WORD}" and snap.record.words() == (WORD,)
    # Then the kernel keeps it: kexecd stands aside, the word counted as its own.
    r = fakes.refresh(state, root=Root(root), backend=backend, tracer=echo)
    assert r.decision.why is Why.KERNEL_UPDATES and len(echo.calls) == 2
    assert r.plan.cmdline is not None and r.plan.cmdline.no_memhotplug == "appended"
    assert backend.loads == []  # kexec_file_load is the command's, never kexec_load


def test_the_word_is_dropped_again_when_turned_off(tmp_path: Path) -> None:
    root, state, echo = _kept_by_kernel(tmp_path)
    fakes.refresh(state, root=Root(root), tracer=echo)
    r = fakes.refresh(state, root=Root(root), tracer=echo, acpi_no_memhotplug=False)
    assert r.decision.why is Why.CMDLINE and f"drop {WORD}" in r.decision.reason
    assert echo.calls[-1] == (*ARGV[:-1], "--append=x", "-s")
    assert Store(state).open().record.words() == ()


def test_a_command_kexecd_cannot_amend_stands_aside_with_the_hazard(tmp_path: Path) -> None:
    root = loaded_root("boot", tmp_path, memory_hotplug=True)
    kernel_updates(root)
    state, echo = tmp_path / "state", Echo()
    twice = [*ARGV, "--command-line=y", "-s"]
    loader.load(twice, state, root=Root(root), tracer=lambda argv: _file_load(b"y\0"))
    r = fakes.refresh(state, root=Root(root), tracer=echo)
    assert r.decision.why is Why.KERNEL_UPDATES and echo.calls == []
    line = r.plan.cmdline
    assert line is not None and line.no_memhotplug == "cannot"
    assert line.hazard is not None and "2 times" in line.hazard


def test_a_pre_66_file_load_gets_the_word_in_its_whole_reload(tmp_path: Path) -> None:
    # No crash_hotplug: every refresh reloads a file load whole; the word goes in.
    root = loaded_root("boot", tmp_path, memory_hotplug=True)
    state, echo = tmp_path / "state", Echo()
    loader.load([*ARGV, "-s"], state, root=Root(root), tracer=echo)
    r = fakes.refresh(state, root=Root(root), tracer=echo)
    assert r.decision.why is Why.CMDLINE
    assert Store(state).open().cmdline == f"x {WORD}"
    r = fakes.refresh(state, root=Root(root), tracer=echo)
    assert r.decision.why is Why.FILE_LOAD
