# SPDX-License-Identifier: GPL-2.0-or-later
"""Fuzz targets for every Python parser of untrusted input.

Each target takes the fuzz input as bytes, lays it out as the files the
parser reads (in a scratch directory: a fake root, a state directory) and
runs the parser, then what kexecd does next with its result (build a header
from it, show it). The contract: only a :class:`KexecdError` may escape; any
other exception is a finding. ``tests/fuzz/run.py`` runs them under atheris;
the unit tier runs each on its seeds.

Inputs that stand for several files are split on NUL bytes, one field per
file, in the order of the target's ``files``; a missing field, or one that is
the single byte ``0xff``, is a missing file. The last field takes the rest of
the input, NULs and all (/proc/kcore, a kexec_cmd line).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from kexecd import core
from kexecd.arch.x86_64 import bootparams
from kexecd.cli import inspect
from kexecd.errors import KexecdError
from kexecd.image import cmdline, elfcore, loader
from kexecd.image.store import MANIFEST, SNAPSHOT, open_snapshot
from kexecd.loads import Segment
from kexecd.service import metrics, statefile
from kexecd.system import cpus, iomem, kdumptools, kernel, packages
from kexecd.system.root import Root
from kexecd.system.state import SystemState, read_system
from testbed.images import NO_MEMHOTPLUG, SETUP, image, loaded_root
from tests.elfwriter import PT_LOAD, PT_NOTE, Ph, note
from tests.elfwriter import core as elf_core
from tests.unit.data import CAPTURES, DATA
from tests.unit.fakes import ARGV, tracer_for

__all__ = ["TARGETS", "Target", "check", "guard_kexec"]

ABSENT = b"\xff"
CPU_DIR = "sys/devices/system/cpu"


class RealKexecRefused(AssertionError):
    """A fuzz target reached the kernel's kexec_load (or a traced one)."""


class _GuardedLib:
    """The C library less the two calls that reach kexec_load (as the unit tier's)."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lib, name)

    def kexecd_kexec_load(self, *args: Any) -> int:
        raise RealKexecRefused("a fuzz target must not call kexec_load")

    def kexecd_trace_run(self, *args: Any) -> int:
        raise RealKexecRefused("a fuzz target must not trace a command")


def guard_kexec() -> None:
    """Put kexec_load out of reach for the rest of the process (the unit tier has its own)."""
    if not isinstance(core.lib, _GuardedLib):
        core.lib = _GuardedLib(core.lib)


@cache
def scratch() -> Path:
    """A directory for the files the targets write (in memory where it can be),
    removed at exit."""
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="kexecd-fuzz-", dir=where))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def fields(data: bytes, n: int) -> list[bytes | None]:
    """``n`` file contents from the input (``None``: the file is missing)."""
    parts: list[bytes | None] = list(data.split(b"\0", n - 1))
    parts += [None] * (n - len(parts))
    return [None if p == ABSENT else p for p in parts]


def join(parts: Sequence[bytes | None]) -> bytes:
    """The input that :func:`fields` splits into ``parts`` (a seed)."""
    return b"\0".join(ABSENT if p is None else p for p in parts)


_written: dict[Path, bytes | None] = {}


def put(base: Path, rel: str, content: bytes | None) -> None:
    """Write ``rel`` under ``base``, or remove it for ``None`` (unless it already is so)."""
    path = base / rel
    if path in _written and _written[path] == content:
        return
    _written[path] = content
    if content is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def fresh_root(name: str, capture: str = "boot") -> Path:
    """A writable copy of a capture's fake root, made once per process."""
    dest = scratch() / name
    if not dest.exists():
        shutil.copytree(DATA / capture / "root", dest)
    return dest


@cache
def boot_state() -> SystemState:
    return read_system(Root(DATA / "boot" / "root"))


@cache
def boot_template() -> elfcore.CoreHeader:
    return elfcore.parse((DATA / "boot" / "load" / "seg-05.bin").read_bytes(), "template")


def templates() -> list[bytes]:
    """The elfcorehdr kexec-tools loaded in each capture."""
    return [
        (DATA / n / "load" / "seg-05.bin").read_bytes() for n in ("boot", "hotadd", "hotremove")
    ]


def headers() -> list[bytes]:
    """Real ELF core headers: each capture's elfcorehdr and /proc/kcore head."""
    kcores = [(DATA / n / "root/proc/kcore").read_bytes() for n in ("boot", "hotadd", "hotremove")]
    return [*templates(), *kcores]


def build_with(state: SystemState, template: elfcore.CoreHeader | None = None) -> None:
    """What kexecd does with a system state and a template: build the header it would load."""
    spec = elfcore.spec_from_template(template or boot_template(), state)
    elfcore.parse(elfcore.build(spec), "built header")


# -- the targets -----------------------------------------------------------------


def fuzz_iomem(data: bytes) -> None:
    """/proc/iomem: read_iomem, crash_ranges (from the text, as a refresh
    reads it, and from the lines), kernel_code_start, then a header."""
    base = fresh_root("iomem")
    put(base, "proc/iomem", data)
    root = Root(base)
    resources = iomem.read_iomem(root)
    from_text = iomem.crash_ranges(iomem.read_iomem_text(root))
    assert list(iomem.crash_ranges(resources).ranges) == list(from_text.ranges)
    build_with(read_system(root))
    iomem.kernel_code_start(resources)


def iomem_seeds() -> list[bytes]:
    return [(DATA / name / "root/proc/iomem").read_bytes() for name in ("boot", "hotadd")]


CPU_FILES = [
    f"{CPU_DIR}/possible",
    f"{CPU_DIR}/present",
    f"{CPU_DIR}/online",
    f"{CPU_DIR}/kernel_max",
    *(f"{CPU_DIR}/cpu{n}/{f}" for n in range(4) for f in ("crash_notes", "crash_notes_size")),
]


def fuzz_cpus(data: bytes) -> None:
    """The CPU lists and crash_notes: read_cpus, then a header with those notes."""
    base = fresh_root("cpus")
    for rel, content in zip(CPU_FILES, fields(data, len(CPU_FILES)), strict=True):
        put(base, rel, content)
    got = cpus.read_cpus(Root(base))
    build_with(replace(boot_state(), cpus=got))


def cpus_seeds() -> list[bytes]:
    out = []
    for name in ("boot", "hotadd", "hotremove"):
        base = DATA / name / "root"
        out.append(join([_read(base / rel) for rel in CPU_FILES]))
    return out


KERNEL_FILES = [
    "proc/kallsyms",
    "sys/kernel/vmcoreinfo",
    "sys/kernel/kexec_crash_loaded",
    "sys/kernel/kexec_crash_size",
    f"{CPU_DIR}/crash_hotplug",
    "sys/devices/system/memory/crash_hotplug",
    "sys/kernel/crash_elfcorehdr_size",
    "sys/kernel/uevent_seqnum",
    "sys/kernel/security/lockdown",
    "proc/kcore",  # last: binary, takes the rest
]


def fuzz_kernel(data: bytes) -> None:
    """vmcoreinfo, /proc/kcore and kallsyms, the kexec state files, lockdown."""
    base = fresh_root("kernel")
    for rel, content in zip(KERNEL_FILES, fields(data, len(KERNEL_FILES)), strict=True):
        put(base, rel, content)
    root = Root(base)
    state = kernel.read_kexec_state(root)
    _ = state.kernel_updates
    kernel.read_lockdown(root)
    vmcoreinfo = kernel.read_vmcoreinfo(root)
    # A fresh header from them, as `kexec -p` would build it: spec_fresh reads
    # kcore and kallsyms (read_kernel_map), the kernel's start from the capture's iomem.
    system = replace(boot_state(), root=root, vmcoreinfo=vmcoreinfo)
    elfcore.parse(elfcore.build(elfcore.spec_fresh(system, 0x1000)), "built header")


def kernel_seeds() -> list[bytes]:
    out = []
    for name in ("boot", "hotadd"):
        base = DATA / name / "root"
        parts = [_read(base / rel) for rel in KERNEL_FILES]
        parts[2] = b"1\n"  # a crash kernel is loaded
        parts[4] = parts[5] = b"1\n"
        parts[6] = b"4096\n"
        parts[8] = b"none [integrity] confidentiality\n"
        out.append(join(parts))
    return out


def fuzz_elfcore(data: bytes) -> None:
    """A template header: parse, its properties, spec_from_template, build."""
    header = elfcore.parse(data, "template")
    header.split_notes()
    _ = (header.kernel_text, header.ram, header.page_offset, header.backup, header.used)
    build_with(boot_state(), header)


def fuzz_inspect(data: bytes) -> None:
    """``kexecd inspect FILE``: parse, describe (notes through pyelftools), render."""
    header = elfcore.parse(data, "file")
    d = inspect.describe(data, header)
    inspect.render(d, "file")
    json.dumps(d)


def inspect_seeds() -> list[bytes]:
    notes = note(b"CORE", 1, bytes(336)) * 2 + note(b"VMCOREINFO", 0, b"OSRELEASE=6.1\n")
    vmcore = elf_core(
        [
            Ph(PT_NOTE, offset=64 + 2 * 56, filesz=len(notes), memsz=len(notes)),
            Ph(PT_LOAD, offset=0x1000, vaddr=0xFFFF888000001000, paddr=0x1000, memsz=0x9F000),
        ],
        notes,
    )
    return [*headers(), vmcore]


@cache
def snapshot_state() -> Path:
    """A state directory with the boot capture's image loaded (as the unit tier makes)."""
    state = scratch() / "state"
    root = Root(loaded_root("boot", scratch()))
    loader.load(ARGV, state, root=root, tracer=tracer_for(image("boot")))
    return state


def fuzz_snapshot(data: bytes) -> None:
    """The snapshot's manifest.json: open_snapshot, then what a refresh reads first.

    (Not verify(): it hashes every segment, megabytes, and reads nothing more
    of the manifest than open_snapshot did.)
    """
    state = snapshot_state()
    (state / SNAPSHOT / MANIFEST).write_bytes(data)
    snap = open_snapshot(state)
    _ = snap.header_capacity
    if snap.source is not None:
        _ = snap.source.words


def snapshot_seeds() -> list[bytes]:
    return [(snapshot_state() / SNAPSHOT / MANIFEST).read_bytes()]


def fuzz_statefile(data: bytes) -> None:
    """The daemon's state.json: read_state (DaemonState.from_json), then to_json."""
    run = scratch() / "run"
    run.mkdir(exist_ok=True)
    (run / statefile.STATE_FILE).write_bytes(data)
    state = statefile.read_state(run)
    if state is not None:
        json.dumps(state.to_json())


def statefile_seeds() -> list[bytes]:
    full = statefile.DaemonState(
        pid=1,
        last_event=statefile.EventRecord("t", "online", "memory", "/devices/x", 7),
        last_update=statefile.UpdateRecord("t", "uevent", "reload_header", "why", 1.5, ["x"]),
        last_error=statefile.ErrorRecord("t", "boom"),
        history=[statefile.LoadTiming("reload_header", 1.0, 2.0, 3.0, 4.0)],
        ram=1 << 30,
        header_cpus=2,
        crash_loaded=True,
        syscall="kexec_load",
        reconciled="t",
    )
    return [
        json.dumps(s.to_json(), indent=2, sort_keys=True).encode()
        for s in (statefile.DaemonState(pid=1), full)
    ]


def fuzz_kdumptools(data: bytes) -> None:
    """/etc/default/kdump-tools and a kexec_cmd file: default_kexec_cmd, read_kexec_cmd."""
    base = scratch() / "kdump-root"
    defaults, cmd = fields(data, 2)
    put(base, kdumptools.DEFAULTS, defaults)
    kdumptools.default_kexec_cmd(Root(base))
    path = scratch() / "kexec_cmd"
    put(scratch(), "kexec_cmd", cmd)
    if path.exists():
        path.chmod(0o644)
    got = kdumptools.read_kexec_cmd(path)
    _ = (got.words, got.file_load)
    kdumptools.replay_argv(got)


def kdumptools_seeds() -> list[bytes]:
    defaults = (
        b"# kdump-tools configuration\nUSE_KDUMP=1\n"
        b'KDUMP_COREDIR="/var/crash" # where dumps go\nexport KDUMP_COREDIR=/var/crash\n'
    )
    cmd = (
        b'/sbin/kexec -p --command-line="BOOT_IMAGE=/vmlinuz root=UUID=1 ro nr_cpus=1 '
        b'systemd.unit=kdump-tools-dump.service irqpoll" --initrd=/var/lib/kdump/initrd.img '
        b"/var/lib/kdump/vmlinuz\n"
    )
    return [join([defaults, cmd]), join([None, b"kexec -s -p /boot/vmlinuz\n"])]


@cache
def cmdline_state() -> Path:
    """A state directory with kdump-tools' kind of line loaded (its own: the
    snapshot target writes over the other one's manifest)."""
    state = scratch() / "cmdline-state"
    root = Root(loaded_root("boot", scratch() / "cmdline-root"))
    loader.load(ARGV, state, root=root, tracer=tracer_for(image("boot", strip=NO_MEMHOTPLUG)))
    return state


def fuzz_cmdline(data: bytes) -> None:
    """``loaded.json`` (the words appended), then the boot parameters segment:
    LoadRecord.words, bootparams.find among the captured small segments,
    then the words and the line with acpi_no_memhotplug appended."""
    info, setup = fields(data, 2)
    state = cmdline_state()
    snap = open_snapshot(state)
    put(snap.path, "loaded.json", info)
    loaded = snap.record.words()
    segs = list(image_segments())
    mem = segs[SETUP].mem
    segs[SETUP] = Segment(setup or b"", mem, max(len(setup or b""), segs[SETUP].memsz))
    found = bootparams.find(segs)
    _ = (cmdline.words(found.text), cmdline.has(found.text, "elfcorehdr"))
    text = found.text
    for word in (*loaded, cmdline.NO_MEMHOTPLUG):
        text = cmdline.appended(text, word)
    out = bootparams.patched(segs[SETUP].buf, found, text)
    assert len(out) == len(segs[SETUP].buf)


@cache
def image_segments() -> tuple[Segment, ...]:
    """The boot capture's small segments (the setup data, boot parameters,
    purgatory, header): the big ones would only slow the fuzzer."""
    segs = image("boot").segments
    return tuple(s if len(s.buf) < (1 << 20) else Segment(b"", s.mem, s.memsz) for s in segs)


def cmdline_seeds() -> list[bytes]:
    info = (cmdline_state() / SNAPSHOT / "loaded.json").read_bytes()
    words = {"cmdline_appended": [cmdline.NO_MEMHOTPLUG]}
    appended = json.dumps({**json.loads(info), **words}).encode()
    setups = [bytes(image(name).segments[SETUP].buf) for name in CAPTURES]
    stripped = bytes(image("boot", strip=NO_MEMHOTPLUG).segments[SETUP].buf)
    return [join([info, s]) for s in setups] + [join([appended, stripped])]


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def fuzz_dpkg(data: bytes) -> None:
    """dpkg's status file: installed_version, then the kexecd_info label it makes."""
    base = scratch() / "dpkg-root"
    put(base, packages.DPKG_STATUS, data)
    version = packages.installed_version(Root(base), "kexec-tools")
    metrics.render(statefile.DaemonState(pid=1), metrics.Host(False, version))


def dpkg_seeds() -> list[bytes]:
    return [
        b"Package: kexec-tools\nStatus: install ok installed\nPriority: optional\n"
        b"Version: 1:2.0.25-3+deb12u3\nDescription: tools\n more\n\n"
        b"Package: kdump-tools\nStatus: deinstall ok config-files\nVersion: 1:1.8.1\n"
    ]


# -- the registry ------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A fuzz target: what it runs on an input, and the inputs it starts from."""

    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    # What may escape: KexecdError, and OSError only where a docstring says so.
    allowed: tuple[type[BaseException], ...] = (KexecdError,)


TARGETS = {
    t.name: t
    for t in [
        Target("iomem", fuzz_iomem, iomem_seeds),
        Target("cpus", fuzz_cpus, cpus_seeds),
        Target("kernel", fuzz_kernel, kernel_seeds),
        Target("elfcore", fuzz_elfcore, templates),
        Target("inspect", fuzz_inspect, inspect_seeds),
        Target("snapshot", fuzz_snapshot, snapshot_seeds),
        Target("statefile", fuzz_statefile, statefile_seeds),
        Target("kdumptools", fuzz_kdumptools, kdumptools_seeds),
        Target("cmdline", fuzz_cmdline, cmdline_seeds),
        Target("dpkg", fuzz_dpkg, dpkg_seeds),
    ]
}


def check(target: Target, data: bytes) -> None:
    """Run ``target`` on ``data``; an exception it may not raise propagates."""
    with contextlib.suppress(target.allowed):
        target.run(data)
