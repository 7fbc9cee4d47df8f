# SPDX-License-Identifier: GPL-2.0-or-later
"""docs/kexecd.8 documents every command and option the parser has, and man has no warnings.

The page is rendered to plain text (what a reader sees) and cut at its
``.SS`` headings: each command's options must appear in its own section.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from kexecd.cli.dispatch import build as _parser
from kexecd.service import metrics
from kexecd.service.config import Config
from kexecd.service.statefile import DaemonState

MANPAGE = Path(__file__).resolve().parents[2] / "docs" / "kexecd.8"


def render(page: Path) -> str:
    """Plain text, one line per paragraph (a line length no line reaches: no
    hyphenation or justification inside an option's name)."""
    p = subprocess.run(
        ["groff", "-man", "-rLL=10000n", "-Tascii", "-P-cbou", str(page)],
        capture_output=True,
        text=True,
        check=True,
    )
    return p.stdout


def rendered() -> str:
    return render(MANPAGE)


def sections(text: str) -> dict[str, str]:
    """The page's text by heading (.SH at column 0, .SS indented by 3)."""
    out: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        m = re.match(r"^(?:[A-Z][A-Z ]+|   (\w+))$", line)
        if m:
            name = m.group(1) or line
            out[name] = ""
        elif name:
            out[name] += line + "\n"
    return out


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def options(parser: argparse.ArgumentParser) -> list[str]:
    return [
        s
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction)
        for s in a.option_strings
    ]


def test_every_command_has_its_section() -> None:
    text = rendered()
    names = subcommands()
    assert set(names) >= {"load", "adopt", "mask", "unmask", "refresh", "run", "status", "inspect"}
    have = sections(text)
    assert set(names) <= set(have), "commands missing from COMMANDS"
    synopsis = have["SYNOPSIS"]
    for name in names:
        assert re.search(rf"\bkexecd {name}\b", synopsis), f"kexecd {name} not in SYNOPSIS"


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_option_is_documented_with_its_command(command: str) -> None:
    section = sections(rendered())[command]
    for option in options(subcommands()[command]):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", section), (
            f"kexecd {command} {option} is not in its section of {MANPAGE.name}"
        )


def test_global_options_and_required_sections() -> None:
    have = sections(rendered())
    for option in [*options(_parser()), "-h", "--help"]:
        assert option in have["OPTIONS"], option
    for name in ("NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "FILES", "SEE ALSO"):
        assert name in have, name
    for path in (
        "/etc/kexecd.conf",
        "/var/lib/kexecd",
        "/run/kexecd",
        "/var/crash/kexec_cmd",
        "/var/lib/prometheus/node-exporter/kexecd.prom",
    ):
        assert path in have["FILES"], path
    for rule in ("50-kdump-tools.rules", "98-kexec.rules"):
        assert f"/run/udev/rules.d/{rule}" in have["FILES"], rule
    for ref in ("kexec(8)", "kdump-config(8)"):
        assert ref in have["SEE ALSO"], ref


def test_man_reports_no_warnings() -> None:
    # What lintian runs for its manpage-has-errors-from-man check.
    man = shutil.which("man")
    assert man, "man is missing: apt-get install man-db"
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MANROFFSEQ": "", "MANWIDTH": "80"}
    p = subprocess.run(
        [man, "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(MANPAGE)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (p.returncode, p.stderr) == (0, "")
    p = subprocess.run(
        ["groff", "-man", "-ww", "-z", str(MANPAGE)], capture_output=True, text=True
    )
    assert (p.returncode, p.stderr) == (0, "")


def test_the_check_would_catch_a_missing_option(tmp_path: Path) -> None:
    text = MANPAGE.read_text().replace(".B \\-\\-dry\\-run\n", ".B \\-\\-dry\n")
    assert text != MANPAGE.read_text()
    page = tmp_path / "kexecd.8"
    page.write_text(text)
    assert "--dry-run" not in sections(render(page))["refresh"]


def test_every_config_key_is_documented() -> None:
    section = sections(rendered())["CONFIGURATION"]
    for f in fields(Config):
        assert re.search(rf"^\s+{f.name} = ", section, re.M), f.name


def test_every_metric_is_documented() -> None:
    section = " ".join(sections(rendered())["METRICS"].split())
    text = metrics.render(DaemonState(), metrics.Host(False, None)) + metrics.heartbeat(0)
    for name in re.findall(r"^# TYPE (\w+) ", text, re.M):
        assert re.search(rf"\b{name}\b", section), name
