# SPDX-License-Identifier: GPL-2.0-or-later
"""A real arm64 crash load (tests/data/arm64-6.1-2.0.25-boot, made in the arm64
test bed's guest by tests/vm/test_arm64.py) read by kexecd's aarch64 rules.

kexec-tools 2.0.25 loaded five segments: the Image, the initrd, the DTB,
purgatory and the ELF core header at the top of the crash area; the DTB
names the header and the crash area, and purgatory's digest covers every
segment but purgatory, the DTB and the header included.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kexecd.arch import of_flags
from kexecd.arch.aarch64 import AARCH64, fdt
from kexecd.image import elfcore
from kexecd.system.iomem import parse_iomem
from kexecd.system.kernel import U64_MAX
from kexecd.system.kexectools import rules_for
from kexecd.system.root import Root
from kexecd.system.state import SystemState, read_system
from testbed import arm64, images
from testbed.capture import Capture
from testbed.dumps import parse_elf_core

NAME = "arm64-6.1-2.0.25-boot"
CAP = Capture(images.DATA / NAME)


def _crash_area() -> tuple[int, int]:
    iomem = parse_iomem((CAP.root / "proc/iomem").read_text())
    (crash,) = [r for r in iomem if r.name == "Crash kernel"]
    return crash.start, crash.end + 1


def test_the_real_load_is_five_segments_in_the_crash_area() -> None:
    m = CAP.manifest
    assert (m["syscall"], m["kexec_tools"], len(m["segments"])) == ("kexec_load", "2.0.25", 5)
    assert of_flags(m["flags"]) is AARCH64
    start, end = _crash_area()
    assert all(start <= s["mem"] and s["mem"] + s["memsz"] <= end for s in m["segments"])
    # The header is the top page of the crash area, 1 KiB of it used.
    header = CAP.header_segment
    assert (header["index"], header["mem"] + header["memsz"], header["bufsz"]) == (4, end, 0x400)


def test_purgatory_digest_covers_every_other_segment() -> None:
    m = CAP.manifest
    purgatory = CAP.segment(m["purgatory_segment"])
    off = m["purgatory_digest_offset"]
    assert off is not None and purgatory[off : off + 32].hex() == m["purgatory_digest"]


def test_kexecd_reads_the_dtb_kexec_tools_wrote() -> None:
    segments = images.image(NAME).segments
    line = AARCH64.find_cmdline(segments)
    assert line.text == arm64.CRASH_APPEND
    assert AARCH64.header_holes(segments) == [_crash_area()]
    header = CAP.header_segment
    (dtb_index,) = [i for i, s in enumerate(segments) if bytes(s.buf[:4]) == b"\xd0\x0d\xfe\xed"]
    tree = fdt.read(segments[dtb_index].buf)
    prop = tree.find("/chosen", "linux,elfcorehdr")
    assert prop is not None
    assert fdt.cells_of(tree.value(prop)) == (0, header["mem"], 0, header["bufsz"])


def test_the_header_has_the_ram_of_boot_less_the_crash_area() -> None:
    ram = [
        (r.start, r.end + 1)
        for r in parse_iomem((CAP.root / "proc/iomem").read_text())
        if r.name == "System RAM"
    ]
    start, end = _crash_area()
    expected = []
    for s, e in ram:
        if s < start < e:
            expected += [(s, start), (end, e)]
        else:
            expected.append((s, e))
    loads = parse_elf_core(CAP.header).loads
    assert set(expected) <= set(loads)
    # One more PT_LOAD: the kernel text (with _text known), inside the RAM.
    (text,) = [load for load in loads if load not in expected]
    assert any(s <= text[0] < text[1] <= e for s, e in ram), text


HOTADD = "arm64-6.1-2.0.25-hotadd"
BOTH = [NAME, HOTADD]
# trixie's 6.12 (which lists _text) with kexec-tools 2.0.29 -c, at boot and
# after a DIMM: the same rules.
TRIXIE = ["arm64-6.12-2.0.29-c-boot", "arm64-6.12-2.0.29-c-hotadd"]
SETS = [BOTH, TRIXIE]


def _state(name: str) -> SystemState:
    cap = Capture(images.DATA / name)
    rules = rules_for(cap.manifest["kexec_tools"], of_flags(cap.manifest["flags"]))
    return read_system(Root(images.DATA / name / "root"), rules=rules)


@pytest.mark.parametrize("name", BOTH + TRIXIE)
def test_fresh_build_is_byte_identical(name: str) -> None:
    # kexec-tools' arm64 rules: "System RAM" less the crash area, sorted; the
    # kernel text from Kernel code/data, _text and __init_begin; page_offset
    # from kcore's VMCOREINFO (VA_BITS, PHYS_OFFSET).
    built = elfcore.build(elfcore.spec_fresh(_state(name), None))
    assert built == Capture(images.DATA / name).header


@pytest.mark.parametrize(("template", "now"), [(a, b) for s in SETS for a in s for b in s])
def test_template_build_is_byte_identical(template: str, now: str) -> None:
    # What a refresh builds: the loaded header as the template, the system now.
    tmpl = elfcore.parse(Capture(images.DATA / template).header)
    built = elfcore.build(elfcore.spec_from_template(tmpl, _state(now)))
    assert built == Capture(images.DATA / now).header


def test_the_hot_added_dimm_is_one_more_ram_load() -> None:
    boot = set(parse_elf_core(CAP.header).loads)
    now = set(parse_elf_core(Capture(images.DATA / HOTADD).header).loads)
    assert now - boot == {(0x80000000, 0x90000000)} and boot < now


def _without_text(tmp_path: Path, name: str) -> SystemState:
    # The capture's root as Debian's kernels have it: no _text in kallsyms.
    root = tmp_path / "root"
    shutil.copytree(images.DATA / name / "root", root)
    kallsyms = root / "proc/kallsyms"
    lines = kallsyms.read_text().splitlines(keepends=True)
    kallsyms.write_text("".join(line for line in lines if not line.endswith(" _text\n")))
    cap = Capture(images.DATA / name)
    rules = rules_for(cap.manifest["kexec_tools"], of_flags(cap.manifest["flags"]))
    return read_system(Root(root), rules=rules)


def test_without_text_kexec_tools_writes_no_usable_kernel_load(tmp_path: Path) -> None:
    # What stock kexec-tools loads on Debian's arm64 kernels (FIELD-NOTES 13):
    # the kernel PT_LOAD at UINT64_MAX, 2^64 less a bit long; RAM at vaddr = paddr.
    broken = elfcore.parse(elfcore.build(elfcore.spec_fresh(_without_text(tmp_path, NAME), None)))
    good = elfcore.parse(CAP.header)
    text = broken.kernel_text
    assert text is not None and text.vaddr == U64_MAX and text.memsz > 1 << 63
    assert broken.page_offset == 0 and good.page_offset == 0xFFFF000000000000
    assert [(p.paddr, p.memsz) for p in broken.ram] == [(p.paddr, p.memsz) for p in good.ram]


@pytest.mark.parametrize("now", BOTH)
def test_refresh_repairs_a_header_made_without_text(tmp_path: Path, now: str) -> None:
    # kexecd's refresh of that header: _text from VMCOREINFO (MODULES_END +
    # KERNELOFFSET), and the header is the one kexec-tools writes with _text.
    boot = _without_text(tmp_path / "boot", NAME)
    broken = elfcore.parse(elfcore.build(elfcore.spec_fresh(boot, None)))
    state = _without_text(tmp_path / "now", now)
    built = elfcore.build(elfcore.spec_from_template(broken, state))
    assert built == Capture(images.DATA / now).header


def test_no_repair_without_modules_end(tmp_path: Path) -> None:
    # A kernel whose VMCOREINFO cannot place _text: the header stays kexec-tools'.
    state = _without_text(tmp_path, NAME)
    kcore = state.root.path("proc/kcore")
    data = Path(kcore).read_bytes()
    Path(kcore).write_bytes(data.replace(b"NUMBER(MODULES_END)=", b"NUMBER(MODULES_XXX)="))
    broken_bytes = elfcore.build(elfcore.spec_fresh(state, None))
    again = elfcore.build(elfcore.spec_from_template(elfcore.parse(broken_bytes), state))
    assert again == broken_bytes
