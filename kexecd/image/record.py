# SPDX-License-Identifier: GPL-2.0-or-later
"""The record of what is loaded: the header, the words appended, a load begun.

In the snapshot directory: ``loaded-header.bin`` and ``loaded.json`` say what
the kernel holds now (``loaded.json`` also names the words kexecd appended to
the command line: the loaded boot segment is the captured one with them
appended, derived each time, so the segment files never change);
``loading.json`` says a load was begun and not yet recorded.

What the record describes, the kernel's loaded image, does not outlive the
host: after a crash of the host (a power cut) the record is out of date
however it was written (the next boot's load is adopted into a new
snapshot, or the snapshot is loaded whole again). So its files need not
reach the disk at once; they only must not be torn, which would stop kexecd
("not a JSON object"). Each is written atomically (a rename over the old
one), and fsync'd only where that is not enough:

- ``loading.json``: never. Only its existence counts (:meth:`LoadRecord.intent`),
  and only in the boot that wrote it (a SIGKILL loses nothing from the page
  cache).
- ``loaded-header.bin`` and ``loaded.json``: not when they replace the files
  of the same name on a file system that writes a replacing file's data
  before the rename (:func:`kexecd.files.replacing_is_ordered`: ext4 with
  its defaults), nor on tmpfs, which a reboot empties; else fsync'd (the
  first record of a snapshot, which its next boot may read, and any other
  file system).

On ext4 that takes the three fsyncs of the file and the three of the
directory, 3-5 ms of disk at 32,768 ranges, out of every refresh.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kexecd.errors import CmdlineError, SnapshotError
from kexecd.files import timestamp, write_atomic
from kexecd.image import statedir
from kexecd.kparams import check_word
from kexecd.loads import Buffer

__all__ = ["INTENT", "LOADED", "LOADED_HEADER", "LoadRecord"]

LOADED_HEADER = "loaded-header.bin"
LOADED = "loaded.json"
INTENT = "loading.json"
MAX_HEADER = 64 << 20  # kexec-tools' largest header is 1.8 MB
MAX_WORDS = 8  # words kexecd appends to the command line: one today


# The last bytes hashed and their digest: a load's intent and its record name
# the same header (1.8 MB at kexec-tools' 32,768 ranges), hashed once.
_last: tuple[bytes, str] | None = None


def sha256_hex(data: Buffer) -> str:
    """SHA-256 in hex; hashlib imported when first used (``kexecd status``,
    a Python started for one answer, needs none of it)."""
    global _last
    if _last is not None and data is _last[0]:
        return _last[1]
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    if isinstance(data, bytes):  # immutable: the same object, the same digest
        _last = (data, digest)
    return digest


def json_object(directory: Path, name: str) -> dict[str, Any]:
    """A JSON object file of kexecd's, read as untrusted input.

    :raises SnapshotError: missing, too big, or not a JSON object.
    """
    info = _parsed(statedir.read_file(directory, name, 65536))
    if info is None:
        raise SnapshotError(f"{directory / name}: not a JSON object; run 'kexecd load' again")
    return info


def _parsed(data: bytes) -> dict[str, Any] | None:
    """``data`` as a JSON object, or ``None`` if it is not one."""
    try:
        info = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return info if isinstance(info, dict) else None


@dataclass(frozen=True)
class LoadRecord:
    """What is loaded from one snapshot directory, as kexecd recorded it.

    :ivar path: the snapshot directory.
    :ivar durable: the directory is not on tmpfs: what must reach the disk
        is fsync'd.
    :ivar ordered: its file system writes a file renamed over another before
        the rename (:func:`kexecd.files.replacing_is_ordered`): a
        replacement needs no fsync.
    """

    path: Path
    durable: bool = True
    ordered: bool = False

    def _write(self, name: str, data: bytes) -> None:
        # A replacement on an ordered file system is old or new after a
        # crash, never torn: no fsync. A new file may be empty: fsync'd.
        replacing = self.ordered and os.path.lexists(self.path / name)
        write_atomic(self.path / name, data, durable=self.durable and not replacing)

    def header(self) -> bytes:
        """The ELF core header loaded now."""
        return statedir.read_file(self.path, LOADED_HEADER, MAX_HEADER)

    def info(self) -> dict[str, Any]:
        """What ``loaded.json`` says of the last load: time, digest, how.

        :raises SnapshotError: missing, or not a JSON object.
        """
        return json_object(self.path, LOADED)

    def words(self) -> tuple[str, ...]:
        """The words kexecd appended to the command line loaded now.

        :raises SnapshotError: ``loaded.json`` is missing or malformed.
        """
        value = self.info().get("cmdline_appended", [])
        try:
            if not isinstance(value, list) or len(value) > MAX_WORDS:
                raise CmdlineError(f"not a list of at most {MAX_WORDS} words")
            return tuple(check_word(w) for w in value)
        except CmdlineError as e:
            raise SnapshotError(
                f"{self.path / LOADED}: cmdline_appended: {e}; run 'kexecd load' again"
            ) from None

    def intent(self) -> dict[str, Any] | None:
        """A load begun and not recorded (kexecd was killed in between), or ``None``.

        Then the kernel holds either the recorded header or the new one:
        which, nobody knows, so the next refresh loads the wanted one. What
        ``loading.json`` says is for a reader: its existence is the fact,
        and an empty or torn one (written without fsync, a crash of the host
        since) is still an intent, ``{}``; a file that is not regular is
        refused, as any of kexecd's.
        """
        if not os.path.lexists(self.path / INTENT):
            return None
        info = _parsed(statedir.read_file(self.path, INTENT, 65536))  # regular, or refused
        return {} if info is None else info

    def begin(self, header: bytes, words: Sequence[str] = ()) -> None:
        """Say, before ``kexec_load``, which header (and command line words) is
        about to be loaded."""
        info = {
            "time": timestamp(),
            "header_sha256": sha256_hex(header),
            "cmdline_appended": list(words),
        }
        write_atomic(self.path / INTENT, (json.dumps(info) + "\n").encode(), durable=False)

    def done(
        self, header: bytes, digest: bytes | None, how: str, words: Sequence[str] = ()
    ) -> None:
        """Remember what is loaded now (atomically, header first), then drop the intent.

        :param words: what kexecd appended to the captured command line.
        """
        self._write(LOADED_HEADER, header)
        info = {
            "time": timestamp(),
            "how": how,
            "header_sha256": sha256_hex(header),
            "digest": digest.hex() if digest else None,
            "cmdline_appended": list(words),
        }
        self._write(LOADED, (json.dumps(info, indent=2) + "\n").encode())
        try:
            (self.path / INTENT).unlink()
        except FileNotFoundError:
            pass
        except OSError as e:  # a directory planted at the name
            raise SnapshotError(
                f"{self.path / INTENT}: cannot remove ({e.strerror}); remove it by hand"
            ) from None

    def done_whole(self, how: str, words: Sequence[str] = ()) -> None:
        """Remember a load with no header kexecd can read (a file load), and
        the words kexecd appended to the command line it was given."""
        info = {"time": timestamp(), "how": how, "cmdline_appended": list(words)}
        self._write(LOADED, (json.dumps(info) + "\n").encode())
