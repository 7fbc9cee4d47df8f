# SPDX-License-Identifier: GPL-2.0-or-later
"""The test bed's kernels and kexec-tools: modules found whatever their
compression, or built in, loaded after what their .modinfo says they need."""

from __future__ import annotations

import lzma
import subprocess
from pathlib import Path

import pytest

from testbed.assets import AssetError, Kernel, ensure_kexec_tools, kernel_package, modinfo_depends


def _ko(tmp: Path, name: str, depends: str | None) -> bytes:
    """A relocatable ELF object with a .modinfo section, as a module has."""
    fields = ["license=GPL", f"name={name}"]
    if depends is not None:
        fields.append(f"depends={depends}")
    text = "\\0".join(fields)
    src = f'static const char info[] __attribute__((section(".modinfo"), used)) = "{text}";\n'
    obj = tmp / f"{name}.o"
    subprocess.run(["gcc", "-c", "-x", "c", "-", "-o", str(obj)], input=src.encode(), check=True)
    return obj.read_bytes()


def _kernel(tmp: Path) -> Kernel:
    mods = tmp / "lib/modules/6.12.0-test-amd64"
    for d in ("net/9p", "fs/9p", "fs/netfs", "drivers/char"):
        (mods / "kernel" / d).mkdir(parents=True)
    (mods / "kernel/net/9p/9pnet.ko").write_bytes(_ko(tmp, "9pnet", ""))
    (mods / "kernel/net/9p/9pnet_virtio.ko").write_bytes(_ko(tmp, "9pnet_virtio", "9pnet,virtio"))
    (mods / "kernel/fs/netfs/netfs.ko").write_bytes(_ko(tmp, "netfs", None))
    xz = lzma.compress(_ko(tmp, "9p", "9pnet,netfs"))
    (mods / "kernel/fs/9p/9p.ko.xz").write_bytes(xz)
    (mods / "kernel/drivers/char/virtio-console.ko").write_bytes(_ko(tmp, "x", "virtio_ring"))
    (mods / "modules.builtin").write_text(
        "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n"
    )
    return Kernel("linux-image-test", tmp / "vmlinuz", mods)


def test_modules_plain_compressed_or_built_in(tmp_path: Path) -> None:
    k = _kernel(tmp_path)
    assert modinfo_depends(k.module("9p") or b"") == ["9pnet", "netfs"]  # from the .xz
    assert modinfo_depends(k.module("9pnet") or b"") == []
    assert modinfo_depends(k.module("netfs") or b"") == []  # no depends= at all
    assert k.module("virtio_console") is not None  # a dash reads as an underscore
    assert k.module("virtio") is None  # built in
    with pytest.raises(AssetError, match=r"no module virtio_pci and not built in"):
        k.module("virtio_pci")


def test_load_order_puts_dependencies_first_once(tmp_path: Path) -> None:
    k = _kernel(tmp_path)
    order = [name for name, _ in k.load_order(["9p", "9pnet_virtio", "virtio_console"])]
    assert order == ["9pnet", "netfs", "9p", "9pnet_virtio", "virtio_console"]


def test_unknown_kernel_is_refused() -> None:
    with pytest.raises(AssetError, match=r"no kernel '4\.19' in the test bed"):
        kernel_package("4.19")


def test_unknown_kexec_tools_is_refused() -> None:
    with pytest.raises(AssetError, match=r"no kexec-tools 2\.0\.1 in the test bed"):
        ensure_kexec_tools("2.0.1")


def test_cached_kexec_tools_must_say_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEXECD_VM_CACHE", str(tmp_path))
    fake = tmp_path / "kexec-tools" / "2.0.20" / "kexec"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"\0kexec-tools 2.0.29\0")  # the wrong build in the right place
    with pytest.raises(AssetError, match=r"says kexec-tools 2\.0\.29, not 2\.0\.20"):
        ensure_kexec_tools("2.0.20")
    fake.write_bytes(b"\0kexec-tools 2.0.20\0")
    assert ensure_kexec_tools("2.0.20") == fake
