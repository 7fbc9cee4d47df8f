# SPDX-License-Identifier: GPL-2.0-or-later
"""testbed.arm64_deb: what the arm64 package's build can get wrong before building.

The build itself (mmdebstrap, dpkg-buildpackage through qemu-user, lintian)
is ``python -m testbed.arm64_deb``'s, which scripts/setup runs.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import arm64_assets, arm64_deb, debpkg
from testbed.transport import TestbedError

REPO = Path(__file__).resolve().parents[2]

CONTROL = """\
Source: demo
# a comment inside the field's stanza
Build-Depends: debhelper-compat (= 13),
# another, between continuation lines
               dh-python,
               python3-all-dev  [arm64 amd64] ,
Build-Depends-Indep: python3-sphinx <!nodoc>,
Standards-Version: 4.6.2

Package: demo
Build-Depends: not-a-source-field
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_build_depends_reads_the_source_stanza(tmp_path: Path) -> None:
    control = write(tmp_path / "control", CONTROL)
    assert arm64_deb.build_depends(control) == [
        "debhelper-compat (= 13)",
        "dh-python",
        "python3-all-dev [arm64 amd64]",
        "python3-sphinx <!nodoc>",
    ]


def test_build_depends_of_the_tree_are_dpkgs(tmp_path: Path) -> None:
    # dpkg's own parser of debian/control (Dpkg::Control::Info, dpkg-dev).
    perl = 'print Dpkg::Control::Info->new($ARGV[0])->get_source->{"Build-Depends"}'
    control = REPO / "debian/control"
    out = subprocess.run(
        ["perl", "-MDpkg::Control::Info", "-e", perl, str(control)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    dpkg = [" ".join(r.split()) for r in out.split(",") if r.strip()]
    assert arm64_deb.build_depends(control) == dpkg
    assert "debhelper-compat (= 13)" in dpkg


def test_without_build_depends_the_error_names_the_file(tmp_path: Path) -> None:
    control = write(tmp_path / "control", "Source: demo\n\nPackage: demo\nBuild-Depends: x\n")
    with pytest.raises(TestbedError, match=rf"^{control}: .*no Build-Depends"):
        arm64_deb.build_depends(control)
    with pytest.raises(TestbedError, match=rf"^{tmp_path / 'none'}: cannot read"):
        arm64_deb.build_depends(tmp_path / "none")


def test_the_package_is_built_for_both_architectures() -> None:
    control = (REPO / "debian/control").read_text()
    assert re.findall(r"^Architecture: (.*)$", control, re.M) == ["amd64 arm64"]


def test_the_satisfy_hook_passes_the_relations_as_one_word() -> None:
    relations = ["debhelper-compat (= 13)", "python3-all-dev [arm64]"]
    words = shlex.split(arm64_deb._satisfy_hook(relations))
    assert words[:2] == ["chroot", "$1"]
    assert words[-1] == "debhelper-compat (= 13), python3-all-dev [arm64]"
    assert words[-5:-1] == ["apt-get", "satisfy", "-y", "--no-install-recommends"]


def test_the_build_root_key_follows_the_relations(tmp_path: Path) -> None:
    control = write(tmp_path / "control", CONTROL)
    key = arm64_deb._root_key(arm64_deb.build_depends(control))
    # Reflowed and commented differently: the same relations, the same root.
    reflowed = CONTROL.replace("# a comment inside the field's stanza\n", "").replace(
        "dh-python,\n", "dh-python,   "
    )
    assert arm64_deb._root_key(arm64_deb.build_depends(write(control, reflowed))) == key
    edited = CONTROL.replace("(= 13)", "(= 14)")
    assert arm64_deb._root_key(arm64_deb.build_depends(write(control, edited))) != key
    base = arm64_assets.content_key(
        arm64_assets.SUITE, *arm64_assets.MIRRORS, *arm64_assets.PACKAGES
    )
    assert key != base


def test_lintian_runs_as_in_build_deb() -> None:
    script = (REPO / "scripts/build-deb").read_text()
    (line,) = [w for w in script.splitlines() if " lintian " in w and "$changes" in w]
    words = shlex.split(line.split("if ! ")[1].split(">")[0])
    assert words[0] == "${clean_env[@]}" and words[1] == "lintian"
    argv = arm64_deb.lintian_argv(Path("/x/kexecd_1_arm64.changes"))
    assert argv[argv.index("lintian") + 1 :] == [*words[2:-1], "/x/kexecd_1_arm64.changes"]
    (env,) = re.findall(r"^clean_env=\((.*)\)$", script, re.M)
    assert argv[: argv.index("lintian")] == shlex.split(env)


def git_tree(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "debian").mkdir(parents=True)
    write(repo / ".gitignore", "/build/\n")
    write(repo / "debian/rules", "#!/usr/bin/make -f\n").chmod(0o755)
    write(repo / "README.md", "kexecd\n")
    (repo / "docs").mkdir()
    (repo / "docs/link").symlink_to("../README.md")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    (repo / "build").mkdir()
    write(repo / "build/ignored.o", "x")
    write(repo / "untracked.txt", "y")
    return repo


def test_copy_tree_copies_what_build_deb_copies(tmp_path: Path) -> None:
    repo = git_tree(tmp_path)
    dest = tmp_path / "dest"
    debpkg.copy_tree(dest, repo)
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir())
    assert copied == debpkg.source_files(repo)
    assert "build/ignored.o" not in copied and "untracked.txt" in copied
    assert (dest / "docs/link").readlink() == Path("../README.md")
    assert (dest / "debian/rules").stat().st_mode & 0o777 == 0o755
    assert (dest / "README.md").stat().st_mode & 0o111 == 0


def fake_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lintian: str) -> Path:
    """ensure_deb with the build root, dpkg-buildpackage and lintian faked;
    returns the file counting the builds."""
    repo = git_tree(tmp_path)
    monkeypatch.setenv("KEXECD_VM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(arm64_deb, "REPO", repo)
    root = tmp_path / "root"
    monkeypatch.setattr(arm64_deb, "build_root", lambda: root)
    counter = tmp_path / "builds"

    def chroot_build(root: Path, version: str, log: Path) -> None:
        src = root / arm64_deb.BUILD_DIR / f"kexecd-{version}"
        assert (src / "README.md").is_file()
        with counter.open("a") as f:
            f.write("x")
        for suffix in ("arm64.deb", "arm64.changes", "arm64.buildinfo"):
            write(src.parent / f"kexecd_{version}_{suffix}", "")

    monkeypatch.setattr(arm64_deb, "_chroot_build", chroot_build)
    monkeypatch.setattr(arm64_deb, "lintian_argv", lambda changes: ["sh", "-c", lintian])
    return counter


def test_a_cached_arm64_deb_is_not_built_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = fake_build(tmp_path, monkeypatch, "echo 'N: fine'")
    first = arm64_deb.ensure_deb()
    repo = arm64_deb.REPO
    assert first.parent == tmp_path / "cache/deb-arm64" / debpkg.tree_key(repo)
    assert first.name.endswith("_arm64.deb")
    assert (first.parent / first.name.replace(".deb", ".changes")).is_file()
    assert not (tmp_path / "root" / arm64_deb.BUILD_DIR).exists()  # the scratch tree goes
    assert arm64_deb.ensure_deb() == first
    assert counter.read_text() == "x"
    write(repo / "README.md", "changed\n")  # not packaged: nothing is built again
    assert arm64_deb.ensure_deb() == first
    write(repo / "debian/rules", "#!/usr/bin/make -f\n# changed\n")
    second = arm64_deb.ensure_deb()
    assert second != first and second.is_file()
    assert not first.parent.exists()  # the older key is cleared
    assert counter.read_text() == "xx"


def test_lintian_errors_fail_the_arm64_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_build(tmp_path, monkeypatch, "echo 'E: kexecd: some-error'; exit 2")
    with pytest.raises(debpkg.DebBuildError, match=r"lintian reported errors: see .*lintian\.log"):
        arm64_deb.ensure_deb()
    (out,) = (tmp_path / "cache/deb-arm64").glob("*/lintian.log")
    assert "E: kexecd: some-error" in out.read_text()
    assert not list(out.parent.glob("*.deb"))
    assert not (tmp_path / "root" / arm64_deb.BUILD_DIR).exists()


def test_install_deb_refuses_a_cached_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEXECD_VM_CACHE", str(tmp_path / "cache"))
    for name in ("root-0123abcd", "buildroot-4567ef89"):
        root = tmp_path / "cache/arm64" / name / "root"
        (root / "tmp").mkdir(parents=True)
        deb = write(tmp_path / "kexecd_0.1.0_arm64.deb", "")
        with pytest.raises(TestbedError, match=rf"^{root}: a cached root"):
            arm64_deb.install_deb(root, deb, tmp_path / "log")
        assert not list((root / "tmp").iterdir())


def test_install_deb_runs_apt_in_the_root_and_tidies_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEXECD_VM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "copy/root"
    (root / "tmp").mkdir(parents=True)
    (root / "etc").mkdir()
    deb = write(tmp_path / "kexecd_0.1.0_arm64.deb", "package")
    seen: list[list[str]] = []

    def run_logged(argv: list[str], log: Path, what: str) -> None:
        seen.append(argv)
        assert (root / "tmp" / deb.name).read_text() == "package"
        assert (root / "etc/resolv.conf").is_file()  # apt needs the network

    monkeypatch.setattr(arm64_deb, "run_logged", run_logged)
    arm64_deb.install_deb(root, deb, tmp_path / "log")
    (argv,) = seen
    assert argv[:3] == ["unshare", "--mount", "--"]
    assert argv[-2:] == [str(root), deb.name]
    assert 'apt-get install -y --no-install-recommends "./tmp/$2"' in argv[5]
    assert not list((root / "tmp").iterdir())
    assert not (root / "etc/resolv.conf").exists()  # put there for apt, removed
    write(root / "etc/resolv.conf", "nameserver 192.0.2.1\n")
    arm64_deb.install_deb(root, deb, tmp_path / "log")
    assert (root / "etc/resolv.conf").read_text() == "nameserver 192.0.2.1\n"  # the root's own


def test_build_check_passes_on_an_arm64_machine() -> None:
    # dh_auto_test's check as the arm64 build root runs it: os.uname() says
    # aarch64 there, and the captures it rebuilds are x86_64's.
    code = (
        "import os, runpy, sys\n"
        "real = os.uname()\n"
        "os.uname = lambda: os.uname_result((*real[:4], 'aarch64'))\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    check, data = REPO / "debian/build-check.py", REPO / "tests/data"
    p = subprocess.run(
        [sys.executable, "-c", code, str(check), str(data)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert "3 captures rebuilt byte for byte" in p.stdout
