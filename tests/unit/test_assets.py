# SPDX-License-Identifier: GPL-2.0-or-later
"""The test bed's kernels: modules found whatever their compression, or built in."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from testbed.assets import GUEST_MODULES, AssetError, Kernel, kernel_package


def _kernel(tmp: Path) -> Kernel:
    mods = tmp / "lib/modules/6.12.0-test-amd64"
    (mods / "kernel/net/9p").mkdir(parents=True)
    (mods / "kernel/fs/9p").mkdir(parents=True)
    (mods / "kernel/net/9p/9pnet.ko").write_bytes(b"plain")
    (mods / "kernel/fs/9p/9p.ko.xz").write_bytes(lzma.compress(b"xz module"))
    (mods / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    return Kernel("linux-image-test", tmp / "vmlinuz", mods)


def test_modules_plain_compressed_built_in_or_merged(tmp_path: Path) -> None:
    k = _kernel(tmp_path)
    assert k.module("net/9p/9pnet.ko") == b"plain"
    assert k.module("fs/9p/9p.ko") == b"xz module"
    assert k.module("drivers/virtio/virtio_pci.ko") is None  # built in
    assert k.module("fs/fscache/fscache.ko") is None  # part of netfs since 6.4
    with pytest.raises(AssetError, match=r"no module net/9p/9pnet_virtio\.ko"):
        k.module("net/9p/9pnet_virtio.ko")
    assert "fs/fscache/fscache.ko" in GUEST_MODULES


def test_unknown_kernel_is_refused() -> None:
    with pytest.raises(AssetError, match=r"no kernel '4\.19' in the test bed"):
        kernel_package("4.19")
