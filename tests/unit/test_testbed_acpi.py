# SPDX-License-Identifier: GPL-2.0-or-later
"""The test bed's ACPI table upgrade: FADT and MADT patched as Linux 6.12
needs them, checksums right, the cpio the kernel reads, the cache by shape.

The tables are built here, field by field, and the checksums are checked by
summing the bytes, not with the code under test.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from testbed import acpi


def _table(sig: bytes, revision: int, body: bytes, oem_revision: int = 1) -> bytes:
    length = 36 + len(body)
    head = struct.pack(
        "<4sIBB6s8sI4sI",
        sig,
        length,
        revision,
        0,
        b"BOCHS ",
        b"BXPC    ",
        oem_revision,
        b"BXPC",
        1,
    )
    raw = bytearray(head + body)
    raw[9] = (256 - sum(raw) % 256) % 256
    return bytes(raw)


def _sums_to_zero(table: bytes) -> bool:
    return sum(table) % 256 == 0


def _fadt(length: int = 244, revision: int = 3, minor: int = 0, oem_revision: int = 1) -> bytes:
    body = bytearray(i % 255 + 1 for i in range(length - 36))  # non-zero: see what moves
    body[131 - 36] = minor
    return _table(b"FACP", revision, bytes(body), oem_revision)


def _lapic(uid: int, apic_id: int, flags: int) -> bytes:
    return struct.pack("<BBBBI", 0, 8, uid, apic_id, flags)


def _x2apic(uid: int, apic_id: int, flags: int) -> bytes:
    return struct.pack("<BBHIII", 9, 16, 0, apic_id, flags, uid)


IOAPIC = struct.pack("<BBBBII", 1, 12, 0, 0, 0xFEC00000, 0)
OVERRIDE = struct.pack("<BBBBIH", 2, 10, 0, 0, 2, 0)


def _madt(*entries: bytes, revision: int = 1) -> bytes:
    return _table(b"APIC", revision, struct.pack("<II", 0xFEE00000, 1) + b"".join(entries))


QEMU_LIKE_MADT = (
    _lapic(0, 0, 1),
    _lapic(1, 1, 1),
    _lapic(2, 2, 0),
    _lapic(3, 3, 0),
    _lapic(4, 0xFF, 0),  # no CPU: the kernel skips it
    IOAPIC,
    OVERRIDE,
    _x2apic(300, 300, 0),
    _x2apic(301, 301, 1),
)


def _flags(table: bytes) -> dict[tuple[int, int], int]:
    # (type, uid) -> flags, read with offsets of their own.
    out = {}
    pos = 44
    while pos < len(table):
        kind, length = table[pos], table[pos + 1]
        if kind == 0:
            out[(0, table[pos + 2])] = struct.unpack_from("<I", table, pos + 4)[0]
        elif kind == 9:
            flags, uid = struct.unpack_from("<II", table, pos + 8)
            out[(9, uid)] = flags
        pos += length
    return out


def test_synthetic_tables_are_sound() -> None:
    for t in (_fadt(), _madt(*QEMU_LIKE_MADT)):
        assert _sums_to_zero(t)
        acpi.parse_header(t)


def test_header_checks() -> None:
    fadt = _fadt()
    h = acpi.parse_header(fadt, "FACP")
    assert (h.signature, h.length, h.revision, h.oem_revision) == ("FACP", 244, 3, 1)
    assert (h.oem_id, h.oem_table_id) == (b"BOCHS ", b"BXPC    ")
    with pytest.raises(acpi.AcpiError, match="signature 'FACP', not 'APIC'"):
        acpi.parse_header(fadt, "APIC")
    with pytest.raises(acpi.AcpiError, match="bad checksum"):
        acpi.parse_header(fadt[:40] + bytes([fadt[40] ^ 1]) + fadt[41:])
    with pytest.raises(acpi.AcpiError, match="length field 244, but 243 bytes"):
        acpi.parse_header(fadt[:-1])
    with pytest.raises(acpi.AcpiError, match="shorter than an ACPI table header"):
        acpi.parse_header(fadt[:20])


def test_fadt_claims_acpi_6_3() -> None:
    old = _fadt()
    assert acpi.fadt_version(old) == (3, 0)
    assert not acpi.online_capable_honoured(old)
    new = acpi.patch_fadt(old)
    assert _sums_to_zero(new)
    assert len(new) == 276 and struct.unpack_from("<I", new, 4)[0] == 276
    assert new[8] == 6 and new[131] == 3
    assert struct.unpack_from("<I", new, 24)[0] == 2  # OEM revision raised
    assert new[:4] == b"FACP" and new[10:24] == old[10:24] and new[28:36] == old[28:36]
    # Every field but the minor version as it was; the 6.x fields zero.
    assert new[36:131] == old[36:131] and new[132:244] == old[132:244]
    assert new[244:] == bytes(32)
    assert acpi.fadt_version(new) == (6, 3)
    assert acpi.online_capable_honoured(new)


RULE = [(3, 0, False), (5, 9, False), (6, 0, False), (6, 2, False), (6, 3, True), (6, 5, True)]


@pytest.mark.parametrize(("revision", "minor", "honoured"), [*RULE, (7, 0, True)])
def test_the_kernels_rule(revision: int, minor: int, honoured: bool) -> None:
    # arch/x86/kernel/acpi/boot.c (6.12), acpi_parse_madt(): the FADT's
    # revision > 6, or 6 with a minor version >= 3.
    assert acpi.online_capable_honoured(_fadt(276, revision, minor)) is honoured


def test_newer_fadt_keeps_its_version_and_a_long_one_its_length() -> None:
    new = acpi.patch_fadt(_fadt(300, 6, 5, oem_revision=7))
    assert (new[8], new[131], len(new)) == (6, 5, 300)
    assert struct.unpack_from("<I", new, 24)[0] == 8
    assert _sums_to_zero(new)


def test_oem_revision_that_cannot_rise_is_refused() -> None:
    with pytest.raises(acpi.AcpiError, match="cannot rise"):
        acpi.patch_fadt(_fadt(oem_revision=0xFFFFFFFF))


def test_madt_marks_disabled_cpus_online_capable() -> None:
    old = _madt(*QEMU_LIKE_MADT)
    cpus = acpi.madt_cpus(old)
    assert [(c.type, c.uid, c.apic_id, c.enabled) for c in cpus] == [
        (0, 0, 0, True),
        (0, 1, 1, True),
        (0, 2, 2, False),
        (0, 3, 3, False),
        (0, 4, 0xFF, False),
        (9, 300, 300, False),
        (9, 301, 301, True),
    ]
    new = acpi.patch_madt(old)
    assert _sums_to_zero(new)
    assert len(new) == len(old) and new[8] == 5
    assert struct.unpack_from("<I", new, 24)[0] == 2
    assert _flags(new) == {
        (0, 0): 1,
        (0, 1): 1,
        (0, 2): 2,
        (0, 3): 2,
        (0, 4): 0,  # not a CPU: left alone
        (9, 300): 2,
        (9, 301): 1,
    }
    # Only flags, the revision, the OEM revision and the checksum change.
    changed = {i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b}
    flag_bytes = {44 + 16 + 4, 44 + 24 + 4, 44 + 40 + 12 + 10 + 8}
    assert changed == {8, 9, 24} | flag_bytes


def test_madt_entries_must_fit() -> None:
    with pytest.raises(acpi.AcpiError, match="bad length"):
        acpi.madt_cpus(_madt(_lapic(0, 0, 1), b"\x00\x20\x00\x00"))
    with pytest.raises(acpi.AcpiError, match="has length 6, not 8"):
        acpi.madt_cpus(_madt(b"\x00\x06\x00\x00\x00\x00"))
    with pytest.raises(acpi.AcpiError, match="bad length 0"):
        acpi.madt_cpus(_madt(b"\x01\x00"))


def _read_newc(blob: bytes) -> list[tuple[str, int, bytes]]:
    # A newc reader of its own: (name, mode, data) up to the trailer.
    out = []
    pos = 0
    while True:
        assert blob[pos : pos + 6] == b"070701"
        fields = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_at = pos + 110
        name = blob[name_at : name_at + namesize - 1].decode()
        data_at = (name_at + namesize + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, blob[data_at : data_at + size]))
        pos = (data_at + size + 3) & ~3


def test_upgrade_cpio_holds_the_tables_where_the_kernel_looks() -> None:
    tables = acpi.upgraded({"FACP": _fadt(), "APIC": _madt(*QEMU_LIKE_MADT)})
    blob = acpi.upgrade_cpio(tables)
    assert len(blob) % 512 == 0
    files = {n: d for n, m, d in _read_newc(blob) if m & 0o170000 == 0o100000}
    assert files == {
        "kernel/firmware/acpi/APIC.aml": tables["APIC"],
        "kernel/firmware/acpi/FACP.aml": tables["FACP"],
    }
    for data in files.values():
        assert _sums_to_zero(data) and struct.unpack_from("<I", data, 4)[0] == len(data)


ARGV = [
    "/usr/bin/qemu-system-x86_64",
    "-machine",
    "q35",
    "-smp",
    "2,maxcpus=4",
    "-kernel",
    "/cache/vmlinuz",
    "-initrd",
    "/cache/initramfs.cpio",
    "-append",
    "console=ttyS0 kexecd.share=/run/x",
    "-serial",
    "file:/runs/1/console.log",
    "-virtfs",
    "local,path=/runs/1/share,mount_tag=share,security_model=none",
]


def test_table_options_drop_boot_files_and_paths() -> None:
    assert acpi.table_options(ARGV) == [
        "-machine",
        "q35",
        "-smp",
        "2,maxcpus=4",
        "-serial",
        "file:*",
        "-virtfs",
        "local,path=*,mount_tag=share,security_model=none",
    ]
    # Another run, kernel and initrd: the same options.
    other = [a.replace("/runs/1", "/runs/2").replace("vmlinuz", "bzImage") for a in ARGV]
    assert acpi.table_options(other) == acpi.table_options(ARGV)


def test_shape_key_follows_the_shape() -> None:
    shape: dict[str, object] = {"qemu": "QEMU 7.2", "firmware": "ab", "options": ["-smp", "2"]}
    key = acpi.shape_key(shape)
    assert len(key) == 20 and key == acpi.shape_key(dict(reversed(list(shape.items()))))
    assert key != acpi.shape_key({**shape, "options": ["-smp", "3"]})
    assert key != acpi.shape_key({**shape, "qemu": "QEMU 8.2"})


def test_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEXECD_VM_CACHE", str(tmp_path))
    raw = {"FACP": _fadt(), "APIC": _madt(*QEMU_LIKE_MADT)}
    shape: dict[str, object] = {"qemu": "q", "firmware": "f", "options": []}
    key = acpi.shape_key(shape)
    assert acpi.load_cached(key) is None
    d = acpi.store(key, shape, raw)
    assert d == tmp_path / "acpi" / key
    assert json.loads((d / "shape.json").read_text()) == shape
    assert acpi.load_cached(key) == raw
    (d / "APIC").write_bytes(raw["APIC"][:-1])  # a broken entry is not used
    assert acpi.load_cached(key) is None
    with pytest.raises(acpi.AcpiError):
        acpi.store(key, shape, {"FACP": raw["FACP"], "APIC": raw["FACP"]})


def test_upgraded_initrd_puts_the_tables_first(tmp_path: Path) -> None:
    initrd = tmp_path / "initramfs-0123.cpio"
    initrd.write_bytes(b"070701" + b"0" * 506)
    raw = {"FACP": _fadt(), "APIC": _madt(*QEMU_LIKE_MADT)}
    path = acpi.upgraded_initrd(raw, initrd)
    blob = acpi.upgrade_cpio(acpi.upgraded(raw))
    assert path.parent == tmp_path and path.name.startswith("initramfs-0123+acpi-")
    assert path.read_bytes() == blob + initrd.read_bytes()
    assert acpi.upgraded_initrd(raw, initrd) == path  # once per content
