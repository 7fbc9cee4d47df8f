# SPDX-License-Identifier: GPL-2.0-or-later
"""kexecd's own files: the one reader, the one writer, timestamps.

Every file kexecd keeps (the snapshot's manifest, segments and records, the
daemon's ``state.json``, the udev mask record, ``kexecd.prom``) is read with
:func:`open_own` / :func:`read_own` and written with :func:`write_atomic`.

Reading: the file is opened relative to its directory's descriptor, neither
of them followed if a symlink (``O_NOFOLLOW``), without blocking (a FIFO
planted at the name does not hang), then ``fstat()``-ed: anything but a
regular file of bounded size is refused with one line that names the file
and what to do.

Writing: the temporary file ``.NAME.tmp`` is created with ``O_CREAT |
O_EXCL | O_NOFOLLOW`` relative to the directory's descriptor (opened with
``O_DIRECTORY | O_NOFOLLOW``), after a stale one left by a crash is unlinked
(a link is removed, never followed), then renamed over ``NAME`` with both
ends relative to the same descriptor. No step follows a symlink planted in
the directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from pathlib import Path

from kexecd.errors import KexecdError, OwnFileError

__all__ = [
    "ensure_dir",
    "open_own",
    "read_own",
    "read_own_optional",
    "replacing_is_ordered",
    "timestamp",
    "unix_time",
    "write_atomic",
]

_TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
MOUNTINFO = Path("/proc/self/mountinfo")
MAX_MOUNTINFO = 1 << 20


def _kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words: ``a directory``, ``a FIFO``, ..."""
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return "a regular file" if stat.S_ISREG(mode) else "not a file"


def _dir_fd(directory: Path, error: type[KexecdError], fix: str) -> int:
    # The directory, not followed if a symlink: a link is refused with one
    # line; any other failure (missing, not a directory) is the OSError.
    try:
        return os.open(directory, _DIR_FLAGS)
    except OSError:
        if os.path.islink(directory):
            raise error(
                f"{directory}: a symlink where kexecd expects its directory; {fix}"
            ) from None
        raise


def open_own(
    path: Path,
    error: type[KexecdError],
    fix: str,
    *,
    owner: int | None = None,
    follow: bool = False,
) -> int:
    """Open one of kexecd's files for reading: a regular file, no symlink, no wait.

    :param error: the :class:`KexecdError` to raise, of the caller's layer.
    :param fix: what to do about a refused file, for the message.
    :param owner: the uid the file must belong to, writable by it alone
        (for a file kexecd runs as root); ``None``: no check.
    :param follow: follow symlinks (only for ``/etc/kexecd.conf``, which an
        admin may link; never in the state and runtime directories).
    :returns: the descriptor (``O_CLOEXEC``), the caller's to close.
    :raises FileNotFoundError: the file or its directory is missing.
    :raises KexecdError: ``error``, with one line naming the file and ``fix``.
    """
    fd = _open_followed(path, error, fix) if follow else _open_in_dir(path, error, fix)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: not a regular file ({_kind(st.st_mode)}); {fix}")
        if owner is not None and (st.st_uid != owner or st.st_mode & 0o022):
            raise error(
                f"{path}: owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}: "
                f"only a file that {'root' if owner == 0 else f'uid {owner}'} alone can "
                "write is trusted; "
                f"chown and chmod go-w it, or {fix}"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_in_dir(path: Path, error: type[KexecdError], fix: str) -> int:
    try:
        dfd = _dir_fd(path.parent, error, fix)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise error(f"{path.parent}: cannot open the directory ({e.strerror}); {fix}") from None
    try:
        return os.open(path.name, _READ_FLAGS, dir_fd=dfd)
    except FileNotFoundError:
        raise
    except OSError as e:
        what = "a symlink" if e.errno == errno.ELOOP else e.strerror  # O_NOFOLLOW met a link
        raise error(f"{path}: cannot open ({what}), not a regular file; {fix}") from None
    finally:
        os.close(dfd)


def _open_followed(path: Path, error: type[KexecdError], fix: str) -> int:
    try:
        return os.open(path, _READ_FLAGS & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise error(f"{path}: cannot open ({e.strerror}); {fix}") from None


def read_own(
    path: Path,
    limit: int,
    error: type[KexecdError],
    fix: str,
    *,
    owner: int | None = None,
) -> tuple[bytes, os.stat_result]:
    """Read one of kexecd's files whole (:func:`open_own`), at most ``limit`` bytes.

    :returns: the bytes and the file's status, as read.
    :raises KexecdError: ``error``: missing, not a regular file (a directory,
        a FIFO, a symlink...), larger than ``limit``, or unreadable.
    """
    try:
        got = read_own_optional(path, limit, error, fix, owner=owner)
    except FileNotFoundError:
        got = None
    if got is None:
        raise error(f"{path}: missing; {fix}")
    return got


def read_own_optional(
    path: Path,
    limit: int,
    error: type[KexecdError],
    fix: str,
    *,
    owner: int | None = None,
    follow: bool = False,
) -> tuple[bytes, os.stat_result] | None:
    """:func:`read_own`, but ``None`` when the file is not there.

    :raises KexecdError: ``error``, as :func:`read_own` but for a missing file.
    """
    try:
        fd = open_own(path, error, fix, owner=owner, follow=follow)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size > limit:
            raise error(f"{path}: {st.st_size} bytes, more than {limit}; {fix}")
        try:
            # As much as fstat() says and a byte more (a read of limit + 1
            # allocates the limit: 64 MiB for a header), then on to the limit
            # if the file grew since.
            want = min(st.st_size, limit) + 1
            data = f.read(want)
            if len(data) == want and want <= limit:
                data += f.read(limit + 1 - want)
        except OSError as e:
            raise error(f"{path}: cannot read ({e.strerror}); {fix}") from None
    if len(data) > limit:
        raise error(f"{path}: more than {limit} bytes; {fix}")
    return data, st


def ensure_dir(path: Path, mode: int = 0o700) -> None:
    """Create one of kexecd's directories (and its parents) if it is not there.

    :raises OwnFileError: something else sits at its name: a file, or a
        symlink (kexecd's writes follow none).
    """
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except FileExistsError:
        pass
    except NotADirectoryError:
        raise OwnFileError(f"{path}: a parent is not a directory; fix the path") from None
    if os.path.islink(path) or not os.path.isdir(path):
        what = "a symlink" if os.path.islink(path) else "not a directory"
        raise OwnFileError(f"{path}: {what}, where kexecd keeps its files; remove it")


def write_atomic(
    path: Path, data: bytes, *, durable: bool = True, mode: int | None = None
) -> None:
    """Replace ``path`` with ``data`` through a rename, following no symlink.

    :param durable: fsync the file before the rename and the directory
        after, so that a crash of the host leaves the old or the new content
        on disk. Pointless on tmpfs (``/run``), where nothing outlives a reboot.
    :param mode: the file's mode, whatever the umask (kexecd.service's is 0077).
    :raises OwnFileError: the directory is a symlink, or a directory sits
        where the file or its temporary file goes.
    :raises OSError: the system refused the write (no directory, no space,
        read-only); :class:`OwnFileError` is one too.
    """
    fix = "remove the link; kexecd writes its own files there"
    dfd = _dir_fd(path.parent, OwnFileError, fix)
    try:
        _write_in(dfd, path, data, durable, mode)
    finally:
        os.close(dfd)


def _write_in(dfd: int, path: Path, data: bytes, durable: bool, mode: int | None) -> None:
    tmp = f".{path.name}.tmp"
    try:  # a temporary file left by a crash (or planted): unlinked, never followed
        if not stat.S_ISDIR(os.stat(tmp, dir_fd=dfd, follow_symlinks=False).st_mode):
            os.unlink(tmp, dir_fd=dfd)
    except FileNotFoundError:
        pass
    try:
        fd = os.open(tmp, _TMP_FLAGS, 0o666, dir_fd=dfd)
    except FileExistsError:
        raise OwnFileError(
            f"{path.parent / tmp}: a directory where kexecd writes its temporary file; remove it"
        ) from None
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        if isinstance(e, IsADirectoryError):
            raise OwnFileError(
                f"{path}: a directory where kexecd writes a file; remove it"
            ) from None
        raise
    if durable:
        os.fsync(dfd)


def replacing_is_ordered(directory: Path, mountinfo: Path | None = None) -> bool:
    """Whether a file renamed over another in ``directory`` reaches the disk
    before its rename does, without fsync: after a crash of the host the name
    holds the old content or the new, never an empty or torn file.

    True on ext4 with its defaults: ``auto_da_alloc`` (on unless mounted
    ``noauto_da_alloc``) makes a rename over an existing file allocate the
    new file's delayed blocks, and ``data=ordered`` (or ``data=journal``; not
    ``data=writeback``) writes them before the journal commits the rename
    (Linux Documentation/admin-guide/ext4.rst, "auto_da_alloc";
    fs/ext4/namei.c ``ext4_rename()``). False on any other file system, and
    whenever ``mountinfo`` (by default :data:`MOUNTINFO`, the kernel's, read
    as untrusted input) does not say: the writer then fsyncs.
    """
    try:
        dev = os.stat(directory).st_dev
        with open(mountinfo or MOUNTINFO, "rb") as f:  # procfs: no size to check beforehand
            text = f.read(MAX_MOUNTINFO).decode()
    except (OSError, UnicodeDecodeError):
        return False
    want = f"{os.major(dev)}:{os.minor(dev)}"
    for line in text.splitlines():
        # ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
        fields = line.split()
        if len(fields) < 10 or fields[2] != want or "-" not in fields[6:]:
            continue
        tail = fields[fields.index("-", 6) + 1 :]
        if len(tail) != 3:
            return False
        fstype, options = tail[0], tail[2].split(",")
        return (
            fstype == "ext4"
            and "noauto_da_alloc" not in options
            and ("data=writeback" not in options)
        )
    return False


def timestamp() -> str:
    """Now, in UTC, as kexecd records it: ``2026-11-27T16:20:01Z``."""
    return time.strftime(_TIMESTAMP, time.gmtime())


def unix_time(stamp: str) -> int:
    """A :func:`timestamp` back in seconds since the epoch.

    :raises ValueError: not a timestamp of that form.
    """
    import calendar  # not at start-up: kexecd status may never need it

    return calendar.timegm(time.strptime(stamp, _TIMESTAMP))
