# SPDX-License-Identifier: GPL-2.0-or-later
"""The arm64 test bed without a guest: the QEMU command line FIELD-NOTES 13
proved, the crash load's command, the initramfs, the disk's extra files, and
reading a traced load's segments."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from testbed import arm64, arm64_assets, arm64_disk, boot
from testbed.assets import Kernel
from testbed.guest_safety import MARK
from testbed.qemu import BootSpec
from testbed.transport import TestbedError


def _spec(tmp_path: Path) -> BootSpec:
    kernel = Kernel("linux-image-test-cloud-arm64", tmp_path / "vmlinuz", tmp_path / "modules")
    return BootSpec(arm64.MACHINE, kernel, tmp_path / "initrd", append=arm64.APPEND)


def _argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    firmware = tmp_path / "QEMU_EFI.fd"
    firmware.write_bytes(b"")
    monkeypatch.setattr(arm64, "EFI_FIRMWARE", firmware)
    monkeypatch.setattr(arm64.shutil, "which", lambda name: f"/usr/bin/{name}")
    return arm64.qemu_argv(tmp_path / "run", _spec(tmp_path))


def _after(argv: list[str], option: str) -> str:
    return argv[argv.index(option) + 1]


def test_qemu_argv_is_field_notes_13s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = _argv(tmp_path, monkeypatch)
    assert argv[0] == "/usr/bin/qemu-system-aarch64"
    assert _after(argv, "-bios") == str(tmp_path / "QEMU_EFI.fd")
    assert _after(argv, "-machine") == "virt,gic-version=3"
    assert _after(argv, "-accel") == "tcg,thread=multi"
    assert _after(argv, "-cpu") == "cortex-a57"
    assert _after(argv, "-smp") == "2"
    assert _after(argv, "-m") == "1024M,slots=4,maxmem=3072M"
    assert _after(argv, "-D") == str(tmp_path / "run" / "qemu.log")
    assert _after(argv, "-serial") == f"file:{tmp_path / 'run' / 'console.log'}"
    assert "virtserialport,chardev=agent,name=org.kexecd.agent" in argv
    words = _after(argv, "-append").split()
    for word in ("console=ttyAMA0", "crashkernel=256M", "nokaslr", "rdinit=/init", MARK):
        assert word in words


def test_qemu_argv_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arm64.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(arm64, "EFI_FIRMWARE", tmp_path / "missing.fd")
    with pytest.raises(TestbedError, match="apt-get install qemu-efi-aarch64"):
        arm64.qemu_argv(tmp_path, _spec(tmp_path))
    monkeypatch.setattr(arm64.shutil, "which", lambda name: None)
    with pytest.raises(TestbedError, match="apt-get install qemu-system-arm"):
        arm64.qemu_argv(tmp_path, _spec(tmp_path))


def test_kexec_argv_loads_the_guests_kernel_with_field_notes_cmdline() -> None:
    argv = arm64.kexec_argv(["--debug"])
    assert argv == [
        "/usr/sbin/kexec",
        "-p",
        "--debug",
        "/opt/kexecd-testbed/Image",
        "--initrd=/opt/kexecd-testbed/initramfs.cpio",
        "--append=console=ttyAMA0 nr_cpus=1 reset_devices rdinit=/init",
    ]


def test_debugfs_commands_make_each_directory_once_parents_first(tmp_path: Path) -> None:
    files = [
        ("Image", tmp_path / "Image"),
        ("testbed/guest_agent.py", tmp_path / "a.py"),
        ("kexecd/arch/aarch64/fdt.py", tmp_path / "fdt.py"),
        ("kexecd/core.py", tmp_path / "core.py"),
    ]
    assert arm64_disk.debugfs_commands(files) == [
        "mkdir /opt",
        "mkdir /opt/kexecd-testbed",
        "mkdir /opt/kexecd-testbed/testbed",
        "mkdir /opt/kexecd-testbed/kexecd",
        "mkdir /opt/kexecd-testbed/kexecd/arch",
        "mkdir /opt/kexecd-testbed/kexecd/arch/aarch64",
        f"write {tmp_path / 'Image'} /opt/kexecd-testbed/Image",
        f"write {tmp_path / 'a.py'} /opt/kexecd-testbed/testbed/guest_agent.py",
        f"write {tmp_path / 'fdt.py'} /opt/kexecd-testbed/kexecd/arch/aarch64/fdt.py",
        f"write {tmp_path / 'core.py'} /opt/kexecd-testbed/kexecd/core.py",
    ]


def test_initramfs_has_the_roots_busybox_and_the_arm64_init(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin/busybox").write_bytes(b"arm64 busybox")
    mods = tmp_path / "modules"
    mods.mkdir()
    # All three built in: the initramfs then loads none.
    (mods / "modules.builtin").write_text(
        "".join(f"kernel/drivers/{m}.ko\n" for m in arm64_assets.GUEST_MODULES)
    )
    monkey_cache = tmp_path / "cache"
    kernel = Kernel("k", tmp_path / "vmlinuz", mods)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KEXECD_VM_CACHE", str(monkey_cache))
        first = arm64_assets.build_initramfs(kernel, root)
        again = arm64_assets.build_initramfs(kernel, root)
    assert first == again and first.parent == monkey_cache / "arm64"
    blob = first.read_bytes()
    assert b"arm64 busybox" in blob
    assert arm64_assets.INIT_SCRIPT.read_bytes() in blob
    assert b"modules/order\0" in blob


def _core_header(mem: int) -> bytes:
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    return ident + struct.pack("<HHI", 4, 183, 1) + bytes(mem % 7)


def test_a_traced_load_names_its_header_and_dtb() -> None:
    dtb = b"\xd0\x0d\xfe\xed" + bytes(60)
    header = _core_header(0)
    load = arm64.Arm64Load(
        0x4F000000,
        0x00B70001,
        (
            (0x40200000, 0x2000000, 0x1F00000, b""),
            (0x4E000000, 0x400000, 0x3FF000, b""),
            (0x4F000000, 0x1000, len(dtb), dtb),
            (0x4F001000, 0x5000, 4, b"\x7fELF"),  # purgatory's ELF type is not ET_CORE
            (0x4FFFF000, 0x1000, len(header), header),
        ),
        "",
    )
    assert load.header == header
    assert load.dtb == dtb
    with pytest.raises(TestbedError, match="0 segments start with"):
        load.segment(b"nope")


def test_text_symbol_is_64_kib_below_stext() -> None:
    kallsyms = "ffff800008010000 T _stext\nffff800008010000 t __exception_text_start\n"
    assert arm64.text_symbol(kallsyms) == "ffff800008000000 T _text"
    with_text = "ffff800008000000 T _text\n" + kallsyms
    assert arm64.text_symbol(with_text) == "ffff800008000000 T _text"
    with pytest.raises(TestbedError, match="no _stext"):
        arm64.text_symbol("ffff800008010000 t something\n")


def test_a_boot_retry_keeps_the_crash_log_link_to_the_console(tmp_path: Path) -> None:
    (tmp_path / "console.log").write_text("panic\n")
    (tmp_path / "ttyS1.out").symlink_to("console.log")
    boot._keep_logs(tmp_path, "boot1")
    assert (tmp_path / "console.boot1.log").read_text() == "panic\n"
    assert (tmp_path / "ttyS1.out").readlink() == Path("console.log")
