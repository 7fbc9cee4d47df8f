# SPDX-License-Identifier: GPL-2.0-or-later
"""kexecd.core: the tracer, through the typed wrapper.

Only skip mode runs on the host: the traced calls never reach the kernel (and
the fake program's flags would make the kernel refuse them anyway). Pass mode
runs in the VM tier, where kexec-tools really loads a crash kernel.
"""

from __future__ import annotations

import errno
import gc
import os
import re
import subprocess
from pathlib import Path

import pytest

from kexecd import core
from kexecd.core import trace_kexec
from kexecd.loads import KexecCall

REPO = Path(__file__).resolve().parents[2]


def test_captures_kexec_load_arguments(fake_kexec: Path) -> None:
    cap = trace_kexec([str(fake_kexec), "crash"], skip=True)
    assert cap.call is KexecCall.KEXEC_LOAD
    assert (cap.result, cap.calls, cap.exit_code) == (0, 1, 0)
    assert (cap.crash_loads, cap.unloads, cap.reboot_loads) == (1, 0, 0)
    assert cap.entry == 0x1234
    assert cap.flags == 0x80000101  # fake_kexec's bad bits | KEXEC_ON_CRASH
    assert [(len(s.buf), s.mem, s.memsz) for s in cap.segments] == [
        (5000, 0x100000, 0x2000),
        (0, 0x200000, 0x1000),
        (3, 0x300000, 0x1000),
    ]
    assert cap.segments[0].buf == bytes((i * 7) & 0xFF for i in range(5000))
    assert cap.segments[2].buf == b"xyz"
    assert cap.cmdline is None


def test_keeps_the_last_of_several_calls(fake_kexec: Path) -> None:
    cap = trace_kexec([str(fake_kexec), "twice"], skip=True)
    assert (cap.calls, cap.entry) == (2, 0x2222)


def test_captures_kexec_file_load(fake_kexec: Path) -> None:
    cap = trace_kexec([str(fake_kexec), "file"], skip=True)
    assert cap.call is KexecCall.KEXEC_FILE_LOAD
    assert cap.flags == 0x80000102  # fake_kexec's bad bits | KEXEC_FILE_ON_CRASH
    assert cap.cmdline == b"console=ttyS0 elfcorehdr=123K\0"
    assert cap.segments == ()


def test_program_without_kexec_calls(fake_kexec: Path) -> None:
    cap = trace_kexec([str(fake_kexec), "none"], skip=True)
    assert (cap.call, cap.calls, cap.exit_code) == (KexecCall.NONE, 0, 0)


def test_exit_codes_come_through(fake_kexec: Path) -> None:
    assert trace_kexec(["/nonexistent/kexec"], skip=True).exit_code == 127
    assert trace_kexec(["sh", "-c", "exit 7"], skip=True).exit_code == 7
    assert trace_kexec(["sh", "-c", "kill -TERM $$"], skip=True).exit_code == -15


def test_kexec_call_is_the_c_cores_enum() -> None:
    # loads.KexecCall spells out kexecd_core.h's enum kexecd_syscall (no C in loads.py).
    assert [(c.name, c.value) for c in KexecCall] == [
        ("NONE", core.lib.KEXECD_SYS_NONE),
        ("KEXEC_LOAD", core.lib.KEXECD_SYS_KEXEC_LOAD),
        ("KEXEC_FILE_LOAD", core.lib.KEXECD_SYS_KEXEC_FILE_LOAD),
    ]


def test_rejects_an_empty_command() -> None:
    with pytest.raises(ValueError):
        trace_kexec([])


def test_c_core_tests_pass_under_sanitizers() -> None:
    # csrc/ stands alone: its own tests, built with ASan and UBSan.
    p = subprocess.run(
        ["make", "-s", "-C", str(REPO / "csrc"), "check"], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stdout + p.stderr
    summaries = re.findall(r"^(\d+) passed, (\d+) failed$", p.stdout, re.M)
    # test_elfcore, test_iomem, test_sha256 (twice: SHA-NI where the CPU has it,
    # then portable), test_watch, test_map, test_trace
    assert len(summaries) == 7
    assert all(int(n) > 0 and f == "0" for n, f in summaries)


def test_c_core_tests_pass_under_sanitizers_on_aarch64() -> None:
    # The same tests cross-compiled for aarch64 (one file per architecture for
    # what differs: csrc/arch_aarch64.c) and run under qemu-user, ASan and
    # UBSan included; test_trace is built, and runs in the arm64 guest
    # (tests/vm/test_arm64.py traces every load there).
    p = subprocess.run(
        ["make", "-s", "-C", str(REPO / "csrc"), "check-aarch64"], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stdout + p.stderr
    summaries = re.findall(r"^(\d+) passed, (\d+) failed$", p.stdout, re.M)
    assert len(summaries) == 5  # test_elfcore, test_iomem, test_sha256, test_watch, test_map
    assert all(int(n) > 0 and f == "0" for n, f in summaries)
    assert "test_trace built" in p.stdout


def test_the_unit_tier_cannot_reach_kexec_load(fake_kexec: Path) -> None:
    # The autouse guard in conftest.py: the real syscall and pass-mode tracing
    # are refused, whatever path leads to them.
    from kexecd.image.deps import KernelBackend
    from tests.unit.conftest import RealKexecRefused

    with pytest.raises(RealKexecRefused):
        core.kexec_load(0, 0, [])
    with pytest.raises(RealKexecRefused):
        KernelBackend().load(0, 0, [])
    with pytest.raises(RealKexecRefused):
        trace_kexec([str(fake_kexec), "crash"])
    assert trace_kexec([str(fake_kexec), "crash"], skip=True).crash_loads == 1


# -- where a segment's file is mapped -------------------------------------------

SPAN = 2 << 20


def _mapped_at(path: Path) -> list[int]:
    # The start of every mapping of ``path`` in this process.
    return [
        int(line.split("-", 1)[0], 16)
        for line in Path("/proc/self/maps").read_text().splitlines()
        if line.endswith(" " + str(path))
    ]


@pytest.mark.parametrize("mem", [0x38E00000, 0x3876B000, 0x1000, 0x40001FF000])
def test_a_segment_is_mapped_a_page_past_its_destination(tmp_path: Path, mem: int) -> None:
    # A 2 MiB-aligned kernel file at a 2 MiB-aligned destination: the case
    # where a plain mmap lands on the destination's TLB index.
    data = bytes(range(256)) * ((3 << 20) // 256) + b"tail"
    path = tmp_path / "seg-02.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        view = core.map_segment(fd, len(data), mem)
    finally:
        os.close(fd)
    (start,) = _mapped_at(path)
    assert (start - mem) % SPAN == os.sysconf("SC_PAGESIZE")
    assert view.readonly and len(view) == len(data)
    assert bytes(view) == data
    part = view[4096:8192]
    del view
    gc.collect()
    assert bytes(part) == data[4096:8192]  # a view of it keeps it mapped
    del part
    gc.collect()
    assert _mapped_at(path) == []


def test_a_mapping_refused_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError) as e:
        core.map_segment(-1, 4096, 0)
    assert e.value.errno == errno.EBADF
    with pytest.raises(OSError) as e:
        core.map_segment(0, 0, 0)
    assert e.value.errno == errno.EINVAL


def test_the_store_maps_each_segment_a_page_past_it(tmp_path: Path) -> None:
    from kexecd.image.manifest import segment_file
    from kexecd.image.store import open_snapshot
    from tests.unit import fakes

    _, state = fakes.loaded("boot", tmp_path)
    snap = open_snapshot(state)
    page = os.sysconf("SC_PAGESIZE")
    checked = 0
    for i, seg in enumerate(snap.segments):
        if len(seg.buf):
            (start,) = _mapped_at((state / "snapshot" / segment_file(i)).resolve())
            assert (start - seg.mem) % SPAN == page
            checked += 1
    assert checked >= 3
