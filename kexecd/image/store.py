# SPDX-License-Identifier: GPL-2.0-or-later
"""The state directory: where the snapshot lives, how it is swapped, its lock.

``STATE_DIR/snapshot/`` (the state directory is mode 0700) holds
``manifest.json`` (the kexec command, entry, flags, each segment's mem, memsz,
size and SHA-256, which segment is the header and which purgatory, where the
digest is), ``seg-NN.bin`` (each segment's bytes, read back with mmap) and
the record of what is loaded (:mod:`kexecd.image.record`). A new snapshot is
written beside the current one (``.snapshot.new``) and swapped in with two
renames (:meth:`Store.prepare`, :meth:`Store.commit`); :meth:`Store.recover`
finishes a swap that was cut short. Every name is built here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from kexecd.core import fs_volatile, map_segment
from kexecd.errors import CmdlineError, SnapshotError
from kexecd.files import open_own, replacing_is_ordered, timestamp, write_atomic
from kexecd.image import statedir
from kexecd.image.manifest import (
    Manifest,
    Program,
    SegmentInfo,
    Source,
    decode,
    encode,
    segment_file,
)
from kexecd.image.purgatory import DigestLocation, locate
from kexecd.image.record import sha256_hex
from kexecd.image.rerun import identify
from kexecd.image.snapshot import Snapshot
from kexecd.loads import Buffer, KexecCall, LoadCapture, Segment
from kexecd.system.kexectools import version_in

__all__ = ["MANIFEST", "SNAPSHOT", "Origin", "Store", "open_snapshot"]

SNAPSHOT = "snapshot"
NEW = f".{SNAPSHOT}.new"
OLD = f".{SNAPSHOT}.old"
MANIFEST = "manifest.json"
MAX_MANIFEST = 1 << 20
FIX = "run 'kexecd load' again"


def _rmtree(path: Path) -> None:
    # A directory kexecd made (.snapshot.new, .snapshot.old), or whatever else
    # sits at its name (a file, a symlink: removed, never followed).
    import shutil  # not needed by kexecd status

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            os.unlink(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Origin:
    """Who made a snapshot's load, beyond its capture.

    :ivar argv: the command that loaded it (run again for a whole reload).
    :ivar source: the distro's record of the command, when adopting.
    :ivar kexec_tools: the version of the kexec-tools that built the
        segments, when the capture is not a traced run of it.
    :ivar how: who loaded it, for the record of what is loaded.
    :ivar digest: where purgatory's digest is, when the caller knows
        (:func:`kexecd.image.purgatory.rebased`); else it is located.
    :ivar same_as: the current snapshot: the segments whose buffer is the
        very object it maps (at any index) are linked from its files, their
        SHA-256 taken from its manifest, instead of written and hashed again.
    :ivar words: what kexecd appended to the command's crash kernel command
        line (a ``kexec_file_load`` image's, reloaded whole), for the record.
    """

    argv: Sequence[str]
    source: Source | None = None
    kexec_tools: str | None = None
    how: str = "kexec-tools"
    digest: DigestLocation | None = None
    same_as: Snapshot | None = None
    words: tuple[str, ...] = ()


def _find_header(segments: Sequence[Buffer]) -> int | None:
    # The kernel finds a kexec_load image's header the same way: ELFMAG at the
    # start of a segment (kernel/crash_core.c, Linux 6.6).
    found = [i for i, b in enumerate(segments) if b[:4] == b"\x7fELF" and b[16:18] == b"\4\0"]
    return found[-1] if found else None


def _manifest(cap: LoadCapture, origin: Origin, shas: Sequence[str]) -> Manifest:
    # What a capture and its origin say, with the digest located when the
    # origin does not know it.
    file_load = cap.call is KexecCall.KEXEC_FILE_LOAD
    header = None if file_load else _find_header([s.buf for s in cap.segments])
    purgatory = next(
        (i for i, s in enumerate(cap.segments) if s.mem <= cap.entry < s.mem + s.memsz), None
    )
    digest = origin.digest
    if digest is None and header is not None and purgatory is not None:
        digest = locate(cap.segments, purgatory, header, _boot_segment(cap))
    return Manifest(
        argv=tuple(origin.argv),
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
        source=origin.source,
        kexec_tools=origin.kexec_tools or version_in(cap.program),
        program=_program(cap, origin),
    )


def _program(cap: LoadCapture, origin: Origin) -> Program | None:
    # The kexec binary that made the load; an image kexecd built itself (a
    # moved header) keeps the one of the snapshot it came from.
    if cap.program is None and origin.same_as is not None:
        return origin.same_as.program
    return identify(origin.argv, cap.program)


def _boot_segment(cap: LoadCapture) -> int | None:
    # The segment holding the command line, for the SHA-256 state before it;
    # a load whose command line kexecd cannot read has none (the plan says why).
    from kexecd.arch import of_flags

    try:
        return of_flags(cap.flags).find_cmdline(cap.segments).segment
    except (CmdlineError, SnapshotError):
        return None


@dataclass(frozen=True)
class Store:
    """The state directory of one kexecd: its snapshot, swaps and lock."""

    path: Path

    @property
    def snapshot_dir(self) -> Path:
        return self.path / SNAPSHOT

    def ready(self) -> None:
        """Create the state directory (root's, mode 0700) if it is not there."""
        statedir.ready(self.path)

    @contextmanager
    def locked(self, *, shared: bool = False, wait: float | None = None) -> Iterator[None]:
        """Hold the state directory's lock (see :func:`kexecd.image.statedir.locked`)."""
        with statedir.locked(self.path, shared=shared, wait=wait):
            yield

    # -- writing -------------------------------------------------------------

    def create(self, cap: LoadCapture, origin: Origin) -> Snapshot:
        """Write the snapshot of a traced load, replacing any older one."""
        self.prepare(cap, origin)
        return self.commit()

    def prepare(self, cap: LoadCapture, origin: Origin) -> Snapshot:
        """Write a new snapshot beside the current one, not yet in its place.

        For an image kexecd loads itself (a moved header), :meth:`commit`
        swaps it in once the kernel took it; until then the current snapshot
        stays, and a later :meth:`prepare` or :meth:`create` replaces what was
        left.
        """
        self.ready()
        self.recover()
        new = self.path / NEW
        _rmtree(new)
        new.mkdir(mode=0o700)
        same = origin.same_as
        # The current snapshot's files, by the buffer each maps (a rewrite
        # may pass the segments in another order: kexecd.image.trim).
        mapped = {} if same is None else {id(s.buf): j for j, s in enumerate(same.segments)}
        shas = []
        for i, s in enumerate(cap.segments):
            j = mapped.get(id(s.buf))
            if same is not None and j is not None and s.buf is same.segments[j].buf:
                os.link(same.path / segment_file(j), new / segment_file(i))
                shas.append(same.sha256[j])
            else:
                write_atomic(new / segment_file(i), bytes(s.buf))
                shas.append(sha256_hex(s.buf))
        data = encode(_manifest(cap, origin, shas))
        write_atomic(new / MANIFEST, data)
        snap = _parse(new, decode(data, str(new / MANIFEST)))
        if snap.header is not None:
            snap.record.done(bytes(cap.segments[snap.header].buf), None, origin.how)
        else:
            snap.record.done_whole(origin.how, origin.words)
        _fsync_dir(new)
        return snap

    def commit(self) -> Snapshot:
        """Swap the snapshot :meth:`prepare` wrote in place of the current one."""
        final, old = self.path / SNAPSHOT, self.path / OLD
        _rmtree(old)
        if final.exists():
            final.rename(old)
        (self.path / NEW).rename(final)
        _fsync_dir(self.path)
        _rmtree(old)
        return self.open()

    def recover(self) -> str | None:
        """Finish a snapshot swap cut short (``kexecd load`` killed between its renames).

        :returns: what was done, for the log, or ``None`` if nothing was needed.
        """
        final = self.path / SNAPSHOT
        new, old = self.path / NEW, self.path / OLD
        if os.path.lexists(final):
            _rmtree(old)
            return None
        for candidate, what in ((new, "the new snapshot"), (old, "the previous snapshot")):
            if candidate.is_dir() and not candidate.is_symlink():
                try:
                    data = statedir.read_file(candidate, MANIFEST, MAX_MANIFEST)
                    _parse(candidate, decode(data, str(candidate)))
                except SnapshotError:
                    continue  # incomplete: the other one, if any
                candidate.rename(final)
                _fsync_dir(self.path)
                _rmtree(old)
                _rmtree(new)
                return f"an interrupted 'kexecd load' was completed: {what} is in place"
        return None

    # -- reading -------------------------------------------------------------

    def open(self) -> Snapshot:
        """Read the snapshot, its manifest checked, its files mapped.

        :raises SnapshotError: there is none, the state directory is not one
            only root can write, or the manifest or a file is malformed.
        """
        statedir.check_dir(self.path)
        path = self.path / SNAPSHOT
        if not os.path.lexists(path):
            left = [n for n in (NEW, OLD) if (self.path / n).exists()]
            hint = (
                f"; an interrupted 'kexecd load' left {', '.join(left)}: 'kexecd refresh' or "
                "the daemon completes it"
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

    def reopen(self, kept: Snapshot | None) -> Snapshot:
        """``kept`` if it is still the snapshot here (:meth:`unchanged`), else
        the snapshot opened anew (:meth:`open`)."""
        if kept is not None and kept.path.parent == self.path and self.unchanged(kept):
            return kept
        return self.open()

    @staticmethod
    def unchanged(snap: Snapshot) -> bool:
        """Whether the snapshot directory, its manifest and segment files are
        still the ones ``snap`` was opened from (a new ``kexecd load`` swaps in
        a new directory; a file cut short under its mapping would fault).

        A few stats: what lets the daemon keep a snapshot open between
        refreshes. Not a check of content: that is :meth:`verify`'s.
        """
        try:
            return bool(snap.ident) and _ident(snap.path) == snap.ident
        except OSError:
            return False

    @staticmethod
    def verify(snap: Snapshot) -> None:
        """Check every segment file against its SHA-256 in the manifest.

        :raises SnapshotError: a file is missing, of the wrong size or altered.
        """
        for i, seg in enumerate(snap.segments):
            if sha256_hex(seg.buf) != snap.sha256[i]:
                raise SnapshotError(
                    f"{snap.path / segment_file(i)}: does not match the SHA-256 in "
                    f"{snap.path / MANIFEST} (corrupt or tampered); nothing was loaded; {FIX}"
                )


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


def _map(directory: Path, index: int, size: int, mem: int) -> Buffer:
    # A segment's bytes, memory-mapped read-only from its file: a regular
    # file (no symlink) in the snapshot directory, of the manifest's size;
    # placed apart from the destination ``mem`` (core.map_segment: under QEMU
    # TCG a kernel segment mapped 2 MiB-aligned took 7x longer to load).
    if size == 0:
        return b""
    path = directory / segment_file(index)
    try:
        fd = open_own(path, SnapshotError, FIX)
    except FileNotFoundError:
        raise SnapshotError(f"{path}: missing; {FIX}") from None
    try:
        st = os.fstat(fd)
        if st.st_size != size:
            raise SnapshotError(
                f"{path}: {st.st_size} bytes, but the manifest says {size} (truncated?); {FIX}"
            )
        return map_segment(fd, size, mem)
    except OSError as e:
        raise SnapshotError(f"{path}: cannot map: {e.strerror}; {FIX}") from None
    finally:
        os.close(fd)


def _parse(path: Path, m: Manifest, ident: tuple[int, ...] = ()) -> Snapshot:
    segments = tuple(
        Segment(_map(path, i, s.bufsz, s.mem), s.mem, s.memsz) for i, s in enumerate(m.segments)
    )
    if m.header is not None and segments[m.header].buf[:4] != b"\x7fELF":
        raise SnapshotError(
            f"{path / segment_file(m.header)}: the header segment is not an ELF core header; {FIX}"
        )
    return Snapshot(
        path, m, segments, durable=_durable(path), ordered=replacing_is_ordered(path), ident=ident
    )


def _durable(path: Path) -> bool:
    try:
        return not fs_volatile(path)
    except OSError:
        return True


def open_snapshot(state_dir: Path) -> Snapshot:
    """The snapshot in ``state_dir`` (:meth:`Store.open`).

    :raises SnapshotError: as :meth:`Store.open`.
    """
    return Store(state_dir).open()
