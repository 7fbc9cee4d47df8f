# SPDX-License-Identifier: GPL-2.0-or-later
"""/proc/iomem in the C core (csrc/iomem.c) against the Python it replaced.

The models below are kexecd's Python reading of /proc/iomem before the C core
took it over (issue 27, P7): a regex per ``str.splitlines()`` line, then
kexec-tools' collection. The C core must give the same resources, ranges,
reservations and faults for any text.
"""

from __future__ import annotations

import errno
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexecd import core
from kexecd.arch.aarch64 import AARCH64
from kexecd.arch.x86_64 import X86_64
from kexecd.errors import SystemStateError
from kexecd.image import elfcore
from kexecd.model import MemRange, RangeType
from kexecd.system.iomem import CrashRanges, crash_ranges, parse_iomem
from kexecd.system.kexectools import HeaderRules, rules_for
from tests.unit.data import DATA

_LINE = re.compile(r"^( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$")
U64_MAX = (1 << 64) - 1


def model_parse(text: str) -> list[tuple[int, int, str, int]] | tuple[str, int]:
    """The old parse_iomem: lines, or (fault, line number)."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            return ("malformed", lineno)
        start, end = int(m.group(2), 16), int(m.group(3), 16)
        if end > U64_MAX:
            return ("past", lineno)
        if end < start:
            return ("backwards", lineno)
        out.append((start, end, m.group(4), len(m.group(1)) // 2))
    if not out:
        return ("empty", 0)
    if all(s == 0 and e == 0 for s, e, _, _ in out):
        return ("zeros", 0)
    return out


def model_ranges(
    lines: list[tuple[int, int, str, int]], rules: HeaderRules
) -> tuple[list[MemRange], list[MemRange]] | None:
    """The old crash_ranges: (ranges, reserved), or None when a cut overflows."""
    facts, limit = rules.facts, rules.max_ranges
    ranges: list[MemRange] = []
    reserved: list[MemRange] = []
    skipped: dict[str, MemRange] = {}
    for start, end, name, _ in lines:
        if name == "Crash kernel" and len(reserved) < facts.max_crash_reserved:
            reserved.append(MemRange(start, end))
        if len(ranges) >= limit:
            continue
        if rules.is_ram(name):
            kind = RangeType.RAM
        elif name in facts.skipped:
            skipped[name] = MemRange(start, end)
            continue
        elif name in facts.range_types:
            kind = facts.range_types[name]
        else:
            continue
        ranges.append(MemRange(start, end, kind))
    if facts.sort_ranges:
        for cut in reserved:
            ranges = _mem_regions_exclude(ranges, cut)
        ranges.sort(key=lambda r: r.start)
        return ranges, reserved
    for cut in [*reserved, *skipped.values()]:
        try:
            ranges = core.exclude_range(ranges, cut.start, cut.end, limit)
        except OSError as e:
            assert e.errno == errno.ENOSPC
            return None
    return ranges, reserved


def _mem_regions_exclude(ranges: list[MemRange], cut: MemRange) -> list[MemRange]:
    out = list(ranges)
    i = 0
    while i < len(out):
        r = out[i]
        if r.start <= cut.start and r.end >= cut.end:
            if r.start == cut.start and r.end == cut.end:
                del out[i]
            elif r.start == cut.start:
                out[i] = MemRange(cut.end + 1, r.end, r.type)
            elif r.end == cut.end:
                out[i] = MemRange(r.start, cut.start - 1, r.type)
            else:
                out.append(MemRange(cut.end + 1, r.end, RangeType.RAM))
                out[i] = MemRange(r.start, cut.start - 1, r.type)
                break
        i += 1
    return out


RULES = [
    rules_for("2.0.25", X86_64),
    rules_for("2.0.20", X86_64),
    rules_for("2.0.25", AARCH64),
]
SMALL = HeaderRules(None, False, 5, False, X86_64)  # a limit the examples reach

NAMES = [
    "System RAM",
    "System RAM (kmem)",
    "Crash kernel",
    "GART",
    "reserved",
    "Reserved",
    "ACPI Tables",
    "ACPI Non-volatile Storage",
    "Persistent Memory",
    "Kernel code",
    "PCI Bus 0000:00",
    "",
]
SEPARATORS = ["\n", "\n", "\n", "\r\n", "\r", "\v", "\x1c", "\x85", "\u2028"]


@st.composite
def iomem_text(draw: st.DrawFn) -> str:
    """Mostly good lines, with blanks, odd separators and bad lines among them."""
    out = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 19))
        if kind == 0:
            line = draw(st.sampled_from(["", "  ", " \t", "\u3000", "garbage", "1-2: x"]))
        elif kind == 1:
            line = draw(st.text(alphabet="0123456789abcdef- :\t", max_size=12))
        else:
            start = draw(st.integers(0, 1 << 34))
            end = start + draw(st.integers(-2, 1 << 30)) if kind > 2 else (1 << 64) + 5
            name = draw(st.sampled_from(NAMES))
            hexes = f"{start:x}-{max(end, 0):x}" if kind != 3 else f"{start:X}-{end:016X}"
            line = "  " * draw(st.integers(0, 2)) + f"{hexes} : {name}"
        out.append(line + draw(st.sampled_from(SEPARATORS)))
    return "".join(out)


def _c_parse(text: str) -> list[tuple[int, int, str, int]] | tuple[str, int]:
    try:
        return [(r.start, r.end, r.name, r.depth) for r in parse_iomem(text, "iomem")]
    except SystemStateError as e:
        msg = str(e)
        m = re.match(r"iomem:(\d+): ", msg)
        line = int(m.group(1)) if m else 0
        for key, word in (
            ("cannot parse", "malformed"),
            ("past 64 bits", "past"),
            ("ends before", "backwards"),
            ("empty", "empty"),
            ("every address is zero", "zeros"),
        ):
            if key in msg:
                return (word, line)
        raise


@settings(max_examples=400, deadline=None)
@given(iomem_text())
def test_parse_agrees_with_the_python_reading(text: str) -> None:
    assert _c_parse(text) == model_parse(text)


@settings(max_examples=400, deadline=None)
@given(iomem_text(), st.sampled_from([*RULES, SMALL]))
def test_collection_agrees_with_the_python_reading(text: str, rules: HeaderRules) -> None:
    lines = model_parse(text)
    if isinstance(lines, tuple):
        with pytest.raises(SystemStateError):
            crash_ranges(text, "iomem", rules)
        return
    want = model_ranges(lines, rules)
    if want is None:
        with pytest.raises(SystemStateError, match="kexec-tools' limit"):
            crash_ranges(text, "iomem", rules)
        return
    got = crash_ranges(text, "iomem", rules)
    assert list(got.ranges) == want[0]
    assert list(got.crash_reserved) == want[1]
    assert got.ram == [r for r in want[0] if r.type is RangeType.RAM]


def test_the_captures_collect_as_before() -> None:
    for name in ("boot", "hotadd"):
        text = (DATA / name / "root/proc/iomem").read_text()
        lines = model_parse(text)
        assert isinstance(lines, list)
        for rules in RULES:
            want = model_ranges(lines, rules)
            got = crash_ranges(text.encode(), "iomem", rules)
            assert want is not None and list(got.ranges) == want[0], (name, rules)
            # Lines given as resources are written out again: the same result.
            assert list(crash_ranges(parse_iomem(text), "iomem", rules).ranges) == want[0]


def test_the_ranges_stay_in_c() -> None:
    text = (DATA / "boot/root/proc/iomem").read_text()
    got = crash_ranges(text)
    assert isinstance(got, CrashRanges) and isinstance(got.ranges, core.RangeTable)
    assert got.ranges == tuple(got.ranges) and got.ranges[-1] == list(got.ranges)[-1]
    assert got.ranges[0:2] == list(got.ranges)[:2]
    with pytest.raises(IndexError):
        got.ranges[len(got.ranges)]


def test_a_cut_past_the_limit_names_the_cut_and_the_file() -> None:
    text = "1000-4fff : System RAM\n  2000-2fff : GART\n5000-5fff : reserved\n"
    rules = HeaderRules(None, False, 2, False, X86_64)
    with pytest.raises(SystemStateError) as e:
        crash_ranges(text, "/x/proc/iomem", rules)
    assert str(e.value) == (
        "/x/proc/iomem: cutting 'GART' 0x2000-0x2fff out of the memory ranges makes more "
        "than 2, kexec-tools' limit, so 'kexec -p' fails too; pass the kernel's /proc/iomem"
    )


@pytest.mark.parametrize("capture", ["boot", "hotadd"])
def test_header_summary_agrees_with_the_program_headers(capture: str) -> None:
    data = (DATA / capture / "load/seg-05.bin").read_bytes()
    h = elfcore.parse(data)
    phdrs = h.phdrs
    text_map = h.text_map
    ram = [p for p in phdrs if p.type == 1 and p.vaddr < text_map]
    assert h.nr_ram == len(ram) == len(h.ram) and h.phnum == len(phdrs)
    assert h.ram_bytes == sum(p.memsz for p in ram)
    assert h.page_offset == ram[0].vaddr - ram[0].paddr
    backup = next(p for p in ram if p.offset != p.paddr)
    assert h.backup is not None and h.backup.src_start == backup.paddr
    assert h.kernel_text == next(p for p in phdrs if p.type == 1 and p.vaddr >= text_map)
    assert h.notes == [p for p in phdrs if p.type == 4]
    assert list(h.ram_ranges()) == [MemRange(p.paddr, p.paddr + p.memsz - 1) for p in ram]
    # A header made from Python objects reads the same.
    again = elfcore.CoreHeader(h.machine, list(phdrs), h.size)
    assert again == h and again.ram_bytes == h.ram_bytes and again.backup == h.backup
