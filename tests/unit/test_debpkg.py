# SPDX-License-Identifier: GPL-2.0-or-later
"""testbed.debpkg: the package's cache key follows the files build-deb copies."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kexecd.service.statefile import FORMAT
from testbed import debpkg


def git_tree(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "debian").mkdir(parents=True)
    (repo / ".gitignore").write_text("/build/\n")
    (repo / "debian/rules").write_text("#!/usr/bin/make -f\n")
    (repo / "README.md").write_text("kexecd\n")
    (repo / "kexecd").mkdir()
    (repo / "kexecd/core.py").write_text("x = 1\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    return repo


def test_the_key_follows_what_build_deb_copies(tmp_path: Path) -> None:
    repo = git_tree(tmp_path)
    key = debpkg.tree_key(repo)
    (repo / "build").mkdir()
    (repo / "build/ignored.o").write_text("ignored")
    assert debpkg.tree_key(repo) == key
    assert debpkg.source_files(repo) == [
        ".gitignore",
        "README.md",
        "debian/rules",
        "kexecd/core.py",
    ]
    keys = {key}
    (repo / "kexecd/core.py").write_text("x = 2\n")  # uncommitted edits count
    keys.add(debpkg.tree_key(repo))
    (repo / "kexecd/new.py").write_text("untracked")  # so do untracked files
    keys.add(debpkg.tree_key(repo))
    (repo / "debian/rules").chmod(0o755)  # and the executable bit
    keys.add(debpkg.tree_key(repo))
    (repo / "kexecd/new.py").unlink()
    (repo / "kexecd/new.py").symlink_to("core.py")
    keys.add(debpkg.tree_key(repo))
    (repo / "kexecd/core.py").unlink()  # deleted but still tracked: not copied
    keys.add(debpkg.tree_key(repo))
    assert len(keys) == 6


def test_the_key_ignores_what_the_package_is_not_made_from(tmp_path: Path) -> None:
    repo = git_tree(tmp_path)
    key = debpkg.tree_key(repo)
    (repo / "README.md").write_text("kexecd, edited\n")
    (repo / "tests/vm").mkdir(parents=True)
    (repo / "tests/vm/test_new.py").write_text("def test(): pass\n")
    (repo / "docs").mkdir()
    (repo / "docs/ARCHITECTURE.md").write_text("the picture\n")
    (repo / "kexecd.8").write_text("not docs/kexecd.8\n")
    assert debpkg.tree_key(repo) == key
    (repo / "docs/kexecd.8").write_text(".TH KEXECD 8\n")  # the man page is packaged
    assert debpkg.tree_key(repo) != key
    (repo / "docs/kexecd.8").unlink()
    (repo / "tests/data").mkdir()  # build-check.py reads tests/data
    (repo / "tests/data/capture.bin").write_bytes(b"\0")
    assert debpkg.tree_key(repo) != key


def fake_build(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "build-deb"
    path.write_text(script)
    return path


def test_a_cached_deb_is_not_built_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = git_tree(tmp_path)
    monkeypatch.setenv("KEXECD_VM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(debpkg, "REPO", repo)
    counter = tmp_path / "builds"
    build = 'echo x >> {c}; touch "$1/kexecd_0.1.0_amd64.deb"; echo "$1/kexecd_0.1.0_amd64.deb"\n'
    monkeypatch.setattr(debpkg, "BUILD_DEB", fake_build(tmp_path, build.format(c=counter)))
    first = debpkg.ensure_deb()
    assert first.parent == tmp_path / "cache/deb" / debpkg.tree_key(repo)
    assert debpkg.ensure_deb() == first
    assert counter.read_text().count("x") == 1
    (repo / "kexecd/core.py").write_text("changed\n")
    second = debpkg.ensure_deb()
    assert second != first and second.is_file()
    assert not first.parent.exists()  # the older key is cleared
    assert counter.read_text().count("x") == 2


def test_a_failed_build_names_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = git_tree(tmp_path)
    monkeypatch.setenv("KEXECD_VM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(debpkg, "REPO", repo)
    script = 'echo "lintian reported errors" >&2; exit 1\n'
    monkeypatch.setattr(debpkg, "BUILD_DEB", fake_build(tmp_path, script))
    with pytest.raises(debpkg.DebBuildError, match=r"exit 1\): see .*build-deb\.log") as e:
        debpkg.ensure_deb()
    log = Path(str(e.value).split("see ")[1].split(" ")[0])
    assert "lintian reported errors" in log.read_text()


def test_the_next_version_has_a_newer_version_and_state_format(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    debpkg.copy_tree(tree)
    version, fmt = debpkg.make_next(tree)
    assert fmt == FORMAT + 1
    assert f"\nFORMAT = {fmt}\n" in (tree / debpkg.STATEFILE).read_text()
    out = subprocess.run(
        ["dpkg-parsechangelog", "-l", str(tree / "debian/changelog"), "-S", "Version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == version
    old = subprocess.run(
        ["dpkg-parsechangelog", "-l", str(debpkg.REPO / "debian/changelog"), "-S", "Version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    newer = subprocess.run(["dpkg", "--compare-versions", version, "gt", old], check=False)
    assert newer.returncode == 0, (version, old)
    assert debpkg.next_version("0.1.9") == "0.1.10"
    with pytest.raises(debpkg.DebBuildError, match="does not end in a number"):
        debpkg.next_version("0.1~rc")
