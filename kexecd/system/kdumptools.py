# SPDX-License-Identifier: GPL-2.0-or-later
"""What Debian's and Ubuntu's kdump-tools leave behind: the command it loaded with.

kdump-tools 1.8.1 ``/usr/sbin/kdump-config`` sources
``/etc/default/kdump-tools``, defaults ``KDUMP_COREDIR`` to ``/var/crash``,
runs ``eval $KEXEC_CMD`` and, when that succeeds, writes ``$KEXEC_CMD`` to
``$KDUMP_COREDIR/kexec_cmd``. :func:`replay_argv` runs that line the same way
(the unquoted expansion is split into words, then ``eval`` parses them, so
``--command-line="..."`` keeps its spaces), with ``exec`` so that kexec-tools
is the traced process.

Every file here is untrusted input read as root: the defaults file is parsed,
never sourced; the command file must be a root-owned regular file that only
root can write, one line, of bounded size.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from kexecd.errors import AdoptError, ConfigError
from kexecd.files import read_own_optional
from kexecd.model import shell_words
from kexecd.system.root import Root

__all__ = [
    "DEFAULTS",
    "KexecCmd",
    "default_kexec_cmd",
    "read_kexec_cmd",
    "replay_argv",
]

DEFAULTS = "etc/default/kdump-tools"
COREDIR = "/var/crash"
KEXEC_CMD = "kexec_cmd"
MAX_SIZE = 64 * 1024
_ASSIGN = re.compile(r"^\s*(?:export\s+)?KDUMP_COREDIR=(.*)$")


def _coredir(root: Root) -> str:
    # The last plain assignment wins, as when the shell sources the file.
    text = root.read_optional(DEFAULTS)
    coredir = COREDIR
    if text is None:
        return coredir
    for n, line in enumerate(text.splitlines(), 1):
        m = _ASSIGN.match(line)
        if not m:
            continue
        value = m.group(1).split(" #", 1)[0].strip()
        try:
            words = shlex.split(value)
        except ValueError:
            words = []
        if len(words) != 1 or any(c in value for c in "$`\\") or not words[0].startswith("/"):
            raise ConfigError(
                f"{root.path(DEFAULTS)}:{n}: KDUMP_COREDIR={value} is not a plain absolute "
                "path kexecd can read without running the shell; "
                "give the file with 'kexecd adopt --kexec-cmd FILE'"
            )
        coredir = words[0]
    return coredir


def default_kexec_cmd(root: Root) -> Path | None:
    """Where kdump-tools records its command, or ``None`` without kdump-tools.

    ``$KDUMP_COREDIR/kexec_cmd``, with ``KDUMP_COREDIR`` from
    ``/etc/default/kdump-tools`` (default ``/var/crash``).

    :raises ConfigError: ``KDUMP_COREDIR`` is set to something only a shell
        could evaluate.
    """
    if root.read_optional(DEFAULTS) is None:
        return None
    return root.path(_coredir(root).lstrip("/")) / KEXEC_CMD


@dataclass(frozen=True)
class KexecCmd:
    """The command a distro loaded the crash kernel with, as recorded in a file.

    :ivar line: the command line, as the distro's shell ran it.
    :ivar signature: the file's inode, size and mtime: it changes each time
        the distro loads again (kdump-config rewrites the file).
    """

    path: Path
    line: str
    sha256: str
    signature: tuple[int, int, int]

    @property
    def words(self) -> list[str]:
        """The command's words as its shell splits them."""
        return shell_words(self.line)

    @property
    def file_load(self) -> bool:
        """The command asks for ``kexec_file_load`` (``-s``, as under Secure Boot)."""
        return any(w in ("-s", "--kexec-file-syscall") for w in self.words)


def read_kexec_cmd(path: Path) -> KexecCmd:
    """Read and check a ``kexec_cmd`` file.

    :raises AdoptError: it is missing, not a regular file, writable by
        anyone but root, too large, not one line, or not a ``kexec`` command.
    """
    fix = "load kdump again (kdump-config load) or give the command: kexecd adopt -- COMMAND"
    got = read_own_optional(path, MAX_SIZE, AdoptError, fix, owner=0)
    if got is None:
        raise AdoptError(f"{path}: missing: no crash kernel was loaded by kdump-tools; {fix}")
    data, st = got
    try:
        line = data.decode()
    except UnicodeDecodeError:
        raise AdoptError(f"{path}: not text; {fix}") from None
    lines = [x for x in line.splitlines() if x.strip()]
    if len(lines) != 1:
        raise AdoptError(f"{path}: {len(lines)} command lines, not one; {fix}")
    cmd = KexecCmd(
        path,
        lines[0].strip(),
        hashlib.sha256(data).hexdigest(),
        (st.st_ino, st.st_size, st.st_mtime_ns),
    )
    words = cmd.words
    if not words or os.path.basename(words[0]) != "kexec" or "-p" not in words:
        raise AdoptError(f"{path}: {lines[0][:80]!r} is not a 'kexec -p' command; {fix}")
    return cmd


def replay_argv(cmd: KexecCmd) -> list[str]:
    """The argv that runs ``cmd`` as kdump-config did: ``eval $KEXEC_CMD``, as ``exec``."""
    return ["/bin/sh", "-c", "eval exec $1", "kdump-config", cmd.line]
