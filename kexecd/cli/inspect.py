# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd inspect``: show an ELF core header, or the one kexecd would build."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_CORE_NOTE_N_TYPE
from elftools.elf.segments import NoteSegment

from kexecd.errors import KexecdError, SnapshotError
from kexecd.files import write_atomic
from kexecd.image import elfcore
from kexecd.image.elfcore import CoreHeader
from kexecd.model import human
from kexecd.system.kexectools import rules_for
from kexecd.system.root import Root
from kexecd.system.state import read_system

__all__ = ["Options", "describe", "render", "run"]

_MACHINES = {62: "x86_64", 183: "aarch64", 21: "ppc64", 22: "s390"}
# include/uapi/linux/elf.h
_NOTE_TYPES = {1: "NT_PRSTATUS", 2: "NT_PRFPREG", 3: "NT_PRPSINFO", 0: "VMCOREINFO"}
# pyelftools names a core file's note types; the number is what is shown.
_CORE_NOTE_TYPES = {k: v for k, v in ENUM_CORE_NOTE_N_TYPE.items() if isinstance(v, int)}


def _file_notes(data: bytes, header: CoreHeader) -> list[dict[str, Any]]:
    # The notes themselves, where the file holds them (a vmcore's head does; an
    # elfcorehdr segment points into memory instead). pyelftools walks them.
    out: list[dict[str, Any]] = []
    try:
        elf = ELFFile(io.BytesIO(data))
        for seg in elf.iter_segments():
            h = seg.header
            if not isinstance(seg, NoteSegment):
                continue
            if h.p_offset + h.p_filesz > len(data) or h.p_offset < header.used:
                continue
            for note in seg.iter_notes():
                if max(note["n_namesz"], note["n_descsz"]) > h.p_filesz:
                    break  # a size past its segment: the rest cannot be trusted
                raw = note["n_type"]
                ntype: int | str = _CORE_NOTE_TYPES.get(raw, raw) if isinstance(raw, str) else raw
                name = str(note["n_name"])
                label = _NOTE_TYPES.get(ntype, str(ntype)) if isinstance(ntype, int) else ntype
                if name == "VMCOREINFO":
                    label = "VMCOREINFO"
                out.append({"name": name, "type": ntype, "label": label, "size": note["n_descsz"]})
    except (ELFError, ConstructError, ValueError, UnicodeDecodeError):
        pass  # notes pyelftools cannot walk are not shown; the program headers still are
    return out


def describe(data: bytes, header: CoreHeader) -> dict[str, Any]:
    """The header as plain data (what ``--json`` prints).

    In kexec-tools' layout the PT_NOTEs are the CPUs' crash_notes and then
    vmcoreinfo; the last one is taken as vmcoreinfo when its size differs from
    the first's.
    """
    in_file = _file_notes(data, header)
    # A vmcore holds its notes, merged into one PT_NOTE, and its PT_LOADs'
    # offsets are file offsets; an elfcorehdr points at physical memory.
    kind = "vmcore" if in_file else "elfcorehdr"
    cpu, vmcoreinfo = header.split_notes() if kind == "elfcorehdr" else ([], None)
    text = header.kernel_text
    backup = header.backup if kind == "elfcorehdr" else None
    return {
        "kind": kind,
        "machine": _MACHINES.get(header.machine, str(header.machine)),
        "phnum": len(header.phdrs),
        "bytes": header.size,
        "bytes_used": header.used,
        "cpu_notes": [{"paddr": p.paddr, "size": p.memsz} for p in cpu],
        "vmcoreinfo": {"paddr": vmcoreinfo.paddr, "size": vmcoreinfo.memsz}
        if vmcoreinfo
        else None,
        "notes_in_file": in_file,
        "kernel_text": {"paddr": text.paddr, "vaddr": text.vaddr, "size": text.memsz}
        if text
        else None,
        "page_offset": header.page_offset,
        "ram": [
            {
                "start": p.paddr,
                "end": p.paddr + p.memsz - 1,
                "size": p.memsz,
                "offset": p.offset,
                "vaddr": p.vaddr,
            }
            for p in header.ram
        ],
        "ram_total": header.ram_bytes,
        "backup": {"src": backup.src_start, "size": backup.src_size, "copy": backup.start}
        if backup
        else None,
    }


def render(d: dict[str, Any], title: str) -> str:
    """The human form of :func:`describe`'s output."""
    kind = "vmcore" if d["kind"] == "vmcore" else "ELF64 core header"
    lines = [
        f"{title}: {kind}, {d['machine']}, {d['phnum']} program headers "
        f"({d['bytes_used']} of {d['bytes']} bytes)"
    ]
    if d["kind"] == "elfcorehdr":
        lines.append(f"CPU notes ({len(d['cpu_notes'])}):")
        for i, n in enumerate(d["cpu_notes"]):
            lines.append(f"  {i:>3}  {n['paddr']:#014x}  {human(n['size'])}")
    if d["vmcoreinfo"]:
        v = d["vmcoreinfo"]
        lines.append(f"vmcoreinfo      {v['paddr']:#014x}  {human(v['size'])}")
    if d["notes_in_file"]:
        counts: dict[str, int] = {}
        for n in d["notes_in_file"]:
            counts[n["label"]] = counts.get(n["label"], 0) + 1
        lines.append("notes in file   " + ", ".join(f"{v} x {k}" for k, v in counts.items()))
    if d["kernel_text"]:
        t = d["kernel_text"]
        lines.append(
            f"kernel text     {t['paddr']:#014x}  {human(t['size'])}  (virtual {t['vaddr']:#x})"
        )
    if d["page_offset"] is not None:
        lines.append(f"page_offset     {d['page_offset']:#x}")
    lines.append(f"RAM ({len(d['ram'])} ranges, {human(d['ram_total'])}):")
    for r in d["ram"]:
        copy = d["kind"] == "elfcorehdr" and r["offset"] != r["start"]
        extra = f"  data at {r['offset']:#x} (backup copy)" if copy else ""
        lines.append(f"  {r['start']:#014x}-{r['end']:#014x}  {human(r['size']):>9}{extra}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Options:
    """What ``kexecd inspect`` shows, as given on the command line.

    Exactly one source: ``file`` (a header or a vmcore head), ``system``
    (the header kexecd would build for the system under ``root``), or
    ``loaded`` (the state directory whose loaded header to show, with where
    it lives: a moved header is not where kexec-tools put it).

    :ivar template: with ``system``: the header loaded earlier, to take the
        kernel text, vmcoreinfo, backup remap and page_offset from.
    :ivar backup_start: with ``system`` and no template: the backup segment's address.
    :ivar kexec_tools: with ``system``: build by this kexec-tools version's rules.
    :ivar output: with ``system``: write the raw header there, show nothing.
    """

    file: str | None = None
    system: bool = False
    loaded: Path | None = None
    root: str = "/"
    template: str | None = None
    backup_start: int | None = None
    kexec_tools: str | None = None
    output: str | None = None
    as_json: bool = False


@dataclass(frozen=True)
class _Shown:
    data: bytes
    header: CoreHeader
    title: str
    place: dict[str, int] | None = None


def run(opts: Options) -> int:
    """Carry out ``kexecd inspect``; return the exit code (2 on bad input)."""
    shown: _Shown | None
    try:
        if opts.loaded is not None:
            shown = _loaded(opts.loaded)
        elif opts.system:
            shown = _system(opts)
        else:
            assert opts.file is not None
            data, header = elfcore.read_header(opts.file)
            shown = _Shown(data, header, opts.file)
    except KexecdError as e:
        print(f"kexecd inspect: {e}", file=sys.stderr)
        return 2
    if shown is None:  # written to --output
        return 0
    d = describe(shown.data, shown.header)
    if shown.place is not None:
        d["place"] = shown.place
    if opts.as_json:
        print(json.dumps(d, indent=2))
    else:
        print(render(d, shown.title))
    return 0


def _loaded(state_dir: Path) -> _Shown:
    from kexecd.image.record import LOADED_HEADER
    from kexecd.image.store import Store

    snap = Store(state_dir).open()
    if snap.header is None:
        raise SnapshotError(
            f"{snap.path}: the loaded image has no ELF core header kexecd can see "
            "(kexec_file_load?)"
        )
    data = snap.record.header()
    header = elfcore.parse(data, str(snap.path / LOADED_HEADER))
    seg = snap.segments[snap.header]
    place = {
        "segment": snap.header,
        "address": seg.mem,
        "memsz": seg.memsz,
        "capacity": snap.header_capacity or 0,
    }
    title = (
        f"loaded header ({snap.path}): segment {snap.header} at {seg.mem:#x}, "
        f"{seg.memsz} bytes, room for {place['capacity']} program headers"
    )
    return _Shown(data, header, title, place)


def _system(opts: Options) -> _Shown | None:
    # The header kexecd would build now; None once written to opts.output.
    state = read_system(Root(opts.root), rules=rules_for(opts.kexec_tools))
    if opts.template:
        _, tmpl = elfcore.read_header(opts.template)
        spec = elfcore.spec_from_template(tmpl, state)
    else:
        spec = elfcore.spec_fresh(state, opts.backup_start)
    data = elfcore.build(spec)
    if opts.output:
        write_atomic(Path(opts.output), data, durable=False)
        return None
    header = elfcore.parse(data, "built header")
    title = f"system under {opts.root}" + (f" (template {opts.template})" if opts.template else "")
    return _Shown(data, header, title)
