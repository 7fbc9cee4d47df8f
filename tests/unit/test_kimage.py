# SPDX-License-Identifier: GPL-2.0-or-later
"""arm64's kexec-tools reading of the kernel (kexecd.system.kimage) and of the
RAM ranges (kexec/mem_regions.c's cut, then sorted), on fake roots."""

from __future__ import annotations

from pathlib import Path

import pytest

from kexecd.arch.aarch64 import AARCH64
from kexecd.errors import SystemStateError
from kexecd.model import KernelText, MemRange
from kexecd.system.iomem import crash_ranges, parse_iomem
from kexecd.system.kernel import U64_MAX
from kexecd.system.kexectools import rules_for
from kexecd.system.kimage import kcore_vmcoreinfo, kimage_text, read_arm64_kernel_map
from kexecd.system.root import Root
from tests.elfwriter import PT_LOAD, PT_NOTE, Ph, core, note

RULES = rules_for("2.0.25", AARCH64)
TEXT, STEXT, INIT = 0xFFFF800008000000, 0xFFFF800008010000, 0xFFFF800009390000
IOMEM = [
    (0x40000000, 0x7C43FFFF, "System RAM"),
    (0x77410000, 0x7878FFFF, "Kernel code"),  # __init_begin - _stext long
    (0x78C10000, 0x78EAFFFF, "Kernel data"),
]


def fake(tmp: Path, syms: dict[str, int], info: str | None) -> Root:
    (tmp / "proc").mkdir(parents=True, exist_ok=True)
    (tmp / "proc/kallsyms").write_text("".join(f"{a:016x} T {n}\n" for n, a in syms.items()))
    notes = b"" if info is None else note(b"VMCOREINFO", 0, info.encode())
    phdrs = [Ph(PT_LOAD, vaddr=0xFFFF000040000000, paddr=0x40000000, memsz=1 << 30)]
    if notes:
        phdrs.insert(0, Ph(PT_NOTE, offset=64 + 56 * 2, filesz=len(notes)))
    (tmp / "proc/kcore").write_bytes(core(phdrs, notes))
    return Root(tmp)


ALL = {"_text": TEXT, "_stext": STEXT, "__init_begin": INIT}
INFO = "OSRELEASE=6.1.0\nNUMBER(VA_BITS)=48\nNUMBER(PHYS_OFFSET)=0x0\n"


def test_kcore_vmcoreinfo_lines(tmp_path: Path) -> None:
    info = kcore_vmcoreinfo(fake(tmp_path, ALL, INFO))
    assert info == {"OSRELEASE": "6.1.0", "NUMBER(VA_BITS)": "48", "NUMBER(PHYS_OFFSET)": "0x0"}


def test_debian_guest_with_text(tmp_path: Path) -> None:
    # The arm64 test bed's guest (tests/data/arm64-6.1-2.0.25-boot): Kernel code
    # starts at _stext, so the text PT_LOAD starts 64 KiB lower, at _text.
    k = read_arm64_kernel_map(fake(tmp_path, ALL, INFO), IOMEM)
    assert k.text_symbol
    assert k.map.text == KernelText(0x77400000, TEXT, 0x78EB0000 - 0x77400000)
    assert k.map.page_offset == 0xFFFF000000000000  # VA_BITS 48, PHYS_OFFSET 0


def test_without_text_symbol_kexec_tools_wraps(tmp_path: Path) -> None:
    # Debian's kallsyms (no KALLSYMS_ALL): no _text. kexec-tools subtracts
    # _stext from Kernel code's start, writes the text at UINT64_MAX and leaves
    # page_offset 0 (FIELD-NOTES 13).
    syms = {"_stext": STEXT, "__init_begin": INIT}
    k = read_arm64_kernel_map(fake(tmp_path, syms, INFO), IOMEM)
    assert not k.text_symbol
    assert k.map.page_offset == 0
    assert k.map.text is not None
    paddr = (0x77410000 - STEXT) & U64_MAX
    assert k.map.text == KernelText(paddr, U64_MAX, (0x78EB0000 - paddr) & U64_MAX)
    assert k.map.text.size > 1 << 63


def test_phys_offset_is_the_least_of_vmcoreinfo_and_iomem(tmp_path: Path) -> None:
    info = "NUMBER(VA_BITS)=48\nNUMBER(PHYS_OFFSET)=0x80000000\n"
    k = read_arm64_kernel_map(fake(tmp_path, ALL, info), IOMEM)
    assert k.map.page_offset == (0xFFFF000000000000 - 0x40000000) & U64_MAX


def test_va_bits_guessed_from_stext_without_vmcoreinfo(tmp_path: Path) -> None:
    # kexec-arm64.c get_va_bits(): the first Kconfig mask _stext fills (47 here,
    # so the older, upper-half layout); PHYS_OFFSET then from iomem.
    k = read_arm64_kernel_map(fake(tmp_path, ALL, None), IOMEM)
    assert k.map.page_offset == (0xFFFFC00000000000 - 0x40000000) & U64_MAX


def test_old_kernel_code_start_is_text(tmp_path: Path) -> None:
    # Kernels whose "Kernel code" starts at _text: its length is not
    # __init_begin - _stext, so its start is taken as it is.
    iomem = [(0x40000000, 0x7C43FFFF, "System RAM"), (0x77400000, 0x7878FFFF, "Kernel code")]
    iomem.append((0x78C10000, 0x78EAFFFF, "Kernel data"))
    k = read_arm64_kernel_map(fake(tmp_path, ALL, INFO), iomem)
    assert k.map.text == KernelText(0x77400000, TEXT, 0x78EB0000 - 0x77400000)


def test_no_kernel_data_no_text_load(tmp_path: Path) -> None:
    k = read_arm64_kernel_map(fake(tmp_path, ALL, INFO), IOMEM[:2])
    assert k.map.text is None


def test_kcore_not_elf(tmp_path: Path) -> None:
    root = fake(tmp_path, ALL, INFO)
    (tmp_path / "proc/kcore").write_bytes(b"not an ELF file")
    with pytest.raises(SystemStateError, match=r"proc/kcore: not an ELF core file"):
        read_arm64_kernel_map(root, IOMEM)


def ranges(text: str) -> list[tuple[int, int]]:
    got = crash_ranges(parse_iomem(text), rules=RULES).ranges
    return [(r.start, r.end) for r in got]


def test_arm64_ranges_cut_then_sorted() -> None:
    # The split's upper part is appended, then everything sorted; nested
    # "reserved" stays in; "System RAM (virtio_mem)" is RAM to kexecd (never
    # to arm64's kexec-tools: a whole dump wants it).
    text = (
        "40000000-7fffffff : System RAM\n"
        "  50000000-5fffffff : Crash kernel\n"
        "  60000000-6000ffff : reserved\n"
        "80000000-8fffffff : System RAM\n"
        "90000000-9fffffff : System RAM (virtio_mem)\n"
    )
    assert ranges(text) == [
        (0x40000000, 0x4FFFFFFF),
        (0x60000000, 0x7FFFFFFF),
        (0x80000000, 0x8FFFFFFF),
        (0x90000000, 0x9FFFFFFF),
    ]


def test_arm64_cut_only_of_a_range_that_holds_it_whole() -> None:
    # mem_regions_exclude() assumes the crash area lies inside one range; one
    # that straddles two is cut out of neither.
    text = (
        "40000000-4fffffff : System RAM\n"
        "50000000-5fffffff : System RAM\n"
        "4c000000-53ffffff : Crash kernel\n"
    )
    assert ranges(text) == [(0x40000000, 0x4FFFFFFF), (0x50000000, 0x5FFFFFFF)]


def test_arm64_cut_at_either_end_or_whole() -> None:
    text = (
        "40000000-4fffffff : System RAM\n"
        "  40000000-41ffffff : Crash kernel\n"
        "50000000-5fffffff : System RAM\n"
        "  5e000000-5fffffff : Crash kernel\n"
    )
    assert ranges(text) == [(0x42000000, 0x4FFFFFFF), (0x50000000, 0x5DFFFFFF)]
    whole = "40000000-4fffffff : System RAM\n  40000000-4fffffff : Crash kernel\n"
    whole += "50000000-5fffffff : System RAM\n"
    assert ranges(whole) == [(0x50000000, 0x5FFFFFFF)]


def test_arm64_split_keeps_the_type_ram() -> None:
    got = crash_ranges(
        parse_iomem("40000000-7fffffff : System RAM\n  50000000-5fffffff : Crash kernel\n"),
        rules=RULES,
    )
    assert got.crash_reserved == (MemRange(0x50000000, 0x5FFFFFFF),)
    assert len(got.ram) == 2


@pytest.mark.parametrize(
    ("info", "stext", "text"),
    [
        ({"NUMBER(MODULES_END)": "0xffff800008000000", "KERNELOFFSET": "0"}, STEXT, TEXT),
        # KASLR: the image moved by 0x1234000 (a multiple of 64 KiB).
        (
            {"NUMBER(MODULES_END)": "0xffff800008000000", "KERNELOFFSET": "1234000"},
            STEXT + 0x1234000,
            TEXT + 0x1234000,
        ),
        ({"KERNELOFFSET": "0"}, STEXT, None),  # no MODULES_END
        ({"NUMBER(MODULES_END)": "0xffff800008000000"}, STEXT, None),  # no KERNELOFFSET
        ({"NUMBER(MODULES_END)": "0xffff800008000000", "KERNELOFFSET": "zz"}, STEXT, None),
        # Not just below _stext: some other layout; kexecd does not guess.
        ({"NUMBER(MODULES_END)": "0xffff800000000000", "KERNELOFFSET": "0"}, STEXT, None),
        ({"NUMBER(MODULES_END)": "0xffff800008000000", "KERNELOFFSET": "0"}, TEXT, None),
        ({"NUMBER(MODULES_END)": "0xffff800008000000", "KERNELOFFSET": "0"}, None, None),
    ],
)
def test_kimage_text_from_vmcoreinfo(
    info: dict[str, str], stext: int | None, text: int | None
) -> None:
    assert kimage_text(info, stext) == text


def test_derive_text_gives_the_header_of_a_kallsyms_with_text(tmp_path: Path) -> None:
    info = INFO + "NUMBER(MODULES_END)=0xffff800008000000\nKERNELOFFSET=0\n"
    without = {"_stext": STEXT, "__init_begin": INIT}
    derived = read_arm64_kernel_map(fake(tmp_path / "a", without, info), IOMEM, derive_text=True)
    listed = read_arm64_kernel_map(fake(tmp_path / "b", ALL, info), IOMEM)
    assert derived.map == listed.map and not derived.text_symbol and listed.text_symbol


def test_52_bit_va_phys_offset_is_negative(tmp_path: Path) -> None:
    # trixie's 6.12 on 48-bit hardware (tests/data/arm64-6.12-2.0.29-c-boot):
    # VA_BITS 52 and PHYS_OFFSET 0xfff1000000000000, which kexec-tools keeps as
    # an int64_t, so it is less than the first RAM: RAM at 0x40000000 is
    # mapped at 0xffff000040000000.
    info = "NUMBER(VA_BITS)=52\nNUMBER(PHYS_OFFSET)=0xfff1000000000000\n"
    syms = {"_text": 0xFFFF800080000000, "_stext": 0xFFFF800080010000}
    k = read_arm64_kernel_map(fake(tmp_path, syms, info), IOMEM)
    assert (0x40000000 + k.map.page_offset) & U64_MAX == 0xFFFF000040000000
