# SPDX-License-Identifier: GPL-2.0-or-later
"""ACPI table upgrades that let Linux 6.12 hot-add CPUs in a QEMU TCG guest.

Linux 6.12 (Debian's carries upstream "x86/acpi/boot: Correct
acpi_is_processor_usable() check again") counts a MADT CPU entry whose
Enabled flag is clear as hot-pluggable only when
(arch/x86/kernel/acpi/boot.c, acpi_parse_madt() and acpi_is_processor_usable()):

* the firmware claims ACPI 6.3 or later: the *FADT*'s header revision is
  above 6, or it is 6 and the FADT's minor version (byte 131) is 3 or more;
  then the entry needs the Online Capable flag (bit 1 of its flags); or
* the firmware is older and the kernel sees a hypervisor
  (``!hypervisor_is_type(X86_HYPER_NATIVE)``). Under TCG with ``-cpu max`` it
  sees none, so with QEMU 7.2's FADT (revision 3) such entries are dropped and
  the guest boots with "plus 0 hotplug CPUs".

The kernel takes replacement tables from an uncompressed cpio at the front of
its initrd (CONFIG_ACPI_TABLE_UPGRADE, drivers/acpi/tables.c, 6.12): files
under ``kernel/firmware/acpi/`` whose length field matches the file and whose
checksum is right replace the firmware table of the same signature, OEM ID and
OEM table ID, and only when their OEM revision is *higher*. The kernel then
logs "ACPI: Table Upgrade: override [FACP-BOCHS -BXPC    ]" (6.12 does not
taint itself for it: /proc/sys/kernel/tainted stays 0) and keeps the tables
in a range it marks ACPI NVS (arch_reserve_mem_area(),
arch/x86/kernel/acpi/boot.c), which splits a System RAM range in /proc/iomem.

The upgraded tables are QEMU's own (they depend on the machine's shape),
read once from a guest and kept in ``cache_dir()/acpi/<key>/`` (see
:func:`shape_key`); this module patches them and packs the cpio. Nothing
here runs QEMU: :mod:`testbed.boot` does.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testbed import assets

HEADER_SIZE = 36  # the common System Description Table header (ACPI 6.5, 5.2.6)
# The FADT's fields of ACPI 6.x: the minor version byte (ACPI 5.1+) and the
# length that holds the ACPI 5.0 sleep registers and the 6.0 hypervisor
# vendor identity. The kernel reads only the revision and the minor version
# (a shorter table is zero-filled in acpi_gbl_FADT, ACPICA tbfadt.c); the
# length is raised so the table is what a 6.3 FADT says it is.
FADT_MINOR_OFFSET = 131
FADT_6X_LENGTH = 276
FADT_REVISION = (6, 3)  # the first ACPI version with the Online Capable flag
MADT_REVISION = 5  # the MADT revision of ACPI 6.3
MADT_ENTRIES = 44  # after the header, the local APIC address and the flags
LAPIC, X2APIC = 0, 9  # MADT entry types: Processor Local APIC / x2APIC
ENABLED, ONLINE_CAPABLE = 1 << 0, 1 << 1  # Local APIC flags
# Where the kernel looks for upgrades in the initrd (drivers/acpi/tables.c).
UPGRADE_DIR = "kernel/firmware/acpi"
# The tables the test bed upgrades, by their name in /sys/firmware/acpi/tables/.
TABLES = ("FACP", "APIC")


class AcpiError(ValueError):
    """A table is not what its header or the spec says it should be."""


@dataclass(frozen=True)
class Header:
    """The common header of an ACPI System Description Table."""

    signature: str
    length: int
    revision: int
    checksum: int
    oem_id: bytes
    oem_table_id: bytes
    oem_revision: int
    creator_id: bytes
    creator_revision: int


@dataclass(frozen=True)
class MadtCpu:
    """One Processor Local APIC or Local x2APIC entry of a MADT."""

    offset: int  # of the entry in the table
    type: int  # LAPIC or X2APIC
    uid: int  # ACPI processor UID
    apic_id: int
    flags: int

    @property
    def enabled(self) -> bool:
        return bool(self.flags & ENABLED)

    @property
    def online_capable(self) -> bool:
        return bool(self.flags & ONLINE_CAPABLE)

    @property
    def valid(self) -> bool:
        """Whether the kernel looks at it at all (0xff / 0xffffffff: no CPU)."""
        return self.apic_id != (0xFF if self.type == LAPIC else 0xFFFFFFFF)


def table_sum(table: bytes) -> int:
    """The byte sum of a table, modulo 256 (0 for a table whose checksum is right)."""
    return sum(table) & 0xFF


def parse_header(table: bytes, signature: str | None = None) -> Header:
    """Parse and check a table's header: its length field is the table's
    length and its checksum is right.

    :param signature: the signature it must have.
    :raises AcpiError: it is not.
    """
    if len(table) < HEADER_SIZE:
        raise AcpiError(f"{len(table)} bytes: shorter than an ACPI table header")
    sig, length, rev, csum, oem_id, oem_table_id, oem_rev, creator, creator_rev = (
        struct.unpack_from("<4sIBB6s8sI4sI", table)
    )
    name = sig.decode("ascii", "replace")
    if signature is not None and name != signature:
        raise AcpiError(f"signature {name!r}, not {signature!r}")
    if length != len(table):
        raise AcpiError(f"{name}: length field {length}, but {len(table)} bytes")
    if table_sum(table) != 0:
        raise AcpiError(f"{name}: bad checksum (the bytes sum to {table_sum(table):#x})")
    return Header(name, length, rev, csum, oem_id, oem_table_id, oem_rev, creator, creator_rev)


def _finish(table: bytearray, revision: int, oem_revision: int) -> bytes:
    # Length, revision, OEM revision, and last the checksum over the result.
    struct.pack_into("<I", table, 4, len(table))
    table[8] = revision
    struct.pack_into("<I", table, 24, oem_revision)
    table[9] = 0
    table[9] = -table_sum(table) & 0xFF
    return bytes(table)


def _raised(header: Header) -> int:
    # drivers/acpi/tables.c (6.12), acpi_table_initrd_override(): an upgrade
    # whose OEM revision is not higher than the firmware's is skipped.
    if header.oem_revision >= 0xFFFFFFFF:
        raise AcpiError(f"{header.signature}: OEM revision {header.oem_revision:#x} cannot rise")
    return header.oem_revision + 1


def fadt_version(fadt: bytes) -> tuple[int, int]:
    """The ACPI version a FADT claims: (header revision, minor version)."""
    parse_header(fadt, "FACP")
    # The whole byte, as the kernel compares it (ACPI puts an errata number
    # in its high nibble; QEMU and the tables here leave it 0).
    return fadt[8], fadt[FADT_MINOR_OFFSET] if len(fadt) > FADT_MINOR_OFFSET else 0


def online_capable_honoured(fadt: bytes) -> bool:
    """Whether Linux 6.12 reads the MADT's Online Capable flags for this FADT
    (arch/x86/kernel/acpi/boot.c, acpi_parse_madt(): ACPI 6.3 and newer)."""
    return fadt_version(fadt) >= FADT_REVISION


def patch_fadt(fadt: bytes) -> bytes:
    """The FADT claiming ACPI 6.3 (revision 6, minor version 3, 276 bytes,
    the new fields zero), its OEM revision one higher, its checksum fixed.

    A FADT that already claims 6.3 or later keeps its version.
    """
    header = parse_header(fadt, "FACP")
    if len(fadt) <= FADT_MINOR_OFFSET:
        raise AcpiError(f"FACP: {len(fadt)} bytes, too short to carry a minor version")
    table = bytearray(fadt)
    table.extend(bytes(max(0, FADT_6X_LENGTH - len(table))))
    revision = header.revision
    if fadt_version(fadt) < FADT_REVISION:
        revision = FADT_REVISION[0]
        table[FADT_MINOR_OFFSET] = FADT_REVISION[1]
    return _finish(table, revision, _raised(header))


def madt_cpus(madt: bytes) -> list[MadtCpu]:
    """The Local APIC and Local x2APIC entries of a MADT, in table order.

    :raises AcpiError: the table or an entry is malformed.
    """
    parse_header(madt, "APIC")
    cpus = []
    pos = MADT_ENTRIES
    while pos < len(madt):
        if pos + 2 > len(madt):
            raise AcpiError(f"APIC: a truncated entry at {pos}")
        kind, length = madt[pos], madt[pos + 1]
        if length < 2 or pos + length > len(madt):
            raise AcpiError(f"APIC: entry type {kind} at {pos} has a bad length {length}")
        if kind == LAPIC:
            if length < 8:
                raise AcpiError(f"APIC: Local APIC entry at {pos} has length {length}, not 8")
            uid, apic_id, flags = struct.unpack_from("<BBI", madt, pos + 2)
            cpus.append(MadtCpu(pos, kind, uid, apic_id, flags))
        elif kind == X2APIC:
            if length < 16:
                raise AcpiError(f"APIC: Local x2APIC entry at {pos} has length {length}, not 16")
            apic_id, flags, uid = struct.unpack_from("<III", madt, pos + 4)
            cpus.append(MadtCpu(pos, kind, uid, apic_id, flags))
        pos += length
    return cpus


def patch_madt(madt: bytes) -> bytes:
    """The MADT at revision 5 (ACPI 6.3) with Online Capable set on every
    disabled, valid Local APIC / x2APIC entry (enabled ones are left alone:
    the spec reserves the flag for them), its OEM revision one higher, its
    checksum fixed."""
    header = parse_header(madt, "APIC")
    table = bytearray(madt)
    for cpu in madt_cpus(madt):
        if cpu.valid and not cpu.enabled:
            flags_at = cpu.offset + (4 if cpu.type == LAPIC else 8)
            struct.pack_into("<I", table, flags_at, cpu.flags | ONLINE_CAPABLE)
    return _finish(table, max(header.revision, MADT_REVISION), _raised(header))


def upgrade_cpio(tables: dict[str, bytes]) -> bytes:
    """An uncompressed newc cpio holding ``kernel/firmware/acpi/<NAME>.aml``
    for each table (by name), padded to 512 bytes: put it in front of the
    initrd."""
    dirs = ["kernel", "kernel/firmware", UPGRADE_DIR]
    entries = [(d, 0o40755, b"") for d in dirs]
    entries += [(f"{UPGRADE_DIR}/{n}.aml", 0o100644, t) for n, t in sorted(tables.items())]
    blob = b"".join(assets._cpio_entry(n, m, d, i + 1) for i, (n, m, d) in enumerate(entries))
    blob += assets._cpio_entry("TRAILER!!!", 0)
    return blob + b"\0" * (-len(blob) % 512)


def upgraded(raw: dict[str, bytes]) -> dict[str, bytes]:
    """The patched tables for the raw FACP and APIC read from a guest."""
    return {"FACP": patch_fadt(raw["FACP"]), "APIC": patch_madt(raw["APIC"])}


# -- the cache, keyed by what shapes QEMU's tables --------------------------

# QEMU options whose value is a file the guest boots, not part of the machine.
_BOOT_FILES = frozenset({"-kernel", "-initrd", "-append"})


def table_options(argv: list[str]) -> list[str]:
    """The QEMU options that may shape the ACPI tables: ``argv`` without the
    program, ``-kernel``/``-initrd``/``-append`` and their values, and every
    path (a run's sockets and logs) as ``*``."""
    out: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if arg in _BOOT_FILES:
            next(args, None)
            continue
        out.append(re.sub(r"/[^,]*", "*", arg))
    return out


@functools.cache
def qemu_version(qemu: str) -> str:
    """The first line of ``qemu --version``."""
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].strip()


@functools.cache
def firmware_digest(qemu: str, name: str = "bios-256k.bin") -> str:
    """SHA-256 of the firmware QEMU loads by default (SeaBIOS for q35), found
    in QEMU's data directories (``-L help``); ``"none"`` if it has none."""
    out = subprocess.run([qemu, "-L", "help"], capture_output=True, text=True, check=False)
    for d in out.stdout.split():
        path = Path(d) / name
        if path.is_file():
            return hashlib.sha256(path.read_bytes()).hexdigest()
    return "none"


def shape(argv: list[str]) -> dict[str, object]:
    """What the tables of the QEMU started with ``argv`` depend on: the QEMU
    build, its firmware and the machine options (:func:`table_options`)."""
    qemu = argv[0]
    return {
        "qemu": qemu_version(qemu),
        "firmware": firmware_digest(qemu),
        "options": table_options(argv),
    }


def shape_key(shape: dict[str, object]) -> str:
    """The cache key of a shape: 20 hex digits of the SHA-256 of its JSON
    (``json.dumps`` with sorted keys and the default separators)."""
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:20]


def cache_path(key: str) -> Path:
    """Where the raw tables of a shape are kept."""
    return assets.cache_dir() / "acpi" / key


def load_cached(key: str) -> dict[str, bytes] | None:
    """The raw FACP and APIC of a shape, if they are cached and sound."""
    d = cache_path(key)
    try:
        raw = {name: (d / name).read_bytes() for name in TABLES}
    except FileNotFoundError:
        return None
    try:
        upgraded(raw)
    except AcpiError:
        return None  # a broken entry is read again from a guest
    return raw


def store(key: str, shape: dict[str, object], raw: dict[str, bytes]) -> Path:
    """Keep a shape's raw tables (checked first: they must patch cleanly)."""
    upgraded(raw)
    d = cache_path(key)
    tmp = d.with_name(f"{key}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in raw.items():
        (tmp / name).write_bytes(data)
    (tmp / "shape.json").write_text(json.dumps(shape, indent=1) + "\n")
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)
    return d


def upgraded_initrd(raw: dict[str, bytes], initrd: Path) -> Path:
    """The initrd with the upgrade cpio in front, written once per content
    next to the test bed's other initramfs images."""
    blob = upgrade_cpio(upgraded(raw))
    digest = hashlib.sha256(blob).hexdigest()[:16]
    path = initrd.with_name(f"{initrd.stem}+acpi-{digest}.cpio")
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob + initrd.read_bytes())
        tmp.rename(path)
    return path
