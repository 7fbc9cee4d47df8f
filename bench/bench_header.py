# SPDX-License-Identifier: GPL-2.0-or-later
"""P3: building an ELF core header with 32,768 RAM ranges (kexec-tools' maximum).

kexecd's C core against a plain-Python ``struct`` builder of the same bytes,
measured in the same run. Prints each time (median of the rounds), the
ratios, and one summary line.

    .venv/bin/python -m bench.bench_header [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import time
from collections.abc import Callable

from kexecd import core
from kexecd.arch.x86_64 import X86_64
from kexecd.model import (
    Backup,
    HeaderSpec,
    KernelText,
    MemRange,
    Note,
    RangeType,
)

NR_RANGES = 32768
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")


def make_spec(nr_ranges: int = NR_RANGES) -> HeaderSpec:
    """A big machine: 64 CPUs and ``nr_ranges`` RAM ranges of 1 MiB, 2 MiB apart."""
    ranges = tuple(
        MemRange(0x1000 if i == 0 else i << 21, (i << 21) + (1 << 20) - 1)
        for i in range(nr_ranges)
    )
    return HeaderSpec(
        machine=X86_64.machine,
        nr_cpus_conf=64,
        cpu_notes=tuple(Note(0x7F000000 + i * 0x80000, 368) for i in range(64)),
        vmcoreinfo=Note(0x11E4000, 0x1024),
        kernel=KernelText(0x1000000, 0xFFFFFFFF81000000, 0x3000000),
        ranges=ranges,
        page_offset=0xFFFF888000000000,
        backup=Backup(0x1000, ranges[0].size, 0x7EF61000),
        align=1024,
    )


def python_build(spec: HeaderSpec) -> bytes:
    """The baseline: the same header with ``struct``, as a Python tool would write it."""
    nphdr = spec.nr_cpus_conf + (spec.vmcoreinfo is not None) + len(spec.ranges)
    nphdr += spec.kernel is not None
    size = -(-(64 + 56 * nphdr) // spec.align) * spec.align
    buf = bytearray(size)
    off = 64
    for n in [*spec.cpu_notes, *([spec.vmcoreinfo] if spec.vmcoreinfo else [])]:
        PHDR.pack_into(buf, off, 4, 0, n.addr, 0, n.addr, n.size, n.size, 0)
        off += 56
    if spec.kernel:
        k = spec.kernel
        PHDR.pack_into(buf, off, 1, 7, k.paddr, k.vaddr, k.paddr, k.size, k.size, 0)
        off += 56
    b = spec.backup
    for r in spec.ranges:
        if r.type is not RangeType.RAM or (r.start == 0 and r.end == 0):
            continue
        size_r = r.end - r.start + 1
        offset = b.start if b and (r.start, size_r) == (b.src_start, b.src_size) else r.start
        vaddr = (r.start + spec.page_offset) % 2**64
        PHDR.pack_into(buf, off, 1, 7, offset, vaddr, r.start, size_r, size_r, 0)
        off += 56
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    EHDR.pack_into(
        buf, 0, ident, 4, spec.machine, 1, 0, 64, 0, 0, 64, 56, (off - 64) // 56, 0, 0, 0
    )
    return bytes(buf)


def timeit(fn: Callable[[], object], rounds: int) -> float:
    """Median seconds of ``rounds`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)

    spec = make_spec()
    prepared = core.PreparedSpec(spec)
    buf = bytearray(prepared.size)
    expected = python_build(spec)
    if core.build_header(spec) != expected:
        print("the C core and the Python builder disagree", file=sys.stderr)
        return 1

    t_py = timeit(lambda: python_build(spec), args.rounds)
    t_c = timeit(lambda: prepared.build_into(buf), args.rounds)
    t_c_all = timeit(lambda: core.build_header(spec), args.rounds)
    ms = 1000.0
    print(
        f"P3 header build, {NR_RANGES} RAM ranges + 64 CPUs, {len(expected)} bytes, "
        f"median of {args.rounds}"
    )
    print(f"  python struct builder (baseline)   {t_py * ms:8.3f} ms")
    print(f"  C core, prepared spec              {t_c * ms:8.3f} ms   {t_py / t_c:6.1f}x")
    print(f"  C core, from Python objects        {t_c_all * ms:8.3f} ms   {t_py / t_c_all:6.1f}x")
    ok = t_c * ms <= 5.0 and t_py / t_c >= 10.0
    print(
        f"SUMMARY P3 header-build: kexecd {t_c * ms:.3f} ms, python {t_py * ms:.3f} ms, "
        f"ratio {t_py / t_c:.1f}x (target <= 5 ms and >= 10x: {'met' if ok else 'MISSED'}); "
        f"with the conversion from Python objects {t_c_all * ms:.3f} ms, {t_py / t_c_all:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
