# SPDX-License-Identifier: GPL-2.0-or-later
"""``make captures`` re-creates what tests/data holds.

Bytes differ from run to run (KASLR moves the kernel and the crashkernel=
reservation; the RNG seed segment and timestamps change), so this compares
what must not: the shape of every load and what each header lists.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.vm.captures import DATA, make_captures

pytestmark = pytest.mark.vm


def _shape(capture: Path) -> dict[str, Any]:
    m = json.loads((capture / "load" / "manifest.json").read_text())
    header = None
    for seg in m["segments"]:
        data = (capture / "load" / seg["file"]).read_bytes() if seg["file"] else b""
        if data[:4] == b"\x7fELF":
            header = data
    assert header is not None
    (phoff,) = struct.unpack_from("<Q", header, 32)
    (phnum,) = struct.unpack_from("<H", header, 56)
    # (p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align)
    ph = [struct.unpack_from("<IIQQQQQQ", header, phoff + 56 * i) for i in range(phnum)]
    ram = [(p[4], p[4] + p[6]) for p in ph if p[0] == 1 and p[3] < 0xFFFFFFFF80000000]
    # KASLR moves the kernel and with it where crashkernel= is reserved, so
    # compare RAM with the crash kernel's reservation put back.
    iomem = (capture / "root" / "proc" / "iomem").read_text()
    crash = re.search(r"^\s*([0-9a-f]+)-([0-9a-f]+) : Crash kernel$", iomem, re.M)
    assert crash is not None
    lo, hi = int(crash.group(1), 16), int(crash.group(2), 16) + 1
    merged: list[tuple[int, int]] = []
    for s, e in sorted([*ram, (lo, hi)]):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return {
        # The kernel's and the initramfs's sizes are the test bed's (a module
        # more, a Debian kernel update), not kexec-tools': only their place
        # in the list counts.
        "segments": [
            (s["memsz"] if s["file"] or s["zero"] else None, s["file"] is not None)
            for s in m["segments"]
        ],
        "digest_found": m["purgatory_digest_offset"] is not None,
        "notes": sum(1 for p in ph if p[0] == 4),
        "ram": merged,
        "crash_kernel_size": hi - lo,
        "scenario": json.loads((capture / "scenario.json").read_text()),
    }


def test_make_captures_recreates_tests_data(tmp_path: Path) -> None:
    made = make_captures(tmp_path)
    assert [p.name for p in made] == ["boot", "hotadd", "hotremove"]
    for path in made:
        assert _shape(path) == _shape(DATA / path.name), path.name
