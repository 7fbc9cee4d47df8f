# SPDX-License-Identifier: GPL-2.0-or-later
"""The test bed's Debian kdump hosts (testbed/debian_host.py, debian_suites.py):
the suites' recipes and cache names, the machine each host boots in, where the
kernel is found. Nothing here builds or boots a host."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from testbed import assets, debian_host, debian_suites, saved
from testbed.debian_host import HostImage
from testbed.debian_suites import BOOKWORM, SUITES, TRIXIE, HostSuite
from testbed.transport import TestbedError

# The kernel bookworm's cached root was built with when the suites came, and
# the key that root has had since (~/.cache/kexecd-vm/debian-host/base-KEY):
# the suite table must not rebuild it.
BOOKWORM_KERNEL = "linux-image-6.1.0-57-amd64"
BOOKWORM_KEY = "eeb70e15d7e6e6c7"


def _image(suite: HostSuite, tmp_path: Path) -> HostImage:
    kernel = assets.Kernel("linux-image-x", tmp_path / "vmlinuz", tmp_path / "no-modules")
    return HostImage(tmp_path / "disk.img", kernel, tmp_path / "initrd.img", "x", suite)


def test_bookworms_key_is_what_it_was() -> None:
    assert BOOKWORM.base_key(BOOKWORM_KERNEL) == BOOKWORM_KEY
    assert BOOKWORM.base_key("linux-image-6.1.0-58-amd64") != BOOKWORM_KEY


def test_trixies_recipe_is_its_own() -> None:
    kernel = "linux-image-6.12.118+deb13-amd64"
    assert TRIXIE.base_key(kernel) != BOOKWORM.base_key(kernel)
    assert TRIXIE.base_key(kernel) != TRIXIE.base_key("linux-image-6.12.119+deb13-amd64")
    assert all(" trixie" in m for m in TRIXIE.mirrors)
    assert not any("trixie" in m for m in BOOKWORM.mirrors)
    assert (TRIXIE.version, BOOKWORM.version) == ("13", "12")
    assert SUITES == {"bookworm": BOOKWORM, "trixie": TRIXIE}
    # Merged /usr: 6.12's modules are under /usr/lib/modules; its hook writes
    # the decompressed size kdump-config's estimate reads, as 1:1.10.7's does.
    assert 'ls "$root/usr/lib/modules"' in TRIXIE.base_hook
    assert "size_initrd.img-$kver" in TRIXIE.base_hook
    assert "size_initrd" not in BOOKWORM.base_hook


@pytest.mark.parametrize("suite", [BOOKWORM, TRIXIE], ids=lambda s: s.name)
def test_the_hooks_are_shell(suite: HostSuite) -> None:
    for hook in (suite.essential_hook, suite.base_hook):
        p = subprocess.run(["sh", "-n"], input=hook, capture_output=True, text=True)
        assert (p.returncode, p.stderr) == (0, "")


def test_trixies_host_asks_for_the_acpi_upgrade(tmp_path: Path) -> None:
    # Linux 6.12 under TCG hot-adds CPUs only with upgraded tables (FIELD-NOTES 11).
    disk = tmp_path / "run.img"
    spec = debian_host.host_spec(_image(TRIXIE, tmp_path), disk)
    assert spec.machine.acpi_upgrade is True
    assert f"file={disk},format=raw,if=virtio,cache=unsafe" in spec.devices
    # Bookworm's stays the default machine (testbed.boot.launch reads None as off).
    assert debian_host.host_spec(_image(BOOKWORM, tmp_path), disk).machine.acpi_upgrade is None
    mine = TRIXIE.machine.__class__(mem_mib=2048)
    assert debian_host.host_spec(_image(TRIXIE, tmp_path), disk, mine).machine is mine


def test_a_saved_host_is_settled_in_its_suites_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    booted: list[Any] = []

    def boot_host(image: HostImage, name: str, machine: Any, append: Any) -> Any:
        booted.append(machine)
        raise TestbedError("not booted in a unit test")

    monkeypatch.setattr(debian_host, "boot_host", boot_host)
    for suite in (TRIXIE, BOOKWORM):
        with pytest.raises(TestbedError, match="not booted"):
            saved.settled_host(_image(suite, tmp_path), "x", lambda g: None)
    assert booted == [TRIXIE.machine, BOOKWORM.machine]


def test_the_kernel_is_found_under_usr_lib_modules(tmp_path: Path) -> None:
    with pytest.raises(
        TestbedError, match=r"expected one kernel in .*usr/lib/modules, found \[\]"
    ):
        debian_host.kernel_version(tmp_path)
    (tmp_path / "usr/lib/modules/6.12.118+deb13-amd64/kernel").mkdir(parents=True)
    assert debian_host.kernel_version(tmp_path) == "6.12.118+deb13-amd64"
    (tmp_path / "usr/lib/modules/6.12.119+deb13-amd64").mkdir()
    with pytest.raises(TestbedError, match=r"found .*6\.12\.118.*6\.12\.119"):
        debian_host.kernel_version(tmp_path)


def test_a_build_removes_its_own_older_builds_only(tmp_path: Path) -> None:
    names = [
        "base-0123456789abcdef",
        "base-1111111111111111.tmp",
        "trixie-base-0123456789abcdef",
        "trixie-base-2222222222222222",
        "image-3333333333333333",
        "trixie-image-4444444444444444",
        "trixie-image-5555555555555555",
        "base-notakey",
    ]
    for name in names:
        (tmp_path / name).mkdir()
    debian_host.newest_only(tmp_path, tmp_path / "trixie-base-2222222222222222")
    debian_host.newest_only(tmp_path, tmp_path / "trixie-image-5555555555555555")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(
        set(names) - {"trixie-base-0123456789abcdef", "trixie-image-4444444444444444"}
    )
    debian_host.newest_only(tmp_path, tmp_path / "base-0123456789abcdef")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "base-1111111111111111.tmp" not in left
    assert {"trixie-base-2222222222222222", "image-3333333333333333", "base-notakey"} <= set(left)


def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEXECD_VM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(HostSuite, "kernel_package", lambda self: f"linux-image-{self.name}")
    monkeypatch.setattr(debian_host.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    return tmp_path / "cache" / "debian-host"


def test_each_suite_has_its_own_cached_root_and_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _cache(tmp_path, monkeypatch)
    for suite in (BOOKWORM, TRIXIE):
        done = cache / f"{suite.cache_prefix}base-{suite.base_key(f'linux-image-{suite.name}')}"
        (done / "root").mkdir(parents=True)
        (done / "ok").write_text("")
    built: list[tuple[Path, Path]] = []

    def build(base: Path, deb: Path, agent: Any, done: Path) -> None:
        built.append((base, done))
        done.mkdir()
        (done / "ok").write_text(json.dumps({"kver": "k", "package": "linux-image-k"}))

    monkeypatch.setattr(debian_host, "_build_image", build)
    deb = tmp_path / "kexecd_0.1.0_amd64.deb"
    deb.write_bytes(b"deb")
    trixie = debian_host.host_image(deb, TRIXIE)
    bookworm = debian_host.host_image(deb)
    assert (trixie.suite, bookworm.suite) == (TRIXIE, BOOKWORM)
    assert trixie.disk.parent.name.startswith("trixie-image-")
    assert bookworm.disk.parent.name.startswith("image-")
    (trixie_base, trixie_done), (bookworm_base, bookworm_done) = built
    assert trixie_base.parent.name.startswith("trixie-base-")
    assert bookworm_base.parent.name.startswith("base-")
    assert (trixie_done, bookworm_done) == (trixie.disk.parent, bookworm.disk.parent)
    assert debian_host.host_image(deb, TRIXIE) == trixie  # cached: not built again
    assert len(built) == 2
    assert trixie.initrd == trixie.disk.parent / "initrd.img-k"


def test_update_lists_reads_the_suites_mirrors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEXECD_VM_CACHE", str(tmp_path))
    runs: list[list[str]] = []

    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        runs.append(argv)
        out = "linux-image-amd64\n  Depends: linux-image-6.12.118+deb13-amd64\n"
        return subprocess.CompletedProcess(argv, 0, out, "")

    monkeypatch.setattr(debian_suites.subprocess, "run", run)
    assert TRIXIE.kernel_package() == "linux-image-6.12.118+deb13-amd64"
    lists = tmp_path / "apt" / "host-trixie"
    assert (lists / "sources.list").read_text().splitlines() == list(TRIXIE.mirrors)
    assert [argv[0] for argv in runs] == ["apt-get", "apt-cache"]
    assert f"-oDir::Etc::SourceList={lists / 'sources.list'}" in runs[1]
    TRIXIE.kernel_package()  # the lists are there: no update
    assert [argv[0] for argv in runs] == ["apt-get", "apt-cache", "apt-cache"]
    BOOKWORM.update_lists()  # the host's lists: scripts/setup's apt-get update
    assert len(runs) == 3


def test_main_builds_the_suite_asked_for(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked: list[HostSuite] = []
    monkeypatch.setattr(debian_host.debpkg, "ensure_deb", lambda: tmp_path / "k.deb")
    monkeypatch.setattr(HostSuite, "update_lists", lambda self: asked.append(self))

    def host_image(deb: Path, suite: HostSuite) -> HostImage:
        asked.append(suite)
        return _image(suite, tmp_path)

    monkeypatch.setattr(debian_host, "host_image", host_image)
    debian_host.main(["--suite", "trixie"])
    debian_host.main([])
    assert asked == [TRIXIE, TRIXIE, BOOKWORM, BOOKWORM]
    with pytest.raises(SystemExit):
        debian_host.main(["--suite", "sid"])
