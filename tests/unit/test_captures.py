# SPDX-License-Identifier: GPL-2.0-or-later
"""The ground-truth captures under tests/data: whole, consistent, and telling.

They are the oracle for the header engine, so they are checked here with an
independent reading: hashes, the header's place in the load, purgatory's
digest, and what each header lists against the fake root it came from.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from typing import Any

import pytest

from testbed import assets
from testbed.capture import Capture
from testbed.guest_capture import portable, strip_host_paths
from tests.unit.data import ALL_CAPTURES, CAPTURES, DATA, VIRTIO_MEM, manifest


def header(name: str) -> tuple[dict[str, Any], bytes]:
    cap = Capture(DATA / name)
    return cap.header_segment, cap.header


def phdrs(data: bytes) -> list[tuple[int, ...]]:
    (phoff,) = struct.unpack_from("<Q", data, 32)
    (phnum,) = struct.unpack_from("<H", data, 56)
    return [struct.unpack_from("<IIQQQQQQ", data, phoff + 56 * i) for i in range(phnum)]


def root_file(name: str, rel: str) -> str:
    return (DATA / name / "root" / rel).read_text()


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_stored_segments_match_their_hashes(name: str) -> None:
    m = manifest(name)
    assert (m["syscall"], m["result"], m["exit_code"]) == ("kexec_load", 0, 0)
    # kexec-tools on x86_64: KEXEC_ON_CRASH | KEXEC_ARCH_X86_64.
    assert m["flags"] == 0x3E0001
    mems = [s["mem"] for s in m["segments"]]
    assert mems == sorted(mems)
    for seg in m["segments"]:
        if seg["file"]:
            data = (DATA / name / "load" / seg["file"]).read_bytes()
            assert len(data) == seg["bufsz"]
            assert hashlib.sha256(data).hexdigest() == seg["sha256"]


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_purgatory_holds_the_digest_of_the_other_segments(name: str) -> None:
    m = manifest(name)
    purg = m["segments"][m["purgatory_segment"]]
    assert purg["mem"] <= m["entry"] < purg["mem"] + purg["memsz"]
    data = (DATA / name / "load" / purg["file"]).read_bytes()
    digest = bytes.fromhex(m["purgatory_digest"])
    assert data.count(digest) == 1
    assert data.find(digest) == m["purgatory_digest_offset"]


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_boot_parameters_name_the_header(name: str) -> None:
    m = manifest(name)
    seg, _ = header(name)
    params = [
        (DATA / name / "load" / s["file"]).read_bytes()
        for s in m["segments"]
        if s["file"] and b"elfcorehdr=" in (DATA / name / "load" / s["file"]).read_bytes()
    ]
    assert len(params) == 1
    assert f"elfcorehdr={seg['mem'] >> 10}K".encode() in params[0]
    # kexec-tools crashdump-x86.c: the header segment is at least 16 KiB.
    assert seg["memsz"] == 16384


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_header_lists_the_cpus_and_ram_of_its_root(name: str) -> None:
    _, data = header(name)
    ph = phdrs(data)
    notes = [p for p in ph if p[0] == 4]
    loads = [p for p in ph if p[0] == 1]
    cpu_dir = DATA / name / "root/sys/devices/system/cpu"
    crash_notes = sorted(int(f.read_text(), 16) for f in cpu_dir.glob("cpu[0-9]*/crash_notes"))
    vmcoreinfo = int(root_file(name, "sys/kernel/vmcoreinfo").split()[0], 16)
    assert sorted(p[4] for p in notes) == sorted([*crash_notes, vmcoreinfo])
    ram = [
        (int(a, 16), int(b, 16) + 1)
        for a, b in re.findall(
            r"^\s*([0-9a-f]+)-([0-9a-f]+) : System RAM(?: \(virtio_mem\))?$",
            root_file(name, "proc/iomem"),
            re.M,
        )
    ]
    lo, hi = (
        int(x, 16)
        for x in re.search(
            r"^\s*([0-9a-f]+)-([0-9a-f]+) : Crash kernel$", root_file(name, "proc/iomem"), re.M
        ).groups()  # type: ignore[union-attr]
    )
    covered = {(p[4], p[4] + p[6]) for p in loads}
    for s, e in ram:
        if s <= lo < e:  # the crash kernel's reservation is carved out
            assert (s, lo) in covered and (hi + 1, e) in covered
        else:
            assert (s, e) in covered


def test_hotplug_shows_in_the_headers() -> None:
    boot, add, rem = (phdrs(header(n)[1]) for n in CAPTURES)
    scen = json.loads((DATA / "hotadd" / "scenario.json").read_text())
    dimms = [tuple(int(x, 16) for x in r) for r in scen["dimms"].values()]

    def loads(ph: list[tuple[int, ...]]) -> set[tuple[int, int]]:
        return {(p[4], p[4] + p[6]) for p in ph if p[0] == 1}

    def n_notes(ph: list[tuple[int, ...]]) -> int:
        return sum(1 for p in ph if p[0] == 4)

    assert n_notes(add) == n_notes(boot) + 1  # the added CPU
    assert loads(add) - loads(boot) == set(dimms)
    assert loads(add) - loads(rem) == {dimms[0]}
    assert n_notes(rem) == n_notes(add)


def test_virtio_mem_shows_in_the_header_block_by_block() -> None:
    # kexec-tools 2.0.25 takes the nested "System RAM (virtio_mem)" lines, not
    # the device's "virtioN" above them: the plugged blocks and nothing else.
    iomem = root_file(VIRTIO_MEM, "proc/iomem")
    parent = re.search(r"^([0-9a-f]+)-([0-9a-f]+) : (virtio\d+)$", iomem, re.M)
    assert parent is not None
    nested = re.findall(r"^  ([0-9a-f]+)-([0-9a-f]+) : System RAM \(virtio_mem\)$", iomem, re.M)
    scen = json.loads((DATA / VIRTIO_MEM / "scenario.json").read_text())
    plugged = {tuple(int(x, 16) for x in r) for r in scen["virtio_mem_plugged"]}
    unplugged = [tuple(int(x, 16) for x in r) for r in scen["virtio_mem_unplugged"]]
    assert {(int(a, 16), int(b, 16) + 1) for a, b in nested} == plugged
    assert len(plugged) == 2 and len(unplugged) == 2
    lo, hi = int(parent.group(1), 16), int(parent.group(2), 16) + 1
    loads = {(p[4], p[4] + p[6]) for p in phdrs(header(VIRTIO_MEM)[1]) if p[0] == 1}
    assert {r for r in loads if lo <= r[0] < hi} == plugged
    assert not any(s < ue and us < e for s, e in loads for us, ue in unplugged)


def test_captures_carry_no_path_of_the_machine_that_made_them() -> None:
    # The test bed's share, python and agent parameters, and its cache dir,
    # are paths of one machine: the capture tool strips them.
    docs = [DATA.parents[1] / "README.md", *(DATA.parents[1] / "docs").glob("*.md")]
    for path in [*DATA.rglob("*"), *docs]:
        if path.is_file() and path.suffix != ".bin":
            text = path.read_text(errors="replace")
            for host_path in (
                "/root/",
                "/home/",
                "/work/",
                "/tmp/",
                "kexecd-vm/runs",
                "kexecd-vm/linux",
            ):
                assert host_path not in text, f"{path} names {host_path}"
    cmdline = "console=ttyS0 kexecd.testbed=1 kexecd.share=/x/share kexecd.python=/v/python"
    assert strip_host_paths(cmdline) == "console=ttyS0 kexecd.testbed=1\n"
    assert portable(f"--initrd={assets.cache_dir()}/initramfs.cpio") == (
        "--initrd=$KEXECD_VM_CACHE/initramfs.cpio"
    )
