# SPDX-License-Identifier: GPL-2.0-or-later
"""The Debian package of this tree, built once per content of its files.

The key is a SHA-256 over the paths, kinds and contents of the files
``scripts/build-deb`` copies (``git ls-files -co --exclude-standard``: tracked
and untracked but not ignored, so uncommitted edits count) that the package is
made from (:data:`PACKAGED`): a change to the tests, the test bed or the docs
builds nothing again. A build is kept
in ``$KEXECD_VM_CACHE/deb/<key>/`` (see :func:`testbed.assets.cache_dir`);
older keys are removed. ``python -m testbed.debpkg`` builds and prints the
.deb's path (``scripts/setup`` does, ahead of time).
"""

from __future__ import annotations

import datetime
import email.utils
import fcntl
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from testbed.assets import cache_dir

__all__ = [
    "PACKAGED",
    "DebBuildError",
    "cached_build",
    "copy_tree",
    "ensure_deb",
    "ensure_next_deb",
    "next_version",
    "packaged",
    "source_files",
    "tree_key",
]

REPO = Path(__file__).resolve().parent.parent
BUILD_DEB = REPO / "scripts" / "build-deb"

# What the package is made from: the sources (Python, the C core), the
# packaging, the units, the man page, and what the build reads (build-deb
# itself; debian/build-check.py checks the build against tests/data). A folder
# ends in "/". README.md (pyproject's long description in the wheel's METADATA,
# nothing that runs) and the rest of docs/ are left out: editing them builds
# nothing again.
PACKAGED = (
    "MANIFEST.in",
    "csrc/",
    "debian/",
    "docs/kexecd.8",
    "kexecd/",
    "pyproject.toml",
    "scripts/build-deb",
    "setup.py",
    "systemd/",
    "tests/data/",
)


class DebBuildError(RuntimeError):
    """The package could not be built; the message names the log to read."""


def source_files(repo: Path = REPO) -> list[str]:
    """The files ``scripts/build-deb`` copies, sorted: tracked and untracked, not
    ignored, less tracked files deleted from the work tree.

    :raises DebBuildError: ``repo`` is not a git work tree.
    """
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "-z"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise DebBuildError(f"{repo}: cannot list its files with git: {e}") from None
    names = {os.fsdecode(n) for n in out.split(b"\0") if n}
    return sorted(n for n in names if os.path.lexists(repo / n))


def packaged(name: str) -> bool:
    """``name`` (a path in the repo) is one the package is made from (:data:`PACKAGED`)."""
    return any(name == p or (p.endswith("/") and name.startswith(p)) for p in PACKAGED)


def tree_key(repo: Path = REPO) -> str:
    """SHA-256 over each :func:`packaged` file's path, kind (symlink,
    executable) and contents."""
    h = hashlib.sha256()
    for name in filter(packaged, source_files(repo)):
        path = repo / name
        h.update(os.fsencode(name) + b"\0")
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            h.update(b"l" + os.fsencode(os.readlink(path)))
        else:
            data = path.read_bytes()
            h.update(b"x" if mode & 0o111 else b"f")
            h.update(len(data).to_bytes(8, "little") + data)
        h.update(b"\0")
    return h.hexdigest()


def copy_tree(dest: Path, repo: Path = REPO) -> None:
    """Copy :func:`source_files` of ``repo`` into ``dest`` as ``scripts/build-deb``
    does (symlinks as symlinks, the executable bit kept; ``dest`` is created).

    :raises DebBuildError: ``repo`` is not a git work tree.
    """
    for name in source_files(repo):
        src, dst = repo / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)


def ensure_deb() -> Path:
    """The .deb of this tree as it is now: from the cache, or built by ``scripts/build-deb``.

    One build at a time (a lock in the cache); a finished build of another
    key is removed first.

    :raises DebBuildError: the build or lintian failed (the message names the
        log), or the tree is not a git work tree.
    """
    return cached_build("deb", "kexecd_*.deb", _build_deb, REPO)


def cached_build(name: str, pattern: str, build: Callable[[Path], Path], repo: Path) -> Path:
    """The package matching ``pattern`` in ``cache_dir()/NAME/<key>/``, ``key``
    being :func:`tree_key` of ``repo``, or ``build(out)``'s into that
    directory, made afresh.

    One build at a time (a lock in ``cache_dir()/NAME``); a finished build of
    another key is removed first.
    """
    base = cache_dir() / name
    base.mkdir(parents=True, exist_ok=True)
    key = tree_key(repo)
    out = base / key
    with (base / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = sorted(out.glob(pattern))
        if built:
            return built[0]
        for old in base.iterdir():
            if old.is_dir() and old.name != key:
                shutil.rmtree(old)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        return build(out)


# What makes the package's "next version" (:func:`ensure_next_deb`): the
# Debian version's last number up by one, and the daemon's state.json format
# (kexecd/service/statefile.py FORMAT) up by one.
STATEFILE = "kexecd/service/statefile.py"
_FORMAT_LINE = re.compile(r"^FORMAT = (\d+)$", re.M)
_CHANGELOG_HEAD = re.compile(r"^kexecd \(([^)]+)\) (\S+); urgency=\S+$", re.M)
_TRAILER = re.compile(r"^ -- (.+>)  (.+)$", re.M)


def next_version(version: str) -> str:
    """``version`` with its last number one up (``0.1.0`` → ``0.1.1``)."""
    m = re.fullmatch(r"(.*?)(\d+)", version)
    if not m:
        raise DebBuildError(f"debian/changelog: version {version!r} does not end in a number")
    return f"{m.group(1)}{int(m.group(2)) + 1}"


def make_next(tree: Path) -> tuple[str, int]:
    """Turn the copy ``tree`` into the next version of the package: a
    changelog entry of :func:`next_version` on top, and ``state.json``'s format
    one up. Returns (version, format).

    :raises DebBuildError: the changelog or statefile.py is not as expected.
    """
    changelog = tree / "debian" / "changelog"
    text = changelog.read_text()
    head, trailer = _CHANGELOG_HEAD.search(text), _TRAILER.search(text)
    statefile = tree / STATEFILE
    source = statefile.read_text()
    fmt = _FORMAT_LINE.search(source)
    if not head or not trailer or not fmt:
        raise DebBuildError(f"{tree}: no changelog entry or no FORMAT line in {STATEFILE}")
    version, new_format = next_version(head.group(1)), int(fmt.group(1)) + 1
    # A day after the entry before (lintian: latest-changelog-entry-without-new-date).
    date = email.utils.parsedate_to_datetime(trailer.group(2)) + datetime.timedelta(days=1)
    entry = (
        f"kexecd ({version}) {head.group(2)}; urgency=medium\n\n"
        f"  * The test bed's next version: state.json format {new_format}.\n\n"
        f" -- {trailer.group(1)}  {email.utils.format_datetime(date)}\n\n"
    )
    changelog.write_text(entry + text)
    statefile.write_text(_FORMAT_LINE.sub(f"FORMAT = {new_format}", source, count=1))
    return version, new_format


def ensure_next_deb() -> Path:
    """The .deb of this tree's "next version" (:func:`make_next`), for the
    upgrade test: built by ``scripts/build-deb`` from a changed copy of the
    tree, cached like :func:`ensure_deb` in ``cache_dir()/deb-next``.

    :raises DebBuildError: as :func:`ensure_deb`.
    """
    return cached_build("deb-next", "kexecd_*.deb", _build_next_deb, REPO)


def _build_next_deb(out: Path) -> Path:
    tree = out / "tree"
    copy_tree(tree)
    make_next(tree)
    for argv in (["init", "-q"], ["add", "-A"]):
        subprocess.run(["git", "-C", str(tree), *argv], check=True, capture_output=True)
    try:
        return _build_deb(out, tree / "scripts" / "build-deb")
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def _build_deb(out: Path, build_deb: Path | None = None) -> Path:
    # scripts/build-deb into out; the .deb's path is the last line it prints.
    log = out / "build-deb.log"
    with log.open("w") as f:
        p = subprocess.run(
            ["bash", str(build_deb or BUILD_DEB), str(out)],
            stdout=subprocess.PIPE,
            stderr=f,
            text=True,
        )
    if p.returncode != 0:
        raise DebBuildError(
            f"scripts/build-deb failed (exit {p.returncode}): see {log} "
            f"(dpkg-buildpackage's output: {out / 'build.log'})"
        )
    lines = p.stdout.strip().splitlines()
    deb = Path(lines[-1]) if lines else out / "missing.deb"
    if not deb.is_file():
        raise DebBuildError(f"scripts/build-deb printed no .deb ({deb}): see {log}")
    return deb


def main() -> int:
    """Build (or find) the .deb and print its path."""
    try:
        print(ensure_deb())
    except DebBuildError as e:
        print(f"testbed.debpkg: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
