# SPDX-License-Identifier: GPL-2.0-or-later
"""debian/kexecd.postrm removes what kexecd's masks left behind, and only that.

The script runs under ``DPKG_ROOT`` (dpkg's --root), pointed at a fake tree,
with a fake ``udevadm`` first on PATH; the masks are made by the real
``udevmask.mask``, so the script and the Python agree on names and record.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from kexecd.paths import DEFAULT_METRICS_DIR
from kexecd.service import udevmask
from kexecd.service.metrics import PROM_FILE
from kexecd.system.root import Root

REPO = Path(__file__).resolve().parents[2]
POSTRM = REPO / "debian" / "kexecd.postrm"


def postrm(tmp_path: Path, root: Path, action: str) -> list[str]:
    """Run the script; the udevadm calls it made."""
    bin_dir = tmp_path / "bin"
    log = tmp_path / "udevadm.log"
    if not bin_dir.exists():
        bin_dir.mkdir()
        udevadm = bin_dir / "udevadm"
        udevadm.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
        udevadm.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "DPKG_ROOT": str(root)}
    p = subprocess.run(["sh", str(POSTRM), action], env=env, capture_output=True, text=True)
    assert (p.returncode, p.stderr) == (0, "")
    return log.read_text().splitlines() if log.exists() else []


def distro_rules(root: Path) -> None:
    for name in udevmask.RULES:
        rule = root / "lib/udev/rules.d" / name
        rule.parent.mkdir(parents=True, exist_ok=True)
        rule.write_text('SUBSYSTEM=="cpu", PROGRAM="reload"\n')


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_the_script_knows_every_rule_kexecd_masks() -> None:
    assert set(re.findall(r"\b\d\d-[\w-]+\.rules\b", POSTRM.read_text())) == set(udevmask.RULES)
    assert "#DEBHELPER#" in POSTRM.read_text().splitlines()


@pytest.mark.parametrize("action", ["remove", "purge"])
def test_kexecds_masks_are_removed(tmp_path: Path, action: str) -> None:
    root = tmp_path / "root"
    distro_rules(root)
    report = udevmask.mask(Root(root), root / "run/kexecd", reload=lambda: None)
    assert sorted(report.masked) == sorted(udevmask.RULES)
    (root / "var/lib/kexecd/snapshot").mkdir(parents=True)
    assert postrm(tmp_path, root, action) == ["control --reload"]
    assert not os.listdir(root / "run/udev/rules.d")
    assert not (root / "run/kexecd").exists()
    # The distro's own rules are untouched; the state directory goes on purge only.
    assert sorted(os.listdir(root / "lib/udev/rules.d")) == sorted(udevmask.RULES)
    assert (root / "var/lib/kexecd").exists() == (action == "remove")


def test_masks_that_are_not_kexecds_stay(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rules = root / "run/udev/rules.d"
    rules.mkdir(parents=True)
    # An admin's mask, not in kexecd's record.
    (rules / "50-kdump-tools.rules").symlink_to("/dev/null")
    # In the record, but no longer kexecd's symlink.
    (rules / "98-kexec.rules").write_text("# the admin's own rule\n")
    (root / "run/kexecd").mkdir()
    (root / "run/kexecd" / udevmask.RECORD).write_text('["98-kexec.rules"]')
    before = tree(rules)
    assert postrm(tmp_path, root, "purge") == []
    assert tree(rules) == before
    assert os.readlink(rules / "50-kdump-tools.rules") == "/dev/null"


def test_nothing_there_is_fine(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for action in ("remove", "purge", "upgrade", "failed-upgrade", "abort-install"):
        assert postrm(tmp_path, root, action) == []
    assert tree(root) == []


@pytest.mark.parametrize("action", ["upgrade", "failed-upgrade", "abort-install"])
def test_only_remove_and_purge_act(tmp_path: Path, action: str) -> None:
    root = tmp_path / "root"
    distro_rules(root)
    udevmask.mask(Root(root), root / "run/kexecd", reload=lambda: None)
    (root / "var/lib/kexecd").mkdir(parents=True)
    before = tree(root)
    assert postrm(tmp_path, root, action) == []
    assert tree(root) == before


@pytest.mark.parametrize("action", ["remove", "purge"])
def test_the_metrics_file_goes_and_only_it(tmp_path: Path, action: str) -> None:
    # Left behind, kexecd.prom's heartbeat would age and the "daemon down"
    # alert fire for a package that is gone.
    root = tmp_path / "root"
    textfiles = root / str(DEFAULT_METRICS_DIR).lstrip("/")
    textfiles.mkdir(parents=True)
    (textfiles / PROM_FILE).write_text("kexecd_info 1\n")
    (textfiles / "apt.prom").write_text("apt_upgrades_pending 0\n")
    assert postrm(tmp_path, root, action) == []
    assert os.listdir(textfiles) == ["apt.prom"]
