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
import lzma
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The kernels the test bed boots: the host suite's own (Debian 12, 6.1), and
# bookworm-backports' 6.12 (FIELD-NOTES section 10), fetched from its own apt
# lists in the cache without touching the host's sources.
KERNELS: dict[str, str | None] = {"6.1": None, "6.12": "bookworm-backports"}
MIRROR = "http://deb.debian.org/debian"

# The kernel modules the guest needs to mount the host root over 9p and to talk
# to the host over virtio-serial, in load order (no modules.dep is shipped).
# Those a kernel has built in (modules.builtin; 6.12 builds in virtio and
# virtio_pci, and fscache into netfs) are skipped.
#
# virtio_mem drives a Machine.virtio_mem_mib device. It is always loaded: it
# binds to a virtio-mem device only, so without one it does nothing, and one
# initramfs (one digest) serves every machine shape. Its modinfo depends= is
# "virtio,virtio_ring" on 6.1 and empty on 6.12 (both built in), loaded above.
# The crash kernel never loads it: guest_init.sh reads /proc/vmcore first.
GUEST_MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/virtio/virtio_mem.ko",
    "drivers/char/virtio_console.ko",
    "fs/netfs/netfs.ko",
    "fs/fscache/fscache.ko",
    "net/9p/9pnet.ko",
    "net/9p/9pnet_virtio.ko",
    "fs/9p/9p.ko",
)
# Linux 6.4 (commit "netfs, fscache: Combine fscache with netfs") made fscache
# part of the netfs module.
MERGED = frozenset({"fs/fscache/fscache.ko"})

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

    def module(self, rel: str) -> bytes | None:
        """A module's bytes, decompressed (``.ko`` or ``.ko.xz``); ``None``
        when the kernel has it built in.

        :raises AssetError: neither a module nor built in.
        """
        ko = self.modules / "kernel" / rel
        if ko.exists():
            return ko.read_bytes()
        xz = ko.with_name(ko.name + ".xz")
        if xz.exists():
            return lzma.decompress(xz.read_bytes())
        builtin = self.modules / "modules.builtin"
        if rel in MERGED or (builtin.exists() and f"kernel/{rel}" in builtin.read_text().split()):
            return None
        raise AssetError(f"{self.package}: no module {rel} and not built in")


def cache_dir() -> Path:
    """Where downloads and test-bed runs live (outside the repository)."""
    path = Path(os.environ.get("KEXECD_VM_CACHE", Path.home() / ".cache" / "kexecd-vm"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _apt_options(suite: str) -> list[str]:
    # A sources list and lists of the suite's own, in the cache: the host's
    # apt configuration is not touched.
    d = cache_dir() / "apt" / suite
    if not (d / "lists" / "ok").exists():
        (d / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (d / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        (d / "sources.list").write_text(f"deb {MIRROR} {suite} main\n")
    opts = [
        f"-oDir::Etc::SourceList={d / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={d / 'lists'}",
        f"-oDir::Cache={d / 'cache'}",
    ]
    if not (d / "lists" / "ok").exists():
        r = subprocess.run(
            ["apt-get", *opts, "update", "-qq"], capture_output=True, text=True, check=False
        )
        if r.returncode != 0:
            raise AssetError(f"apt-get update of {suite} failed: {r.stderr.strip()}")
        (d / "lists" / "ok").write_text("")
    return opts


def kernel_package(which: str = "6.1") -> str:
    """The exact kernel package that ``linux-image-amd64`` depends on, in the
    host's suite (``6.1``) or in the suite :data:`KERNELS` names."""
    suite = KERNELS.get(which, "?")
    if suite == "?":
        raise AssetError(f"no kernel {which!r} in the test bed; known: {', '.join(KERNELS)}")
    name = os.environ.get("KEXECD_VM_KERNEL_PACKAGE")
    if name and suite is None:
        return name
    opts = [] if suite is None else _apt_options(suite)
    out = subprocess.run(
        ["apt-cache", *opts, "depends", "linux-image-amd64"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    raise AssetError(
        "apt-cache does not know linux-image-amd64: run 'apt-get update' "
        "(or set KEXECD_VM_KERNEL_PACKAGE to a linux-image-6.1.0-*-amd64 package)"
    )


def ensure_kernel(which: str = "6.1") -> Kernel:
    """Download and unpack a guest kernel (:data:`KERNELS`) once; return where it is."""
    package = kernel_package(which)
    root = cache_dir() / package
    if not (root / "boot").is_dir():
        suite = KERNELS[which]
        deb = _download(package, f"download-{which}", [] if suite is None else _apt_options(suite))
        tmp = root.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(root)
        shutil.rmtree(deb.parent)
    vmlinuz = next((root / "boot").glob("vmlinuz-*"))
    release = vmlinuz.name.removeprefix("vmlinuz-")
    return Kernel(package, vmlinuz, root / "lib" / "modules" / release)


def _download(package: str, name: str, apt_options: list[str] | None = None) -> Path:
    """``apt-get download package`` into a fresh ``cache_dir()/name``; the .deb's path.

    One directory per asset: a test run fetching another asset at the same
    time removes only its own.
    """
    download = cache_dir() / name
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir()
    r = subprocess.run(
        ["apt-get", *(apt_options or []), "download", package],
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
    order = []
    for rel in GUEST_MODULES:
        data = kernel.module(rel)
        if data is not None:
            name = Path(rel).stem
            order.append(name)
            files.append((f"modules/{name}.ko", 0o100644, data))
    files.append(("modules/order", 0o100644, "".join(f"{n}\n" for n in order).encode()))
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
    for which in argv or ["6.1"]:
        kernel = ensure_kernel(which)
        initramfs = build_initramfs(kernel)
        print(f"kernel    {kernel.vmlinuz}")
        print(f"initramfs {initramfs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
