# SPDX-License-Identifier: GPL-2.0-or-later
"""The header engine reproduces kexec-tools' headers byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from kexecd.errors import HeaderError, SystemStateError
from kexecd.image import elfcore
from kexecd.system import kexectools
from kexecd.system.root import Root
from kexecd.system.state import read_system
from tests.unit.data import (
    ALL_CAPTURES,
    DATA,
    SAME_SET,
    VIRTIO_MEM,
    backup_start,
    fake_root,
    header_bytes,
    manifest,
)


def rules_of(name: str) -> kexectools.HeaderRules:
    """The rules of the kexec-tools that made the capture (its manifest says)."""
    return kexectools.rules_for(manifest(name)["kexec_tools"])


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_fresh_build_is_byte_identical(name: str) -> None:
    state = read_system(Root(DATA / name / "root"), rules=rules_of(name))
    built = elfcore.build(elfcore.spec_fresh(state, backup_start(name)))
    assert built == header_bytes(name)


@pytest.mark.parametrize(("template", "now"), SAME_SET)
def test_template_build_is_byte_identical(template: str, now: str) -> None:
    state = read_system(Root(DATA / now / "root"), rules=rules_of(now))
    tmpl = elfcore.parse(header_bytes(template))
    assert elfcore.build(elfcore.spec_from_template(tmpl, state)) == header_bytes(now)


def test_template_build_needs_no_kcore_or_kallsyms(tmp_path: Path) -> None:
    root = fake_root("hotadd", tmp_path)
    (root / "proc/kcore").unlink()
    (root / "proc/kallsyms").unlink()
    state = read_system(Root(root))
    tmpl = elfcore.parse(header_bytes("boot"))
    assert elfcore.build(elfcore.spec_from_template(tmpl, state)) == header_bytes("hotadd")
    with pytest.raises(SystemStateError, match=r"proc/kcore: missing"):
        elfcore.spec_fresh(state, backup_start("hotadd"))


def test_parsed_header_knows_its_parts() -> None:
    h = elfcore.parse(header_bytes("hotadd"))
    assert len(h.notes) == 4  # three CPUs and vmcoreinfo
    assert h.kernel_text is not None and h.kernel_text.vaddr >= 0xFFFFFFFF80000000
    assert h.backup is not None and h.backup.src_start == 0x1000
    assert h.backup.start == backup_start("hotadd")
    assert [(p.paddr, p.memsz) for p in h.ram][-2:] == [
        (0x1_0000_0000, 0x2000_0000),
        (0x1_2000_0000, 0x2000_0000),
    ]


def test_parse_rejects_what_is_not_a_core_header() -> None:
    with pytest.raises(HeaderError, match=r"x\.bin: not a little-endian ELF64 core header"):
        elfcore.parse(b"hello" * 20, "x.bin")
    data = bytearray(header_bytes("boot"))
    data[16] = 2  # ET_EXEC
    with pytest.raises(HeaderError, match="an ELF file"):
        elfcore.parse(bytes(data))
    with pytest.raises(HeaderError):
        elfcore.parse(header_bytes("boot")[:100])  # program headers cut off


def test_template_without_ram_is_refused() -> None:
    from tests.elfwriter import PT_NOTE, Ph, core

    tmpl = elfcore.parse(core([Ph(PT_NOTE, offset=0x1000, paddr=0x1000, memsz=368)]))
    state = read_system(Root(DATA / "boot" / "root"))
    with pytest.raises(HeaderError, match="page_offset is unknown"):
        elfcore.spec_from_template(tmpl, state)


def test_virtio_mem_blocks_plugged_and_unplugged_on_a_template(tmp_path: Path) -> None:
    # The capture's iomem has two "System RAM (virtio_mem)" ranges nested under
    # "virtio2", with a 128 MiB hole between them. Plug the hole (the kernel
    # merges it with both neighbours: one resource) and the header has one
    # PT_LOAD there; unplug the top range and it has none above the hole.
    root = fake_root(VIRTIO_MEM, tmp_path)
    iomem = root / "proc/iomem"
    text = iomem.read_text()
    low = "  100000000-107ffffff : System RAM (virtio_mem)\n"
    high = "  110000000-11fffffff : System RAM (virtio_mem)\n"
    assert low + high in text
    tmpl = elfcore.parse(header_bytes(VIRTIO_MEM))
    assert elfcore.build(elfcore.spec_from_template(tmpl, read_system(Root(root)))) == (
        header_bytes(VIRTIO_MEM)
    )

    def ram_above_4g() -> list[tuple[int, int]]:
        built = elfcore.parse(
            elfcore.build(elfcore.spec_from_template(tmpl, read_system(Root(root))))
        )
        return [(p.paddr, p.memsz) for p in built.ram if p.paddr >= 1 << 32]

    assert ram_above_4g() == [(0x1_0000_0000, 0x800_0000), (0x1_1000_0000, 0x1000_0000)]
    iomem.write_text(text.replace(low + high, "  100000000-11fffffff : System RAM (virtio_mem)\n"))
    assert ram_above_4g() == [(0x1_0000_0000, 0x2000_0000)]
    iomem.write_text(text.replace(high, ""))
    assert ram_above_4g() == [(0x1_0000_0000, 0x800_0000)]
