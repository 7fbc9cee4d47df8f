# SPDX-License-Identifier: GPL-2.0-or-later
"""The typed wrapper around kexecd's C core.

This package (this module and :mod:`kexecd.core.tables`, the arrays the C
core keeps) is the only one that imports the cffi extension ``kexecd._core``,
allocates its buffers or frees C memory. Errors from C arrive as ``-errno``
and leave here as :class:`OSError`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Any

from kexecd._core import ffi, lib
from kexecd.core.tables import (
    HeaderSummary,
    IomemFault,
    IomemRules,
    PhdrTable,
    RangeTable,
    collect_iomem,
    parse_iomem_lines,
    parse_phdrs,
)
from kexecd.core.tables import check as _check
from kexecd.loads import Buffer, KexecCall, LoadCapture, Segment
from kexecd.model import HeaderSpec, MemRange, Phdr

__all__ = [
    "HeaderSummary",
    "IomemFault",
    "IomemRules",
    "PhdrTable",
    "PreparedSpec",
    "RangeTable",
    "Sha256",
    "build_header",
    "build_header_into",
    "collect_iomem",
    "drain_watch",
    "exclude_range",
    "fs_volatile",
    "header_size",
    "kexec_load",
    "map_segment",
    "normalize_ranges",
    "parse_header",
    "parse_iomem_lines",
    "parse_phdrs",
    "subtract_ranges",
    "trace_kexec",
    "watch_dir",
]


def trace_kexec(argv: Sequence[str], *, skip: bool = False) -> LoadCapture:
    """Run ``argv`` and capture the last crash load of its whole process tree.

    The command, its descendants and their threads run under ptrace with a
    seccomp filter that stops them only at ``kexec_load`` and
    ``kexec_file_load``. When the command exits, descendants still running are
    detached, not waited for; a kexec call they make afterwards fails with
    ``ENOSYS``.

    :param argv: the command; ``argv[0]`` is looked up in ``PATH``.
    :param skip: answer every kexec syscall of the tree with 0 instead of
        letting the kernel run it, so nothing is loaded or unloaded.
    :raises OSError: the command could not be started or traced (then the
        whole tree was killed).
    """
    if not argv:
        raise ValueError("trace_kexec needs a command")
    c_args = [ffi.new("char[]", os.fsencode(a)) for a in argv]
    c_argv = ffi.new("const char *[]", [*c_args, ffi.NULL])
    load = ffi.new("struct kexecd_load *")
    status = ffi.new("int *")
    mode = lib.KEXECD_TRACE_SKIP if skip else lib.KEXECD_TRACE_PASS
    try:
        _check(lib.kexecd_trace_run(c_argv, mode, load, status), argv[0])
        segments = tuple(
            Segment(
                buf=bytes(ffi.buffer(s.buf, s.bufsz)) if s.bufsz else b"",
                mem=s.mem,
                memsz=s.memsz,
            )
            for s in load.segments[0 : load.nr_segments]
        )
        cmdline = (
            bytes(ffi.buffer(load.cmdline, load.cmdline_len)) if load.cmdline != ffi.NULL else None
        )
        return LoadCapture(
            call=KexecCall(load.syscall),
            result=load.result,
            entry=load.entry,
            flags=load.flags,
            segments=segments,
            cmdline=cmdline,
            calls=load.calls,
            exit_code=os.waitstatus_to_exitcode(status[0]),
            crash_loads=load.crash_loads,
            unloads=load.unloads,
            reboot_loads=load.reboot_loads,
            program=(
                bytes(ffi.buffer(load.program, load.program_len))
                if load.program != ffi.NULL
                else None
            ),
        )
    finally:
        lib.kexecd_load_deinit(load)


# -- memory ranges -------------------------------------------------------------


def _c_ranges(ranges: Sequence[MemRange], cap: int | None = None) -> Any:
    return RangeTable.of(ranges, max(cap or 0, len(ranges)) - len(ranges)).c


def _py_ranges(buf: Any, nr: int) -> list[MemRange]:
    return list(RangeTable(buf, nr))


def exclude_range(
    ranges: Sequence[MemRange], start: int, end: int, cap: int = 32768
) -> list[MemRange]:
    """Cut ``[start, end]`` out of ``ranges`` the way kexec-tools does.

    kexec-tools crashdump-x86.c exclude_region(): a range that holds the region
    strictly inside is split and the upper part, typed RAM, is inserted after
    it; one split per call.

    :param cap: the most ranges the list may grow to (kexec-tools' 32768).
    :raises OSError: ``ENOSPC`` when a split would exceed ``cap``.
    """
    buf = _c_ranges(ranges, len(ranges) + 1)
    nr = ffi.new("uint32_t *", len(ranges))
    _check(lib.kexecd_ranges_exclude(buf, nr, min(cap, len(ranges) + 1), start, end), "ranges")
    return _py_ranges(buf, nr[0])


def normalize_ranges(ranges: Sequence[MemRange]) -> list[MemRange]:
    """Sort ``ranges`` and merge those that overlap or touch; the result is RAM."""
    return list(RangeTable.of(ranges).normalized())


def subtract_ranges(a: Sequence[MemRange], b: Sequence[MemRange]) -> list[MemRange]:
    """The part of ``a`` not in ``b``, both normalized first."""
    return list(RangeTable.of(a).minus(RangeTable.of(b)))


# -- ELF core headers ----------------------------------------------------------


class PreparedSpec:
    """A :class:`HeaderSpec` turned into C structures once, to build from many times."""

    def __init__(self, spec: HeaderSpec) -> None:
        c = ffi.new("struct kexecd_header_spec *")
        c.machine = spec.machine
        c.nr_cpus_conf = spec.nr_cpus_conf
        self._notes = ffi.new(
            "struct kexecd_note[]", [(n.addr, n.size) for n in spec.cpu_notes] or 1
        )
        c.cpu_notes, c.nr_cpu_notes = self._notes, len(spec.cpu_notes)
        if spec.vmcoreinfo is not None:
            c.has_vmcoreinfo = 1
            c.vmcoreinfo.addr, c.vmcoreinfo.size = spec.vmcoreinfo.addr, spec.vmcoreinfo.size
        if spec.kernel is not None:
            c.has_kernel = 1
            c.kernel_paddr = spec.kernel.paddr
            c.kernel_vaddr = spec.kernel.vaddr
            c.kernel_size = spec.kernel.size
        # A table the C core filled (a refresh's) is used as it is.
        r = spec.ranges
        self._ranges = (r if isinstance(r, RangeTable) else RangeTable.of(r)).c
        c.ranges, c.nr_ranges = self._ranges, len(spec.ranges)
        c.page_offset = spec.page_offset
        if spec.backup is not None:
            c.backup_src_start = spec.backup.src_start
            c.backup_src_size = spec.backup.src_size
            c.backup_start = spec.backup.start
        c.align = spec.align
        self._c = c
        size = ffi.new("uint64_t *")
        _check(lib.kexecd_elfcore_size(c, size), "header spec")
        self.size = int(size[0])

    def build_into(self, buf: bytearray | memoryview) -> int:
        """Build the header into ``buf``; return the bytes written.

        Nothing is written past ``len(buf)``.

        :raises OSError: ``ENOSPC`` when ``buf`` is too small, ``EINVAL`` or
            ``E2BIG`` for a spec kexec-tools could not have built.
        """
        length = ffi.new("uint64_t *")
        _check(
            lib.kexecd_elfcore_build(
                self._c, ffi.from_buffer("uint8_t[]", buf, require_writable=True), len(buf), length
            ),
            "header buffer",
        )
        return int(length[0])


def header_size(spec: HeaderSpec) -> int:
    """The size of the buffer kexec-tools allocates for ``spec``."""
    return PreparedSpec(spec).size


def build_header_into(spec: HeaderSpec, buf: bytearray | memoryview) -> int:
    """Build the header for ``spec`` into ``buf``; see :meth:`PreparedSpec.build_into`."""
    return PreparedSpec(spec).build_into(buf)


def build_header(spec: HeaderSpec) -> bytes:
    """Build the ELF core header kexec-tools would build for ``spec``.

    :raises OSError: ``EINVAL`` or ``E2BIG`` for a spec kexec-tools could not
        have built.
    """
    prepared = PreparedSpec(spec)
    buf = bytearray(prepared.size)
    n = prepared.build_into(buf)
    return bytes(buf) if n == len(buf) else bytes(memoryview(buf)[:n])


def parse_header(data: bytes) -> tuple[int, list[Phdr]]:
    """Read an ELF64 core header: its ``e_machine`` and program headers.

    :raises OSError: ``EBADMSG`` when ``data`` is not a little-endian ELF64
        ET_CORE file whose program headers it holds.
    """
    machine, table = parse_phdrs(data)
    return machine, list(table)


# -- SHA-256 with a savable state, and kexec_load --------------------------------


class Sha256:
    """SHA-256 whose state can be saved as bytes and restored (kexecd's C core).

    :param state: a state saved with :meth:`state`, to go on from.
    """

    STATE_SIZE: int = ffi.sizeof("struct kexecd_sha256")

    def __init__(self, state: bytes | None = None) -> None:
        self._s = ffi.new("struct kexecd_sha256 *")
        if state is None:
            lib.kexecd_sha256_init(self._s)
        else:
            if len(state) != self.STATE_SIZE:
                raise ValueError(f"a SHA-256 state is {self.STATE_SIZE} bytes, not {len(state)}")
            if lib.kexecd_sha256_restore(self._s, state, len(state)) < 0:
                raise ValueError("not a SHA-256 state: a field is out of range")

    def update(self, data: Buffer) -> None:
        lib.kexecd_sha256_update(self._s, ffi.from_buffer("uint8_t[]", data), len(data))

    def zeros(self, n: int) -> None:
        """Hash ``n`` zero bytes."""
        lib.kexecd_sha256_zeros(self._s, n)

    def digest(self) -> bytes:
        out = ffi.new("uint8_t[32]")
        lib.kexecd_sha256_final(self._s, out)
        return bytes(out)

    def state(self) -> bytes:
        return bytes(ffi.buffer(self._s, self.STATE_SIZE))

    def copy(self) -> Sha256:
        return Sha256(self.state())


def kexec_load(entry: int, flags: int, segments: Sequence[Segment]) -> None:
    """Call ``kexec_load(2)`` with ``segments``, in their order.

    :raises OSError: the kernel refused the load (its errno).
    """
    c = ffi.new("struct kexecd_segment[]", max(len(segments), 1))
    keep = []
    for i, seg in enumerate(segments):
        cbuf = ffi.from_buffer("uint8_t[]", seg.buf)
        keep.append(cbuf)
        c[i].buf, c[i].bufsz, c[i].mem, c[i].memsz = cbuf, len(seg.buf), seg.mem, seg.memsz
    _check(lib.kexecd_kexec_load(entry, flags, c, len(segments)), "kexec_load")


def map_segment(fd: int, size: int, mem: int) -> memoryview:
    """``size`` bytes of the file ``fd`` mapped read-only, for a segment loaded at ``mem``.

    The mapping lies one page past ``mem`` modulo 2 MiB, never at the same
    address as the destination's direct map modulo a power of two: QEMU
    TCG's software TLB is direct-mapped, and a 2 MiB-aligned mapping of a
    2 MiB-aligned kernel segment made kexec_load 7x slower there
    (``kexecd_map_segment()`` in csrc/kexecd_core.h). Unmapped when the
    view and every view of it are gone.

    :raises OSError: mmap(2) refused (its errno).
    """
    out = ffi.new("void **")
    _check(lib.kexecd_map_segment(fd, size, mem, out), "mmap")
    addr = ffi.cast("uint8_t *", out[0])
    # The buffer keeps ``owner`` alive, and with it the mapping.
    owner = ffi.gc(addr, lambda p: lib.kexecd_unmap_segment(p, size), size=size)
    return memoryview(ffi.buffer(owner, size)).toreadonly()


# -- watching a directory -------------------------------------------------------


def fs_volatile(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is on tmpfs or ramfs, which a reboot empties (fsync is pointless).

    :raises OSError: the errno of statfs(2).
    """
    ret = ffi.new("int *")
    _check(lib.kexecd_fs_volatile(os.fsencode(path), ret), os.fsdecode(path))
    return bool(ret[0])


def watch_dir(path: str | os.PathLike[str], fd: int | None = None) -> int:
    """Report changes to the entries of directory ``path`` on an inotify descriptor.

    A new descriptor (non-blocking, close-on-exec; the caller closes it)
    unless ``fd`` is given; several directories may share one. Select on it,
    then :func:`drain_watch`.

    :raises OSError: ``ENOENT`` when ``path`` does not exist, or the errno
        of inotify.
    """
    if fd is None:
        new = ffi.new("int *")
        _check(lib.kexecd_watch_open(new), "inotify")
        fd = int(new[0])
        try:
            _check(lib.kexecd_watch_dir(fd, os.fsencode(path)), os.fsdecode(path))
        except OSError:
            os.close(fd)
            raise
        return fd
    _check(lib.kexecd_watch_dir(fd, os.fsencode(path)), os.fsdecode(path))
    return fd


_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len


def drain_watch(fd: int) -> list[str]:
    """Read every pending event of a :func:`watch_dir` descriptor.

    :returns: the names of the entries that changed, in order; ``""`` for an
        event on a watched directory itself.
    """
    names: list[str] = []
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return names
        pos = 0
        while pos + _EVENT.size <= len(data):
            _wd, _mask, _cookie, length = _EVENT.unpack_from(data, pos)
            raw = data[pos + _EVENT.size : pos + _EVENT.size + length]
            names.append(os.fsdecode(raw.rstrip(b"\0")))
            pos += _EVENT.size + length
