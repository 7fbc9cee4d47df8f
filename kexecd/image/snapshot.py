# SPDX-License-Identifier: GPL-2.0-or-later
"""The snapshot: kexec-tools' load, captured once, kept in the state directory.

``STATE_DIR/snapshot/`` (the state directory is mode 0700) holds
``manifest.json`` (the kexec command, entry, flags, each segment's mem, memsz,
size and SHA-256, which segment is the header and which purgatory, where the
digest is), ``seg-NN.bin`` (each segment's bytes, read back with mmap), and
what is loaded now: ``loaded-header.bin`` and ``loaded.json`` (which also
names the words kexecd appended to the command line: the loaded boot
parameters segment is the captured one with them appended, derived each time,
so the segment files never change). A new ``kexecd load`` replaces the whole
directory at once.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kexecd.core import fs_volatile
from kexecd.errors import CmdlineError, SnapshotError
from kexecd.files import timestamp, write_atomic
from kexecd.image import cmdline, statedir
from kexecd.image.manifest import Manifest, SegmentInfo, Source, decode, encode
from kexecd.image.purgatory import DigestLocation, locate
from kexecd.image.relocate import capacity
from kexecd.loads import Buffer, KexecCall, LoadCapture, Segment
from kexecd.system.kexectools import HeaderRules, rules_for, version_in

__all__ = [
    "Snapshot",
    "Source",
    "create",
    "open_snapshot",
    "recover",
    "reopen",
]

SNAPSHOT = "snapshot"
MANIFEST = "manifest.json"
LOADED_HEADER = "loaded-header.bin"
LOADED = "loaded.json"
INTENT = "loading.json"
MAX_MANIFEST = 1 << 20
MAX_HEADER = 64 << 20  # kexec-tools' largest header is 1.8 MB
MAX_WORDS = 8  # words kexecd appends to the command line: one today


# hashlib and shutil are imported when first used: kexecd status, which
# starts a Python for one answer, needs neither (each module costs ~15-90 ms
# to import in the test bed's emulated guest).
def _sha256(data: Buffer) -> Any:
    import hashlib

    return hashlib.sha256(data)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# include/uapi/linux/kexec.h: KEXEC_UPDATE_ELFCOREHDR, KEXEC_CRASH_HOTPLUG_SUPPORT.
KERNEL_UPDATE_FLAGS = 0x4 | 0x8


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
    :ivar cmdline: the command line given to kexec_file_load (kexec_load
        images carry theirs in a segment: :mod:`kexecd.image.cmdline`).
    :ivar durable: what is loaded is recorded with fsync: the state
        directory is on a disk, not on tmpfs, which a reboot empties anyway.
    :ivar ident: the identity of the snapshot directory, its manifest and
        segment files when it was opened (:meth:`unchanged`).
    :ivar kexec_tools: the version of the kexec-tools that made the load, if
        known (read from the program at the call).
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
    cmdline: str | None = None
    durable: bool = True
    ident: tuple[int, ...] = ()
    kexec_tools: str | None = None

    @property
    def asks_kernel_updates(self) -> bool:
        """The load asked the kernel to keep its header current (Linux 6.6+):
        a kexec_file_load, or a kexec_load with ``KEXEC_UPDATE_ELFCOREHDR``
        (6.6-6.9 on x86) or ``KEXEC_CRASH_HOTPLUG_SUPPORT`` (6.10+), which
        kexec-tools 2.0.28+ passes with ``--hotplug``. A kernel without the
        feature refuses those flags (kernel/kexec.c kexec_load_check()), so a
        load that succeeded with them has it."""
        return self.file_load or bool(self.flags & KERNEL_UPDATE_FLAGS)

    @property
    def rules(self) -> HeaderRules:
        """How the kexec-tools that made the load builds the header."""
        return rules_for(self.kexec_tools)

    def unchanged(self) -> bool:
        """Whether the snapshot directory, its manifest and segment files are
        still the ones this was opened from (a new ``kexecd load`` swaps in a
        new directory; a file cut short under its mapping would fault).

        A few stats: what lets the daemon keep a snapshot open between
        refreshes. Not a check of content: that is :meth:`verify`'s.
        """
        try:
            return bool(self.ident) and _ident(self.path) == self.ident
        except OSError:
            return False

    @property
    def syscall(self) -> str:
        """The call that loaded the image: ``kexec_load`` or ``kexec_file_load``."""
        return "kexec_file_load" if self.file_load else "kexec_load"

    @property
    def header_capacity(self) -> int | None:
        """How many program headers fit in the header segment's memsz."""
        if self.header is None:
            return None
        return capacity(self.segments[self.header].memsz)

    def verify(self) -> None:
        """Check every segment file against its SHA-256 in the manifest.

        :raises SnapshotError: a file is missing, of the wrong size or altered.
        """
        for i, seg in enumerate(self.segments):
            if _sha256(seg.buf).hexdigest() != self.sha256[i]:
                raise SnapshotError(
                    f"{self.path / _segment_file(i)}: does not match the SHA-256 in "
                    f"{self.path / MANIFEST} (corrupt or tampered); nothing was loaded; "
                    "run 'kexecd load' again"
                )

    def loaded_header(self) -> bytes:
        """The ELF core header loaded now (as kexecd last recorded it)."""
        return statedir.read_file(self.path, LOADED_HEADER, MAX_HEADER)

    def loaded_info(self) -> dict[str, Any]:
        """What ``loaded.json`` says of the last load: time, digest, how.

        :raises SnapshotError: missing, or not a JSON object.
        """
        return _json_object(self.path, LOADED)

    def loaded_words(self) -> tuple[str, ...]:
        """The words kexecd appended to the command line loaded now (``loaded.json``).

        :raises SnapshotError: ``loaded.json`` is missing or malformed.
        """
        value = self.loaded_info().get("cmdline_appended", [])
        try:
            if not isinstance(value, list) or len(value) > MAX_WORDS:
                raise CmdlineError(f"not a list of at most {MAX_WORDS} words")
            return tuple(cmdline.check_word(w) for w in value)
        except CmdlineError as e:
            raise SnapshotError(
                f"{self.path / LOADED}: cmdline_appended: {e}; run 'kexecd load' again"
            ) from None

    @property
    def intent(self) -> dict[str, Any] | None:
        """A load begun and not recorded (kexecd was killed in between), or ``None``.

        Then the kernel holds either the recorded header or the new one:
        which, nobody knows, so the next refresh loads the wanted one.
        """
        if not os.path.lexists(self.path / INTENT):
            return None
        return _json_object(self.path, INTENT)

    def record_intent(self, header: bytes, words: Sequence[str] = ()) -> None:
        """Say, before ``kexec_load``, which header (and command line words) is
        about to be loaded."""
        info = {
            "time": timestamp(),
            "header_sha256": _sha256(header).hexdigest(),
            "cmdline_appended": list(words),
        }
        write_atomic(self.path / INTENT, (json.dumps(info) + "\n").encode(), durable=self.durable)

    def record_loaded(
        self, header: bytes, digest: bytes | None, how: str, words: Sequence[str] = ()
    ) -> None:
        """Remember what is loaded now (atomically, header first), then drop the intent.

        :param words: what kexecd appended to the captured command line.
        """
        write_atomic(self.path / LOADED_HEADER, header, durable=self.durable)
        info = {
            "time": timestamp(),
            "how": how,
            "header_sha256": _sha256(header).hexdigest(),
            "digest": digest.hex() if digest else None,
            "cmdline_appended": list(words),
        }
        data = (json.dumps(info, indent=2) + "\n").encode()
        write_atomic(self.path / LOADED, data, durable=self.durable)
        with contextlib.suppress(FileNotFoundError):
            (self.path / INTENT).unlink()


def _json_object(directory: Path, name: str) -> dict[str, Any]:
    data = statedir.read_file(directory, name, 65536)
    try:
        info = json.loads(data)
    except (ValueError, RecursionError):
        info = None
    if not isinstance(info, dict):
        raise SnapshotError(f"{directory / name}: not a JSON object; run 'kexecd load' again")
    return info


def _map(directory: Path, index: int, size: int) -> Buffer:
    # A segment's bytes, memory-mapped read-only from its file: a regular
    # file (no symlink) in the snapshot directory, of the manifest's size.
    if size == 0:
        return b""
    path = directory / _segment_file(index)
    fix = "run 'kexecd load' again"
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fd = os.open(
                path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd
            )
        finally:
            os.close(dfd)
    except OSError as e:
        raise SnapshotError(f"{path}: cannot open ({e.strerror}); {fix}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SnapshotError(f"{path}: not a regular file; {fix}")
        if st.st_size != size:
            raise SnapshotError(
                f"{path}: {st.st_size} bytes, but the manifest says {size} (truncated?); {fix}"
            )
        return memoryview(mmap.mmap(fd, size, prot=mmap.PROT_READ))
    except OSError as e:
        raise SnapshotError(f"{path}: cannot map: {e.strerror}; {fix}") from None
    finally:
        os.close(fd)


def _find_header(segments: Sequence[Buffer]) -> int | None:
    # The kernel finds a kexec_load image's header the same way: ELFMAG at the
    # start of a segment (kernel/crash_core.c, Linux 6.6).
    found = [i for i, b in enumerate(segments) if b[:4] == b"\x7fELF" and b[16:18] == b"\4\0"]
    return found[-1] if found else None


def _setup(segments: Sequence[Segment]) -> int | None:
    # The boot parameters segment, for the SHA-256 state before it; a load
    # whose command line kexecd cannot read has none (the plan says why).
    try:
        return cmdline.find(segments).segment
    except CmdlineError:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create(
    state_dir: Path, argv: Sequence[str], cap: LoadCapture, source: Source | None = None
) -> Snapshot:
    """Write the snapshot of a traced kexec-tools load, replacing any older one.

    The new directory is written and synced beside the old one
    (:func:`prepare`), then swapped in with two renames (:func:`commit`);
    :func:`recover` finishes a swap that was cut short.
    """
    prepare(state_dir, argv, cap, source)
    return commit(state_dir)


def prepare(
    state_dir: Path,
    argv: Sequence[str],
    cap: LoadCapture,
    source: Source | None = None,
    *,
    kexec_tools: str | None = None,
    how: str = "kexec-tools",
    digest: DigestLocation | None = None,
    same_as: Snapshot | None = None,
) -> Snapshot:
    """Write a new snapshot beside the current one, not yet in its place.

    For an image kexecd loads itself (a moved header: :mod:`kexecd.image.relocate`),
    :func:`commit` swaps it in once the kernel took it; until then the
    current snapshot stays, and a later :func:`prepare` or :func:`create`
    replaces what was left.

    :param kexec_tools: the version of the kexec-tools that built the
        segments, when ``cap`` is not a traced run of it.
    :param how: who loaded it, for the record of what is loaded.
    :param digest: where purgatory's digest is, when the caller knows
        (:func:`kexecd.image.purgatory.rebased`); else it is located.
    :param same_as: the current snapshot: the segments whose buffer is the
        very object it maps are linked from its files, their SHA-256 taken
        from its manifest, instead of written and hashed again.
    """
    statedir.ready(state_dir)
    recover(state_dir)
    new = state_dir / f".{SNAPSHOT}.new"
    _rmtree(new)
    new.mkdir(mode=0o700)
    file_load = cap.call is KexecCall.KEXEC_FILE_LOAD
    bufs = [s.buf for s in cap.segments]
    header = None if file_load else _find_header(bufs)
    purgatory = next(
        (i for i, s in enumerate(cap.segments) if s.mem <= cap.entry < s.mem + s.memsz), None
    )
    if digest is None and header is not None and purgatory is not None:
        digest = locate(cap.segments, purgatory, header, _setup(cap.segments))
    shas = []
    for i, s in enumerate(cap.segments):
        if same_as is not None and i < len(same_as.segments) and s.buf is same_as.segments[i].buf:
            os.link(same_as.path / _segment_file(i), new / _segment_file(i))
            shas.append(same_as.sha256[i])
        else:
            write_atomic(new / _segment_file(i), bytes(s.buf))
            shas.append(_sha256(s.buf).hexdigest())
    manifest = Manifest(
        argv=tuple(argv),
        created=timestamp(),
        file_load=file_load,
        entry=cap.entry,
        flags=cap.flags,
        cmdline=cap.cmdline.decode(errors="replace") if cap.cmdline else None,
        segments=tuple(
            SegmentInfo(s.mem, s.memsz, len(s.buf), sha)
            for s, sha in zip(cap.segments, shas, strict=True)
        ),
        header=header,
        purgatory=purgatory,
        digest=digest,
        source=source,
        kexec_tools=kexec_tools or version_in(cap.program),
    )
    data = encode(manifest)
    write_atomic(new / MANIFEST, data)
    snap = _parse(new, decode(data, str(new / MANIFEST)))
    if header is not None:
        snap.record_loaded(bytes(bufs[header]), None, how)
    else:
        info = {"time": timestamp(), "how": how}
        write_atomic(new / LOADED, (json.dumps(info) + "\n").encode())
    _fsync_dir(new)
    return snap


def commit(state_dir: Path) -> Snapshot:
    """Swap the snapshot :func:`prepare` wrote in place of the current one."""
    new = state_dir / f".{SNAPSHOT}.new"
    final = state_dir / SNAPSHOT
    old = state_dir / f".{SNAPSHOT}.old"
    _rmtree(old)
    if final.exists():
        final.rename(old)
    new.rename(final)
    _fsync_dir(state_dir)
    _rmtree(old)
    return open_snapshot(state_dir)


def recover(state_dir: Path) -> str | None:
    """Finish a snapshot swap cut short (``kexecd load`` killed between its renames).

    :returns: what was done, for the log, or ``None`` if nothing was needed.
    """
    final = state_dir / SNAPSHOT
    new, old = state_dir / f".{SNAPSHOT}.new", state_dir / f".{SNAPSHOT}.old"
    if os.path.lexists(final):
        _rmtree(old)
        return None
    for candidate, what in ((new, "the new snapshot"), (old, "the previous snapshot")):
        if candidate.is_dir() and not candidate.is_symlink():
            try:
                _parse(
                    candidate,
                    decode(statedir.read_file(candidate, MANIFEST, MAX_MANIFEST), str(candidate)),
                )
            except SnapshotError:
                continue  # incomplete: the other one, if any
            candidate.rename(final)
            _fsync_dir(state_dir)
            _rmtree(old)
            _rmtree(new)
            return f"an interrupted 'kexecd load' was completed: {what} is in place"
    return None


def _ident(path: Path) -> tuple[int, ...]:
    # The directory, the manifest, and each segment file's inode and size: a
    # segment file cut short under its mapping would fault (SIGBUS) on read.
    d = os.stat(path, follow_symlinks=False)
    m = os.stat(path / MANIFEST, follow_symlinks=False)
    out = [d.st_dev, d.st_ino, m.st_ino, m.st_size, m.st_mtime_ns]
    with os.scandir(path) as it:
        for e in sorted(it, key=lambda e: e.name):
            if e.name.startswith("seg-"):
                st = e.stat(follow_symlinks=False)
                out += [st.st_ino, st.st_size]
    return tuple(out)


def _parse(path: Path, m: Manifest, ident: tuple[int, ...] = ()) -> Snapshot:
    segments = tuple(
        Segment(_map(path, i, s.bufsz), s.mem, s.memsz) for i, s in enumerate(m.segments)
    )
    if m.header is not None and segments[m.header].buf[:4] != b"\x7fELF":
        raise SnapshotError(
            f"{path / _segment_file(m.header)}: the header segment is not an ELF core "
            "header; run 'kexecd load' again"
        )
    return Snapshot(
        path=path,
        argv=m.argv,
        created=m.created,
        file_load=m.file_load,
        entry=m.entry,
        flags=m.flags,
        segments=segments,
        sha256=tuple(s.sha256 for s in m.segments),
        header=m.header,
        purgatory=m.purgatory,
        digest=m.digest,
        source=m.source,
        cmdline=None if m.cmdline is None else m.cmdline.rstrip("\0"),
        durable=_durable(path),
        ident=ident,
        kexec_tools=m.kexec_tools,
    )


def _durable(path: Path) -> bool:
    try:
        return not fs_volatile(path)
    except OSError:
        return True


def open_snapshot(state_dir: Path) -> Snapshot:
    """Read the snapshot in ``state_dir``, its manifest checked, its files mapped.

    :raises SnapshotError: there is none, the state directory is not one
        only root can write, or the manifest or a file is malformed.
    """
    statedir.check_dir(state_dir)
    path = state_dir / SNAPSHOT
    if not os.path.lexists(path):
        left = [n for n in (f".{SNAPSHOT}.new", f".{SNAPSHOT}.old") if (state_dir / n).exists()]
        hint = (
            f"; an interrupted 'kexecd load' left {', '.join(left)}: 'kexecd refresh' or the "
            "daemon completes it"
            if left
            else ""
        )
        raise SnapshotError(
            f"{path / MANIFEST}: no snapshot; load the crash kernel with "
            f"'kexecd load -- kexec -p ...' or 'kexecd adopt' first{hint}"
        )
    statedir.check_dir(path)
    try:
        ident = _ident(path)  # before the read: a change after it shows
    except OSError:
        ident = ()
    data = statedir.read_file(path, MANIFEST, MAX_MANIFEST)
    return _parse(path, decode(data, str(path / MANIFEST)), ident)


def reopen(state_dir: Path, kept: Snapshot | None) -> Snapshot:
    """``kept`` if it is still the snapshot in ``state_dir`` (:meth:`Snapshot.unchanged`),
    else the snapshot there opened anew (:func:`open_snapshot`).

    :raises SnapshotError: as :func:`open_snapshot`.
    """
    if kept is not None and kept.path.parent == state_dir and kept.unchanged():
        return kept
    return open_snapshot(state_dir)
