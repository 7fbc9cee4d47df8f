# SPDX-License-Identifier: GPL-2.0-or-later
"""kexecd follows the kexec-tools version that built the loaded header: the
version read from the program at the load, recorded in the snapshot, and the
header rules it implies (what is RAM, how many ranges, page_offset)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from kexecd import core
from kexecd.arch.x86_64 import MAX_RANGES, MAX_RANGES_OLD, PAGE_OFFSET_PRE_4_20
from kexecd.errors import SnapshotError, SystemStateError
from kexecd.image import elfcore, loader, plan
from kexecd.image.manifest import decode, encode
from kexecd.image.store import open_snapshot
from kexecd.model import RangeType
from kexecd.system.iomem import crash_ranges, parse_iomem
from kexecd.system.kernel import read_kernel_map, read_kexec_state
from kexecd.system.kexectools import (
    rules_for,
    version_in,
)
from kexecd.system.root import Root
from kexecd.system.state import read_system
from testbed.capture import Capture
from testbed.images import image, kexec_tools_digest, loaded_root
from tests.unit import fakes
from tests.unit.data import DATA, SETS, fake_root, header_bytes, manifest
from tests.unit.fakes import ARGV, FakeBackend, tracer_for

KMEM = (
    "00001000-0009fbff : System RAM\n"
    "00100000-3fffffff : System RAM\n"
    "  01000000-01ffffff : Kernel code\n"
    "40000000-4fffffff : Persistent Memory\n"
    "  40000000-4fffffff : System RAM (kmem)\n"
    "100000000-13fffffff : System RAM (virtio_mem)\n"
)


@pytest.mark.parametrize(
    ("version", "exact", "most", "symbol"),
    [
        ("2.0.20", True, MAX_RANGES_OLD, True),
        ("2.0.21", True, MAX_RANGES_OLD, True),
        ("2.0.22", False, MAX_RANGES, False),
        ("2.0.25", False, MAX_RANGES, False),
        ("2.0.29", False, MAX_RANGES, False),
        ("3.0.0", False, MAX_RANGES, False),
        (None, False, MAX_RANGES, False),
        ("2.0", False, MAX_RANGES, False),  # unparsable: today's rules
    ],
)
def test_rules_by_version(version: str | None, exact: bool, most: int, symbol: bool) -> None:
    r = rules_for(version)
    assert (r.ram_exact, r.max_ranges, r.page_offset_symbol) == (exact, most, symbol)
    assert r.is_ram("System RAM")
    assert r.is_ram("System RAM (kmem)") is not exact
    assert f"{most:,} ranges" in r.describe()


def test_version_in_a_program() -> None:
    assert version_in(b"\x7fELF...\0kexec-tools 2.0.20\0usage: kexec") == "2.0.20"
    assert version_in(b"kexec-tools 2.0.25 released") == "2.0.25"
    # Not a version: another word after it, or none at all.
    assert version_in(b"kexec-tools 2.0.25.1\0") is None
    assert version_in(b"kexec-tools 2.0\0") is None
    assert version_in(b"/bin/sh\0") is None
    assert version_in(None) is None and version_in(b"") is None


def test_version_of_the_host_kexec() -> None:
    kexec = shutil.which("kexec")
    if kexec is None:
        pytest.fail("kexec-tools is missing: scripts/setup installs it")
    assert version_in(Path(kexec).read_bytes()) == "2.0.25"  # bookworm's


def test_tracer_reads_the_program_that_made_the_load(fake_kexec: Path) -> None:
    # Through a shell: the program is fake_kexec, not sh.
    cap = core.trace_kexec(["sh", "-c", f"{fake_kexec} crash"], skip=True)
    assert cap.program == fake_kexec.read_bytes()
    assert version_in(cap.program) is None


def test_ram_rule_and_range_limit() -> None:
    old, new = rules_for("2.0.20"), rules_for("2.0.25")
    res = parse_iomem(KMEM)
    assert [r.start for r in crash_ranges(res, rules=old).ram] == [0x1000, 0x100000]
    assert [r.start for r in crash_ranges(res, rules=new).ram] == [
        0x1000,
        0x100000,
        0x40000000,
        0x100000000,
    ]
    # 2.0.20 stops at 2,050 ranges; a cut that splits one then fails as `kexec -p` does.
    lines = [f"{i << 20:09x}-{(i << 20) + 0xFFFFF:09x} : System RAM" for i in range(3000)]
    assert len(crash_ranges(parse_iomem("\n".join(lines)), rules=old).ranges) == MAX_RANGES_OLD
    assert len(crash_ranges(parse_iomem("\n".join(lines)), rules=new).ranges) == 3000
    cut = "\n".join([*lines, "  00080000-0008ffff : Crash kernel"])
    with pytest.raises(SystemStateError, match=f"more than {MAX_RANGES_OLD}"):
        crash_ranges(parse_iomem(cut), rules=old)
    assert all(r.type is RangeType.RAM for r in crash_ranges(parse_iomem(cut), rules=new).ranges)


def test_page_offset_rule(tmp_path: Path) -> None:
    root = fake_root("boot", tmp_path)
    kcore = read_kernel_map(Root(root), 0x1000000).page_offset
    assert kcore != PAGE_OFFSET_PRE_4_20
    # No page_offset_base in kallsyms: 2.0.20 takes its constant, 2.0.22 on kcore's.
    assert read_kernel_map(Root(root), 0x1000000, rules_for("2.0.20")).page_offset == (
        PAGE_OFFSET_PRE_4_20
    )
    with (root / "proc/kallsyms").open("a") as f:
        f.write(f"{kcore + 0x1000:016x} D page_offset_base\n")
    assert read_kernel_map(Root(root), 0x1000000, rules_for("2.0.20")).page_offset == kcore


def test_manifest_keeps_the_version(tmp_path: Path) -> None:
    root = Root(loaded_root("boot", tmp_path))
    state = tmp_path / "state"
    loader.load(ARGV, state, root=root, tracer=tracer_for(image("boot")))
    snap = open_snapshot(state)
    assert snap.kexec_tools == "2.0.25" and not snap.rules.ram_exact
    m = decode((snap.path / "manifest.json").read_bytes(), "manifest.json")
    assert decode(encode(m), "m") == m
    data = json.loads(encode(m))
    for bad in ("2.0.25; rm -rf /", 2025, ["2.0.25"], "2.0.25.1"):
        with pytest.raises(SnapshotError, match="kexec_tools must be a version"):
            decode(json.dumps({**data, "kexec_tools": bad}).encode(), "manifest.json")
    del data["kexec_tools"]  # written before kexecd followed the version
    assert decode(json.dumps(data).encode(), "m").kexec_tools is None


def _snapshot_with(version: str | None, tmp_path: Path) -> tuple[Root, Path]:
    root = Root(loaded_root("hotadd", tmp_path))
    state = tmp_path / "state"
    program = f"kexec-tools {version}".encode() if version else None
    cap = replace(image("hotadd"), program=program)
    loader.load(ARGV, state, root=root, tracer=tracer_for(cap))
    return root, state


def test_plan_builds_by_the_recorded_version(tmp_path: Path) -> None:
    # A DIMM that shows up as "System RAM (kmem)" (dax kmem): kexec-tools 2.0.20
    # leaves it out of the header it builds, 2.0.25 puts it in.
    for version, counted in (("2.0.20", False), ("2.0.25", True), (None, True)):
        root, state = _snapshot_with(version, tmp_path / str(version))
        iomem = root.path("proc/iomem")
        text = iomem.read_text().replace(
            "100000000-11fffffff : System RAM", "100000000-11fffffff : System RAM (kmem)"
        )
        assert text != iomem.read_text()
        iomem.write_text(text)
        snap = open_snapshot(state)
        assert snap.kexec_tools == version
        p = plan.make(snap, root, kexec=read_kexec_state(root))
        assert p.target is not None
        kmem = [ph for ph in p.target.ram if ph.paddr == 0x100000000]
        assert bool(kmem) is counted, version
        fresh = read_system(root, rules=snap.rules)
        assert any(r.start == 0x100000000 for r in fresh.memory.ram) is counted
        assert elfcore.build(elfcore.spec_from_template(p.target, fresh)) == p.wanted


@pytest.mark.parametrize("name", list(SETS))
def test_refresh_of_each_set_matches_its_kexec_tools(name: str, tmp_path: Path) -> None:
    # Loaded at boot by the set's kexec-tools, refreshed on the system after
    # hot-add: the header is the one that kexec-tools built then, the other
    # segments are the loaded ones, and purgatory holds their digest.
    boot, hotadd = SETS[name]
    root = Root(loaded_root(boot, tmp_path))
    state = tmp_path / "state"
    cap = image(boot)
    loader.load(ARGV, state, root=root, tracer=tracer_for(cap))
    assert open_snapshot(state).kexec_tools == manifest(boot)["kexec_tools"]
    shutil.rmtree(root.path(""))
    root = Root(loaded_root(hotadd, tmp_path))
    backend = FakeBackend()
    result = fakes.refresh(state, root=root, backend=backend)
    assert result.loaded
    ((_, _, bufs),) = backend.loads
    header = Capture(DATA / hotadd).header_segment["index"]
    assert bufs[header] == header_bytes(hotadd)
    purg = manifest(boot)["purgatory_segment"]
    for i, (old, new) in enumerate(zip(cap.segments, bufs, strict=True)):
        if i not in (header, purg):
            assert new == old.buf, i
    segs = [replace(s, buf=b) for s, b in zip(cap.segments, bufs, strict=True)]
    off = manifest(boot)["purgatory_digest_offset"]
    assert bufs[purg][off : off + 32] == kexec_tools_digest(segs, purg)


def test_nested_virtio_mem_ranges_by_version() -> None:
    # What a 6.1 guest's /proc/iomem shows (tests/data/virtio_mem): the device's
    # whole region as "virtio2", each run of plugged blocks nested under it.
    iomem = (
        "00100000-3ffdefff : System RAM\n"
        "  26000000-35ffffff : Crash kernel\n"
        "100000000-13fffffff : virtio2\n"
        "  100000000-107ffffff : System RAM (virtio_mem)\n"
        "  110000000-11fffffff : System RAM (virtio_mem)\n"
    )
    res = parse_iomem(iomem)
    new = [(r.start, r.end) for r in crash_ranges(res, rules=rules_for("2.0.25")).ram]
    assert new[2:] == [(0x100000000, 0x107FFFFFF), (0x110000000, 0x11FFFFFFF)]
    old = [(r.start, r.end) for r in crash_ranges(res, rules=rules_for("2.0.20")).ram]
    assert old == new[:2] == [(0x100000, 0x25FFFFFF), (0x36000000, 0x3FFDEFFF)]
