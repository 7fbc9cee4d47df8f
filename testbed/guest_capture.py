# SPDX-License-Identifier: GPL-2.0-or-later
"""Ground-truth capture, run inside the test-bed guest.

``python -m testbed.guest_capture OUT -- kexec -p ...`` writes:

* ``OUT/root/``: the procfs and sysfs files kexec-tools reads to build the
  ELF core header, as a tree usable as a fake root (``/proc/kcore`` is cut
  down to its ELF and program headers, ``/proc/kallsyms`` to the symbols
  that matter);
* ``OUT/load/manifest.json`` and ``OUT/load/seg-NN.bin``: the exact
  arguments kexec-tools passed to ``kexec_load(2)``, captured with kexecd's
  tracer while the load goes through. Segments larger than
  ``KEEP_BYTES`` (kernel, initrd, the zero-filled backup area) are recorded
  by size and SHA-256 only.

The manifest also records the digest purgatory must hold (SHA-256 over every
segment but purgatory, each padded with zeros to memsz) and where it was
found in purgatory's bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import struct
import sys
import time
from pathlib import Path
from typing import Any

from kexecd.core import trace_kexec
from kexecd.loads import KexecCall, LoadCapture
from kexecd.system.kexectools import version_in
from testbed import assets
from testbed.guest_safety import require_guest

KEEP_BYTES = 256 * 1024
# The most of /proc/kcore a capture keeps (kexec-tools' KCORE_ELF_HEADERS_SIZE).
KCORE_NOTES_MAX = 65536
# kexec-tools reads _stext (x86), and _text, _stext and __init_begin (arm64,
# kexecd/system/kimage.py); the others help place the kernel text by hand.
# page_offset_base: whether kexec-tools 2.0.20 takes page_offset from kcore
# (kexecd/system/kexectools.py).
KALLSYMS = ("_text", "_stext", "__init_begin", "_etext", "_edata", "_end", "page_offset_base")

SYSFS_FILES = (
    "sys/devices/system/cpu/possible",
    "sys/devices/system/cpu/present",
    "sys/devices/system/cpu/online",
    "sys/devices/system/cpu/offline",
    "sys/devices/system/cpu/kernel_max",
    "sys/devices/system/cpu/crash_hotplug",
    "sys/devices/system/memory/block_size_bytes",
    "sys/devices/system/memory/auto_online_blocks",
    "sys/devices/system/memory/crash_hotplug",
    "sys/kernel/vmcoreinfo",
    "sys/kernel/kexec_loaded",
    "sys/kernel/kexec_crash_loaded",
    "sys/kernel/kexec_crash_size",
    "sys/kernel/crash_elfcorehdr_size",
    "sys/kernel/uevent_seqnum",
    "proc/iomem",
    "proc/cmdline",
)
SYSFS_GLOBS = (
    "sys/devices/system/cpu/cpu[0-9]*/crash_notes",
    "sys/devices/system/cpu/cpu[0-9]*/crash_notes_size",
    "sys/devices/system/cpu/cpu[0-9]*/online",
    "sys/devices/system/memory/memory[0-9]*/state",
    "sys/devices/system/memory/memory[0-9]*/phys_index",
    "sys/devices/system/memory/memory[0-9]*/online",
    "sys/firmware/memmap/*/start",
    "sys/firmware/memmap/*/end",
    "sys/firmware/memmap/*/type",
)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Unreadable attributes (write-only, or absent on this kernel) are skipped.
    with contextlib.suppress(OSError):
        dst.write_bytes(src.read_bytes())


# The test bed's own boot parameters that name paths of the machine that ran
# it (testbed/boot.py boot()); a capture must not carry them.
HOST_PATH_PARAMS = ("kexecd.share", "kexecd.python", "kexecd.agent")


def strip_host_paths(cmdline: str) -> str:
    """``cmdline`` without the test bed's parameters that hold host paths."""
    kept = [w for w in cmdline.split() if w.split("=", 1)[0] not in HOST_PATH_PARAMS]
    return " ".join(kept) + "\n"


def portable(arg: str) -> str:
    """``arg`` with the test bed's cache directory written as ``$KEXECD_VM_CACHE``."""
    return arg.replace(str(assets.cache_dir()), "$KEXECD_VM_CACHE")


def _kcore_head(path: Path) -> bytes:
    # /proc/kcore: the ELF header, the program headers and the notes that
    # follow them (VMCOREINFO: arm64's kexec-tools reads VA_BITS and
    # PHYS_OFFSET there), no memory.
    with open(path, "rb") as f:
        ehdr = f.read(64)
        (phoff,) = struct.unpack_from("<Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        end = phoff + len(table)
        for i in range(phnum):
            kind, _, offset, _, _, filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
            if kind == 4 and offset + filesz <= KCORE_NOTES_MAX:  # PT_NOTE
                end = max(end, offset + filesz)
        f.seek(0)
        return f.read(end)


def capture_root(out: Path, src: Path = Path("/")) -> None:
    """Copy the files kexec-tools reads into ``out``, keeping their paths."""
    for rel in SYSFS_FILES:
        if (src / rel).exists():
            _copy(src / rel, out / rel)
    cmdline = out / "proc/cmdline"
    if cmdline.exists():
        cmdline.write_text(strip_host_paths(cmdline.read_text()))
    for pattern in SYSFS_GLOBS:
        for path in sorted(src.glob(pattern)):
            _copy(path, out / path.relative_to(src))
    (out / "proc/kcore").write_bytes(_kcore_head(src / "proc/kcore"))
    lines = [
        line
        for line in (src / "proc/kallsyms").read_text().splitlines()
        if line.split()[2:3] and line.split()[2] in KALLSYMS and len(line.split()) == 3
    ]
    (out / "proc/kallsyms").write_text("".join(f"{line}\n" for line in lines))


def _padded_sha256(h: Any, buf: bytes, memsz: int) -> None:
    h.update(buf)
    zeros = bytes(1 << 20)
    left = memsz - len(buf)
    while left > 0:
        n = min(left, len(zeros))
        h.update(zeros[:n])
        left -= n


def write_load(out: Path, argv: list[str], cap: LoadCapture) -> dict[str, Any]:
    """Write the captured kexec_load arguments and return the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    segments = []
    purgatory = next(
        (i for i, s in enumerate(cap.segments) if s.mem <= cap.entry < s.mem + s.memsz), None
    )
    digest = hashlib.sha256()
    for i, seg in enumerate(cap.segments):
        entry: dict[str, Any] = {
            "index": i,
            "mem": seg.mem,
            "memsz": seg.memsz,
            "bufsz": len(seg.buf),
            "sha256": hashlib.sha256(seg.buf).hexdigest(),
            "zero": not any(seg.buf),
            "file": None,
        }
        if len(seg.buf) <= KEEP_BYTES:
            entry["file"] = f"seg-{i:02d}.bin"
            (out / entry["file"]).write_bytes(seg.buf)
        segments.append(entry)
        if i != purgatory:
            _padded_sha256(digest, seg.buf, seg.memsz)
    expected = digest.digest()
    found = cap.segments[purgatory].buf.find(expected) if purgatory is not None else -1
    manifest = {
        "argv": [portable(a) for a in argv],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel_release": os.uname().release,
        "syscall": cap.call.name.lower(),
        "result": cap.result,
        "exit_code": cap.exit_code,
        "entry": cap.entry,
        "flags": cap.flags,
        "segments": segments,
        "purgatory_segment": purgatory,
        "purgatory_digest": expected.hex(),
        "purgatory_digest_offset": found if found >= 0 else None,
        "kexec_tools": version_in(cap.program),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--skip",
        action="store_true",
        help="answer the kexec call without reaching the kernel: nothing is loaded",
    )
    parser.add_argument("kexec", nargs=argparse.REMAINDER)
    ns = parser.parse_args(args)
    argv = ns.kexec[1:] if ns.kexec[:1] == ["--"] else ns.kexec
    require_guest("run " + (argv[0] if argv else "kexec"))
    shutil.rmtree(ns.out, ignore_errors=True)
    capture_root(ns.out / "root")
    cap = trace_kexec(argv, skip=ns.skip)
    if cap.exit_code != 0 or cap.call is not KexecCall.KEXEC_LOAD or cap.result != 0:
        print(
            f"{argv[0]} exited {cap.exit_code}; syscall {cap.call.name} returned {cap.result}",
            file=sys.stderr,
        )
        return 1
    manifest = write_load(ns.out / "load", argv, cap)
    print(json.dumps({k: manifest[k] for k in ("entry", "flags", "purgatory_digest_offset")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
