# SPDX-License-Identifier: GPL-2.0-or-later
"""Masking the distro's per-event reload rule, against temporary rules directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kexecd.cli import main
from kexecd.service import udevmask
from kexecd.system.root import Root


class Reloads:
    """Stands in for 'udevadm control --reload'."""

    def __init__(self, error: str | None = None) -> None:
        self.count = 0
        self.error = error

    def __call__(self) -> str | None:
        self.count += 1
        return self.error


def packaged(root: Path, name: str, where: str = "lib/udev/rules.d") -> Path:
    rule = root / where / name
    rule.parent.mkdir(parents=True, exist_ok=True)
    rule.write_text('SUBSYSTEM=="memory", ACTION=="online", PROGRAM="reload"\n')
    return rule


def test_mask_lifecycle(tmp_path: Path) -> None:
    root, run = tmp_path / "root", tmp_path / "run"
    packaged(root, "50-kdump-tools.rules")  # Debian bookworm: /lib/udev/rules.d
    packaged(root, "98-kexec.rules", "usr/lib/udev/rules.d")  # Fedora
    reloads = Reloads()
    report = udevmask.mask(Root(root), run, reloads)
    assert report.masked == ["50-kdump-tools.rules", "98-kexec.rules"] and not report.hazards
    for name in report.masked:
        assert os.readlink(root / "run/udev/rules.d" / name) == "/dev/null"
    assert reloads.count == 1
    assert udevmask.masked(Root(root), run) == report.masked
    # Masking again (a restart) is idempotent.
    assert udevmask.mask(Root(root), run, reloads).masked == report.masked
    back = udevmask.unmask(Root(root), run, reloads)
    assert back.unmasked == report.masked and reloads.count == 3
    assert list((root / "run/udev/rules.d").iterdir()) == []
    assert udevmask.masked(Root(root), run) == []
    # Nothing recorded: unmask removes nothing and does not reload udev.
    assert udevmask.unmask(Root(root), run, reloads).unmasked == [] and reloads.count == 3
    # Only /run was ever written under the root.
    written = {p.relative_to(root).parts[0] for p in root.rglob("*") if p.is_symlink()}
    assert written <= {"run"}


def test_nothing_to_mask_without_a_distro_rule(tmp_path: Path) -> None:
    reloads = Reloads()
    report = udevmask.mask(Root(tmp_path / "root"), tmp_path / "run", reloads)
    assert report.masked == [] and reloads.count == 0
    assert not (tmp_path / "root/run").exists()


def test_never_takes_away_what_is_not_its_own(tmp_path: Path) -> None:
    root, run = tmp_path / "root", tmp_path / "run"
    packaged(root, "50-kdump-tools.rules")
    admin_mask = root / "run/udev/rules.d/50-kdump-tools.rules"
    admin_mask.parent.mkdir(parents=True)
    admin_mask.symlink_to("/dev/null")  # the admin masked it already
    assert udevmask.mask(Root(root), run, Reloads()).masked == []
    udevmask.unmask(Root(root), run, Reloads())
    assert os.readlink(admin_mask) == "/dev/null"  # still there


def test_hazards(tmp_path: Path) -> None:
    root, run = tmp_path / "root", tmp_path / "run"
    packaged(root, "50-kdump-tools.rules")
    packaged(root, "50-kdump-tools.rules", "etc/udev/rules.d")  # an admin's copy wins
    suse = packaged(root, udevmask.SUSE_RULE, "run/udev/rules.d")
    report = udevmask.mask(Root(root), run, Reloads("udevadm: no udevd"))
    text = "\n".join(report.hazards)
    assert "etc/udev/rules.d/50-kdump-tools.rules overrides kexecd's mask" in text
    assert f"{suse}: SUSE's kdump copies this rule into /run" in text
    assert "the mask waits for udev to reload its rules: udevadm: no udevd" in text


def test_mask_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reloads = Reloads()
    monkeypatch.setattr(udevmask, "reload_udev", reloads)  # not this machine's udev
    root, run = tmp_path / "root", tmp_path / "run"
    packaged(root, "50-kdump-tools.rules")
    args = ["--root", str(root), "--runtime-dir", str(run)]
    assert main(["mask", *args]) == 0
    out = capsys.readouterr().out
    assert "kexecd mask: masked 50-kdump-tools.rules" in out
    assert main(["unmask", *args]) == 0
    assert "kexecd unmask: unmasked 50-kdump-tools.rules" in capsys.readouterr().out
    assert reloads.count == 2
