# SPDX-License-Identifier: GPL-2.0-or-later
"""The system model: what it reads, and the errors bad input gets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kexecd.errors import SystemStateError
from kexecd.model import MemRange, RangeType
from kexecd.system.cpus import parse_cpu_list, read_cpus
from kexecd.system.iomem import crash_ranges, parse_iomem
from kexecd.system.kernel import read_kernel_map, read_kexec_state, read_vmcoreinfo
from kexecd.system.root import Root
from kexecd.system.state import read_system
from tests.unit.data import DATA, fake_root
from tests.unit.fakes import root_reads

CPU = "sys/devices/system/cpu"


def test_reads_a_capture() -> None:
    state = read_system(Root(DATA / "hotadd" / "root"))
    assert state.cpus.possible == (0, 1, 2, 3)
    assert state.cpus.nr_cpus_conf == 4
    assert state.cpus.online == (0, 1, 2)
    assert [n.cpu for n in state.cpus.notes] == [0, 1, 2]
    assert {n.note.size for n in state.cpus.notes} == {368}
    assert state.vmcoreinfo is not None and state.vmcoreinfo.size == 0x1024
    assert len(state.memory.crash_reserved) == 1
    assert state.memory.crash_reserved[0].size == 256 << 20
    ram = state.memory.ram
    assert MemRange(0x1_0000_0000, 0x1_1FFF_FFFF) in ram
    # The crash kernel's reservation is cut out of RAM.
    lo = state.memory.crash_reserved[0]
    assert not any(r.start <= lo.start <= r.end for r in ram)


def test_iomem_classification_and_nesting() -> None:
    text = (
        "00000000-00000fff : Reserved\n"
        "00001000-0009fbff : System RAM\n"
        "000e0000-000fffff : reserved\n"
        "00100000-7fffffff : System RAM\n"
        "  01000000-01ffffff : Kernel code\n"
        "  10000000-1fffffff : Crash kernel\n"
        "7ff00000-7fffffff : ACPI Tables\n"
        "80000000-80ffffff : ACPI Non-volatile Storage\n"
        "90000000-9fffffff : PCI Bus 0000:00\n"
        "  90000000-90ffffff : Reserved\n"
        "a0000000-afffffff : Persistent Memory\n"
        "  a0000000-afffffff : System RAM (kmem)\n"
    )
    cr = crash_ranges(parse_iomem(text))
    assert [(r.start, r.end, r.type) for r in cr.ranges] == [
        (0x0, 0xFFF, RangeType.RESERVED),
        (0x1000, 0x9FBFF, RangeType.RAM),
        (0xE0000, 0xFFFFF, RangeType.RESERVED),
        (0x100000, 0xFFFFFFF, RangeType.RAM),
        (0x20000000, 0x7FFFFFFF, RangeType.RAM),  # split off after the crash kernel
        (0x7FF00000, 0x7FFFFFFF, RangeType.ACPI),
        (0x80000000, 0x80FFFFFF, RangeType.ACPI_NVS),
        (0x90000000, 0x90FFFFFF, RangeType.RESERVED),  # nested lines count too
        (0xA0000000, 0xAFFFFFFF, RangeType.PMEM),
        (0xA0000000, 0xAFFFFFFF, RangeType.RAM),
    ]
    assert cr.crash_reserved == (MemRange(0x10000000, 0x1FFFFFFF),)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("00000000-00000fff : Reserved\nnonsense\n", r"/proc/iomem:2: cannot parse 'nonsense'"),
        ("0000ffff-00000fff : System RAM\n", r"/proc/iomem:1: range ends before it starts"),
        ("", r"/proc/iomem: empty"),
        ("00000000-00000000 : System RAM\n00000000-00000000 : Reserved\n", "run as root"),
    ],
)
def test_malformed_iomem_is_named(text: str, match: str) -> None:
    with pytest.raises(SystemStateError, match=match):
        parse_iomem(text)


def test_malformed_iomem_under_root(tmp_path: Path) -> None:
    root = fake_root("boot", tmp_path)
    (root / "proc/iomem").write_text("garbage\n")
    with pytest.raises(SystemStateError, match=rf"{root}/proc/iomem:1: cannot parse"):
        read_system(Root(root))


def test_missing_crash_notes_skips_that_cpu(tmp_path: Path) -> None:
    # kexec-tools crashdump.c: no cpuN/crash_notes means no PT_NOTE for it.
    root = fake_root("hotadd", tmp_path)
    (root / CPU / "cpu1/crash_notes").unlink()
    assert [n.cpu for n in read_cpus(Root(root)).notes] == [0, 2]


def test_missing_crash_notes_size_falls_back_to_1024(tmp_path: Path) -> None:
    root = fake_root("boot", tmp_path)
    (root / CPU / "cpu0/crash_notes_size").unlink()
    assert read_cpus(Root(root)).notes[0].note.size == 1024


def test_bad_crash_notes_is_named(tmp_path: Path) -> None:
    root = fake_root("boot", tmp_path)
    (root / CPU / "cpu1/crash_notes").write_text("zz\n")
    with pytest.raises(SystemStateError, match=r"cpu1/crash_notes: cannot parse 'zz'"):
        read_cpus(Root(root))
    (root / CPU / "cpu1/crash_notes").write_text("1000\n")
    (root / CPU / "cpu1/crash_notes_size").write_text("big\n")
    with pytest.raises(SystemStateError, match=r"cpu1/crash_notes_size: cannot parse"):
        read_cpus(Root(root))


def test_unreadable_crash_notes_is_named(tmp_path: Path) -> None:
    root = fake_root("boot", tmp_path)
    target = root / CPU / "cpu0/crash_notes"
    target.unlink()
    target.mkdir()  # reads fail as on a non-file
    with pytest.raises(SystemStateError, match=r"cpu0/crash_notes: is a directory"):
        read_cpus(Root(root))


def test_missing_cpu_possible(tmp_path: Path) -> None:
    root = fake_root("boot", tmp_path)
    (root / CPU / "possible").unlink()
    with pytest.raises(SystemStateError, match=r"cpu/possible: missing"):
        read_cpus(Root(root))
    with pytest.raises(SystemStateError, match=r"expected a CPU list"):
        parse_cpu_list("0-x")
    with pytest.raises(SystemStateError, match=r"runs backwards"):
        parse_cpu_list("3-1")


def test_vmcoreinfo(tmp_path: Path) -> None:
    root = fake_root("boot", tmp_path)
    note = read_vmcoreinfo(Root(root))
    assert note is not None and note.size == 0x1024
    (root / "sys/kernel/vmcoreinfo").write_text("what\n")
    with pytest.raises(SystemStateError, match=r"vmcoreinfo: cannot parse 'what'"):
        read_vmcoreinfo(Root(root))
    (root / "sys/kernel/vmcoreinfo").unlink()
    assert read_vmcoreinfo(Root(root)) is None


def test_kernel_map(tmp_path: Path) -> None:
    root = fake_root("boot", tmp_path)
    kmap = read_kernel_map(Root(root), 0x1000000)
    assert kmap.page_offset & ((1 << 30) - 1) == 0
    assert kmap.text.paddr == 0x1000000
    assert kmap.text.vaddr % (1 << 20) == 0 and kmap.text.size % 4096 == 0
    (root / "proc/kcore").write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(SystemStateError, match=r"proc/kcore: not an ELF core file"):
        read_kernel_map(Root(root), 0x1000000)


def test_kexec_state(tmp_path: Path) -> None:
    root = fake_root("boot", tmp_path)
    st = read_kexec_state(Root(root))
    assert st.crash_loaded is False
    # Linux 6.12 answers EBUSY on kexec_crash_size while the kexec lock is
    # held (seen in the test bed): kexecd does not read it.
    (root / "sys/kernel/kexec_crash_size").unlink()
    (root / "sys/kernel/kexec_crash_size").mkdir()
    assert read_kexec_state(Root(root)).uevent_seqnum == st.uevent_seqnum
    # 6.1 has no crash_hotplug files: the kernel cannot update the header.
    assert st.cpu_crash_hotplug is None and st.memory_crash_hotplug is None
    (root / "sys/devices/system/cpu/crash_hotplug").write_text("1\n")
    assert read_kexec_state(Root(root)).cpu_crash_hotplug is True


def test_memory_block_size_and_crash_hotplug(tmp_path: Path) -> None:
    from kexecd.system.kernel import read_memory_block_size

    root = Root(DATA / "boot" / "root")
    assert read_memory_block_size(root) == 0x8000000  # 128 MiB blocks
    assert not read_kexec_state(root).crash_hotplug  # Linux 6.1: no crash_hotplug file
    bare = tmp_path / "root"
    (bare / "sys/devices/system/memory").mkdir(parents=True)
    assert read_memory_block_size(Root(bare)) is None
    (bare / "sys/devices/system/memory/block_size_bytes").write_text("lots\n")
    with pytest.raises(SystemStateError, match="block_size_bytes: cannot parse 'lots'"):
        read_memory_block_size(Root(bare))
    (bare / "sys/devices/system/memory/crash_hotplug").write_text("0\n")
    state = read_kexec_state(Root(bare))
    assert state.crash_hotplug and not state.kernel_updates  # there, not active


def test_notes_read_once_are_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CPU's crash_notes is its per-CPU note, allocated once at boot: a later
    # read takes it from the earlier one, and reads only a CPU it has not seen.
    root = fake_root("boot", tmp_path)
    first = read_cpus(Root(root))
    assert [n.cpu for n in first.notes] == [0, 1]
    reads = root_reads(monkeypatch)
    again = read_cpus(Root(root), first)
    assert again == first
    assert not [r for r in reads if "crash_notes" in r]
    assert {"sys/devices/system/cpu/possible", "sys/devices/system/cpu/online"} <= set(reads)

    # A CPU added: its directory appears, and only its note is read.
    shutil.copytree(DATA / "hotadd/root" / CPU / "cpu2", root / CPU / "cpu2")
    (root / CPU / "present").write_text("0-2\n")
    reads.clear()
    added = read_cpus(Root(root), again)
    assert [n.cpu for n in added.notes] == [0, 1, 2]
    assert [r for r in reads if "crash_notes" in r] == [
        "sys/devices/system/cpu/cpu2/crash_notes",
        "sys/devices/system/cpu/cpu2/crash_notes_size",
    ]
    assert added == read_cpus(Root(root))  # as a read from scratch has it

    # A CPU gone: its directory goes, and so does its note.
    shutil.rmtree(root / CPU / "cpu1")
    assert [n.cpu for n in read_cpus(Root(root), added).notes] == [0, 2]


def test_notes_are_read_again_when_the_possible_cpus_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_root("boot", tmp_path)
    first = read_cpus(Root(root))
    (root / CPU / "possible").write_text("0-1\n")
    reads = root_reads(monkeypatch)
    fewer = read_cpus(Root(root), first)
    assert "sys/devices/system/cpu/cpu0/crash_notes" in reads
    assert fewer.nr_cpus_conf == 2 and [n.cpu for n in fewer.notes] == [0, 1]


def test_read_system_reuses_notes_only_under_the_same_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, other = fake_root("boot", tmp_path / "a"), fake_root("boot", tmp_path / "b")
    first = read_system(Root(one))
    reads = root_reads(monkeypatch)
    read_system(Root(one), previous=first)
    assert not [r for r in reads if "crash_notes" in r]
    read_system(Root(other), previous=first)
    assert [r for r in reads if "crash_notes" in r]
