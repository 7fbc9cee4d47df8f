# SPDX-License-Identifier: GPL-2.0-or-later
"""What the arm64 test bed boots, built from Debian's archive and cached by content.

FIELD-NOTES section 13. Everything lives in ``$KEXECD_VM_CACHE/arm64``:

- **The kernel** (:func:`ensure_kernel`): the package ``linux-image-cloud-arm64``
  depends on in bookworm (the cloud flavour is the only one with
  ``CONFIG_ACPI_HOTPLUG_MEMORY``; its vmlinuz is an uncompressed Image),
  fetched by ``apt-get download`` with apt lists of its own that name arm64 the only
  architecture: the host's apt and dpkg configuration are not touched.
- **The root** (:func:`base_root`): ``mmdebstrap --arch=arm64`` of bookworm
  (minbase, kexec-tools 2.0.25, busybox-static, python3 and what kexecd's C
  core needs to be compiled in it), run through qemu-user (binfmt,
  :func:`ensure_binfmt`), about 140 s. Rebuilt when :data:`PACKAGES` change.
- **The initramfs** (:func:`build_initramfs`): the root's static busybox, the
  virtio modules, ``testbed/guest_init_arm64.sh``; the guest's and the crash
  kernel's both.

The disk made of them is :mod:`testbed.arm64_disk`'s.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from testbed import assets
from testbed.assets import content_key
from testbed.transport import TestbedError

__all__ = [
    "KERNEL_SUITES",
    "PACKAGES",
    "base_root",
    "build_initramfs",
    "cache",
    "content_key",
    "ensure_binfmt",
    "ensure_kernel",
    "ensure_kexec_tools",
    "kernel_package",
    "mmdebstrap_root",
    "run_logged",
]

SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
KERNEL_META = "linux-image-cloud-arm64"
# kexec-tools is bookworm's, 2.0.25; busybox-static gives the initramfs its
# busybox; python3 runs the agent; pyudev and systemd's bindings are kexecd's
# (the daemon's uevents, its journal and sd_notify); the rest builds and runs
# kexecd's C core; makedumpfile reads the dumps as a distro's kdump would.
PACKAGES = (
    "kexec-tools",
    "busybox-static",
    "python3",
    "python3-cffi-backend",
    "python3-pyelftools",
    "python3-pyudev",
    "python3-systemd",
    "makedumpfile",
    "python3-cffi",
    "python3-dev",
    "gcc",
    "libc6-dev",
)
# The cloud kernel has ext4, the PL011 console and the PCIe host built in;
# virtio_mem drives the machine's virtio-mem device (testbed.arm64.MACHINE).
GUEST_MODULES = ("virtio_pci", "virtio_blk", "virtio_console", "virtio_mem")
INIT_SCRIPT = Path(__file__).with_name("guest_init_arm64.sh")
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def cache() -> Path:
    path = assets.cache_dir() / "arm64"
    path.mkdir(exist_ok=True)
    return path


def run_logged(argv: Sequence[str], log: Path, what: str, cwd: Path | None = None) -> None:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        p = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, check=False)
    if p.returncode != 0:
        raise TestbedError(f"{what} failed (exit {p.returncode}); see {log}")


# The suite of each kernel the arm64 guest boots: bookworm's 6.1 and trixie's
# 6.12 (both cloud-arm64); the root is bookworm's either way.
KERNEL_SUITES = {"6.1": "bookworm", "6.12": "trixie"}


def _apt_options(suite: str = SUITE) -> list[str]:
    # Lists of the suite's own for arm64 alone, and an empty dpkg status: apt
    # then treats arm64 as native without the host's dpkg knowing arm64.
    d = cache() / ("apt" if suite == SUITE else f"apt-{suite}")
    opts = [
        "-oAPT::Architecture=arm64",
        "-oAPT::Architectures::=arm64",
        f"-oDir::Etc::SourceList={d / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={d / 'lists'}",
        f"-oDir::State::status={d / 'status'}",
        f"-oDir::Cache={d / 'cache'}",
    ]
    if not (d / "lists" / "ok").exists():
        (d / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (d / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        mirrors = MIRRORS if suite == SUITE else (f"deb {assets.MIRROR} {suite} main",)
        (d / "sources.list").write_text("".join(f"{m}\n" for m in mirrors))
        (d / "status").touch()
        r = subprocess.run(
            ["apt-get", *opts, "update", "-qq"], capture_output=True, text=True, check=False
        )
        if r.returncode != 0:
            raise assets.AssetError(f"apt-get update (arm64, {suite}) failed: {r.stderr.strip()}")
        (d / "lists" / "ok").write_text("")
    return opts


def kernel_package(which: str = "6.1") -> str:
    """The exact package ``linux-image-cloud-arm64`` depends on in the suite
    of ``which`` (:data:`KERNEL_SUITES`)."""
    suite = KERNEL_SUITES[which]
    out = subprocess.run(
        ["apt-cache", *_apt_options(suite), "depends", KERNEL_META],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        word = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and word.startswith("linux-image-"):
            return word
    raise assets.AssetError(f"the arm64 apt lists of {suite} have no {KERNEL_META}")


def ensure_kernel(which: str = "6.1") -> assets.Kernel:
    """Download and unpack a cloud-arm64 kernel once; return where it is."""
    package = kernel_package(which)
    root = cache() / package
    if not (root / "boot").is_dir():
        deb = assets._download(
            package, "arm64/download-kernel", _apt_options(KERNEL_SUITES[which])
        )
        tmp = root.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(root)
        shutil.rmtree(deb.parent)
    vmlinuz = next((root / "boot").glob("vmlinuz-*"))
    release = vmlinuz.name.removeprefix("vmlinuz-")
    # trixie's packages ship /usr/lib/modules (merged /usr), bookworm's /lib.
    modules = root / "lib" / "modules" / release
    if not modules.is_dir():
        modules = root / "usr" / "lib" / "modules" / release
    return assets.Kernel(package, vmlinuz, modules)


def ensure_kexec_tools(version: str) -> Path | None:
    """The aarch64 ``kexec`` of a kexec-tools the guest loads with: ``None`` for
    the root's own (bookworm's 2.0.25); trixie's 2.0.29 is cross-built from its
    Debian source package (its binary needs trixie's glibc), once, into
    ``cache()/kexec-tools-VERSION``.

    :raises AssetError: an unknown version, or the build failed.
    """
    if version == "2.0.25":
        return None
    if version != "2.0.29":
        raise assets.AssetError(f"no arm64 kexec-tools {version} in the test bed")
    path = cache() / f"kexec-tools-{version}" / "kexec"
    if not path.exists():
        built = assets.build_kexec("trixie", host="aarch64-linux-gnu")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        shutil.copyfile(built, tmp)
        tmp.chmod(0o755)
        tmp.rename(path)
        shutil.rmtree(built.parents[2].parent, ignore_errors=True)
    return path


def _binfmt_enabled() -> bool:
    entry = BINFMT / "qemu-aarch64"
    try:
        return entry.read_text().splitlines()[0] == "enabled"
    except (OSError, IndexError):
        return False


def ensure_binfmt() -> None:
    """Have the kernel run aarch64 binaries through qemu-user (for mmdebstrap):
    mount binfmt_misc and enable qemu-aarch64, as root, only if not done yet.

    :raises TestbedError: qemu-user-static or binfmt-support is missing, or
        enabling failed.
    """
    if _binfmt_enabled():
        return
    if not shutil.which("update-binfmts") or not Path("/usr/libexec/qemu-binfmt").is_dir():
        raise TestbedError(
            "qemu-aarch64 is not enabled in binfmt_misc: apt-get install "
            "qemu-user-static binfmt-support arch-test (scripts/setup-arm64)"
        )
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=False)
    subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=False)
    if not _binfmt_enabled():
        raise TestbedError(f"could not enable qemu-aarch64 in {BINFMT} (root needed)")


def base_root() -> Path:
    """The cached arm64 bookworm root (built once per package list, ~2-3 min)."""
    for tool in ("mmdebstrap", "mkfs.ext4", "debugfs"):
        if not shutil.which(tool):
            raise TestbedError(f"{tool} is missing: run 'bash scripts/setup'")
    options = ["--variant=minbase", f"--include={','.join(PACKAGES)}"]
    return mmdebstrap_root("root", content_key(SUITE, *MIRRORS, *PACKAGES), options)


def mmdebstrap_root(prefix: str, key: str, options: Sequence[str]) -> Path:
    """An arm64 bookworm root made by ``mmdebstrap --arch=arm64 --mode=root
    OPTIONS``, cached in ``cache()/PREFIX-KEY/root`` (made once per key; other
    keys of the prefix are removed; the log of a failed build is named in the
    error).

    :raises TestbedError: mmdebstrap failed, or binfmt cannot run aarch64 binaries.
    """
    done = cache() / f"{prefix}-{key}"
    if (done / "ok").exists():
        return done / "root"
    ensure_binfmt()
    work = done.with_name(done.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    start = time.monotonic()
    argv = ["mmdebstrap", "--arch=arm64", "--mode=root", *options, SUITE, str(work / "root")]
    run_logged([*argv, *MIRRORS], work / "build.log", f"mmdebstrap of the arm64 {prefix}")
    (work / "ok").write_text(f"{time.strftime('%F %T')} {time.monotonic() - start:.0f} s\n")
    shutil.rmtree(done, ignore_errors=True)
    work.rename(done)
    for old in cache().glob(f"{prefix}-*"):
        if old != done:
            shutil.rmtree(old, ignore_errors=True)
    return done / "root"


def build_initramfs(kernel: assets.Kernel, root: Path) -> Path:
    """Write (once per content) the initramfs the guest and its crash kernel boot:
    the root's static busybox, :data:`GUEST_MODULES`, ``guest_init_arm64.sh``."""
    files: list[tuple[str, int, bytes]] = [
        ("bin", 0o40755, b""),
        ("dev", 0o40755, b""),
        ("proc", 0o40755, b""),
        ("sys", 0o40755, b""),
        ("newroot", 0o40755, b""),
        ("modules", 0o40755, b""),
        ("bin/busybox", 0o100755, (root / "bin/busybox").read_bytes()),
        ("init", 0o100755, INIT_SCRIPT.read_bytes()),
    ]
    order = []
    for name, data in kernel.load_order(GUEST_MODULES):
        order.append(name)
        files.append((f"modules/{name}.ko", 0o100644, data))
    files.append(("modules/order", 0o100644, "".join(f"{n}\n" for n in order).encode()))
    blob = b"".join(assets._cpio_entry(n, m, d, i + 1) for i, (n, m, d) in enumerate(files))
    blob += assets._cpio_entry("TRAILER!!!", 0)
    blob += b"\0" * (-len(blob) % 512)
    path = cache() / f"initramfs-{hashlib.sha256(blob).hexdigest()[:16]}.cpio"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.rename(path)
    return path
