# SPDX-License-Identifier: GPL-2.0-or-later
"""A real arm64 crash load (tests/data/arm64-6.1-2.0.25-boot, made in the arm64
test bed's guest by tests/vm/test_arm64.py) read by kexecd's aarch64 rules.

kexec-tools 2.0.25 loaded five segments: the Image, the initrd, the DTB,
purgatory and the ELF core header at the top of the crash area; the DTB
names the header and the crash area, and purgatory's digest covers every
segment but purgatory, the DTB and the header included.
"""

from __future__ import annotations

import pytest

from kexecd.arch import of_flags
from kexecd.arch.aarch64 import AARCH64, fdt
from kexecd.image import elfcore
from kexecd.system.iomem import parse_iomem
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


def _state(name: str) -> SystemState:
    cap = Capture(images.DATA / name)
    rules = rules_for(cap.manifest["kexec_tools"], of_flags(cap.manifest["flags"]))
    return read_system(Root(images.DATA / name / "root"), rules=rules)


@pytest.mark.parametrize("name", BOTH)
def test_fresh_build_is_byte_identical(name: str) -> None:
    # kexec-tools' arm64 rules: "System RAM" less the crash area, sorted; the
    # kernel text from Kernel code/data, _text and __init_begin; page_offset
    # from kcore's VMCOREINFO (VA_BITS, PHYS_OFFSET).
    built = elfcore.build(elfcore.spec_fresh(_state(name), None))
    assert built == Capture(images.DATA / name).header


@pytest.mark.parametrize(("template", "now"), [(a, b) for a in BOTH for b in BOTH])
def test_template_build_is_byte_identical(template: str, now: str) -> None:
    # What a refresh builds: the loaded header as the template, the system now.
    tmpl = elfcore.parse(Capture(images.DATA / template).header)
    built = elfcore.build(elfcore.spec_from_template(tmpl, _state(now)))
    assert built == Capture(images.DATA / now).header


def test_the_hot_added_dimm_is_one_more_ram_load() -> None:
    boot = set(parse_elf_core(CAP.header).loads)
    now = set(parse_elf_core(Capture(images.DATA / HOTADD).header).loads)
    assert now - boot == {(0x80000000, 0x90000000)} and boot < now
