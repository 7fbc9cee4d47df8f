# SPDX-License-Identifier: GPL-2.0-or-later
"""A tiny ELF64 core-file writer for tests, independent of the code under test.

Builds headers the way the ELF specification lays them out, with ``struct``
only, so tests can make inputs (and expected outputs) without trusting
kexecd's own builder or parser.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PT_LOAD = 1
PT_NOTE = 4
ET_CORE = 4
EM_X86_64 = 62


@dataclass(frozen=True)
class Ph:
    type: int
    offset: int = 0
    vaddr: int = 0
    paddr: int = 0
    filesz: int = 0
    memsz: int = 0
    flags: int = 0
    align: int = 0


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    """One ELF note, name and descriptor padded to 4 bytes."""
    name0 = name + b"\0"

    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    return struct.pack("<III", len(name0), len(desc), ntype) + pad(name0) + pad(desc)


def core(phdrs: list[Ph], tail: bytes = b"", size: int | None = None) -> bytes:
    """An ELF64 little-endian ET_CORE file: header, program headers, ``tail``."""
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = ident + struct.pack(
        "<HHIQQQIHHHHHH", ET_CORE, EM_X86_64, 1, 0, 64, 0, 0, 64, 56, len(phdrs), 0, 0, 0
    )
    body = b"".join(
        struct.pack(
            "<IIQQQQQQ", p.type, p.flags, p.offset, p.vaddr, p.paddr, p.filesz, p.memsz, p.align
        )
        for p in phdrs
    )
    out = ehdr + body + tail
    if size is not None:
        out += bytes(size - len(out))
    return out
