# SPDX-License-Identifier: GPL-2.0-or-later
"""The snapshot: kexec-tools' load, captured once, kept in the state directory.

``STATE_DIR/snapshot/`` (the state directory is mode 0700) holds
``manifest.json`` (the kexec command, entry, flags, each segment's mem, memsz,
size and SHA-256, which segment is the header and which purgatory, where the
digest is), ``seg-NN.bin`` (each segment's bytes, read back with mmap), and
what is loaded now: ``loaded-header.bin`` and ``loaded.json``. A new
``kexecd load`` replaces the whole directory at once.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kexecd.core import Buffer, KexecCall, LoadCapture, Segment
from kexecd.errors import SnapshotError
from kexecd.files import timestamp, write_atomic
from kexecd.image.purgatory import DigestLocation, locate

__all__ = [
    "Snapshot",
    "Source",
    "create",
    "files_signature",
    "open_snapshot",
    "state_dir_ready",
]

SNAPSHOT = "snapshot"
MANIFEST = "manifest.json"
LOADED_HEADER = "loaded-header.bin"
LOADED = "loaded.json"
FORMAT = 1

FilesSignature = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True)
class Source:
    """The distro's record of the command, for an adopted crash kernel.

    :ivar path: the file the command was read from (kdump-tools' ``kexec_cmd``).
    :ivar command: the command line in it.
    :ivar signature: the file's inode, size and mtime when it was read: the
        distro rewrites it on each load, so a new signature means a new load.
    """

    path: str
    command: str
    sha256: str
    signature: tuple[int, int, int]

    @property
    def words(self) -> list[str]:
        """The command's words as its shell splits them (for people)."""
        try:
            return shlex.split(self.command)
        except ValueError:
            return self.command.split()


def _segment_file(index: int) -> str:
    return f"seg-{index:02d}.bin"


@dataclass(frozen=True)
class Snapshot:
    """A loaded crash image as kexecd knows it.

    :ivar segments: the segments in kexec_load order, their buffers mapped
        read-only from the snapshot's files (nothing is read until used).
    :ivar sha256: each segment buffer's SHA-256 as the manifest records it.
    :ivar header: the index of the ELF core header segment, if any.
    :ivar purgatory: the index of the segment holding the entry point.
    :ivar digest: where purgatory's SHA-256 is, if it was found.
    :ivar file_load: the image came from kexec_file_load: it can only be
        reloaded whole, by running the command again.
    """

    path: Path
    argv: tuple[str, ...]
    created: str
    file_load: bool
    entry: int
    flags: int
    segments: tuple[Segment, ...]
    sha256: tuple[str, ...]
    header: int | None
    purgatory: int | None
    digest: DigestLocation | None
    source: Source | None = None

    @property
    def header_capacity(self) -> int | None:
        """How many program headers fit in the header segment's memsz."""
        if self.header is None:
            return None
        return (self.segments[self.header].memsz - 64) // 56

    def verify(self) -> None:
        """Check every segment file against its SHA-256 in the manifest.

        :raises SnapshotError: a file is missing, of the wrong size or altered.
        """
        for i, seg in enumerate(self.segments):
            if hashlib.sha256(seg.buf).hexdigest() != self.sha256[i]:
                raise SnapshotError(
                    f"{self.path / _segment_file(i)}: does not match the SHA-256 in "
                    f"{self.path / MANIFEST} (corrupt or tampered); nothing was loaded; "
                    "run 'kexecd load' again"
                )

    def loaded_header(self) -> bytes:
        """The ELF core header loaded now."""
        path = self.path / LOADED_HEADER
        try:
            return path.read_bytes()
        except OSError as e:
            raise SnapshotError(
                f"{path}: cannot read: {e.strerror}; run 'kexecd load' again"
            ) from None

    def loaded_info(self) -> dict[str, Any]:
        """What ``loaded.json`` says of the last load: time, digest, how."""
        info: dict[str, Any] = json.loads((self.path / LOADED).read_text())
        return info

    def record_loaded(self, header: bytes, digest: bytes | None, how: str) -> None:
        """Remember what is loaded now (atomically, header first)."""
        write_atomic(self.path / LOADED_HEADER, header)
        info = {
            "time": timestamp(),
            "how": how,
            "header_sha256": hashlib.sha256(header).hexdigest(),
            "digest": digest.hex() if digest else None,
        }
        write_atomic(self.path / LOADED, (json.dumps(info, indent=2) + "\n").encode())


def files_signature(state_dir: Path) -> FilesSignature:
    """Name, inode, size and mtime of the snapshot's manifest and segment files.

    Cheap to read; it changes when ``kexecd load`` replaces the snapshot or a
    file is rewritten.
    """
    try:
        entries = sorted(os.scandir(state_dir / SNAPSHOT), key=lambda e: e.name)
    except OSError:
        return ()
    out = []
    for e in entries:
        if e.name.startswith("seg-") or e.name == MANIFEST:
            st = e.stat()
            out.append((e.name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _map(path: Path, size: int) -> Buffer:
    # A segment's bytes, memory-mapped read-only from its file.
    if size == 0:
        return b""
    try:
        with path.open("rb") as f:
            return memoryview(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ))
    except OSError as e:
        raise SnapshotError(
            f"{path}: cannot read: {e.strerror}; run 'kexecd load' again"
        ) from None
    except ValueError:  # mmap of an empty file
        raise SnapshotError(
            f"{path}: empty, but the manifest says {size} bytes; run 'kexecd load' again"
        ) from None


def _find_header(segments: Sequence[Buffer]) -> int | None:
    # The kernel finds a kexec_load image's header the same way: ELFMAG at the
    # start of a segment (kernel/crash_core.c, Linux 6.6).
    found = [i for i, b in enumerate(segments) if b[:4] == b"\x7fELF" and b[16:18] == b"\4\0"]
    return found[-1] if found else None


def state_dir_ready(state_dir: Path) -> None:
    """Create the state directory, mode 0700."""
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)


def create(
    state_dir: Path, argv: Sequence[str], cap: LoadCapture, source: Source | None = None
) -> Snapshot:
    """Write the snapshot of a traced kexec-tools load, replacing any older one."""
    state_dir_ready(state_dir)
    new = state_dir / f".{SNAPSHOT}.new"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(mode=0o700)
    file_load = cap.call is KexecCall.KEXEC_FILE_LOAD
    bufs = [s.buf for s in cap.segments]
    header = None if file_load else _find_header(bufs)
    purgatory = next(
        (i for i, s in enumerate(cap.segments) if s.mem <= cap.entry < s.mem + s.memsz), None
    )
    digest = None
    if header is not None and purgatory is not None:
        digest = locate(cap.segments, purgatory, header)
    records = []
    for i, s in enumerate(cap.segments):
        name = _segment_file(i)
        (new / name).write_bytes(s.buf)
        records.append(
            {
                "index": i,
                "mem": s.mem,
                "memsz": s.memsz,
                "bufsz": len(s.buf),
                "sha256": hashlib.sha256(s.buf).hexdigest(),
                "file": name,
            }
        )
    manifest = {
        "format": FORMAT,
        "argv": list(argv),
        "created": timestamp(),
        "syscall": cap.call.name.lower(),
        "entry": cap.entry,
        "flags": cap.flags,
        "cmdline": cap.cmdline.decode(errors="replace") if cap.cmdline else None,
        "segments": records,
        "header": header,
        "purgatory": purgatory,
        "source": None if source is None else asdict(source),
        "digest": None
        if digest is None
        else {
            "offset": digest.digest_offset,
            "regions_offset": digest.regions_offset,
            "header_hashed": digest.header_hashed,
            "prefix_state": digest.prefix_state.hex() if digest.prefix_state else None,
        },
    }
    write_atomic(new / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    snap = _parse(new, manifest)
    if header is not None:
        snap.record_loaded(bytes(bufs[header]), None, "kexec-tools")
    else:
        info = {"time": timestamp(), "how": "kexec-tools"}
        write_atomic(new / LOADED, (json.dumps(info) + "\n").encode())
    final = state_dir / SNAPSHOT
    old = state_dir / f".{SNAPSHOT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return open_snapshot(state_dir)


def _parse(path: Path, m: dict[str, Any]) -> Snapshot:
    d = m.get("digest")
    src = m.get("source")
    records = m["segments"]
    return Snapshot(
        path=path,
        argv=tuple(m["argv"]),
        created=m["created"],
        file_load=m["syscall"] == "kexec_file_load",
        entry=m["entry"],
        flags=m["flags"],
        segments=tuple(
            Segment(_map(path / _segment_file(i), r["bufsz"]), r["mem"], r["memsz"])
            for i, r in enumerate(records)
        ),
        sha256=tuple(r["sha256"] for r in records),
        header=m["header"],
        purgatory=m["purgatory"],
        digest=None
        if d is None
        else DigestLocation(
            d["offset"],
            d["regions_offset"],
            d["header_hashed"],
            bytes.fromhex(d["prefix_state"]) if d["prefix_state"] else None,
        ),
        source=None
        if src is None
        else Source(src["path"], src["command"], src["sha256"], tuple(src["signature"])),
    )


def open_snapshot(state_dir: Path) -> Snapshot:
    """Read the snapshot in ``state_dir``.

    :raises SnapshotError: there is none, or its manifest is unreadable.
    """
    path = state_dir / SNAPSHOT
    manifest = path / MANIFEST
    try:
        m = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise SnapshotError(
            f"{manifest}: no snapshot; load the crash kernel with "
            "'kexecd load -- kexec -p ...' first"
        ) from None
    except (OSError, ValueError) as e:
        raise SnapshotError(f"{manifest}: unreadable ({e}); run 'kexecd load' again") from None
    try:
        if m.get("format") != FORMAT:
            raise KeyError("format")
        return _parse(path, m)
    except (KeyError, TypeError, ValueError) as e:
        raise SnapshotError(f"{manifest}: malformed ({e}); run 'kexecd load' again") from None
