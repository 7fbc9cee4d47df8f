# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd inspect``: files, the system, output, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kexecd.cli import main
from kexecd.model import human
from tests.elfwriter import PT_LOAD, PT_NOTE, Ph, core, note
from tests.unit.data import DATA, backup_start, fake_root, header_bytes

HOTADD_HDR = str(DATA / "hotadd/load/seg-05.bin")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["inspect", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_human_sizes() -> None:
    assert [human(n) for n in (368, 4096, 4132, 512 << 20, 3 << 30)] == [
        "368 B",
        "4 KiB",
        "4.0 KiB",
        "512 MiB",
        "3 GiB",
    ]


def test_shows_a_header(capsys: pytest.CaptureFixture[str]) -> None:
    assert header_bytes("hotadd") == Path(HOTADD_HDR).read_bytes()
    rc, out, _ = run(capsys, HOTADD_HDR)
    assert rc == 0
    assert "ELF64 core header, x86_64, 10 program headers (624 of 2048 bytes)" in out
    assert "CPU notes (3):" in out
    assert "vmcoreinfo" in out and "kernel text" in out
    assert "0x000100000000-0x00011fffffff    512 MiB" in out
    assert f"data at {backup_start('hotadd'):#x} (backup copy)" in out


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, HOTADD_HDR, "--json")
    d = json.loads(out)
    assert rc == 0 and d["kind"] == "elfcorehdr" and d["phnum"] == 10
    assert len(d["cpu_notes"]) == 3 and d["vmcoreinfo"]["size"] == 0x1024
    assert {"start": 0x1_0000_0000, "end": 0x1_1FFF_FFFF} in [
        {"start": r["start"], "end": r["end"]} for r in d["ram"]
    ]
    assert d["backup"]["copy"] == backup_start("hotadd")


def test_shows_a_vmcore_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = note(b"CORE", 1, bytes(336)) * 3 + note(b"VMCOREINFO", 0, b"OSRELEASE=6.1\n")
    off = 64 + 3 * 56
    data = core(
        [
            Ph(PT_NOTE, offset=off, filesz=len(notes), memsz=len(notes)),
            Ph(PT_LOAD, offset=0x10000, vaddr=0xFFFF888000001000, paddr=0x1000, memsz=0x9F000),
            Ph(PT_LOAD, offset=0xB0000, vaddr=0xFFFF888000100000, paddr=0x100000, memsz=1 << 20),
        ],
        notes,
    )
    f = tmp_path / "vmcore"
    f.write_bytes(data)
    rc, out, _ = run(capsys, str(f))
    assert rc == 0
    assert "vmcore, x86_64, 3 program headers" in out
    assert "3 x NT_PRSTATUS, 1 x VMCOREINFO" in out
    assert "backup copy" not in out  # a vmcore's offsets are file offsets


def test_system_with_template_writes_the_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "hdr.bin"
    rc, out, err = run(
        capsys,
        "--system",
        "--root",
        str(DATA / "hotremove/root"),
        "--template",
        str(DATA / "boot/load/seg-05.bin"),
        "--output",
        str(out_file),
    )
    assert (rc, out, err) == (0, "", "")
    assert out_file.read_bytes() == header_bytes("hotremove")


def test_system_fresh(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "hdr.bin"
    root = str(DATA / "hotadd/root")
    rc, _, _ = run(
        capsys,
        "--system",
        "--root",
        root,
        "--backup-start",
        hex(backup_start("hotadd")),
        "-o",
        str(out_file),
    )
    assert rc == 0 and out_file.read_bytes() == header_bytes("hotadd")
    rc, out, _ = run(capsys, "--system", "--root", root)
    assert rc == 0 and "system under" in out and "backup copy" not in out


def test_system_by_an_older_kexec_tools(capsys: pytest.CaptureFixture[str]) -> None:
    # The capture's kallsyms has no page_offset_base: 2.0.20 takes its constant.
    root = str(DATA / "hotadd/root")
    rc, out, _ = run(capsys, "--system", "--root", root, "--kexec-tools", "2.0.20", "--json")
    assert rc == 0 and json.loads(out)["page_offset"] == 0xFFFF880000000000
    rc, out, _ = run(capsys, "--system", "--root", root, "--kexec-tools", "2.0.25", "--json")
    assert rc == 0 and json.loads(out)["page_offset"] != 0xFFFF880000000000


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not elf at all", "not a little-endian ELF64 core header (not ELF, 14 bytes)"),
        (b"\x7fELF" + bytes(10), "(an ELF file, 14 bytes)"),
    ],
)
def test_bad_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, match: str
) -> None:
    f = tmp_path / "bad.bin"
    f.write_bytes(content)
    rc, out, err = run(capsys, str(f))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"kexecd inspect: {f}: ")
    assert match in err


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "/nonexistent/hdr")
    assert rc == 2 and "/nonexistent/hdr: cannot read" in err


def test_bad_system_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = fake_root("boot", tmp_path)
    (root / "proc/iomem").write_text("00000000-00000fff : Reserved\n???\n")
    rc, _, err = run(capsys, "--system", "--root", str(root))
    assert rc == 2
    assert err == f"kexecd inspect: {root}/proc/iomem:2: cannot parse '???': expected " + (
        "'start-end : name' with hex addresses; pass the kernel's /proc/iomem\n"
    )


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        [],
        [HOTADD_HDR, "--system"],
        [HOTADD_HDR, "--template", HOTADD_HDR],
        ["--system", "--kexec-tools", "2.0"],
    ):
        with pytest.raises(SystemExit) as e:
            main(["inspect", *args])
        assert e.value.code == 2
    capsys.readouterr()


@pytest.mark.parametrize(
    ("patch", "filesz"),
    [(b"\xff\xff\xff\x7f", None), (b"\x05\x00\x00\x00\xff\xff\xff\xff", None), (b"", 5)],
)
def test_malformed_vmcore_notes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], patch: bytes, filesz: int | None
) -> None:
    # A note whose name or descriptor runs past its segment, or a segment too
    # short for a note: no traceback, the program headers are still shown.
    bad = note(b"CORE", 1, bytes(336))
    bad = patch + bad[len(patch) :]
    size = len(bad) if filesz is None else filesz
    data = core([Ph(PT_NOTE, offset=64 + 56, filesz=size, memsz=size)], bad)
    f = tmp_path / "vmcore"
    f.write_bytes(data)
    rc, out, err = run(capsys, str(f), "--json")
    assert rc == 0 and err == ""
    d = json.loads(out)
    assert d["phnum"] == 1 and all(n["size"] <= size for n in d["notes_in_file"])
