# SPDX-License-Identifier: GPL-2.0-or-later
"""The arm64 Debian package of this tree, built in an arm64 root through qemu-user.

Issue 24: ``debian/control`` says ``Architecture: amd64 arm64``. The amd64
.deb is :mod:`testbed.debpkg`'s (``scripts/build-deb`` on this host); this
module builds the arm64 one without an arm64 machine:

- **The build root** (:func:`build_root`): ``mmdebstrap --arch=arm64
  --variant=buildd`` of bookworm (build-essential), then ``apt-get satisfy``
  in it of the package's Build-Depends as ``debian/control`` gives them
  (:func:`build_depends`), run through qemu-user (binfmt,
  :func:`testbed.arm64_assets.ensure_binfmt`). Cached in
  ``$KEXECD_VM_CACHE/arm64/buildroot-KEY`` by that list, the suite and its
  mirrors; rebuilt only when they change.
- **The package** (:func:`ensure_deb`): this tree's files
  (:func:`testbed.debpkg.copy_tree`, as ``scripts/build-deb`` copies them)
  in the build root's ``/build``, ``dpkg-buildpackage -us -uc -b`` in a
  chroot, then lintian on this host over the .changes with the same policy
  as ``scripts/build-deb`` (:data:`LINTIAN_ARGS`: no error). Cached in
  ``$KEXECD_VM_CACHE/deb-arm64/<key>/`` by :func:`testbed.debpkg.tree_key`,
  the amd64 package's key (the packaged files alone); older keys are removed.
- **Installing it** (:func:`install_deb`): ``apt-get install ./kexecd_*.deb``
  in a copy of an arm64 root, its dependencies from Debian's archive.

``python -m testbed.arm64_deb`` builds (or finds) the .deb and prints its path.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from testbed import debpkg
from testbed.arm64_assets import MIRRORS, SUITE, cache, content_key, mmdebstrap_root, run_logged
from testbed.transport import TestbedError

__all__ = [
    "LINTIAN_ARGS",
    "build_depends",
    "build_root",
    "ensure_deb",
    "install_deb",
    "lintian_argv",
]

REPO = debpkg.REPO
CONTROL = REPO / "debian" / "control"
CHANGELOG = REPO / "debian" / "changelog"
# scripts/build-deb's lintian policy: errors fail the build, informational
# tags are shown (tests/unit/test_arm64_deb.py reads the script to compare).
LINTIAN_ARGS = ("--fail-on", "error", "--info")
# Debian's tools, whatever the caller's PATH and venv (as scripts/build-deb).
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# The source stanza's fields that dpkg-buildpackage -b checks.
BUILD_DEP_FIELDS = ("Build-Depends", "Build-Depends-Arch", "Build-Depends-Indep")
# Bump when build_root()'s steps change.
ROOT_RECIPE = 1
# Where the tree is built in the build root (removed before and after).
BUILD_DIR = "build"


def build_depends(control: Path = CONTROL) -> list[str]:
    """The relations of the source stanza's Build-Depends (and -Arch, -Indep),
    in order: ``["debhelper-compat (= 13)", "dh-python", ...]``.

    Comment lines (``#``) are dropped, continuation lines joined, empty items
    (a trailing comma) skipped.

    :raises TestbedError: ``control`` cannot be read or its first stanza has
        no Build-Depends.
    """
    try:
        text = control.read_text()
    except OSError as e:
        raise TestbedError(f"{control}: cannot read it ({e.strerror})") from None
    fields: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                break  # the end of the source stanza
            continue
        if line[0] in " \t" and name:
            fields[name] += " " + line.strip()
        else:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            fields[name] = value.strip()
    relations = [
        " ".join(item.split())
        for field in BUILD_DEP_FIELDS
        for item in fields.get(field.lower(), "").split(",")
        if item.strip()
    ]
    if "build-depends" not in fields or not relations:
        raise TestbedError(f"{control}: the source stanza has no Build-Depends: add them")
    return relations


def _satisfy_hook(relations: list[str]) -> str:
    # mmdebstrap's customize hooks run with the root as $1, its apt lists and
    # resolv.conf still in place.
    wanted = shlex.quote(", ".join(relations))
    return (
        'chroot "$1" env DEBIAN_FRONTEND=noninteractive '
        f"apt-get satisfy -y --no-install-recommends {wanted}"
    )


def _root_key(relations: list[str]) -> str:
    return content_key(SUITE, *MIRRORS, "buildd", *relations, str(ROOT_RECIPE))


def build_root(control: Path = CONTROL) -> Path:
    """The cached arm64 bookworm build root with the package's Build-Depends
    (built once per list; the log of a failed build is named in the error).

    :raises TestbedError: mmdebstrap is missing or failed, or binfmt cannot
        run aarch64 binaries.
    """
    if not shutil.which("mmdebstrap"):
        raise TestbedError("mmdebstrap is missing: run 'bash scripts/setup'")
    relations = build_depends(control)
    options = ["--variant=buildd", f"--customize-hook={_satisfy_hook(relations)}"]
    return mmdebstrap_root("buildroot", _root_key(relations), options)


def lintian_argv(changes: Path) -> list[str]:
    """The lintian command ``scripts/build-deb`` runs, over ``changes``, with
    Debian's tools first on PATH and no venv or PYTHONPATH."""
    clean = ["env", "-u", "PYTHONPATH", "-u", "VIRTUAL_ENV", "-u", "PYTHONHOME"]
    return [*clean, f"PATH={CLEAN_PATH}", "lintian", *LINTIAN_ARGS, str(changes)]


def _version() -> str:
    p = subprocess.run(
        ["dpkg-parsechangelog", "-l", str(CHANGELOG), "-S", "Version"],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0 or not p.stdout.strip():
        raise debpkg.DebBuildError(f"{CHANGELOG}: dpkg-parsechangelog failed: {p.stderr.strip()}")
    return p.stdout.strip()


def _chroot_build(root: Path, version: str, log: Path) -> None:
    # /proc in a mount namespace of its own (gone with it); the environment
    # is the chroot's, not the caller's venv.
    script = (
        'mount -t proc proc "$1/proc"; '
        f'exec chroot "$1" env -i PATH={CLEAN_PATH} HOME=/root LC_ALL=C.UTF-8 '
        f'sh -euc "cd /{BUILD_DIR}/kexecd-$2 && dpkg-buildpackage -us -uc -b"'
    )
    argv = ["unshare", "--mount", "--", "sh", "-euc", script, "sh", str(root), version]
    try:
        run_logged(argv, log, "dpkg-buildpackage in the arm64 build root")
    except TestbedError as e:
        raise debpkg.DebBuildError(str(e)) from None


def _build(root: Path, out: Path) -> Path:
    """Build and lint the .deb of this tree in ``root``; leave the results in ``out``."""
    version = _version()
    build = root / BUILD_DIR
    shutil.rmtree(build, ignore_errors=True)
    try:
        debpkg.copy_tree(build / f"kexecd-{version}", REPO)
        start = time.monotonic()
        _chroot_build(root, version, out / "build.log")
        took = time.monotonic() - start
        print(f"arm64_deb: built in {took:.0f} s", file=sys.stderr)
        changes = build / f"kexecd_{version}_arm64.changes"
        start = time.monotonic()
        with (out / "lintian.log").open("w") as f:
            p = subprocess.run(lintian_argv(changes), stdout=f, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            raise debpkg.DebBuildError(f"lintian reported errors: see {out / 'lintian.log'}")
        print(f"arm64_deb: lintian in {time.monotonic() - start:.0f} s", file=sys.stderr)
        for path in build.glob(f"kexecd*_{version}_*"):
            shutil.move(path, out / path.name)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    deb = out / f"kexecd_{version}_arm64.deb"
    if not deb.is_file():
        log = out / "build.log"
        raise debpkg.DebBuildError(f"dpkg-buildpackage left no {deb.name}: see {log}")
    return deb


def ensure_deb() -> Path:
    """The arm64 .deb of this tree as it is now: from the cache, or built
    (with the build root first, if need be).

    One build at a time (a lock in the cache); a finished build of another
    key is removed first.

    :raises DebBuildError: the build or lintian failed (the message names the
        log), or the tree is not a git work tree.
    :raises TestbedError: the build root could not be made.
    """
    return debpkg.cached_build(
        "deb-arm64", "kexecd_*_arm64.deb", lambda out: _build(build_root(), out), REPO
    )


_CACHED_ROOT = re.compile(r"(build)?root-[0-9a-f]+")


def install_deb(root: Path, deb: Path, log: Path) -> None:
    """Install ``deb`` with ``apt-get install ./kexecd_*.deb`` in the arm64
    root ``root`` (a copy: it is changed), its dependencies from Debian's
    archive (the root's own sources.list; network needed). The apt lists and
    downloaded packages are removed afterwards. Output goes to ``log``.

    :raises TestbedError: ``root`` is one of the cached roots, or apt failed
        (the message names ``log``).
    """
    where = root.resolve().parent
    if _CACHED_ROOT.fullmatch(where.name) and where.parent == cache().resolve():
        raise TestbedError(f"{root}: a cached root; install into a copy (cp -a) of it")
    shutil.copy(deb, root / "tmp" / deb.name)
    resolv = root / "etc" / "resolv.conf"
    added = not os.path.lexists(resolv)
    if added:
        shutil.copy("/etc/resolv.conf", resolv)
    script = (
        'mount -t proc proc "$1/proc"; '
        'chroot "$1" apt-get update -qq; '
        'chroot "$1" env DEBIAN_FRONTEND=noninteractive '
        'apt-get install -y --no-install-recommends "./tmp/$2"; '
        'chroot "$1" apt-get clean; '
        'rm -rf "$1"/var/lib/apt/lists/*'
    )
    argv = ["unshare", "--mount", "--", "sh", "-euc", script, "sh", str(root), deb.name]
    try:
        run_logged(argv, log, f"apt-get install ./{deb.name} in the arm64 root {root}")
    finally:
        (root / "tmp" / deb.name).unlink(missing_ok=True)
        if added:
            resolv.unlink(missing_ok=True)


def main() -> int:
    """Build (or find) the arm64 .deb and print its path."""
    start = time.monotonic()
    try:
        deb = ensure_deb()
    except (debpkg.DebBuildError, TestbedError) as e:
        print(f"testbed.arm64_deb: {e}", file=sys.stderr)
        return 2
    print(f"arm64_deb: {time.monotonic() - start:.0f} s in all", file=sys.stderr)
    print(deb)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
