# SPDX-License-Identifier: GPL-2.0-or-later
"""Whole crash images for tests, made from a capture.

The captures keep only the small segments (header, purgatory, boot
parameters, setup data). Here the kernel and initrd get deterministic
stand-in bytes of their recorded sizes, and the real purgatory gets the digest
of that segment set written where kexec-tools put the real one.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

from kexecd.core import KexecCall, LoadCapture, Segment
from testbed.capture import Capture
from tests.unit.data import DATA


def kexec_tools_digest(
    segments: Sequence[Segment], purgatory: int, skip: Sequence[int] = ()
) -> bytes:
    """SHA-256 as kexec-tools update_purgatory() computes it, with hashlib."""
    h = hashlib.sha256()
    for i, s in enumerate(segments):
        if i == purgatory or i in skip:
            continue
        h.update(s.buf)
        h.update(bytes(s.memsz - len(s.buf)))
    return h.digest()


def image(name: str = "boot", *, header_hashed: bool = True) -> LoadCapture:
    """The capture's load with whole segments and a matching purgatory digest."""
    cap = Capture(DATA / name)
    m = cap.manifest
    segs = []
    for rec in m["segments"]:
        if rec["file"]:
            buf = cap.segment(rec["index"])
        elif rec["zero"]:
            buf = bytes(rec["bufsz"])
        else:
            buf = random.Random(rec["index"]).randbytes(rec["bufsz"])
        segs.append(Segment(buf, rec["mem"], rec["memsz"]))
    purg, header = m["purgatory_segment"], 5
    assert segs[header].buf[:4] == b"\x7fELF"
    digest = kexec_tools_digest(segs, purg, () if header_hashed else (header,))
    off = m["purgatory_digest_offset"]
    pbuf = bytearray(segs[purg].buf)
    pbuf[off : off + 32] = digest
    segs[purg] = Segment(bytes(pbuf), segs[purg].mem, segs[purg].memsz)
    return LoadCapture(
        call=KexecCall.KEXEC_LOAD,
        result=0,
        entry=m["entry"],
        flags=m["flags"],
        segments=tuple(segs),
        cmdline=None,
        calls=1,
        exit_code=0,
        crash_loads=1,
        unloads=0,
        reboot_loads=0,
    )


def loaded_root(name: str, tmp: Path) -> Path:
    """A fake root from a capture, with a crash kernel loaded."""
    dest = tmp / f"root-{name}"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(DATA / name / "root", dest)
    (dest / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    return dest
