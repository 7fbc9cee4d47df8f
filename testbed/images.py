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
import struct
from collections.abc import Sequence
from pathlib import Path

from kexecd.loads import LoadCapture, Segment
from testbed.capture import Capture

# The captures (tests/data): the repository's ground truth.
DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


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


# The boot parameters segment of the 6.1 captures (boot, hotadd, hotremove;
# kexec-tools 2.0.20 on 5.10 puts it at 2, with no setup_data segment before
# it), and where in boot_params the command line's address is
# (Documentation/x86/zero-page.rst: cmd_line_ptr).
SETUP = 3
CMD_LINE_PTR = 0x228
NO_MEMHOTPLUG = b"acpi_no_memhotplug"


def without_word(setup: bytes, mem: int, word: bytes, spare: int = 64) -> bytes:
    """``setup`` as kexec-tools would have built it from a command line without
    ``word``: the line, its NUL, then ``spare`` zero bytes (64:
    PURGATORY_CMDLINE_SIZE in kexec/arch/x86_64/kexec-bzImage64.c), nothing after."""
    off = struct.unpack_from("<I", setup, CMD_LINE_PTR)[0] - mem
    line = setup[off : setup.index(b"\0", off)]
    assert (b" " + word + b" ") in line
    line = line.replace(b" " + word + b" ", b" ", 1)
    return setup[:off] + line + b"\0" + bytes(spare)


def image(
    name: str = "boot",
    *,
    header_hashed: bool = True,
    strip: bytes | None = None,
    spare: int = 64,
    bzimage: bool = False,
) -> LoadCapture:
    """The capture's load with whole segments and a matching purgatory digest.

    :param strip: a word to take out of the command line (the captures'
        have acpi_no_memhotplug; kdump-tools' default does not).
    :param spare: the zero bytes after that line's NUL.
    :param bzimage: the kernel segment (the captures keep only its hash; its
        bytes here are random) begins its compressed payload where the boot
        parameters' setup header says, as a real bzImage's does, so that
        kexecd can tell it (:mod:`kexecd.arch.x86_64.bzimage`).
    """
    cap = Capture(DATA / name)
    m = cap.manifest
    header = cap.header_segment["index"]
    segs = []
    for rec in m["segments"]:
        if rec["file"]:
            buf = cap.segment(rec["index"])
        elif rec["zero"]:
            buf = bytes(rec["bufsz"])
        else:
            buf = random.Random(rec["index"]).randbytes(rec["bufsz"])
        if strip is not None and b"elfcorehdr=" in buf:
            buf = without_word(buf, rec["mem"], strip, spare)
        segs.append(Segment(buf, rec["mem"], rec["memsz"]))
    if bzimage:
        segs = _with_payload(segs)
    purg = m["purgatory_segment"]
    digest = kexec_tools_digest(segs, purg, () if header_hashed else (header,))
    off = m["purgatory_digest_offset"]
    pbuf = bytearray(segs[purg].buf)
    pbuf[off : off + 32] = digest
    segs[purg] = Segment(bytes(pbuf), segs[purg].mem, segs[purg].memsz)
    return LoadCapture.one_load(m["entry"], m["flags"], segs, _program(m.get("kexec_tools")))


def kernel_index(segs: list[Segment]) -> int:
    """The x86 kernel segment: memsz the setup header's init_size in pages
    (kexec-tools kexec-bzImage64.c), read here on its own."""
    setup = next(s.buf for s in segs if bytes(s.buf[0x202:0x206]) == b"HdrS")
    extent = -(-struct.unpack_from("<I", setup, 0x260)[0] // 4096) * 4096
    (index,) = [i for i, s in enumerate(segs) if s.memsz == extent]
    return index


def _with_payload(segs: list[Segment]) -> list[Segment]:
    setup = next(s.buf for s in segs if bytes(s.buf[0x202:0x206]) == b"HdrS")
    at = struct.unpack_from("<I", setup, 0x248)[0]
    k = kernel_index(segs)
    buf = bytearray(segs[k].buf)
    buf[at : at + 6] = b"\xfd7zXZ\0"  # xz's magic, as Debian's 5.10 and 6.1 have
    segs[k] = Segment(bytes(buf), segs[k].mem, segs[k].memsz)
    return segs


def _program(version: str | None) -> bytes | None:
    # What kexecd reads of the program that loaded: its version string.
    return None if version is None else b"\0kexec-tools " + version.encode() + b"\0"


def loaded_root(name: str, tmp: Path, *, memory_hotplug: bool = False) -> Path:
    """A fake root from a capture, with a crash kernel loaded.

    :param memory_hotplug: with ACPI memory hotplug (the captures' roots do
        not keep /sys/firmware/acpi, which the guest has).
    """
    dest = tmp / f"root-{name}"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(DATA / name / "root", dest)
    (dest / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    if memory_hotplug:
        acpi = dest / "sys/firmware/acpi/hotplug/memory"
        acpi.mkdir(parents=True)
        (acpi / "enabled").write_text("1\n")
    return dest
