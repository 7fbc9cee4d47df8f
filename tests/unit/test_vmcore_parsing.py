# SPDX-License-Identifier: GPL-2.0-or-later
"""The test bed's reading of vmcore heads and sysfs lists."""

from __future__ import annotations

from kexecd.system.cpus import parse_cpu_list
from testbed.vm import KERNEL_TEXT_MAP, parse_elf_core
from tests.elfwriter import PT_LOAD, PT_NOTE, Ph, core, note


def test_parse_cpu_list() -> None:
    assert parse_cpu_list("0-2,5\n") == [0, 1, 2, 5]
    assert parse_cpu_list("3") == [3]
    assert parse_cpu_list("\n") == []


def _vmcore() -> bytes:
    notes = note(b"CORE", 1, bytes(336)) + note(b"CORE", 1, bytes(336))
    notes += note(b"VMCOREINFO", 0, b"OSRELEASE=6.1\n")
    off = 64 + 4 * 56
    return core(
        [
            Ph(PT_NOTE, offset=off, filesz=len(notes), memsz=len(notes)),
            Ph(PT_LOAD, vaddr=KERNEL_TEXT_MAP + 0x1000000, paddr=0x7000000, memsz=0x100000),
            Ph(PT_LOAD, vaddr=0xFFFF888000001000, paddr=0x1000, memsz=0x9F000),
            Ph(PT_LOAD, vaddr=0xFFFF888000100000, paddr=0x100000, memsz=0x3FF00000),
        ],
        notes,
    )


def test_parse_elf_core_reads_phdrs_and_notes() -> None:
    v = parse_elf_core(_vmcore(), size=1 << 30)
    assert v.size == 1 << 30
    assert [p.type for p in v.phdrs] == ["PT_NOTE", "PT_LOAD", "PT_LOAD", "PT_LOAD"]
    assert v.prstatus == 2
    assert ("VMCOREINFO", 0) in v.notes
    assert v.kernel_text == (0x7000000, 0x7100000)
    assert v.ram_loads == [(0x1000, 0xA0000), (0x100000, 0x40000000)]


def test_covers_and_overlaps() -> None:
    v = parse_elf_core(_vmcore())
    assert v.covers(0x100000, 0x200000)
    assert v.covers(0x7000000, 0x7100000)  # contiguous pieces join up
    assert not v.covers(0x40000000, 0x40001000)
    assert not v.covers(0x0, 0x2000)  # page 0 is not in any PT_LOAD
    assert v.overlaps(0x3FFFF000, 0x50000000)
    assert not v.overlaps(0x1_0000_0000, 0x1_2000_0000)
