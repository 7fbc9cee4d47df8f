# SPDX-License-Identifier: GPL-2.0-or-later
"""kexecd's refresh of a real arm64 load (tests/data/arm64-6.1-2.0.25-boot) on
a fake root: in place within the header's page, the DTB's size cell
following the header; and past the page, the header moved with the DTB
repointed, in one load (what ``test_arm64.py`` cannot afford in a guest: an
arm64 header page holds 72 program headers, ~68 DIMMs' worth)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kexecd import arch
from kexecd.arch.aarch64 import AARCH64, fdt
from kexecd.image import elfcore, loader, plan
from kexecd.image.plan import Action
from kexecd.image.store import open_snapshot
from kexecd.loads import KexecCall, LoadCapture, Segment
from kexecd.system.kernel import read_kexec_state
from kexecd.system.root import Root
from testbed.images import kexec_tools_digest, loaded_root
from tests.unit import fakes
from tests.unit.fakes import FakeBackend

NAME = "arm64-6.1-2.0.25-boot"
KEXEC_FILE_ON_CRASH = 0x2  # include/uapi/linux/kexec.h


def _add_ram(root: Path, n: int, first: int = 0) -> list[tuple[int, int]]:
    # n 128 MiB "System RAM" lines above 4 GiB, as pc-dimms give.
    iomem = root / "proc/iomem"
    added = [(0x1_0000_0000 + (first + i) * 0x1000_0000, 0x800_0000) for i in range(n)]
    iomem.write_text(
        iomem.read_text() + "".join(f"{s:x}-{s + n_ - 1:x} : System RAM\n" for s, n_ in added)
    )
    return [(s, s + n_) for s, n_ in added]


def _dtb_names(bufs: list[bytes]) -> tuple[int, ...]:
    (dtb,) = [b for b in bufs if b[:4] == fdt.MAGIC.to_bytes(4, "big")]
    tree = fdt.read(dtb)
    prop = tree.find("/chosen", "linux,elfcorehdr")
    assert prop is not None
    return fdt.cells_of(tree.value(prop))


def _digest_holds(bufs: list[bytes], segments: list[Segment], purgatory: int, off: int) -> bool:
    segs = [Segment(b, s.mem, s.memsz) for b, s in zip(bufs, segments, strict=True)]
    return bufs[purgatory][off : off + 32] == kexec_tools_digest(segs, purgatory)


def test_a_header_that_grows_past_1_kib_stays_in_its_page(tmp_path: Path) -> None:
    root, state = fakes.loaded(NAME, tmp_path)
    before = open_snapshot(state)
    header = before.segments[before.header]
    assert (header.memsz, before.header_capacity) == (4096, 72)
    ranges = _add_ram(root, 20)  # 8 program headers + 20: 1,632 bytes
    backend = FakeBackend(root=root)
    r = fakes.refresh(state, root=Root(root), backend=backend)
    assert r.loaded and r.relocated is None and r.decision.action is Action.RELOAD_HEADER
    ((_, _, bufs),) = backend.loads
    new = bufs[before.header]
    assert len(new) == 2048  # kexec-tools' size: rounded up to 1 KiB
    assert set(ranges) <= {(p.paddr, p.paddr + p.memsz) for p in elfcore.parse(new).ram}
    # The capture kernel reserves what the DTB says: the new size, same place.
    assert _dtb_names(bufs) == (0, header.mem, 0, 2048)
    off = before.digest.digest_offset if before.digest else -1
    assert _digest_holds(bufs, list(before.segments), before.purgatory or 0, off)


def test_an_outgrown_header_moves_with_the_dtb_repointed(tmp_path: Path) -> None:
    root, state = fakes.loaded(NAME, tmp_path)
    before = open_snapshot(state)
    old = before.segments[before.header]
    ranges = _add_ram(root, 70)  # 78 program headers: past the page
    p = plan.make(before, Root(root), kexec=read_kexec_state(Root(root)))
    assert p.action is Action.RELOCATE and p.move is not None, p.decision.reason
    backend = FakeBackend(root=root)
    r = fakes.refresh(state, root=Root(root), backend=backend)
    assert r.loaded and r.relocated is not None
    _, mem, memsz = r.relocated
    after = open_snapshot(state)
    assert mem != old.mem and after.header_capacity >= 78
    ((_, _, bufs),) = backend.loads
    new = bufs[after.header]
    assert set(ranges) <= {(p.paddr, p.paddr + p.memsz) for p in elfcore.parse(new).ram}
    # The DTB names the new place; the header lies in the crash area, clear
    # of every other segment.
    assert _dtb_names(bufs)[1] == mem
    crash = (0x63400000, 0x73400000)
    assert crash[0] <= mem and mem + memsz <= crash[1]
    others = [s for i, s in enumerate(after.segments) if i != after.header]
    assert not any(s.mem < mem + memsz and mem < s.mem + s.memsz for s in others)
    off = after.digest.digest_offset if after.digest else -1
    assert _digest_holds(bufs, list(after.segments), after.purgatory or 0, off)
    # Current now; one more range is a header-only reload in the new place.
    assert plan.make(after, Root(root)).action is Action.NOTHING
    _add_ram(root, 1, first=70)
    r = fakes.refresh(state, root=Root(root), backend=backend)
    assert r.loaded and r.relocated is None and r.decision.action is Action.RELOAD_HEADER


def test_a_file_loaded_image_is_reloaded_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kexec_file_load on an arm64 host (a kernel with CONFIG_KEXEC_FILE: no
    # Debian arm64 kernel has it, see testbed.arm64.TRIXIE_AUTO): the kernel
    # builds the header and hashes it into its own purgatory, and no arm64
    # kernel updates it (crash hotplug is x86 and ppc64 only), so the image is
    # reloaded whole by the command that made it.
    monkeypatch.setattr(arch, "host", lambda: AARCH64)
    root = Root(loaded_root(NAME, tmp_path))
    cap = LoadCapture(
        KexecCall.KEXEC_FILE_LOAD,
        0,
        0,
        KEXEC_FILE_ON_CRASH,
        (),
        b"console=ttyAMA0\0",
        1,
        0,
        crash_loads=1,
        unloads=0,
        reboot_loads=0,
        program=fakes.KEXEC.read_bytes(),
    )
    state = tmp_path / "state"
    argv = [*fakes.ARGV, "-s"]
    snap = loader.load(argv, state, root=root, tracer=fakes.tracer_for(cap))
    assert snap.file_load and snap.arch is AARCH64
    _add_ram(root.base, 2)
    tracer = fakes.tracer_for(cap)
    backend = FakeBackend(root=root.base)
    r = fakes.refresh(state, root=root, backend=backend, tracer=tracer)
    assert r.decision.action is Action.FULL_RELOAD and "kexec_file_load" in r.decision.reason
    assert tracer.calls == [tuple(argv)]  # type: ignore[attr-defined]
    assert backend.loads == []  # the command loaded it, not kexecd
