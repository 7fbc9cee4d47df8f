# SPDX-License-Identifier: GPL-2.0-or-later
"""Tables the C core keeps: memory ranges, /proc/iomem's crash ranges,
program headers.

A refresh at kexec-tools' 32,768 ranges must not make one Python object per
range: these hold C arrays and make a :class:`~kexecd.model.MemRange` or
:class:`~kexecd.model.Phdr` only for an element someone asks for. Part of
:mod:`kexecd.core`, the one face of the C core.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from kexecd._core import ffi, lib
from kexecd.model import MemRange, Phdr, RangeType

__all__ = [
    "HeaderSummary",
    "IomemFault",
    "IomemRules",
    "PhdrTable",
    "RangeTable",
    "collect_iomem",
    "parse_iomem_lines",
    "parse_phdrs",
]

T = TypeVar("T")
_RANGE = ffi.sizeof("struct kexecd_range")
_TYPES = {t.value: t for t in RangeType}


def check(ret: int, what: str) -> None:
    """``-errno`` from C as :class:`OSError` naming ``what``."""
    if ret < 0:
        raise OSError(-ret, os.strerror(-ret), what)


def _range_type(value: int) -> RangeType:
    return _TYPES.get(value) or RangeType(value)


class _CTable(Sequence[T]):
    """The first ``nr`` elements of a C array, read-only, as a sequence of
    Python values made only when asked for (:meth:`_item`).

    :ivar c: the array, for the C core (at least one element long).
    """

    __slots__ = ("_nr", "c")
    _what = "table"

    def __init__(self, c: Any, nr: int) -> None:
        self.c = c
        self._nr = nr

    @staticmethod
    def _item(e: Any) -> T:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._nr

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i: int | slice) -> T | list[T]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._nr))]
        if i < 0:
            i += self._nr
        if not 0 <= i < self._nr:
            raise IndexError(f"{self._what} index out of range")
        return self._item(self.c[i])

    def __iter__(self) -> Iterator[T]:
        for e in self.c[0 : self._nr]:
            yield self._item(e)


class RangeTable(_CTable[MemRange]):
    """Memory ranges in a C array (``struct kexecd_range[]``), read-only.

    :ivar c: the array, for the C core (at least one element long).
    """

    __slots__ = ()
    _what = "range"

    @staticmethod
    def _item(e: Any) -> MemRange:
        return MemRange(e.start, e.end, _range_type(e.type))

    @classmethod
    def of(cls, ranges: Sequence[MemRange], extra: int = 0) -> RangeTable:
        """A table of ``ranges`` (a copy), with room for ``extra`` more."""
        buf = ffi.new("struct kexecd_range[]", max(len(ranges) + extra, 1))
        if isinstance(ranges, RangeTable):
            ffi.memmove(buf, ranges.c, len(ranges) * _RANGE)
        elif ranges:
            # An initializer list is filled in C: much faster than setting fields.
            buf[0 : len(ranges)] = [(r.start, r.end, int(r.type)) for r in ranges]
        return cls(buf, len(ranges))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(other) == self._nr and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RangeTable({list(self)!r})"

    def count(self, value: Any) -> int:
        return sum(1 for r in self if r == value)

    def of_type(self, kind: RangeType) -> list[MemRange]:
        """The ranges of one type, in order."""
        return [
            MemRange(r.start, r.end, kind) for r in self.c[0 : self._nr] if r.type == kind.value
        ]

    def normalized(self) -> RangeTable:
        """Sorted, overlapping or touching ranges merged; all RAM."""
        out = RangeTable.of(self)
        nr = ffi.new("uint32_t *", len(self))
        check(lib.kexecd_ranges_normalize(out.c, nr), "ranges")
        out._nr = nr[0]
        return out

    def minus(self, other: RangeTable) -> RangeTable:
        """The part of these ranges not in ``other``, both normalized first."""
        a, b = self.normalized(), other.normalized()
        cap = len(a) + len(b) + 1
        out = ffi.new("struct kexecd_range[]", cap)
        nr = ffi.new("uint32_t *")
        check(lib.kexecd_ranges_subtract(a.c, len(a), b.c, len(b), out, cap, nr), "ranges")
        return RangeTable(out, nr[0])


# -- /proc/iomem -----------------------------------------------------------------


class IomemFault(Exception):
    """What :func:`collect_iomem` or :func:`parse_iomem_lines` found wrong;
    the caller turns it into a message (``enum kexecd_iomem_fault``).

    :ivar line: the faulty line's number, and its bytes ``text[off:off+length]``.
    :ivar cut: for a cut past the limit: ``-1`` for "Crash kernel", else the
        index of the skipped name; and the cut range.
    """

    MALFORMED = lib.KEXECD_IOMEM_MALFORMED
    PAST_64 = lib.KEXECD_IOMEM_PAST_64
    BACKWARDS = lib.KEXECD_IOMEM_BACKWARDS
    EMPTY = lib.KEXECD_IOMEM_EMPTY
    ZEROS = lib.KEXECD_IOMEM_ZEROS
    TOO_MANY = lib.KEXECD_IOMEM_TOO_MANY

    def __init__(self, err: Any) -> None:
        super().__init__(f"iomem fault {err.fault}")
        self.fault: int = err.fault
        self.line: int = err.line
        self.off: int = err.line_off
        self.length: int = err.line_len
        self.cut: int = err.cut
        self.cut_range = MemRange(err.cut_start, err.cut_end)


class IomemRules:
    """A kexec-tools version's way of collecting ranges, as C data, made once.

    :param types: the names collected besides RAM, and their kind.
    :param skipped: names cut out like "Crash kernel".
    """

    def __init__(
        self,
        ram_exact: bool,
        limits: tuple[int, int],
        sort_ranges: bool,
        types: Mapping[str, RangeType],
        skipped: Sequence[str],
    ) -> None:
        c = ffi.new("struct kexecd_iomem_rules *")
        c.ram_exact, c.sort_ranges = ram_exact, sort_ranges
        c.max_ranges, c.max_crash_reserved = limits
        self._names = [ffi.new("char[]", n.encode()) for n in (*types, *skipped)]
        self._types = ffi.new("const char *[]", self._names[: len(types)] or 1)
        self._kinds = ffi.new("int[]", [int(t) for t in types.values()] or 1)
        self._skipped = ffi.new("const char *[]", self._names[len(types) :] or 1)
        c.type_names, c.types, c.nr_types = self._types, self._kinds, len(types)
        c.skipped, c.nr_skipped = self._skipped, len(skipped)
        self.c = c


def collect_iomem(text: bytes, rules: IomemRules) -> tuple[RangeTable, tuple[MemRange, ...]]:
    """The ranges kexec-tools collects from an /proc/iomem text, and the
    "Crash kernel" ranges (``kexecd_iomem_collect()``).

    :raises IomemFault: the text is malformed, or a cut makes too many ranges.
    :raises OSError: ``EINVAL`` for bad rules, ``ENOMEM``.
    """
    cr = ffi.new("struct kexecd_crash_ranges *")
    try:
        r = lib.kexecd_iomem_collect(text, len(text), rules.c, cr)
        if cr.error.fault:
            raise IomemFault(cr.error)
        check(r, "/proc/iomem")
        nr = cr.nr_ranges
        buf = ffi.new("struct kexecd_range[]", max(nr, 1))
        ffi.memmove(buf, cr.ranges, nr * _RANGE)
        reserved = tuple(MemRange(x.start, x.end) for x in cr.reserved[0 : cr.nr_reserved])
        return RangeTable(buf, nr), reserved
    finally:
        lib.kexecd_crash_ranges_deinit(cr)


def parse_iomem_lines(text: bytes) -> list[tuple[int, int, int, int, int]]:
    """Every line of an /proc/iomem text: (start, end, name offset, name
    length, depth) (``kexecd_iomem_parse()``).

    :raises IomemFault: the text is malformed, empty or all zeros.
    """
    cap = text.count(b"\n") + 2
    while True:
        out = ffi.new("struct kexecd_resource[]", cap)
        nr = ffi.new("uint32_t *")
        err = ffi.new("struct kexecd_iomem_error *")
        r = lib.kexecd_iomem_parse(text, len(text), out, cap, nr, err)
        if r == -errno.ENOSPC:  # lines end at more than "\n" too
            cap *= 4
            continue
        if err.fault:
            raise IomemFault(err)
        check(r, "/proc/iomem")
        return [(x.start, x.end, x.name_off, x.name_len, x.depth) for x in out[0 : nr[0]]]


# -- program headers ---------------------------------------------------------------


@dataclass(frozen=True)
class HeaderSummary:
    """Counts and places in a program header table (``kexecd_elfcore_summary()``).

    :ivar first_ram, backup, kernel_text: indices, or ``None``.
    """

    notes: int
    loads: int
    ram: int
    ram_bytes: int
    first_ram: int | None
    backup: int | None
    kernel_text: int | None


def _index(i: int) -> int | None:
    return None if i < 0 else i


class PhdrTable(_CTable[Phdr]):
    """ELF64 program headers in a C array (``struct kexecd_phdr[]``), read-only."""

    __slots__ = ()
    _what = "program header"

    @staticmethod
    def _item(e: Any) -> Phdr:
        return Phdr(e.type, e.flags, e.offset, e.vaddr, e.paddr, e.filesz, e.memsz, e.align)

    @classmethod
    def of(cls, phdrs: Sequence[Phdr]) -> PhdrTable:
        """A table of ``phdrs`` (a copy)."""
        if isinstance(phdrs, PhdrTable):
            return phdrs
        buf = ffi.new("struct kexecd_phdr[]", max(len(phdrs), 1))
        if phdrs:
            buf[0 : len(phdrs)] = [
                (p.type, p.flags, p.offset, p.vaddr, p.paddr, p.filesz, p.memsz, p.align)
                for p in phdrs
            ]
        return cls(buf, len(phdrs))

    def summary(self, text_map: int) -> HeaderSummary:
        """What the table holds, RAM being the PT_LOADs below ``text_map``."""
        s = ffi.new("struct kexecd_header_summary *")
        check(lib.kexecd_elfcore_summary(self.c, self._nr, text_map, s), "program headers")
        return HeaderSummary(
            notes=s.nr_notes,
            loads=s.nr_loads,
            ram=s.nr_ram,
            ram_bytes=s.ram_bytes_hi << 64 | s.ram_bytes_lo,
            first_ram=_index(s.first_ram),
            backup=_index(s.backup),
            kernel_text=_index(s.kernel_text),
        )

    def _pick(self, pick: int, text_map: int = 0) -> list[Phdr]:
        cap = max(self._nr, 1)
        idx = ffi.new("uint32_t[]", cap)
        nr = ffi.new("uint32_t *")
        f = ffi.new("struct kexecd_phdr_filter *", (pick, text_map))
        check(lib.kexecd_elfcore_pick(self.c, self._nr, f, idx, cap, nr), "program headers")
        return [self[i] for i in idx[0 : nr[0]]]

    def notes(self) -> list[Phdr]:
        """The PT_NOTEs, in order."""
        return self._pick(lib.KEXECD_PICK_NOTES)

    def loads(self) -> list[Phdr]:
        """The PT_LOADs, in order."""
        return self._pick(lib.KEXECD_PICK_LOADS)

    def ram(self, text_map: int) -> list[Phdr]:
        """The PT_LOADs of RAM: below ``text_map``, where the kernel text is mapped."""
        return self._pick(lib.KEXECD_PICK_RAM, text_map)

    def ram_ranges(self, text_map: int) -> RangeTable:
        """The RAM PT_LOADs (below ``text_map``) as ranges, empty ones left out."""
        cap = max(self._nr, 1)
        out = ffi.new("struct kexecd_range[]", cap)
        nr = ffi.new("uint32_t *")
        check(lib.kexecd_elfcore_ram(self.c, self._nr, text_map, out, cap, nr), "program headers")
        return RangeTable(out, nr[0])


def parse_phdrs(data: bytes) -> tuple[int, PhdrTable]:
    """An ELF64 core header's ``e_machine`` and program headers.

    :raises OSError: ``EBADMSG`` when ``data`` is not a little-endian ELF64
        ET_CORE file whose program headers it holds.
    """
    nr = ffi.new("uint32_t *")
    machine = ffi.new("uint16_t *")
    cap = 64
    while True:
        phdrs = ffi.new("struct kexecd_phdr[]", cap)
        r = lib.kexecd_elfcore_parse(data, len(data), phdrs, cap, nr, machine)
        if r == -errno.ENOSPC and nr[0] > cap:  # now the count is known
            cap = nr[0]
            continue
        check(r, "ELF core header")
        return machine[0], PhdrTable(phdrs, nr[0])
