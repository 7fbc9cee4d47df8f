# SPDX-License-Identifier: GPL-2.0-or-later
"""arm64's architecture seam, on DTBs dtc builds from the source text here and
reads back (``dtc -I dtb -O dts``): an independent writer and reader; hashlib
for purgatory's digest."""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexecd.arch import of_flags, of_machine
from kexecd.arch.aarch64 import AARCH64, KEXEC_ARCH_AARCH64, fdt
from kexecd.arch.x86_64 import X86_64
from kexecd.errors import CmdlineError, HeaderError
from kexecd.image import purgatory, relocate
from kexecd.image.executor import image_with
from kexecd.image.store import Origin, Store
from kexecd.loads import LoadCapture, Segment
from kexecd.system.kexectools import rules_for
from tests import elfwriter

# scripts/setup installs device-tree-compiler: without it these tests fail.
DTC = shutil.which("dtc")

# What kexec-tools 2.0.25 loaded in the FIELD-NOTES spike, roughly: a 256 MiB
# crash area at 0x60000000, the header's 1 KiB at its top.
CRASH = (0x60000000, 0x70000000)
HDR_MEM = 0x6FFFF000
LINE = "console=ttyAMA0 nr_cpus=1 reset_devices rdinit=/init"  # 52 bytes


def dts(
    cells: tuple[int, int] = (2, 2),
    bootargs: str = f'"{LINE}", [00 00 00]',
    elfcorehdr: str = f"0x0 {HDR_MEM:#x} 0x0 0x400",
    usable: str = f"0x0 {CRASH[0]:#x} 0x0 {CRASH[1] - CRASH[0]:#x}",
) -> str:
    # bootargs as kexec-tools' dtb_set_bootargs() leaves it: the line, its
    # NUL, NULs up to a multiple of 4.
    return f"""/dts-v1/;
/ {{
    #address-cells = <{cells[0]}>;
    #size-cells = <{cells[1]}>;
    compatible = "linux,dummy-virt";
    memory@40000000 {{
        device_type = "memory";
        reg = <0x0 0x40000000 0x0 0x40000000>;
    }};
    chosen {{
        linux,usable-memory-range = <{usable}>;
        linux,elfcorehdr = <{elfcorehdr}>;
        bootargs = {bootargs};
        linux,initrd-end = <0x0 0x61200000>;
        linux,initrd-start = <0x0 0x61000000>;
    }};
}};
"""


def compile_dts(text: str) -> bytes:
    assert DTC is not None, "dtc is missing: apt-get install device-tree-compiler"
    run = subprocess.run(
        [DTC, "-q", "-I", "dts", "-O", "dtb"], input=text.encode(), capture_output=True, check=True
    )
    return run.stdout


def decompile(blob: bytes) -> str:
    assert DTC is not None
    run = subprocess.run(
        [DTC, "-q", "-I", "dtb", "-O", "dts"], input=blob, capture_output=True, check=True
    )
    return run.stdout.decode()


def chosen_prop(text: str, name: str) -> str:
    m = re.search(rf"^\s*{re.escape(name)} = (.*);$", text, re.M)
    assert m is not None, text
    return m.group(1)


def image(blob: bytes, header: bytes = b"") -> list[Segment]:
    # Image, initrd, DTB, purgatory (a placeholder), header: kexec-tools'
    # order and places (FIELD-NOTES 13).
    header = header or elfwriter.core([elfwriter.Ph(elfwriter.PT_NOTE)], size=0x400)
    return [
        Segment(b"\x4d\x5a" + bytes(0x3FFE), CRASH[0], 0x1000000),
        Segment(b"\x07\x07\x01" * 0x100, 0x61000000, 0x200000),
        Segment(blob, 0x61200000, 0x1000),
        Segment(b"", 0x61201000, 0x6000),
        Segment(header, HDR_MEM, 0x1000),
    ]


def with_purgatory(segs: list[Segment]) -> list[Segment]:
    # A purgatory holding the digest and regions of the other segments, as
    # kexec-tools update_purgatory() leaves them, between other bytes.
    h = hashlib.sha256()
    regions = b""
    for i, s in enumerate(segs):
        if i != 3:
            h.update(bytes(s.buf) + bytes(s.memsz - len(s.buf)))
            regions += struct.pack("<QQ", s.mem, s.memsz)
    regions = regions.ljust(16 * 16, b"\0")
    buf = b"\x7fELF" + b"\x5a" * 0x1FC + h.digest() + regions + b"\xa5" * 0x200
    out = list(segs)
    out[3] = Segment(buf, segs[3].mem, segs[3].memsz)
    return out


# -- the reader ---------------------------------------------------------------


def test_finds_chosen_properties_where_dtc_put_them() -> None:
    blob = compile_dts(dts())
    tree = fdt.read(blob)
    prop = tree.find("/chosen", "linux,elfcorehdr")
    assert prop is not None and prop.length == 16
    assert fdt.cells_of(tree.value(prop)) == (0, HDR_MEM, 0, 0x400)
    assert blob[prop.offset : prop.offset + 16] == struct.pack(">4I", 0, HDR_MEM, 0, 0x400)
    boot = tree.find("/chosen", "bootargs")
    assert boot is not None and tree.value(boot) == LINE.encode() + bytes(4)
    assert tree.find("/", "#size-cells") is not None
    assert tree.find("/memory@40000000", "reg") is not None
    assert tree.find("/chosen", "nothing") is None and tree.find("/nowhere", "reg") is None


def test_set_cells_round_trips_through_dtc_and_keeps_the_size() -> None:
    blob = compile_dts(dts())
    prop = fdt.read(blob).find("/chosen", "linux,elfcorehdr")
    assert prop is not None
    out = fdt.set_cells(blob, prop.offset, [0, 0x6FFFE000, 0, 0x2000])
    assert len(out) == len(blob)
    assert chosen_prop(decompile(out), "linux,elfcorehdr") == "<0x00 0x6fffe000 0x00 0x2000>"
    assert sum(a != b for a, b in zip(blob, out, strict=True)) <= 8
    with pytest.raises(HeaderError, match="not inside"):
        fdt.set_cells(blob, len(blob) - 4, [1, 2])
    with pytest.raises(HeaderError, match="32 bits"):
        fdt.set_cells(blob, prop.offset, [1 << 32])


def _header_words(blob: bytes) -> list[int]:
    return list(struct.unpack_from(">10I", blob, 0))


def _with_words(blob: bytes, **changes: int) -> bytes:
    names = [
        "magic",
        "totalsize",
        "off_struct",
        "off_strings",
        "off_rsvmap",
        "version",
        "last_comp",
        "cpu",
        "size_strings",
        "size_struct",
    ]
    words = _header_words(blob)
    for name, value in changes.items():
        words[names.index(name)] = value
    return struct.pack(">10I", *words) + blob[40:]


def _prop_at(blob: bytes, name: str) -> int:
    # The PROP token of /chosen/name, found here by its value's offset.
    prop = fdt.read(blob).find("/chosen", name)
    assert prop is not None
    return prop.offset - 12


def _malformed() -> dict[str, tuple[bytes, str]]:
    blob = compile_dts(dts())
    w = _header_words(blob)
    at = _prop_at(blob, "bootargs")
    past = bytearray(blob)
    struct.pack_into(">I", past, at + 4, 0x10000)
    token = bytearray(blob)
    struct.pack_into(">I", token, at, 0x7)
    name = bytearray(blob)
    struct.pack_into(">I", name, at + 8, w[8] + 4)
    deep = "/dts-v1/;\n/ {" + " n {" * 70 + " };" * 70 + " };\n"
    unended = bytearray(blob)
    struct.pack_into(">I", unended, w[2] + w[9] - 4, 4)  # END replaced by a NOP
    return {
        "empty": (b"", "no 0xd00dfeed"),
        "truncated header": (blob[:30], "no 0xd00dfeed"),
        "bad magic": (b"\xd0\x0d\xfe\xee" + blob[4:], "no 0xd00dfeed"),
        "truncated": (blob[: len(blob) // 2], "says it is"),
        "too big": (_with_words(blob, totalsize=3 << 20) + bytes(3 << 20), "at most"),
        "old version": (_with_words(blob, version=16), "version 16"),
        "struct out of bounds": (_with_words(blob, off_struct=w[1] - 4), "structure block"),
        "strings out of bounds": (_with_words(blob, size_strings=w[1]), "strings block"),
        "struct inside the header": (_with_words(blob, off_struct=8), "structure block"),
        "unaligned": (_with_words(blob, off_struct=w[2] + 2), "aligned"),
        "property past the block": (bytes(past), "runs past"),
        "unknown token": (bytes(token), "token 0x7"),
        "name past strings": (bytes(name), "outside the strings block"),
        "too deep": (compile_dts(deep), "too deep"),
        "no END": (bytes(unended), "without an END"),
    }


@pytest.mark.parametrize("case", sorted(_malformed()))
def test_malformed_blobs_are_refused_in_one_line(case: str) -> None:
    blob, message = _malformed()[case]
    with pytest.raises(HeaderError, match=message) as e:
        fdt.read(blob)
    assert "\n" not in str(e.value)


def test_a_node_or_property_twice_is_refused() -> None:
    blob = compile_dts(dts())
    at = _prop_at(blob, "linux,elfcorehdr")
    boot = _prop_at(blob, "bootargs")
    # bootargs' name offset made elfcorehdr's: two properties of one name.
    twice = bytearray(blob)
    twice[boot + 8 : boot + 12] = blob[at + 8 : at + 12]
    with pytest.raises(HeaderError, match="twice"):
        fdt.read(bytes(twice))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_corruption_is_read_or_refused(data: st.DataObject) -> None:
    blob = bytearray(_VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        tree = fdt.read(bytes(blob[:cut]))
    except HeaderError as e:
        assert "\n" not in str(e)
    else:
        for props in tree.nodes.values():
            for p in props.values():
                assert 0 <= p.offset <= p.offset + p.length <= len(tree.blob)
    segs = image(bytes(blob[:cut]))
    for call in (AARCH64.find_cmdline, AARCH64.header_holes):
        try:
            call(segs)
        except (HeaderError, CmdlineError) as e:
            assert "\n" not in str(e)
    try:
        AARCH64.repoint(segs, 4, (0x6FFFD000, 0x6FFFF000))
        AARCH64.resize(segs, 4, 0x800)
    except HeaderError as e:
        assert "\n" not in str(e)


_VALID = compile_dts(dts())


# -- the Arch ----------------------------------------------------------------


def test_flags_and_machine_name_aarch64() -> None:
    assert KEXEC_ARCH_AARCH64 == 0xB70000
    assert of_flags(KEXEC_ARCH_AARCH64 | 1) is AARCH64  # | KEXEC_ON_CRASH
    assert of_machine(183) is AARCH64
    assert of_flags(62 << 16 | 1) is X86_64
    assert (AARCH64.name, AARCH64.page, AARCH64.header_align, AARCH64.min_header_memsz) == (
        "aarch64",
        4096,
        1024,
        4096,
    )
    assert relocate.sized_memsz(AARCH64, 8) == 4096  # the spike's 8 headers: one page


def test_kexec_tools_rules_on_arm64() -> None:
    old, new = rules_for("2.0.20", AARCH64), rules_for("2.0.21", AARCH64)
    assert (old.max_ranges, new.max_ranges, rules_for(None, AARCH64).max_ranges) == (
        32,
        0xFFFFFFFF,  # a growing array since 2.0.21
        0xFFFFFFFF,
    )
    assert not old.page_offset_symbol and new.describe().startswith(
        "kexec-tools 2.0.21: every 'System RAM ...' range"
    )
    # arm64's kexec-tools never dumps "System RAM (virtio_mem)" (its names are
    # compared with "System RAM\n"); kexecd's headers do, in every version.
    for rules in (old, new, rules_for("2.0.25", AARCH64)):
        assert rules.is_ram("System RAM")
        assert rules.is_ram("System RAM (virtio_mem)")
    # x86's rules are as before.
    assert rules_for("2.0.21", X86_64).max_ranges == 2050
    assert rules_for("2.0.22", X86_64).is_ram("System RAM (virtio_mem)")
    assert X86_64.resize(image(_VALID), 4, 0x800) == {}


def test_find_cmdline_in_bootargs_with_the_padding_as_room() -> None:
    segs = image(_VALID)
    line = AARCH64.find_cmdline(segs)
    assert (line.segment, line.text, line.room) == (2, LINE, 3)
    assert _VALID[line.offset : line.offset + len(LINE)] == LINE.encode()
    grown = AARCH64.with_cmdline(segs[2].buf, line, LINE + " ab")
    assert len(grown) == len(_VALID)
    assert chosen_prop(decompile(grown), "bootargs") == f'"{LINE} ab"'
    back = AARCH64.find_cmdline([*segs[:2], replace(segs[2], buf=grown), *segs[3:]])
    assert (back.text, back.room) == (LINE + " ab", 0)
    shrunk = AARCH64.with_cmdline(grown, back, "console=ttyAMA0")
    # dtc shows a value with that many NULs as cells; the bytes then.
    assert shrunk[line.offset : line.offset + 56] == b"console=ttyAMA0".ljust(56, b"\0")
    assert AARCH64.find_cmdline([*segs[:2], replace(segs[2], buf=shrunk), *segs[3:]]).room == 40
    with pytest.raises(CmdlineError, match="packed"):
        AARCH64.with_cmdline(segs[2].buf, line, LINE + " abcd")
    with pytest.raises(CmdlineError, match="NUL"):
        AARCH64.with_cmdline(segs[2].buf, line, "a\0b")


def test_unpadded_bootargs_have_no_room() -> None:
    segs = image(compile_dts(dts(bootargs='"console=ttyAMA0 ab"')))
    line = AARCH64.find_cmdline(segs)
    assert (line.text, line.room) == ("console=ttyAMA0 ab", 0)
    with pytest.raises(CmdlineError, match="cannot grow past its padding"):
        AARCH64.with_cmdline(segs[2].buf, line, "console=ttyAMA0 abc")


@pytest.mark.parametrize(
    ("blobs", "message"),
    [
        ([], "0 segments hold a device tree"),
        ([_VALID, _VALID], "2 segments hold a device tree"),
        ([compile_dts(dts().replace("linux,elfcorehdr", "x"))], "no /chosen/linux,elfcorehdr"),
        ([compile_dts(dts().replace("bootargs", "y"))], "no /chosen/bootargs"),
        ([compile_dts(dts(bootargs='"a", "b"'))], "NULs only"),
        ([compile_dts(dts(bootargs="[61 62 63 64]"))], "NUL-terminated"),
        ([_VALID[:40]], "says it is"),
    ],
)
def test_find_cmdline_refuses(blobs: list[bytes], message: str) -> None:
    segs = image(_VALID)
    segs[2] = Segment(b"\1" * 16, segs[2].mem, segs[2].memsz)
    segs += [Segment(b, 0x68000000 + i * 0x1000, 0x1000) for i, b in enumerate(blobs)]
    with pytest.raises(CmdlineError, match=message):
        AARCH64.find_cmdline(segs)


def test_header_holes_are_the_usable_memory_ranges() -> None:
    assert AARCH64.header_holes(image(_VALID)) == [CRASH]
    two = dts(usable=f"0x0 {CRASH[0]:#x} 0x0 0x10000000 0x1 0x0 0x0 0x20000000")
    assert AARCH64.header_holes(image(compile_dts(two))) == [
        CRASH,
        (1 << 32, (1 << 32) + 0x20000000),
    ]
    three = dts(usable=f"0x0 {CRASH[0]:#x} 0x0 0x10000000 0x1 0x0 0x0 0x1000 0x2 0x0 0x0 0x1000")
    assert len(AARCH64.header_holes(image(compile_dts(three)))) == 2  # what Linux reads
    one = dts(cells=(1, 1), elfcorehdr=f"{HDR_MEM:#x} 0x400", usable="0x60000000 0x10000000")
    assert AARCH64.header_holes(image(compile_dts(one))) == [CRASH]
    for bad, message in (
        (dts(usable="0x0 0x60000000 0x0"), "not pairs"),
        (dts(cells=(3, 2)), "#address-cells is"),
        (dts(usable="").replace("linux,usable-memory-range = <>;", ""), "no /chosen/linux,usable"),
    ):
        with pytest.raises(HeaderError, match=message):
            AARCH64.header_holes(image(compile_dts(bad)))


@pytest.mark.parametrize("cells", [(2, 2), (1, 1), (2, 1), (1, 2)])
def test_repoint_and_resize_rewrite_only_the_cells(cells: tuple[int, int]) -> None:
    def pair(addr: int, size: int) -> str:
        a = f"0x0 {addr:#x}" if cells[0] == 2 else f"{addr:#x}"
        s = f"0x0 {size:#x}" if cells[1] == 2 else f"{size:#x}"
        return f"{a} {s}"

    blob = compile_dts(
        dts(cells, elfcorehdr=pair(HDR_MEM, 0x400), usable=pair(CRASH[0], 0x10000000))
    )
    segs = image(blob)
    out = AARCH64.repoint(segs, 4, (0x6FFFD000, 0x6FFFF000))
    assert list(out) == [2] and len(out[2]) == len(blob)
    want = pair(0x6FFFD000, 0x2000).replace("0x0 ", "0x00 ")
    assert chosen_prop(decompile(out[2]), "linux,elfcorehdr") == f"<{want}>"
    assert decompile(out[2]).replace(want, pair(HDR_MEM, 0x400).replace("0x0 ", "0x00 ")) == (
        decompile(blob)
    )
    sized = AARCH64.resize(segs, 4, 0x800)
    want = pair(HDR_MEM, 0x800).replace("0x0 ", "0x00 ")
    assert chosen_prop(decompile(sized[2]), "linux,elfcorehdr") == f"<{want}>"
    with pytest.raises(HeaderError, match="does not fit its segment"):
        AARCH64.resize(segs, 4, 0x1001)
    if cells[0] == 1:
        with pytest.raises(HeaderError, match="does not fit 1 device tree cell"):
            AARCH64.repoint(segs, 4, (1 << 32, (1 << 32) + 0x1000))


def test_repoint_refuses_a_dtb_that_names_another_header() -> None:
    segs = image(compile_dts(dts(elfcorehdr="0x0 0x6fffe000 0x0 0x400")))
    with pytest.raises(HeaderError, match="not one header at 0x6ffff000"):
        AARCH64.repoint(segs, 4, (0x6FFFD000, 0x6FFFF000))
    with pytest.raises(HeaderError, match="not one header"):
        AARCH64.resize(segs, 4, 0x800)


def test_relocated_moves_the_header_and_rewrites_dtb_and_purgatory() -> None:
    segs = with_purgatory(image(_VALID))
    loc = purgatory.locate(segs, 3, 4, setup=2)
    assert loc is not None and loc.header_hashed and loc.regions_offset is not None
    memsz = relocate.grown_memsz(AARCH64, 40, segs[4].memsz)
    assert memsz == 8192
    others = [s for i, s in enumerate(segs) if i != 4]
    mem = relocate.place(CRASH, others, AARCH64.header_holes(segs), memsz, AARCH64.page)
    assert mem == 0x61207000  # the first free pages above purgatory
    header = elfwriter.core([elfwriter.Ph(elfwriter.PT_LOAD)] * 40, size=0x1000)
    r = relocate.relocated(AARCH64, segs, relocate.Move(4, 3, loc, mem, memsz), header)
    new = r.segments
    assert r.changed == (2, 3, 4) and r.old == (HDR_MEM, HDR_MEM + 0x1000)
    assert (new[4].mem, new[4].memsz, bytes(new[4].buf)) == (mem, memsz, header)
    for i in (0, 1):
        assert new[i] is segs[i]
    text = decompile(bytes(new[2].buf))
    assert chosen_prop(text, "linux,elfcorehdr") == f"<0x00 {mem:#x} 0x00 {memsz:#x}>"
    assert len(new[2].buf) == len(_VALID)
    h = hashlib.sha256()
    for i, s in enumerate(new):
        if i != 3:
            h.update(bytes(s.buf) + bytes(s.memsz - len(s.buf)))
    p = bytes(new[3].buf)
    assert p[loc.digest_offset : loc.digest_offset + 32] == h.digest()
    regions = b"".join(struct.pack("<QQ", s.mem, s.memsz) for i, s in enumerate(new) if i != 3)
    assert p[loc.regions_offset : loc.regions_offset + 256] == regions.ljust(256, b"\0")
    assert purgatory.locate(list(new), 3, 4, setup=2) is not None


def test_a_longer_header_in_place_rewrites_the_dtb_size_and_the_digest(tmp_path: Path) -> None:
    # The header grows within its page: the capture kernel reserves exactly
    # what linux,elfcorehdr says, so its size cell follows, and purgatory's
    # digest covers the rewritten DTB too (it hashes every segment).
    segs = with_purgatory(image(_VALID))
    cap = LoadCapture.one_load(segs[3].mem, KEXEC_ARCH_AARCH64 | 1, segs)
    snap = Store(tmp_path / "state").create(cap, Origin(["kexec", "-p", "Image"]))
    assert snap.arch is AARCH64 and snap.header == 4 and snap.digest is not None
    header = elfwriter.core([elfwriter.Ph(elfwriter.PT_LOAD)] * 20, size=0x800)
    new, digest = image_with(snap, None, header, ())
    assert chosen_prop(decompile(bytes(new[2].buf)), "linux,elfcorehdr") == (
        f"<0x00 {HDR_MEM:#x} 0x00 0x800>"
    )
    h = hashlib.sha256()
    for i, s in enumerate(new):
        if i != 3:
            h.update(bytes(s.buf) + bytes(s.memsz - len(s.buf)))
    assert digest == h.digest()
    assert bytes(new[3].buf)[snap.digest.digest_offset :][:32] == h.digest()
    # The same size: the DTB is left as it was.
    same, _ = image_with(snap, None, bytes(segs[4].buf), ())
    assert same[2] is snap.segments[2]
