# SPDX-License-Identifier: GPL-2.0-or-later
"""``manifest.json``: the snapshot's layout, checked as untrusted input.

The manifest says what kexecd hands to ``kexec_load`` as root, and which
command it runs again on a full reload, so nothing in it is believed until it
is checked: the types of every field, segments that the kernel could accept
(at most ``KEXEC_SEGMENT_MAX``, sorted, not overlapping, as kexec-tools
passes them; the kernel checks alignment itself in kernel/kexec_core.c
sanity_check_segment_list()), the entry inside purgatory,
purgatory's digest and regions inside purgatory's buffer, a SHA-256 state
that the C core accepts, each segment's file named exactly as
:func:`segment_file` names it (never a path: no ``/``, no ``..``). A
manifest that fails any check is refused whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from kexecd.core import Sha256
from kexecd.errors import SnapshotError
from kexecd.image.purgatory import DIGEST_SIZE, SHA256_REGIONS, DigestLocation
from kexecd.model import shell_words
from kexecd.system.kexectools import is_version

__all__ = [
    "FORMAT",
    "Manifest",
    "Program",
    "SegmentInfo",
    "Source",
    "decode",
    "encode",
    "segment_file",
]

FORMAT = 1
# include/uapi/linux/kexec.h KEXEC_SEGMENT_MAX.
MAX_SEGMENTS = 16
U64 = 1 << 64
MAX_ARGV = 4096
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Source:
    """The distro's record of the command, for an adopted crash kernel.

    :ivar path: the file the command was read from (kdump-tools' ``kexec_cmd``).
    :ivar command: the command line in it.
    :ivar signature: the file's inode, size and mtime when it was read: the
        distro rewrites it on each load, so a new signature means a new load.
    """

    path: str
    command: str
    sha256: str
    signature: tuple[int, int, int]

    @property
    def words(self) -> list[str]:
        """The command's words as its shell splits them (for people)."""
        return shell_words(self.command)


@dataclass(frozen=True)
class Program:
    """The kexec-tools binary that made a load, as the tracer read it.

    A full reload runs this binary again, and nothing else
    (:mod:`kexecd.image.rerun`): the content's SHA-256 is its identity (an
    upgrade or a reinstall gives a new inode; only new bytes are a new
    program), the path is where the command's first word led to it.

    :ivar path: the absolute path the command's first word resolved to.
    :ivar size: the binary's size in bytes.
    :ivar sha256: the SHA-256 of the bytes that ran (``/proc/PID/exe`` at the load).
    """

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class SegmentInfo:
    """One segment as the manifest records it (its bytes are in ``seg-NN.bin``)."""

    mem: int
    memsz: int
    bufsz: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The checked content of ``manifest.json``."""

    argv: tuple[str, ...]
    created: str
    file_load: bool
    entry: int
    flags: int
    cmdline: str | None
    segments: tuple[SegmentInfo, ...]
    header: int | None
    purgatory: int | None
    digest: DigestLocation | None
    source: Source | None
    # The kexec-tools version that made the load (its header rules), if known:
    # written since kexecd follows it; older manifests lack it.
    kexec_tools: str | None = None
    # The kexec binary that made the load (written since issue 26; older
    # manifests lack it, and a full reload of theirs is refused).
    program: Program | None = None


def encode(m: Manifest) -> bytes:
    """The JSON form (format 1: what kexecd 0.1 wrote, plus ``source``, the
    digest's ``setup`` and ``setup_state``, and ``kexec_tools``)."""
    d = m.digest
    data = {
        "format": FORMAT,
        "argv": list(m.argv),
        "created": m.created,
        "syscall": "kexec_file_load" if m.file_load else "kexec_load",
        "entry": m.entry,
        "flags": m.flags,
        "cmdline": m.cmdline,
        "segments": [
            {**asdict(s), "index": i, "file": segment_file(i)} for i, s in enumerate(m.segments)
        ],
        "header": m.header,
        "purgatory": m.purgatory,
        "source": None if m.source is None else asdict(m.source),
        "kexec_tools": m.kexec_tools,
        "program": None if m.program is None else asdict(m.program),
        "digest": None
        if d is None
        else {
            "offset": d.digest_offset,
            "regions_offset": d.regions_offset,
            "header_hashed": d.header_hashed,
            "prefix_state": d.prefix_state.hex() if d.prefix_state else None,
            "setup": d.setup,
            "setup_state": d.setup_state.hex() if d.setup_state else None,
        },
    }
    return (json.dumps(data, indent=2) + "\n").encode()


def segment_file(index: int) -> str:
    """The name of a segment's file in the snapshot directory."""
    return f"seg-{index:02d}.bin"


class _Bad(Exception):
    pass


def _int(v: object, what: str, lo: int = 0, hi: int = U64 - 1) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _Bad(f"{what} must be an integer in [{lo}, {hi:#x}], not {v!r:.40}")
    return v


def _str(v: object, what: str, limit: int = 65536) -> str:
    if not isinstance(v, str) or len(v) > limit:
        raise _Bad(f"{what} must be a string (at most {limit} characters)")
    return v


def _index(v: object, what: str, n: int) -> int | None:
    return None if v is None else _int(v, what, 0, n - 1)


def _segments(v: object) -> tuple[SegmentInfo, ...]:
    if not isinstance(v, list) or len(v) > MAX_SEGMENTS:
        raise _Bad(f"segments must be a list of at most {MAX_SEGMENTS}")
    out: list[SegmentInfo] = []
    for i, s in enumerate(v):
        if not isinstance(s, dict):
            raise _Bad(f"segment {i} is not an object")
        mem = _int(s.get("mem"), f"segment {i} mem")
        memsz = _int(s.get("memsz"), f"segment {i} memsz", 0, U64 - 1 - mem)
        bufsz = _int(s.get("bufsz"), f"segment {i} bufsz", 0, memsz)
        _segment_name(s.get("file"), s.get("index"), i)
        sha = _str(s.get("sha256"), f"segment {i} sha256")
        if not _HEX64.match(sha):
            raise _Bad(f"segment {i} sha256 is not a SHA-256 in hex")
        # In any order (a moved header keeps its index, so purgatory's
        # regions keep theirs), never overlapping: the kernel's
        # sanity_check_segment_list() (kernel/kexec_core.c) asks no more.
        clash = next(
            (j for j, o in enumerate(out) if mem < o.mem + o.memsz and o.mem < mem + memsz), None
        )
        if clash is not None:
            raise _Bad(f"segment {i} at {mem:#x} overlaps segment {clash}")
        out.append(SegmentInfo(mem, memsz, bufsz, sha))
    return tuple(out)


def _segment_name(name: object, index: object, i: int) -> None:
    # The segment's file is named as kexecd names it (segment_file), and by
    # nothing else: no '/', no '..', no absolute path, no other index.
    if index != i or isinstance(index, bool):
        raise _Bad(f"segment {i} index must be {i}, not {index!r:.40}")
    if name != segment_file(i):
        raise _Bad(
            f"segment {i} file must be {segment_file(i)!r}, a file kexecd wrote in the "
            f"snapshot directory, not {name!r:.80}"
        )


def _state(v: object, what: str) -> bytes | None:
    if v is None:
        return None
    try:
        state = bytes.fromhex(_str(v, what, 1024))
        Sha256(state)
    except ValueError as e:
        raise _Bad(f"{what} is not a SHA-256 state ({e})") from None
    return state


def _digest(
    v: object, segments: tuple[SegmentInfo, ...], purgatory: int | None
) -> DigestLocation | None:
    if v is None:
        return None
    if not isinstance(v, dict) or purgatory is None:
        raise _Bad("digest must be an object, and needs a purgatory segment")
    size = segments[purgatory].bufsz
    offset = _int(v.get("offset"), "digest offset", 0, max(0, size - DIGEST_SIZE))
    regions = v.get("regions_offset")
    if regions is not None:
        regions = _int(regions, "digest regions_offset", 0, max(0, size - 16 * SHA256_REGIONS))
    hashed = v.get("header_hashed")
    if not isinstance(hashed, bool):
        raise _Bad("digest header_hashed must be true or false")
    state = _state(v.get("prefix_state"), "digest prefix_state")
    if hashed and state is None:
        raise _Bad("digest prefix_state is missing for a hashed header")
    # Written since the command line can be amended; older manifests lack both.
    setup = _index(v.get("setup"), "digest setup", len(segments))
    setup_state = _state(v.get("setup_state"), "digest setup_state")
    if setup == purgatory:
        raise _Bad("digest setup is purgatory itself")
    if (setup is None) != (setup_state is None):
        raise _Bad("digest setup and setup_state go together")
    return DigestLocation(offset, regions, hashed, state, setup, setup_state)


def _source(v: object) -> Source | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise _Bad("source must be an object")
    sig = v.get("signature")
    if not isinstance(sig, list) or len(sig) != 3:
        raise _Bad("source signature must be [inode, size, mtime]")
    a, b, c = (_int(x, "source signature") for x in sig)
    return Source(
        _str(v.get("path"), "source path", 4096),
        _str(v.get("command"), "source command"),
        _str(v.get("sha256"), "source sha256", 64),
        (a, b, c),
    )


MAX_PROGRAM = 64 << 20  # kexec-tools' binary is 200 KB


def _program(v: object) -> Program | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise _Bad("program must be an object or null")
    path = _str(v.get("path"), "program path", 4096)
    if not path.startswith("/") or "\0" in path or "/../" in f"{path}/":
        raise _Bad(f"program path must be an absolute path, not {path!r:.80}")
    sha = _str(v.get("sha256"), "program sha256", 64)
    if not _HEX64.match(sha):
        raise _Bad("program sha256 is not a SHA-256 in hex")
    return Program(path, _int(v.get("size"), "program size", 1, MAX_PROGRAM), sha)


def _version(v: object) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not is_version(v):
        raise _Bad(f"kexec_tools must be a version like '2.0.25' or null, not {v!r:.40}")
    return v


def decode(data: bytes, name: str) -> Manifest:
    """Parse and check ``manifest.json``.

    :raises SnapshotError: not JSON, another format, or any field out of
        place; the message names the file and the field.
    """
    fix = "run 'kexecd load' (or 'kexecd adopt') again"
    try:
        m = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise SnapshotError(f"{name}: unreadable (not JSON: {str(e)[:80]}); {fix}") from None
    try:
        if not isinstance(m, dict):
            raise _Bad("not a JSON object")
        if m.get("format") != FORMAT:
            raise _Bad(f"format {m.get('format')!r:.20}, not {FORMAT}")
        argv = m.get("argv")
        if (
            not isinstance(argv, list)
            or not 0 < len(argv) <= MAX_ARGV
            or not all(isinstance(a, str) and "\0" not in a for a in argv)
        ):
            raise _Bad("argv must be a non-empty list of strings")
        syscall = m.get("syscall")
        if syscall not in ("kexec_load", "kexec_file_load"):
            raise _Bad(f"syscall {syscall!r:.40} is neither kexec_load nor kexec_file_load")
        segments = _segments(m.get("segments"))
        header = _index(m.get("header"), "header", len(segments))
        purgatory = _index(m.get("purgatory"), "purgatory", len(segments))
        entry = _int(m.get("entry"), "entry")
        if purgatory is not None:
            p = segments[purgatory]
            if not p.mem <= entry < p.mem + p.memsz:
                raise _Bad(f"entry {entry:#x} is not inside purgatory (segment {purgatory})")
            if purgatory == header:
                raise _Bad("the header and purgatory are the same segment")
        cmdline = m.get("cmdline")
        return Manifest(
            argv=tuple(argv),
            created=_str(m.get("created"), "created", 64),
            file_load=syscall == "kexec_file_load",
            entry=entry,
            flags=_int(m.get("flags"), "flags"),
            cmdline=None if cmdline is None else _str(cmdline, "cmdline"),
            segments=segments,
            header=header,
            purgatory=purgatory,
            digest=_digest(m.get("digest"), segments, purgatory),
            source=_source(m.get("source")),
            kexec_tools=_version(m.get("kexec_tools")),
            program=_program(m.get("program")),
        )
    except _Bad as e:
        raise SnapshotError(f"{name}: malformed: {e}; {fix}") from None
