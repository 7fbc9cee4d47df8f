# SPDX-License-Identifier: GPL-2.0-or-later
"""ELF core headers: read one, and build the one kexec-tools would build now.

Two ways to build, both byte for byte what kexec-tools writes (2.0.20 to
2.0.29, by the rules of the version that built the image, which
:class:`~kexecd.system.state.SystemState` carries):

* :func:`spec_fresh` reads everything from the system, as ``kexec -p`` does;
  only the backup segment's address, which kexec-tools picks while loading,
  is given.
* :func:`spec_from_template` takes the kernel text, vmcoreinfo, backup remap
  and page_offset from the header loaded earlier, and CPUs and memory from the
  system now. Reloads use this: it needs neither /proc/kcore nor kallsyms.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from kexecd import core
from kexecd.arch import host, of_machine
from kexecd.errors import HeaderError, SnapshotError
from kexecd.model import (
    Backup,
    HeaderSpec,
    KernelText,
    Note,
    Phdr,
)
from kexecd.system.kernel import U64_MAX, KernelMap
from kexecd.system.state import SystemState, kernel_map

__all__ = [
    "CoreHeader",
    "build",
    "parse",
    "read_header",
    "spec_fresh",
    "spec_from_template",
]


class CoreHeader:
    """A parsed ELF core header (an elfcorehdr segment, a capture, a vmcore's head).

    The program headers stay in the C core (:class:`kexecd.core.PhdrTable`):
    counts, sums and the few headers a refresh reads come from C, so a header
    of 32,768 ranges costs no Python object per range; :attr:`phdrs` makes
    them all when asked (``inspect``, tests).

    :param phdrs: the program headers, a table from :func:`parse` or a list.
    :param size: bytes in the buffer it was read from.
    """

    def __init__(self, machine: int, phdrs: Sequence[Phdr], size: int) -> None:
        self.machine = machine
        self.table = core.PhdrTable.of(phdrs)
        self.size = size

    def __repr__(self) -> str:
        return f"CoreHeader(machine={self.machine}, phnum={self.phnum}, size={self.size})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CoreHeader):
            return NotImplemented
        return (self.machine, self.size, self.phdrs) == (other.machine, other.size, other.phdrs)

    __hash__ = None  # type: ignore[assignment]

    @cached_property
    def phdrs(self) -> tuple[Phdr, ...]:
        """Every program header, as Python objects."""
        return tuple(self.table)

    @property
    def phnum(self) -> int:
        return len(self.table)

    @cached_property
    def _summary(self) -> core.HeaderSummary:
        return self.table.summary(self.text_map)

    @property
    def notes(self) -> list[Phdr]:
        return self.table.notes()

    def split_notes(self) -> tuple[list[Phdr], Phdr | None]:
        """The CPUs' PT_NOTEs and vmcoreinfo's, by kexec-tools' layout.

        kexec-tools writes the CPUs' notes, then vmcoreinfo; without sysfs to
        ask, the last note is taken as vmcoreinfo when its size differs from
        the first's (368 bytes against 4132 on x86_64).
        """
        notes = self.notes
        if len(notes) >= 2 and notes[-1].memsz != notes[0].memsz:
            return notes[:-1], notes[-1]
        return notes, None

    @property
    def loads(self) -> list[Phdr]:
        return self.table.loads()

    @cached_property
    def text_map(self) -> int:
        """Where the architecture maps the kernel text (above the direct map);
        the host's rules for a machine kexecd has none for."""
        try:
            arch = of_machine(self.machine)
        except SnapshotError:
            arch = host()
        return arch.kexec_tools.kernel_text_map[0]

    def _at(self, i: int | None) -> Phdr | None:
        return None if i is None else self.table[i]

    @property
    def kernel_text(self) -> Phdr | None:
        """The PT_LOAD of the kernel text mapping (not the direct map)."""
        return self._at(self._summary.kernel_text)

    @property
    def ram(self) -> list[Phdr]:
        """The PT_LOADs of RAM through the direct map (below :attr:`text_map`)."""
        return self.table.ram(self.text_map)

    @property
    def nr_ram(self) -> int:
        """How many PT_LOADs of RAM there are (``len(ram)``, counted in C)."""
        return self._summary.ram

    def ram_ranges(self) -> core.RangeTable:
        """The PT_LOADs of RAM as physical ranges, in C (for set arithmetic)."""
        return self.table.ram_ranges(self.text_map)

    @property
    def cpus(self) -> int:
        """How many CPUs have a PT_NOTE (vmcoreinfo's is not counted)."""
        return len(self.split_notes()[0])

    @property
    def ram_bytes(self) -> int:
        """Bytes of RAM the PT_LOADs of RAM cover: what a dump holds of memory."""
        return self._summary.ram_bytes

    @property
    def page_offset(self) -> int | None:
        p = self._at(self._summary.first_ram)
        return None if p is None else p.vaddr - p.paddr

    @property
    def backup(self) -> Backup | None:
        """The RAM PT_LOAD whose data lives elsewhere (purgatory's copy)."""
        p = self._at(self._summary.backup)
        return None if p is None else Backup(p.paddr, p.memsz, p.offset)

    @property
    def used(self) -> int:
        """Bytes of header and program headers; the rest of the buffer is padding."""
        return 64 + 56 * self.phnum


def parse(data: bytes, name: str = "header") -> CoreHeader:
    """Parse an ELF64 core header.

    :raises HeaderError: ``data`` is not one; the message names ``name``.
    """
    try:
        machine, phdrs = core.parse_phdrs(data)
    except OSError:
        what = "an ELF file" if data[:4] == b"\x7fELF" else "not ELF"
        raise HeaderError(
            f"{name}: not a little-endian ELF64 core header ({what}, {len(data)} bytes); "
            "pass an elfcorehdr segment, a capture or the head of a vmcore"
        ) from None
    return CoreHeader(machine, phdrs, len(data))


def read_header(path: str | Path) -> tuple[bytes, CoreHeader]:
    """Read and parse a header file; errors name the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise HeaderError(f"{path}: cannot read: {e.strerror}") from None
    return data, parse(data, str(path))


def build(spec: HeaderSpec) -> bytes:
    """The header bytes for ``spec``: kexec-tools' buffer, zero-padded.

    :raises HeaderError: the spec is one kexec-tools could not build.
    """
    try:
        return core.build_header(spec)
    except OSError as e:
        raise HeaderError(f"cannot build the header: {e.strerror}") from None


def spec_fresh(state: SystemState, backup_start: int | None) -> HeaderSpec:
    """What a fresh ``kexec -p`` would build from the system now.

    Reads /proc/kcore and /proc/kallsyms for the kernel mapping.

    :param backup_start: where kexec-tools placed the backup segment; ``None``
        builds the header without the remap.
    """
    kmap = kernel_map(state)
    return HeaderSpec(
        machine=state.rules.arch.machine,
        nr_cpus_conf=state.cpus.nr_cpus_conf,
        cpu_notes=tuple(n.note for n in state.cpus.notes),
        vmcoreinfo=state.vmcoreinfo,
        kernel=kmap.text,
        ranges=state.memory.ranges,
        page_offset=kmap.page_offset,
        backup=_backup(state, backup_start),
        align=state.rules.arch.header_align,
    )


def _backup(state: SystemState, backup_start: int | None) -> Backup | None:
    # kexec-tools crashdump-x86.c get_backup_area(): the first RAM range that
    # ends at or below 640 KiB (the architecture's backup_limit; 0: none).
    limit = state.rules.facts.backup_limit
    if backup_start is None or not limit:
        return None
    for r in state.memory.ram:
        if r.end <= limit:
            return Backup(r.start, r.size, backup_start)
    return Backup(0, limit, backup_start)


def spec_from_template(template: CoreHeader, state: SystemState) -> HeaderSpec:
    """What a fresh ``kexec -p`` would build now, given the header loaded earlier.

    Kernel text, vmcoreinfo, backup remap and page_offset come from
    ``template``; CPUs and memory from ``state``. But for a template whose
    kernel PT_LOAD sits at ``UINT64_MAX`` (arm64's kexec-tools without
    ``_text`` in /proc/kallsyms, as on Debian's kernels): the kernel text and
    page_offset are read from the system with ``_text`` taken from VMCOREINFO
    (:func:`_repaired`), when it can be.

    :raises HeaderError: the template lacks what it must provide.
    """
    text = template.kernel_text
    repaired = _repaired(text, state)
    if repaired is not None:
        return _spec(template, state, repaired.text, repaired.page_offset)
    page_offset = template.page_offset
    if page_offset is None:
        raise HeaderError(
            "template: no RAM PT_LOAD, so page_offset is unknown; pass the elfcorehdr "
            "that kexec-tools loaded"
        )
    if page_offset < 0:
        ram = template.ram[0]
        raise HeaderError(
            f"template: the first RAM PT_LOAD maps physical {ram.paddr:#x} at virtual "
            f"{ram.vaddr:#x}, below it, so page_offset would be negative; pass the "
            "elfcorehdr that kexec-tools loaded"
        )
    kernel = KernelText(text.paddr, text.vaddr, text.memsz) if text else None
    return _spec(template, state, kernel, page_offset)


def _spec(
    template: CoreHeader, state: SystemState, kernel: KernelText | None, page_offset: int
) -> HeaderSpec:
    return HeaderSpec(
        machine=template.machine,
        nr_cpus_conf=state.cpus.nr_cpus_conf,
        cpu_notes=tuple(n.note for n in state.cpus.notes),
        vmcoreinfo=_template_vmcoreinfo(template, state),
        kernel=kernel,
        ranges=state.memory.ranges,
        page_offset=page_offset,
        backup=template.backup,
        align=state.rules.arch.header_align,
    )


def _repaired(text: Phdr | None, state: SystemState) -> KernelMap | None:
    # kexec-tools crashdump-arm64.c: without _text the kernel PT_LOAD gets
    # vaddr UINT64_MAX (crash_get_memory_ranges()) and page_offset stays 0
    # (get_page_offset() fails), so no reader can place the kernel or the
    # direct map. Read both again with _text from VMCOREINFO; None when the
    # template's kernel PT_LOAD (``text``) is not such a one, or _text cannot be had.
    if text is None or text.vaddr != U64_MAX:
        return None
    kmap = kernel_map(state, derive_text=True)
    if kmap.text is None or kmap.text.vaddr == U64_MAX:
        return None
    return kmap


def _template_vmcoreinfo(template: CoreHeader, state: SystemState) -> Note | None:
    # kexec-tools puts the vmcoreinfo PT_NOTE after the CPUs' ones. Find it by
    # the address sysfs gives (fixed for the kernel's life), or else take the
    # last PT_NOTE that is no CPU's crash_notes now.
    notes = template.notes
    if state.vmcoreinfo is not None:
        for p in notes:
            if p.paddr == state.vmcoreinfo.addr:
                return Note(p.paddr, p.memsz)
        return None
    cpu_addrs = {n.note.addr for n in state.cpus.notes}
    if notes and notes[-1].paddr not in cpu_addrs:
        return Note(notes[-1].paddr, notes[-1].memsz)
    return None
