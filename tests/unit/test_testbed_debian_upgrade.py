# SPDX-License-Identifier: GPL-2.0-or-later
"""The test bed's offline 12 -> 13 upgrade (testbed/debian_upgrade.py): the
chroot can neither kexec nor reboot the machine, the download is cached once,
the upgraded kernel is found. Nothing here downloads, mounts or chroots."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed import debian_host, debian_upgrade
from testbed.transport import TestbedError

CAP_SYS_MODULE, CAP_SYS_BOOT = 16, 22


@pytest.mark.parametrize("name", ["_DOWNLOAD", "_UPGRADE"])
def test_every_chroot_goes_through_setpriv(name: str) -> None:
    script: str = getattr(debian_upgrade, name)
    lines = [ln for ln in script.splitlines() if re.search(r"\bchroot\b", ln)]
    assert lines
    for line in lines:
        assert " ".join(debian_upgrade.CHROOT) in line, line


@pytest.mark.skipif(os.geteuid() != 0, reason="setpriv drops bounding caps as root only")
def test_setpriv_takes_sys_boot_and_sys_module_away() -> None:
    # The same words the scripts run the chroot with, running grep instead.
    argv = [*debian_upgrade.CHROOT[:-1], "grep", "^CapBnd:", "/proc/self/status"]
    line = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    bounding = int(line.split()[1], 16)
    assert not bounding & (1 << CAP_SYS_BOOT)
    assert not bounding & (1 << CAP_SYS_MODULE)
    assert bounding & 1  # CAP_CHOWN, which dpkg needs, stays


def test_the_mounts_stay_in_a_namespace_of_their_own() -> None:
    argv = debian_upgrade._namespace("true", "a")
    assert argv[:4] == ["unshare", "--mount", "--propagation=private", "--"]
    assert argv[-1] == "a"


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEXECD_VM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "base" / "root"
    (root / "var/cache/apt/archives").mkdir(parents=True)
    (root / "var/lib/apt/lists").mkdir(parents=True)
    monkeypatch.setattr(debian_host, "base_root", lambda suite: root)
    return root


def _fake_apt(debs: list[str], calls: list[list[str]]) -> Callable[[list[str], Path, str], None]:
    def run_logged(argv: list[str], log: Path, what: str) -> None:
        calls.append(argv)
        if argv[0] == "cp":
            shutil.copytree(argv[2], argv[3], symlinks=True)
            return
        root = Path(argv[-2])
        for name in debs:
            (root / "var/cache/apt/archives" / name).write_bytes(b"!<arch>\n")
        lists = root / "var/lib/apt/lists"
        (lists / "partial").mkdir()
        (lists / "lock").write_text("")
        (lists / "deb.debian.org_debian_dists_trixie_InRelease").write_text("x")

    return run_logged


def test_the_download_is_cached_once(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(debian_host, "run_logged", _fake_apt(["a_1_amd64.deb"], calls))
    done = debian_upgrade.upgrade_cache()
    assert [p.name for p in (done / "archives").iterdir()] == ["a_1_amd64.deb"]
    assert sorted(p.name for p in (done / "lists").iterdir()) == [
        "deb.debian.org_debian_dists_trixie_InRelease"
    ]
    assert not (done / "root").exists()
    assert (done / "ok").read_text() == "1 packages\n"
    assert len(calls) == 2
    assert debian_upgrade.upgrade_cache() == done
    assert len(calls) == 2  # cached: nothing run again


def test_a_download_of_nothing_is_an_error(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian_host, "run_logged", _fake_apt([], []))
    with pytest.raises(TestbedError, match=r"fetched no package; see .*download\.log"):
        debian_upgrade.upgrade_cache()
    assert not list(debian_upgrade._dir().glob("upgrade-????????????????"))


def test_the_upgraded_kernel_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def run_logged(argv: list[str], log: Path, what: str) -> None:
        out = Path(argv[-2])
        (out / "kver").write_text("6.12.118+deb13-amd64\n")

    monkeypatch.setattr(debian_host, "run_logged", run_logged)
    kernel = debian_upgrade.upgrade_disk(tmp_path / "disk.img", tmp_path / "out", tmp_path)
    assert kernel.kver == "6.12.118+deb13-amd64"
    assert kernel.vmlinuz == tmp_path / "out" / "vmlinuz-6.12.118+deb13-amd64"
    assert kernel.initrd == tmp_path / "out" / "initrd.img-6.12.118+deb13-amd64"
