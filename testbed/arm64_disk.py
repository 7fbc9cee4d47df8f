# SPDX-License-Identifier: GPL-2.0-or-later
"""The arm64 guest's disk (FIELD-NOTES 13: the guest runs from a virtio-blk disk).

The root of :func:`testbed.arm64_assets.base_root` as a raw ext4 image, which
the guest mounts read-only (kexecd's arm64 .deb installed in it with apt,
:mod:`testbed.arm64_deb`), with the kernels, the initramfs, the test bed's
agent and kexecd in :data:`GUEST_DIR`: kexecd's Python sources and its C core
for aarch64, so that kexecd's tracer runs in the guest. The core is the one
the arm64 .deb built from the same tree (taken from the root it was installed
in): compiling it again in the root through qemu-user cost about 2 minutes of
every setup after a change to kexecd. Cached in ``$KEXECD_VM_CACHE/arm64/image-KEY`` by the
content of all of it; ``python -m testbed.arm64_disk`` builds it ahead of time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed import arm64_deb, assets
from testbed.arm64_assets import (
    KERNEL_SUITES,
    base_root,
    build_initramfs,
    cache,
    content_key,
    ensure_kernel,
    ensure_kexec_tools,
    run_logged,
)

__all__ = [
    "GUEST_DIR",
    "Arm64Image",
    "debugfs_commands",
    "disk_image",
    "guest_image",
    "guest_kexec",
]

REPO = Path(__file__).resolve().parents[1]
# Where the guest finds the test bed's files (its agent runs from there).
GUEST_DIR = "/opt/kexecd-testbed"
# The agent, and the ground-truth capture (guest_capture.py, which needs assets.py).
AGENT_FILES = (
    "__init__.py",
    "guest_agent.py",
    "guest_safety.py",
    "guest_capture.py",
    "assets.py",
)
# The image's size (sparse): the root and room to spare.
IMAGE_SIZE = "2G"
# Bump when disk_image()'s steps change.
IMAGE_RECIPE = 3
# Where the arm64 .deb puts kexecd's C core in the root.
DEB_CORE = "usr/lib/python3/dist-packages/kexecd"


# The kexec-tools the guest has besides the root's own (bookworm's 2.0.25).
KEXEC_TOOLS = ("2.0.29",)


@dataclass(frozen=True)
class Arm64Image:
    """A bootable arm64 guest: its read-only disk, and for each kernel it boots
    (:data:`testbed.arm64_assets.KERNEL_SUITES`) the kernel and its initramfs.

    :ivar core: whether kexecd's C core for aarch64 (the arm64 .deb's) is in the disk's
        ``GUEST_DIR/kexecd`` (its tracer runs in the guest).
    """

    disk: Path
    kernels: dict[str, tuple[assets.Kernel, Path]]
    core: bool

    @property
    def kernel(self) -> assets.Kernel:
        """The 6.1 kernel (bookworm's)."""
        return self.kernels["6.1"][0]

    @property
    def initramfs(self) -> Path:
        return self.kernels["6.1"][1]


def guest_image(which: str) -> tuple[str, str]:
    """Where the guest finds the kernel ``which`` and its initramfs."""
    if which == "6.1":
        return f"{GUEST_DIR}/Image", f"{GUEST_DIR}/initramfs.cpio"
    return f"{GUEST_DIR}/Image-{which}", f"{GUEST_DIR}/initramfs-{which}.cpio"


def guest_kexec(version: str) -> str:
    """Where the guest finds kexec-tools ``version``'s ``kexec``."""
    return "/usr/sbin/kexec" if version == "2.0.25" else f"{GUEST_DIR}/kexec-{version}"


def _guest_files(
    kernels: dict[str, tuple[assets.Kernel, Path]], kexecs: dict[str, Path]
) -> list[tuple[str, Path]]:
    """What goes into :data:`GUEST_DIR` on the disk: (path there, file here)."""
    files = []
    for which, (kernel, initramfs) in sorted(kernels.items()):
        image, initrd = guest_image(which)
        files += [(image.removeprefix(f"{GUEST_DIR}/"), kernel.vmlinuz)]
        files += [(initrd.removeprefix(f"{GUEST_DIR}/"), initramfs)]
    for version, path in sorted(kexecs.items()):
        files.append((guest_kexec(version).removeprefix(f"{GUEST_DIR}/"), path))
    files += [(f"testbed/{n}", REPO / "testbed" / n) for n in AGENT_FILES]
    for path in sorted((REPO / "kexecd").rglob("*.py")):
        files.append((str(path.relative_to(REPO)), path))
    for path in sorted((REPO / "csrc").glob("*.[ch]")):
        files.append((str(path.relative_to(REPO)), path))
    return files


def disk_image() -> Arm64Image:
    """The arm64 guest's disk, kernel and initramfs (cached by content)."""
    root = base_root()
    kernels = {}
    for which in KERNEL_SUITES:
        kernel = ensure_kernel(which)
        kernels[which] = (kernel, build_initramfs(kernel, root))
    kexecs = {}
    for version in KEXEC_TOOLS:
        path = ensure_kexec_tools(version)
        if path is not None:
            kexecs[version] = path
    files = _guest_files(kernels, kexecs)
    deb = arm64_deb.ensure_deb()
    key = content_key(
        str(root),
        *(name + "\0" for name, _ in files),
        *(hashlib.sha256(p.read_bytes()).hexdigest() for _, p in files),
        hashlib.sha256(deb.read_bytes()).hexdigest(),
        IMAGE_SIZE,
        str(IMAGE_RECIPE),
    )
    done = cache() / f"image-{key}"
    if not (done / "ok").exists():
        _build_disk(root, files, deb, done)
    info = json.loads((done / "ok").read_text())
    return Arm64Image(done / "disk.img", kernels, bool(info["core"]))


def _build_disk(root: Path, files: list[tuple[str, Path]], deb: Path, done: Path) -> None:
    work = done.with_name(done.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    log = work / "build.log"
    # The arm64 .deb installed with apt into a copy of the root: the guest has
    # /usr/bin/kexecd as a user would, beside the sources in GUEST_DIR.
    copy = work / "root"
    run_logged(["cp", "-a", "--reflink=auto", str(root), str(copy)], log, "copying the root")
    arm64_deb.install_deb(copy, deb, log)
    built = sorted((copy / DEB_CORE).glob("_core*.so"))
    core = work / built[0].name if built else None
    if core is not None:
        shutil.copyfile(built[0], core)
    disk = work / "disk.img"
    run_logged(
        ["mkfs.ext4", "-q", "-F", "-L", "kexecd-arm64", "-d", str(copy), str(disk), IMAGE_SIZE],
        log,
        "mkfs.ext4 -d of the arm64 root",
    )
    shutil.rmtree(copy)
    extra = list(files)
    if core is not None:
        extra.append((f"kexecd/{core.name}", core))
    _debugfs_write(disk, extra, work, log)
    (work / "ok").write_text(json.dumps({"core": core is not None}))
    shutil.rmtree(done, ignore_errors=True)
    work.rename(done)
    for old in cache().glob("image-*"):
        if old != done:
            shutil.rmtree(old, ignore_errors=True)


def debugfs_commands(files: Sequence[tuple[str, Path]]) -> list[str]:
    """The ``debugfs -w`` commands that put ``files`` (path under
    :data:`GUEST_DIR`, file here) into an image: each directory made once,
    parents first, then each file written."""
    dirs: list[str] = []
    for name, _ in files:
        parts = f"{GUEST_DIR}/{name}".strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            if d not in dirs:
                dirs.append(d)
    return [f"mkdir {d}" for d in dirs] + [f"write {p} {GUEST_DIR}/{n}" for n, p in files]


def _debugfs_write(disk: Path, files: list[tuple[str, Path]], work: Path, log: Path) -> None:
    # mkfs.ext4 -d took the root; the test bed's files go in with debugfs, so
    # the cached root is never written to. (debugfs's mkdir of a directory the
    # root has, /opt, fails harmlessly and the script goes on.)
    script = work / "debugfs.cmds"
    script.write_text("\n".join(debugfs_commands(files)) + "\n")
    run_logged(
        ["debugfs", "-w", "-f", str(script), str(disk)], log, "debugfs -w of the arm64 disk"
    )


def main() -> None:
    """Build the arm64 root, kernel, initramfs and disk ahead of time."""
    start = time.monotonic()
    image = disk_image()
    print(f"arm64 guest: {image.disk} core={image.core} ({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    os.umask(0o022)
    main()
