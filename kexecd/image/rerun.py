# SPDX-License-Identifier: GPL-2.0-or-later
"""What a full reload may run as root: kexec-tools itself, or the distro's record.

A full reload runs a command again (a ``kexec_file_load`` image, a header
kexecd cannot patch, a crash kernel the kernel lost). The command is never
taken from the manifest alone: a manifest is a file, and what it says is run
as root. It runs only

* **kexec-tools itself**: the command's first word resolves to the very
  binary that made the snapshot. At capture, :func:`identify` records that
  binary's identity (:class:`~kexecd.image.manifest.Program`: path, size,
  SHA-256 of the bytes the tracer read from ``/proc/PID/exe``), and only
  when the command's first word led to it (not a shell or a wrapper) and it
  says it is kexec-tools (its ``PACKAGE_STRING``). The content is the
  identity, not the inode: a reinstall of the same package gives a new
  inode and the same program; an upgrade gives another program, and a new
  snapshot is needed, as its header rules may differ too.
* **for an adopted image, the distro's record** (kdump-tools' ``kexec_cmd``),
  read again and checked as at adoption
  (:func:`kexecd.system.kdumptools.read_kexec_cmd`), and replayed as the
  distro runs it.

Anything else is refused before it runs, with one line saying how to load
or adopt again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from kexecd.errors import SnapshotError
from kexecd.files import read_own
from kexecd.image.kexecargs import amended_line, with_words
from kexecd.image.manifest import MAX_PROGRAM, Program, Source
from kexecd.image.snapshot import Snapshot
from kexecd.system.kdumptools import read_kexec_cmd, replay_argv
from kexecd.system.kexectools import version_in

__all__ = ["PANIC_FLAGS", "command", "identify"]

PANIC_FLAGS = ("-p", "--load-panic")
# Where systemd looks for a unit's programs, when PATH is not set.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FIX = (
    "load it again with 'kexecd load -- kexec -p ...' or take the distro's over with "
    "'kexecd adopt'"
)


def resolve(word: str) -> str | None:
    """Where a command's first word leads: an absolute path, or ``None``."""
    found = word if "/" in word else shutil.which(word, path=os.environ.get("PATH", DEFAULT_PATH))
    return None if found is None else os.path.abspath(found)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: str) -> bytes:
    # The binary, as kexecd would run it as root: a regular file (no symlink
    # at its name) that only root can write.
    return read_own(Path(path), MAX_PROGRAM, SnapshotError, FIX, owner=os.geteuid())[0]


def identify(argv: Sequence[str], program: bytes | None) -> Program | None:
    """The identity of the kexec-tools binary that made a load, if the command
    ran it directly.

    :param argv: the command that was traced.
    :param program: the bytes of the program that made the crash load.
    :returns: ``None`` when the program is unknown or not kexec-tools, or
        the command's first word leads elsewhere (a wrapper, a shell).
    """
    if not program or not argv or version_in(program) is None:
        return None
    path = resolve(argv[0])
    if path is None:
        return None
    try:
        data = _read(path)
    except SnapshotError:
        return None
    sha = _sha256(program)
    return Program(path, len(program), sha) if _sha256(data) == sha else None


def command(
    snap: Snapshot, words: Sequence[str] | None = None
) -> tuple[Sequence[str], Source | None]:
    """The command a full reload of ``snap`` runs, and the distro's record it
    came from (for an adopted image).

    :param words: for a ``kexec_file_load`` image, what kexecd appends to
        the crash kernel's command line the command gives, in place of what
        it appended before (:mod:`kexecd.image.kexecargs`); ``None``: the
        command as it is.

    :raises SnapshotError: the snapshot records no kexec-tools binary, or
        the command no longer leads to it.
    :raises AdoptError: the distro's record is unfit (as at adoption).
    :raises CmdlineError: ``words`` cannot be appended to the command's line.
    """
    if snap.source is not None:
        cmd = read_kexec_cmd(Path(snap.source.path))
        source = Source(str(cmd.path), cmd.line, cmd.sha256, cmd.signature)
        if words is not None:
            cmd = replace(cmd, line=amended_line(cmd.line, words, snap.record.words()))
        return replay_argv(cmd), source
    manifest = snap.path / "manifest.json"
    what = f"{manifest}: a full reload runs only the kexec-tools binary that made the snapshot"
    prog, argv = snap.program, list(snap.argv)
    if prog is None:
        raise SnapshotError(
            f"{what}, and this one records none (an older kexecd, or a command that is "
            f"not kexec-tools itself); nothing was run; {FIX}"
        )
    options = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    if not any(a in PANIC_FLAGS for a in options):
        raise SnapshotError(
            f"{what} with -p, not {' '.join(argv)[:120]!r}; nothing was run; {FIX}"
        )
    path = resolve(argv[0])
    if path != prog.path:
        raise SnapshotError(
            f"{what} ({prog.path}); {argv[0][:80]!r} leads to {path or 'nothing'}; "
            f"nothing was run; {FIX}"
        )
    data = _read(path)
    if len(data) != prog.size or _sha256(data) != prog.sha256:
        raise SnapshotError(
            f"{what}, and {path} changed since (an upgrade of kexec-tools?); nothing was "
            f"run; {FIX}"
        )
    args = argv if words is None else with_words(argv, words, snap.record.words())
    return (path, *args[1:]), None
