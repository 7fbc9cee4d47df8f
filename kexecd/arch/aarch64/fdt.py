# SPDX-License-Identifier: GPL-2.0-or-later
"""A bounded reader of the flattened device tree kexec-tools loads for an arm64 crash kernel.

The blob (Documentation/devicetree/booting-without-of.rst, the devicetree
specification's "Flattened Devicetree (DTB) Format") is a 40-byte header of
big-endian words (magic 0xd00dfeed, total size, the offsets of the structure
and strings blocks, version 17, their sizes), then the structure block: a
flat run of 4-byte-aligned tokens (BEGIN_NODE and its NUL-terminated name,
PROP with its length, the offset of its name in the strings block and its
value, END_NODE, NOP, END). Values are big-endian 32-bit cells.

kexec-tools ``fdt_pack()``s the blob it loads (kexec/dt-ops.c
dtb_set_property(), kexec/arch/arm64/kexec-arm64.c setup_2nd_dtb()), so no
property can grow; :func:`set_cells` rewrites cells of the same size in a copy.

The blob is untrusted (a snapshot's file): every offset and length is checked
against the blocks before it is used, the walk only moves forward (so it
ends), nodes nest at most :data:`MAX_DEPTH` deep, and anything else is a
:class:`~kexecd.errors.HeaderError` with a one-line message.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from kexecd.errors import HeaderError
from kexecd.loads import Buffer

__all__ = ["MAGIC", "MAX_DEPTH", "Property", "Tree", "cells_of", "read", "set_cells"]

MAGIC = 0xD00DFEED
HEADER_SIZE = 40  # version 17's ten words
# libfdt's FDT_MAX_DEPTH; real trees nest a handful of levels.
MAX_DEPTH = 64
# Documentation/arch/arm64/booting.rst: the DTB is at most 2 MiB (kexec-tools
# kexec-arm64.c arm64_load_other_segments() refuses a bigger one too).
MAX_SIZE = 2 << 20
_BEGIN_NODE, _END_NODE, _PROP, _NOP, _END = 1, 2, 3, 4, 9


@dataclass(frozen=True)
class Property:
    """Where a property's value is in the blob.

    :ivar offset: the value's first byte, from the start of the blob.
    :ivar length: the value's length in bytes.
    """

    offset: int
    length: int


@dataclass(frozen=True)
class Tree:
    """The properties of a blob, by node path and name.

    :ivar blob: the bytes read (``totalsize`` of them).
    :ivar nodes: each node's path (``/``, ``/chosen``) to its properties.
    """

    blob: bytes
    nodes: dict[str, dict[str, Property]]

    def find(self, path: str, name: str) -> Property | None:
        """The property ``name`` of the node at ``path``; ``None`` if either is missing."""
        return self.nodes.get(path, {}).get(name)

    def value(self, prop: Property) -> bytes:
        """The property's bytes."""
        return self.blob[prop.offset : prop.offset + prop.length]


def _u32(buf: bytes, at: int) -> int:
    value: int = struct.unpack_from(">I", buf, at)[0]
    return value


def _block(buf: bytes, what: str, offset: int, size: int) -> tuple[int, int]:
    if offset + size > len(buf) or offset < HEADER_SIZE:
        raise HeaderError(
            f"the device tree's {what} block ({size} bytes at {offset:#x}) is not inside "
            f"its {len(buf)} bytes"
        )
    return offset, offset + size


def _header(data: Buffer) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    head = bytes(data[:HEADER_SIZE])
    if len(head) < HEADER_SIZE or _u32(head, 0) != MAGIC:
        raise HeaderError("not a flattened device tree (no 0xd00dfeed header)")
    total, off_struct, off_strings, _, version, last_comp = struct.unpack_from(">6I", head, 4)
    size_strings, size_struct = struct.unpack_from(">II", head, 32)
    if version < 17 or last_comp > 17:
        raise HeaderError(
            f"a device tree of version {version} (compatible with {last_comp}): kexecd reads 17"
        )
    if not HEADER_SIZE <= total <= min(len(data), MAX_SIZE):
        raise HeaderError(
            f"the device tree says it is {total} bytes, its segment holds {len(data)} "
            f"(at most {MAX_SIZE})"
        )
    buf = bytes(data[:total])
    if off_struct % 4 or size_struct % 4:
        raise HeaderError("the device tree's structure block is not 4-byte aligned")
    structure = _block(buf, "structure", off_struct, size_struct)
    strings = _block(buf, "strings", off_strings, size_strings)
    return buf, structure, strings


def _string(buf: bytes, start: int, end: int, what: str) -> tuple[str, int]:
    # A NUL-terminated string in [start, end): it and the offset past its NUL.
    nul = buf.find(b"\0", start, end)
    if nul < 0:
        raise HeaderError(f"the device tree has a {what} that runs past its block")
    return buf[start:nul].decode("latin-1"), nul + 1


def _child(path: str, name: str) -> str:
    return "/" if not path else f"{path.rstrip('/')}/{name}"


def read(data: Buffer) -> Tree:
    """Read every node's properties.

    :raises HeaderError: not a version 17 device tree, a block or value out
        of bounds, an unknown token, nodes nested deeper than
        :data:`MAX_DEPTH`, unbalanced nodes, or a node or property twice.
    """
    buf, (at, end), (s_start, s_end) = _header(data)
    nodes: dict[str, dict[str, Property]] = {}
    stack: list[str] = []
    while True:
        if at + 4 > end:
            raise HeaderError("the device tree's structure block ends without an END token")
        token = _u32(buf, at)
        at += 4
        if token == _BEGIN_NODE:
            name, after = _string(buf, at, end, "node name")
            at = -(-after // 4) * 4
            path = _child(stack[-1] if stack else "", name)
            if len(stack) >= MAX_DEPTH or (not stack and name):
                raise HeaderError(f"the device tree node {path!r} is not a root or too deep")
            if path in nodes:
                raise HeaderError(f"the device tree has node {path!r} twice")
            nodes[path] = {}
            stack.append(path)
        elif token == _END_NODE:
            if not stack:
                raise HeaderError("the device tree ends a node it never began")
            stack.pop()
        elif token == _PROP:
            if not stack or at + 8 > end:
                raise HeaderError("the device tree has a property outside a node or cut short")
            length, name_off = struct.unpack_from(">II", buf, at)
            value = at + 8
            if value + length > end:
                raise HeaderError(
                    f"a device tree property of {length} bytes at {value:#x} runs past the "
                    "structure block"
                )
            if name_off >= s_end - s_start:
                raise HeaderError("a device tree property's name is outside the strings block")
            name, _ = _string(buf, s_start + name_off, s_end, "property name")
            props = nodes[stack[-1]]
            if name in props:
                raise HeaderError(f"the device tree node {stack[-1]!r} has {name!r} twice")
            props[name] = Property(value, length)
            at = -(-(value + length) // 4) * 4
        elif token == _END:
            if stack or not nodes:
                raise HeaderError("the device tree ends inside a node, or has no root")
            return Tree(buf, nodes)
        elif token != _NOP:
            raise HeaderError(f"the device tree has token {token:#x} at {at - 4:#x}")


def cells_of(data: bytes) -> tuple[int, ...]:
    """A value as big-endian 32-bit cells.

    :raises HeaderError: its length is not a whole number of cells.
    """
    if len(data) % 4:
        raise HeaderError(f"a device tree value of {len(data)} bytes is not whole cells")
    return struct.unpack(f">{len(data) // 4}I", data)


def set_cells(data: Buffer, offset: int, values: Sequence[int]) -> bytes:
    """A copy of ``data``, the same size, with ``values`` as big-endian cells at ``offset``.

    :raises HeaderError: they would not be inside ``data``, or a value is not a cell.
    """
    if offset < 0 or offset + 4 * len(values) > len(data):
        raise HeaderError(
            f"{len(values)} cells at {offset:#x} are not inside the device tree's "
            f"{len(data)} bytes"
        )
    if any(not 0 <= v < 1 << 32 for v in values):
        raise HeaderError("a device tree cell holds 32 bits")
    out = bytearray(data)
    out[offset : offset + 4 * len(values)] = struct.pack(f">{len(values)}I", *values)
    return bytes(out)
