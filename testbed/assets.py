# SPDX-License-Identifier: GPL-2.0-or-later
"""What the test bed boots: Debian's kernel package and a busybox initramfs;
and promtool, which checks kexecd's metrics and alert rules.

Downloads are cached outside the repository, in ``$KEXECD_VM_CACHE``
(default ``~/.cache/kexecd-vm``). ``python -m testbed.assets`` fetches them
ahead of time, ``python -m testbed.assets promtool`` fetches promtool (the
setup script does both).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The kernel modules the guest needs to mount the host root over 9p and to talk
# to the host over virtio-serial, in load order (no modules.dep is shipped).
GUEST_MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/char/virtio_console.ko",
    "fs/netfs/netfs.ko",
    "fs/fscache/fscache.ko",
    "net/9p/9pnet.ko",
    "net/9p/9pnet_virtio.ko",
    "fs/9p/9p.ko",
)

BUSYBOX = Path("/bin/busybox")
INIT_SCRIPT = Path(__file__).with_name("guest_init.sh")


class AssetError(RuntimeError):
    """A test-bed asset is missing and could not be fetched."""


@dataclass(frozen=True)
class Kernel:
    """An unpacked Debian kernel package."""

    package: str
    vmlinuz: Path
    modules: Path  # lib/modules/<release>


def cache_dir() -> Path:
    """Where downloads and test-bed runs live (outside the repository)."""
    path = Path(os.environ.get("KEXECD_VM_CACHE", Path.home() / ".cache" / "kexecd-vm"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def kernel_package() -> str:
    """The exact kernel package that Debian's ``linux-image-amd64`` depends on."""
    name = os.environ.get("KEXECD_VM_KERNEL_PACKAGE")
    if name:
        return name
    out = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=False
    ).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    raise AssetError(
        "apt-cache does not know linux-image-amd64: run 'apt-get update' "
        "(or set KEXECD_VM_KERNEL_PACKAGE to a linux-image-6.1.0-*-amd64 package)"
    )


def ensure_kernel() -> Kernel:
    """Download and unpack the guest kernel once; return where it is."""
    package = kernel_package()
    root = cache_dir() / package
    if not (root / "boot").is_dir():
        deb = _download(package, "download")
        tmp = root.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(root)
        shutil.rmtree(deb.parent)
    vmlinuz = next((root / "boot").glob("vmlinuz-*"))
    release = vmlinuz.name.removeprefix("vmlinuz-")
    return Kernel(package, vmlinuz, root / "lib" / "modules" / release)


def _download(package: str, name: str) -> Path:
    """``apt-get download package`` into a fresh ``cache_dir()/name``; the .deb's path.

    One directory per asset: a test run fetching another asset at the same
    time removes only its own.
    """
    download = cache_dir() / name
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir()
    r = subprocess.run(
        ["apt-get", "download", package],
        cwd=download,
        capture_output=True,
        text=True,
        check=False,
    )
    debs = list(download.glob("*.deb"))
    if r.returncode != 0 or len(debs) != 1:
        raise AssetError(f"apt-get download {package} failed: {r.stderr.strip()}")
    return debs[0]


def promtool_path() -> Path:
    """Where :func:`ensure_promtool` keeps promtool (which may not be there yet)."""
    return cache_dir() / "prometheus" / "promtool"


def ensure_promtool() -> Path:
    """Fetch promtool from Debian's ``prometheus`` package once; return its path.

    The package is downloaded and unpacked, never installed: its postinst
    would create a user and start a Prometheus server on this machine. Only
    ``usr/bin/promtool`` is kept.
    """
    path = promtool_path()
    if path.exists():
        return path
    deb = _download("prometheus", "download-prometheus")
    unpacked = deb.parent / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    shutil.move(unpacked / "usr" / "bin" / "promtool", tmp)
    tmp.rename(path)
    shutil.rmtree(deb.parent)
    return path


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    # The "newc" format of the kernel's initramfs unpacker (init/initramfs.c).
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = header + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


def build_initramfs(kernel: Kernel) -> Path:
    """Write (once per content) the initramfs both the guest and its crash kernel boot.

    Its ``/init`` mounts the host root over 9p and starts the agent; in a crash
    kernel (``/proc/vmcore`` exists) it sends the head of the vmcore to ttyS1
    and powers off.
    """
    if not BUSYBOX.exists():
        raise AssetError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    files: list[tuple[str, int, bytes]] = [
        ("bin", 0o40755, b""),
        ("dev", 0o40755, b""),
        ("proc", 0o40755, b""),
        ("sys", 0o40755, b""),
        ("newroot", 0o40755, b""),
        ("modules", 0o40755, b""),
        ("bin/busybox", 0o100755, BUSYBOX.read_bytes()),
        ("init", 0o100755, INIT_SCRIPT.read_bytes()),
    ]
    for rel in GUEST_MODULES:
        ko = kernel.modules / "kernel" / rel
        files.append((f"modules/{ko.name}", 0o100644, ko.read_bytes()))
    blob = b"".join(_cpio_entry(n, m, d, i + 1) for i, (n, m, d) in enumerate(files))
    blob += _cpio_entry("TRAILER!!!", 0)
    blob += b"\0" * (-len(blob) % 512)
    digest = hashlib.sha256(blob).hexdigest()[:16]
    path = cache_dir() / f"initramfs-{digest}.cpio"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.rename(path)
    return path


def main(argv: list[str]) -> int:
    if argv == ["promtool"]:
        print(f"promtool  {ensure_promtool()}")
        return 0
    kernel = ensure_kernel()
    initramfs = build_initramfs(kernel)
    print(f"kernel    {kernel.vmlinuz}")
    print(f"initramfs {initramfs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
