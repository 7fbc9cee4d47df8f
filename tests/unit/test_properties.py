# SPDX-License-Identifier: GPL-2.0-or-later
"""Properties of the C core, checked with hypothesis against plain models."""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexecd import core
from kexecd.model import (
    PT_LOAD,
    PT_NOTE,
    Backup,
    HeaderSpec,
    KernelText,
    MemRange,
    Note,
    RangeType,
)

U64 = st.integers(0, 2**64 - 1)
ADDR = st.integers(0, 2**52)


@st.composite
def ranges(draw: st.DrawFn, universe: int = 200, max_size: int = 8) -> list[MemRange]:
    out = []
    for _ in range(draw(st.integers(0, max_size))):
        a = draw(st.integers(0, universe))
        b = draw(st.integers(a, universe))
        out.append(MemRange(a, b, draw(st.sampled_from(list(RangeType)))))
    return out


@st.composite
def specs(draw: st.DrawFn) -> HeaderSpec:
    notes = tuple(
        Note(draw(ADDR), draw(st.integers(0, 8192))) for _ in range(draw(st.integers(0, 6)))
    )
    mem = []
    for _ in range(draw(st.integers(0, 12))):
        a = draw(st.integers(0, 2**40))
        mem.append(
            MemRange(a, a + draw(st.integers(0, 2**30)), draw(st.sampled_from(list(RangeType))))
        )
    backup = None
    if draw(st.booleans()) and mem:
        src = draw(st.sampled_from(mem))
        backup = Backup(src.start, src.size, draw(ADDR))
    return HeaderSpec(
        machine=62,
        nr_cpus_conf=len(notes) + draw(st.integers(0, 4)),
        cpu_notes=notes,
        vmcoreinfo=Note(draw(ADDR), draw(st.integers(1, 8192))) if draw(st.booleans()) else None,
        kernel=KernelText(draw(ADDR), draw(U64), draw(st.integers(1, 2**31)))
        if draw(st.booleans())
        else None,
        ranges=tuple(mem),
        page_offset=draw(st.integers(0, 2**63)) & ~((1 << 30) - 1),
        backup=backup,
        align=draw(st.sampled_from([1024, 2048, 4096])),
    )


def points(rs: list[MemRange]) -> set[int]:
    return {p for r in rs for p in range(r.start, r.end + 1)}


@settings(max_examples=300)
@given(specs())
def test_parse_of_build_gives_back_the_spec(spec: HeaderSpec) -> None:
    data = core.build_header(spec)
    assert len(data) == core.header_size(spec) and len(data) % spec.align == 0
    machine, phdrs = core.parse_header(data)
    assert machine == spec.machine
    notes = [p for p in phdrs if p.type == PT_NOTE]
    loads = [p for p in phdrs if p.type == PT_LOAD]
    want_notes = [*spec.cpu_notes, *([spec.vmcoreinfo] if spec.vmcoreinfo else [])]
    assert [Note(p.paddr, p.memsz) for p in notes] == want_notes
    assert all(p.offset == p.paddr and p.vaddr == 0 and p.filesz == p.memsz for p in notes)
    if spec.kernel:
        k = loads.pop(0)
        assert KernelText(k.paddr, k.vaddr, k.memsz) == spec.kernel
    ram = [r for r in spec.ranges if r.type is RangeType.RAM and (r.start, r.end) != (0, 0)]
    assert [MemRange(p.paddr, p.paddr + p.memsz - 1) for p in loads] == ram
    for p in loads:
        assert p.vaddr == (p.paddr + spec.page_offset) % 2**64
        is_src = spec.backup and (p.paddr, p.memsz) == (
            spec.backup.src_start,
            spec.backup.src_size,
        )
        assert p.offset == (spec.backup.start if is_src and spec.backup else p.paddr)
    # Everything after the program headers is zero padding.
    assert not any(data[64 + 56 * len(phdrs) :])


@settings(max_examples=200)
@given(specs(), st.integers(0, 64))
def test_builder_never_writes_past_capacity(spec: HeaderSpec, short: int) -> None:
    size = core.header_size(spec)
    cap = max(size - 1 - short, 0)
    buf = bytearray(b"\xa5" * (size + 16))
    view = memoryview(buf)[:cap]
    with pytest.raises(OSError) as e:
        core.build_header_into(spec, view)
    assert e.value.errno == errno.ENOSPC
    assert buf == bytearray(b"\xa5" * (size + 16))
    n = core.build_header_into(spec, memoryview(buf)[:size])
    assert n == size and buf[size:] == b"\xa5" * 16


@given(ranges())
def test_normalize_keeps_the_points_and_sorts_disjointly(rs: list[MemRange]) -> None:
    out = core.normalize_ranges(rs)
    assert points(out) == points(rs)
    assert all(a.end + 1 < b.start for a, b in itertools.pairwise(out))
    assert core.normalize_ranges(out) == out  # idempotent


@given(ranges(), ranges())
def test_subtract_is_set_difference(a: list[MemRange], b: list[MemRange]) -> None:
    out = core.subtract_ranges(a, b)
    assert points(out) == points(a) - points(b)
    assert core.normalize_ranges(out) == out


def exclude_model(rs: list[MemRange], start: int, end: int) -> list[MemRange]:
    # kexec-tools crashdump-x86.c exclude_region(), transcribed as a model,
    # u64 wrap-around included (trimming a range the region overhangs).
    out = list(rs)
    w = 2**64
    split = None
    for i, r in enumerate(out):
        if start < r.end and end > r.start:
            if start != r.start and end != r.end:
                out[i] = MemRange(r.start, (start - 1) % w, r.type)
                split = (i + 1, MemRange((end + 1) % w, r.end, RangeType.RAM))
            elif start != r.start:
                out[i] = MemRange(r.start, (start - 1) % w, r.type)
            else:
                out[i] = MemRange((end + 1) % w, r.end, r.type)
    if split:
        out.insert(*split)
    return out


@given(ranges(), st.integers(0, 200), st.integers(0, 50))
def test_exclude_matches_kexec_tools(rs: list[MemRange], start: int, length: int) -> None:
    assert core.exclude_range(rs, start, start + length) == exclude_model(
        rs, start, start + length
    )


def test_exclude_respects_the_cap() -> None:
    with pytest.raises(OSError) as e:
        core.exclude_range([MemRange(0, 100)], 10, 20, cap=1)
    assert e.value.errno == errno.ENOSPC


_SHA_SCRIPT = """
import hashlib, sys
from kexecd.core import Sha256
data = sys.stdin.buffer.read()
cuts = [0, 1, 63, 64, 65, 200, 4096, len(data)]
s = Sha256()
for a, b in zip(cuts, cuts[1:]):
    s.update(data[min(a, len(data)):min(b, len(data))])
    s = Sha256(s.state())
print(s.digest() == hashlib.sha256(data).digest())
"""


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=9000))
def test_sha256_matches_hashlib_in_pieces(data: bytes) -> None:
    # The whole blocks take SHA-NI where the CPU has it (csrc/sha256.c).
    h = core.Sha256()
    for piece in (data[:1], data[1:70], data[70:4097], data[4097:]):
        h.update(piece)
    assert h.digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("portable", [False, True])
def test_sha256_both_ways_match_hashlib(portable: bool) -> None:
    data = random.Random(7).randbytes(300_000)
    env = dict(os.environ)
    env.pop("KEXECD_SHA256_PORTABLE", None)
    if portable:
        env["KEXECD_SHA256_PORTABLE"] = "1"
    p = subprocess.run(
        [sys.executable, "-c", _SHA_SCRIPT], input=data, capture_output=True, env=env, check=True
    )
    assert p.stdout.strip() == b"True"
