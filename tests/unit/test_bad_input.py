# SPDX-License-Identifier: GPL-2.0-or-later
"""Bad input found by the fuzzers (tests/fuzz) and by review: each gives a
one-line KexecdError that names the file and what to do, never a traceback.

The snapshot cases at the end were found by the fuzzer in the first manifest
reader; image/manifest.py now refuses them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kexecd.arch.x86_64 import MAX_RANGES
from kexecd.errors import HeaderError, KexecdError, SnapshotError, SystemStateError
from kexecd.image import elfcore, loader
from kexecd.image.store import MANIFEST, SNAPSHOT, open_snapshot
from kexecd.system.cpus import MAX_CPUS, parse_cpu_list, read_cpus
from kexecd.system.iomem import crash_ranges, parse_iomem
from kexecd.system.kernel import parse_u64, read_kernel_map, read_kexec_state, read_vmcoreinfo
from kexecd.system.root import Root
from kexecd.system.state import read_system
from testbed.images import image, loaded_root
from tests.elfwriter import PT_LOAD, PT_NOTE, Ph, core
from tests.unit.data import DATA, fake_root, header_bytes
from tests.unit.fakes import ARGV, tracer_for

CPU = "sys/devices/system/cpu"


def one_line(e: pytest.ExceptionInfo[KexecdError]) -> str:
    message = str(e.value)
    assert "\n" not in message and "; " in message  # what is wrong; what to do
    return message


def build_from(root: Path) -> bytes:
    """What kexecd does with a system: read it, build the header from the boot template."""
    state = read_system(Root(root))
    return elfcore.build(elfcore.spec_from_template(elfcore.parse(header_bytes("boot")), state))


# -- /proc/iomem -------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "10000000000000000-10000000000000fff : System RAM",
        "  ffffffffffffff000-ffffffffffffff0ff : Crash kernel",
        "fffffffffffff000-1ffffffffffffffff : Reserved",
    ],
)
def test_iomem_address_past_64_bits(tmp_path: Path, line: str) -> None:
    root = fake_root("boot", tmp_path)
    iomem = root / "proc/iomem"
    lines = iomem.read_text().splitlines()
    iomem.write_text("\n".join([lines[0], line, *lines[1:]]) + "\n")
    with pytest.raises(SystemStateError) as e:
        build_from(root)
    assert one_line(e).startswith(f"{iomem}:2: address past 64 bits in ")
    assert "pass the kernel's /proc/iomem" in str(e.value)


def test_iomem_top_of_the_address_space_is_fine() -> None:
    res = parse_iomem("ffffffffffff0000-ffffffffffffffff : Reserved\n")
    assert res[0].end == (1 << 64) - 1


def test_crash_kernel_split_past_32768_ranges(tmp_path: Path) -> None:
    # 32768 collected ranges, and the crash kernel strictly inside the first:
    # exclude_region() has no room for the upper half (the C core: -ENOSPC).
    lines = [f"{i << 20:08x}-{(i << 20) + 0xFFFFF:08x} : System RAM" for i in range(MAX_RANGES)]
    lines.insert(1, "  00010000-0001ffff : Crash kernel")
    root = fake_root("boot", tmp_path)
    (root / "proc/iomem").write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemStateError) as e:
        read_system(Root(root))
    assert one_line(e).startswith(
        f"{root}/proc/iomem: cutting 'Crash kernel' 0x10000-0x1ffff out of the memory ranges "
        "makes more than 32768, kexec-tools' limit"
    )
    # One range fewer and the split fits.
    cr = crash_ranges(parse_iomem("\n".join(lines[:-1])))
    assert len(cr.ranges) == MAX_RANGES


# -- CPUs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("crash_notes", "-3f83a400", r"cannot parse '-3f83a400': expected a hex physical"),
        ("crash_notes", "1" + "0" * 16, r"'10000000000000000' is past 64 bits"),
        ("crash_notes", "f" * 5000, r"is past 64 bits"),
        ("crash_notes", "3f8_3a400", r"cannot parse '3f8_3a400'"),
        ("crash_notes_size", "-368", r"cannot parse '-368': expected a decimal size"),
        ("crash_notes_size", str(1 << 64), r"'18446744073709551616' is past 64 bits"),
        ("crash_notes_size", "9" * 5000, r"is past 64 bits"),
        ("crash_notes_size", "٣٦٨", r"cannot parse '٣٦٨'"),  # Arabic-Indic digits
    ],
)
def test_crash_notes_out_of_range(tmp_path: Path, name: str, text: str, match: str) -> None:
    root = fake_root("boot", tmp_path)
    (root / CPU / "cpu1" / name).write_text(text + "\n")
    with pytest.raises(SystemStateError, match=match) as e:
        build_from(root)
    assert one_line(e).startswith(f"{root / CPU / 'cpu1' / name}: ")


def test_crash_notes_at_the_64_bit_edge_build(tmp_path: Path) -> None:
    root = fake_root("boot", tmp_path)
    (root / CPU / "cpu1/crash_notes").write_text("ffffffffffffffff\n")
    (root / CPU / "cpu1/crash_notes_size").write_text(f"{(1 << 64) - 1}\n")
    note = read_cpus(Root(root)).notes[1].note
    assert (note.addr, note.size) == ((1 << 64) - 1, (1 << 64) - 1)
    assert build_from(root)[:4] == b"\x7fELF"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("-11e4000 1024", r"cannot parse '-11e4000'"),
        ("11e4000 -1024", r"cannot parse '-1024'"),
        ("11e4000 10000000000000000", r"'10000000000000000' is past 64 bits"),
        ("1" * 17 + " 1024", r"is past 64 bits"),
        ("11e4000", r"cannot parse '11e4000': expected 'hexaddr hexsize'"),
    ],
)
def test_vmcoreinfo_out_of_range(tmp_path: Path, text: str, match: str) -> None:
    root = fake_root("boot", tmp_path)
    path = root / "sys/kernel/vmcoreinfo"
    path.write_text(text + "\n")
    with pytest.raises(SystemStateError, match=match) as e:
        read_vmcoreinfo(Root(root))
    assert one_line(e).startswith(f"{path}: ")


def test_kexec_state_numbers_out_of_range(tmp_path: Path) -> None:
    root = fake_root("boot", tmp_path)
    path = root / "sys/kernel/uevent_seqnum"
    for text in ("-1", str(1 << 64)):
        path.write_text(text + "\n")
        with pytest.raises(SystemStateError) as e:
            read_kexec_state(Root(root))
        assert one_line(e).startswith(f"{path}: ")


def test_cpu_possible_without_bound_is_refused_at_once(tmp_path: Path) -> None:
    root = fake_root("boot", tmp_path)
    (root / CPU / "possible").write_text("0-99999999999\n")
    t = time.monotonic()
    with pytest.raises(SystemStateError) as e:
        read_cpus(Root(root))
    assert time.monotonic() - t < 1
    assert one_line(e) == (
        f"{root / CPU / 'possible'}: CPU 99999999999 is past the highest CPU id, "
        f"{MAX_CPUS - 1} (kexecd takes at most {MAX_CPUS} CPUs, the largest NR_CPUS it knows); "
        "pass the kernel's own CPU list"
    )


def test_cpu_lists_are_bounded_by_kernel_max(tmp_path: Path) -> None:
    root = fake_root("hotadd", tmp_path)  # kernel_max 8191
    assert read_cpus(Root(root)).possible == (0, 1, 2, 3)
    (root / CPU / "kernel_max").write_text("3\n")
    assert read_cpus(Root(root)).possible == (0, 1, 2, 3)
    (root / CPU / "possible").write_text("0-4\n")
    with pytest.raises(SystemStateError, match=r"CPU 4 is past the highest CPU id, 3 \(cpu/"):
        read_cpus(Root(root))
    (root / CPU / "possible").write_text("0-3\n")
    (root / CPU / "kernel_max").write_text("-1\n")
    with pytest.raises(SystemStateError, match=r"kernel_max: cannot parse '-1'"):
        read_cpus(Root(root))


@pytest.mark.parametrize("text", ["0,0,0,0", "2,1", "0-3,3", "0-3,2-5"])
def test_cpu_list_must_ascend_once_each(text: str) -> None:
    # Repeats would make nr_cpus_conf (and the header) as large as the file.
    with pytest.raises(SystemStateError, match=r"the kernel lists CPUs in ascending order"):
        parse_cpu_list(text, "possible")


def test_cpu_list_strictness_keeps_what_the_kernel_writes() -> None:
    assert parse_cpu_list("0-2,5\n") == [0, 1, 2, 5]
    assert parse_cpu_list(f"0-{MAX_CPUS - 1}") == list(range(MAX_CPUS))
    for bad in ("٣", "1_0", "+1", " - ", "0-" + "9" * 5000):
        with pytest.raises(SystemStateError):
            parse_cpu_list(bad)


# -- /proc/kallsyms and /proc/kcore --------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "match"),
    [
        ("zzzz", r"cannot parse 'zzzz': expected 'hexaddr T _stext'"),
        ("ffffff/ff86200001", r"cannot parse 'ffffff/ff86200001'"),
        ("1ffffffff86200000", r"'1ffffffff86200000' is past 64 bits"),
        ("-ffffffff86200000", r"cannot parse"),
    ],
)
def test_bad_stext_line(tmp_path: Path, addr: str, match: str) -> None:
    root = fake_root("boot", tmp_path)
    kallsyms = root / "proc/kallsyms"
    kallsyms.write_text("ffffffff86200000 T _text\n" + f"{addr} T _stext\n")
    with pytest.raises(SystemStateError, match=match) as e:
        read_kernel_map(Root(root), 0x1000000)
    assert one_line(e).startswith(f"{kallsyms}:2: ")
    assert "pass the kernel's /proc/kallsyms" in str(e.value)


def test_kcore_text_past_the_address_space(tmp_path: Path) -> None:
    root = fake_root("boot", tmp_path)
    (root / "proc/kcore").write_bytes(
        core(
            [
                Ph(PT_LOAD, vaddr=0xFFFF888000000000, paddr=0, memsz=1 << 30),
                Ph(PT_LOAD, vaddr=0xFFFFFFFF86000000, paddr=0x1000000, memsz=1 << 63),
            ]
        )
    )
    with pytest.raises(SystemStateError, match=r"past the end of the address space") as e:
        read_kernel_map(Root(root), 0x1000000)
    assert one_line(e).startswith(f"{root}/proc/kcore: ")


def test_parse_u64_edges() -> None:
    assert parse_u64("0x" + "f" * 16, "f", base=16) == (1 << 64) - 1
    assert parse_u64("0" * 5000 + "7\n", "f") == 7
    with pytest.raises(SystemStateError, match=r"^f: cannot parse '': expected a number; "):
        parse_u64(" \n", "f")


# -- ELF core header templates -------------------------------------------------------


def test_template_with_vaddr_below_paddr(tmp_path: Path) -> None:
    tmpl = elfcore.parse(
        core(
            [
                Ph(PT_NOTE, offset=0x1000, paddr=0x1000, memsz=368),
                Ph(PT_LOAD, offset=0x200000, vaddr=0x1000, paddr=0x200000, memsz=0x1000),
            ]
        )
    )
    state = read_system(Root(DATA / "boot" / "root"))
    with pytest.raises(HeaderError) as e:
        elfcore.spec_from_template(tmpl, state)
    assert one_line(e) == (
        "template: the first RAM PT_LOAD maps physical 0x200000 at virtual 0x1000, below it, "
        "so page_offset would be negative; pass the elfcorehdr that kexec-tools loaded"
    )


def test_kcore_as_a_template_is_refused() -> None:
    # The fuzzer's first find: /proc/kcore's first PT_LOAD below the kernel
    # text map has no physical address (-1), so vaddr < paddr.
    tmpl = elfcore.parse((DATA / "boot/root/proc/kcore").read_bytes())
    state = read_system(Root(DATA / "boot" / "root"))
    with pytest.raises(HeaderError, match="page_offset would be negative"):
        elfcore.spec_from_template(tmpl, state)


# -- the snapshot's manifest ------------------------------------------------------------


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state dir holding the boot capture's image, loaded (as test_loader's)."""
    root = Root(loaded_root("boot", tmp_path))
    state = tmp_path / "state"
    loader.load(ARGV, state, root=root, tracer=tracer_for(image("boot")))
    return state


def _manifest(state: Path) -> dict[str, object]:
    m: dict[str, object] = json.loads((state / SNAPSHOT / MANIFEST).read_text())
    return m


@pytest.mark.parametrize("text", ["0", "[]", '"x"', "null"])
def test_snapshot_manifest_not_an_object(state: Path, text: str) -> None:
    (state / SNAPSHOT / MANIFEST).write_text(text)
    with pytest.raises(SnapshotError):
        open_snapshot(state)


def test_snapshot_manifest_nested_too_deep(state: Path) -> None:
    (state / SNAPSHOT / MANIFEST).write_text("[" * 100_000)
    with pytest.raises(SnapshotError):
        open_snapshot(state)


@pytest.mark.parametrize("header", [7, 99])
def test_snapshot_header_not_a_segment(state: Path, header: int) -> None:
    m = _manifest(state)
    m["header"] = header
    (state / SNAPSHOT / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(SnapshotError):
        _ = open_snapshot(state).header_capacity


@pytest.mark.parametrize(("field", "value"), [("header", "5"), ("memsz", "4096")])
def test_snapshot_field_of_the_wrong_type(state: Path, field: str, value: str) -> None:
    m = _manifest(state)
    if field == "header":
        m["header"] = value
    else:
        segments = m["segments"]
        assert isinstance(segments, list)
        segments[5][field] = value
    (state / SNAPSHOT / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(SnapshotError):
        _ = open_snapshot(state).header_capacity
