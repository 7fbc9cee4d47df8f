# SPDX-License-Identifier: GPL-2.0-or-later
"""A real Debian 12 kdump host for the VM tier, built from Debian's archive.

Two stages, both cached in ``$KEXECD_VM_CACHE/debian-host`` outside the repo:

1. **The base root** (:func:`base_root`): ``mmdebstrap`` of bookworm with
   systemd, udev, kdump-tools, makedumpfile, kexec-tools, Debian's kernel,
   initramfs-tools and kexecd's Debian dependencies. kdump-tools' own initrd
   is built in the root as its kernel hook would build it at boot
   (``/etc/kernel/postinst.d/kdump-tools`` in kdump-tools 1:1.8.1), but with
   ``MODULES=list``: ``MODULES=dep`` cannot see the guest's disk from a chroot.
   Rebuilt only when :data:`PACKAGES`, the kernel package or
   :data:`BASE_HOOK` change (about 70 s).
2. **The host image** (:func:`host_image`): a copy of the base root with
   ``kexecd_*.deb`` installed by ``apt-get install ./kexecd_*.deb`` (the way
   a user installs it), the test bed's agent as a systemd service, and the
   one setting the test needs in ``/etc/default/kdump-tools``
   (``MAKEDUMP_ARGS``), written to a raw ext4 image with ``mkfs.ext4 -d``.
   Rebuilt when the package, the agent or this recipe change (about 15 s).

:func:`boot_host` boots a copy of the image with its own kernel and initrd;
:func:`read_crash_dir` reads ``/var/crash`` back out of a disk image with
``debugfs`` after the guest has written a dump and rebooted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testbed import assets, debpkg
from testbed.boot import launch, new_run_dir
from testbed.guest import Guest
from testbed.qemu import BootSpec, Machine
from testbed.transport import TestbedError

SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# What a minimal Debian 12 kdump host has, plus kexecd's Depends (so that
# installing the .deb needs no network) and python3 for the agent.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "kdump-tools",
    "makedumpfile",
    "kexec-tools",
    "linux-image-amd64",
    "initramfs-tools",
    "busybox",
    "kmod",
    "procps",
    "python3",
    "python3-pyudev",
    "python3-cffi-backend",
    "python3-pyelftools",
    "python3-systemd",
    # The fleet view: node exporter serves kexecd.prom from its textfile
    # directory (/var/lib/prometheus/node-exporter).
    "prometheus-node-exporter",
)
# Run in the new root once its essential packages are in (``$1`` is the
# root): kdump-tools' kernel hook is set aside while the rest is installed.
# Whether it runs depends on the order dpkg configures kdump-tools and the
# kernel in, which varies with the archive's versions; when it runs in a
# chroot it fails ("mkinitramfs: failed to determine device for /": its
# MODULES=dep cannot see the guest's disk) and takes the whole install down.
ESSENTIAL_HOOK = r"""
set -eu
chroot "$1" dpkg-divert --quiet --local --rename --divert \
	/etc/kernel/postinst.d/kdump-tools.testbed --add /etc/kernel/postinst.d/kdump-tools
"""
# Run in the new root after mmdebstrap (``$1`` is the root): the hook put
# back, then kdump-tools' initrd as that hook builds it, with the modules the crash kernel
# needs to mount the guest's virtio disk named, and the symlinks and sysctl
# record kdump-config checks at boot (else it deletes and rebuilds the initrd).
BASE_HOOK = r"""
set -eu
root=$1
kver=$(ls "$root/lib/modules")
chroot "$root" dpkg-divert --quiet --local --rename --remove /etc/kernel/postinst.d/kdump-tools
chroot "$root" sh -eu -c '
kver=$1
d=/var/lib/kdump
mkdir -p $d
rm -rf $d/initramfs-tools
cp -pr /etc/initramfs-tools $d/
mkdir -p $d/initramfs-tools/conf.d
echo MODULES=list >$d/initramfs-tools/conf.d/zzz-kdump
printf "%s\n" virtio_pci virtio_blk ext4 >>$d/initramfs-tools/modules
echo KDUMP=y >>$d/initramfs-tools/initramfs.conf
mkinitramfs -d $d/initramfs-tools -o $d/initrd.img-$kver $kver
cp /etc/kdump/sysctl.conf $d/latest_sysctls-$kver
ln -fs /boot/vmlinuz-$kver $d/vmlinuz
ln -fs $d/initrd.img-$kver $d/initrd.img
echo kexecd-host >/etc/hostname
printf "/dev/vda / ext4 rw 0 1\n" >/etc/fstab
' sh "$kver"
"""
# kdump-config always adds -F (flattened); -E makes the flattened stream an
# ELF core once 'makedumpfile -R' has rebuilt it, and -d 23 drops zero, cache
# and free pages but keeps user pages (the pattern the test looks for).
MAKEDUMP_ARGS = "-E -d 23"
AGENT_FILES = ("__init__.py", "guest_agent.py", "guest_safety.py")
AGENT_DIR = "/opt/kexecd-testbed"
AGENT_UNIT = f"""[Unit]
Description=kexecd test bed agent (answers the host over virtio-serial)
After=systemd-udevd.service

[Service]
ExecStart=/usr/bin/python3 {AGENT_DIR}/testbed/guest_agent.py
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""
IMAGE_SIZE = "4G"
# Bump when host_image()'s steps change.
IMAGE_RECIPE = 1


@dataclass(frozen=True)
class HostImage:
    """A bootable Debian 12 kdump host: its disk and its own kernel and initrd."""

    disk: Path
    kernel: assets.Kernel
    initrd: Path
    kver: str


def _dir() -> Path:
    path = assets.cache_dir() / "debian-host"
    path.mkdir(exist_ok=True)
    return path


def _run(argv: list[str], log: Path, what: str) -> None:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        p = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if p.returncode != 0:
        raise TestbedError(f"{what} failed (exit {p.returncode}); see {log}")


def _newest_only(parent: Path, keep: Path) -> None:
    for old in parent.glob(f"{keep.name.split('-')[0]}-*"):
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def base_root() -> Path:
    """The cached bookworm root with kdump-tools set up (built once per recipe)."""
    for tool in ("mmdebstrap", "mkfs.ext4", "debugfs"):
        if not shutil.which(tool):
            raise TestbedError(f"{tool} is missing: run 'bash scripts/setup'")
    kernel = assets.kernel_package()
    key = assets.content_key(SUITE, *MIRRORS, *PACKAGES, ESSENTIAL_HOOK, BASE_HOOK, kernel)
    done = _dir() / f"base-{key}"
    if (done / "ok").exists():
        return done / "root"
    work = _dir() / f"base-{key}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    hook, essential = work / "hook.sh", work / "essential-hook.sh"
    hook.write_text(BASE_HOOK)
    essential.write_text(ESSENTIAL_HOOK)
    log = work / "build.log"
    _run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            f"--include={','.join(PACKAGES)}",
            f'--essential-hook=sh {essential} "$1"',
            f'--customize-hook=sh {hook} "$1"',
            SUITE,
            str(work / "root"),
            *MIRRORS,
        ],
        log,
        "mmdebstrap of the Debian host's root",
    )
    (work / "ok").write_text(time.strftime("%F %T\n"))
    shutil.rmtree(done, ignore_errors=True)
    work.rename(done)
    _newest_only(_dir(), done)
    return done / "root"


def _agent_sources() -> list[tuple[str, bytes]]:
    here = Path(__file__).parent
    return [(name, (here / name).read_bytes()) for name in AGENT_FILES]


def host_image(deb: Path) -> HostImage:
    """The Debian host's disk image with ``deb`` installed (cached per package)."""
    base = base_root()
    agent = _agent_sources()
    key = assets.content_key(
        str(base),
        deb.read_bytes(),
        *(n + "\0" for n, _ in agent),
        *(data for _, data in agent),
        AGENT_UNIT,
        MAKEDUMP_ARGS,
        IMAGE_SIZE,
        str(IMAGE_RECIPE),
    )
    done = _dir() / f"image-{key}"
    if not (done / "ok").exists():
        _build_image(base, deb, agent, done)
    info = json.loads((done / "ok").read_text())
    kver = info["kver"]
    # The modules stay in the image: the guest boots from its own disk.
    kernel = assets.Kernel(info["package"], done / f"vmlinuz-{kver}", done / "no-modules")
    return HostImage(done / "disk.img", kernel, done / f"initrd.img-{kver}", kver)


def _build_image(base: Path, deb: Path, agent: list[tuple[str, bytes]], done: Path) -> None:
    work = done.with_name(done.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    log = work / "build.log"
    root = work / "root"
    _run(["cp", "-a", str(base), str(root)], log, "copying the base root")
    # The package, installed the way a user installs it. No network: its
    # dependencies are in the base root already. No systemd runs in the
    # chroot, so the unit is enabled but not started (deb-systemd-invoke).
    shutil.copy(deb, root / "tmp" / deb.name)
    _run(
        [
            "unshare",
            "--mount",
            "--",
            "sh",
            "-euc",
            'mount -t proc proc "$1/proc"; '
            'chroot "$1" apt-get install -y --no-install-recommends "./tmp/$2"; '
            'rm -f "$1/tmp/$2"',
            "sh",
            str(root),
            deb.name,
        ],
        log,
        f"apt-get install ./{deb.name} in the Debian host's root",
    )
    # The agent: a login-free service of the test bed's own.
    pkg = root / AGENT_DIR.lstrip("/") / "testbed"
    pkg.mkdir(parents=True)
    for name, data in agent:
        (pkg / name).write_bytes(data)
    unit = root / "etc/systemd/system/kexecd-testbed-agent.service"
    unit.write_text(AGENT_UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")
    # kdump-tools as Debian ships it, but for a dump the test can read.
    defaults = root / "etc/default/kdump-tools"
    defaults.write_text(defaults.read_text() + f'\nMAKEDUMP_ARGS="{MAKEDUMP_ARGS}"\n')
    kvers = sorted(p.name for p in (root / "lib/modules").iterdir())
    if len(kvers) != 1:
        raise TestbedError(f"expected one kernel in the Debian host's root, found {kvers}")
    kver = kvers[0]
    shutil.copy(root / "boot" / f"vmlinuz-{kver}", work / f"vmlinuz-{kver}")
    shutil.copy(root / "boot" / f"initrd.img-{kver}", work / f"initrd.img-{kver}")
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "kexecd-host",
            "-d",
            str(root),
            str(work / "disk.img"),
            IMAGE_SIZE,
        ],
        log,
        "mkfs.ext4 -d of the Debian host's image",
    )
    shutil.rmtree(root)
    (work / "ok").write_text(json.dumps({"kver": kver, "package": f"linux-image-{kver}"}))
    shutil.rmtree(done, ignore_errors=True)
    work.rename(done)
    _newest_only(_dir(), done)


def boot_host(
    image: HostImage,
    name: str,
    machine: Machine | None = None,
    append: tuple[str, ...] = (),
    timeout: float = 300.0,
    disk: Path | None = None,
) -> Guest:
    """Boot a fresh copy of the Debian host's disk; wait for its agent.

    :param append: more kernel parameters (``systemd.mask=kexecd.service``, say).
    :param disk: boot this disk as it is instead, moved into the new run
        directory (a dead guest's, after a power cut: the same machine booted
        again).
    The disk is ``RUN_DIR/disk.img``; read it with :func:`read_crash_dir`.
    """
    run_dir = new_run_dir(name)
    if disk is None:
        disk = run_dir / "disk.img"
        copy_disk(image.disk, disk)
    else:
        disk = disk.rename(run_dir / "disk.img")
    return launch(name, run_dir, host_spec(image, disk, machine, append), timeout)


def copy_disk(src: Path, dst: Path) -> None:
    """Copy a guest's disk image, its holes kept (the 4 GiB image holds about 0.8)."""
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)


def host_spec(
    image: HostImage, disk: Path, machine: Machine | None = None, append: tuple[str, ...] = ()
) -> BootSpec:
    """What :func:`boot_host` boots: ``image``'s kernel and initrd, ``disk`` as its root."""
    return BootSpec(
        machine or Machine(),
        image.kernel,
        image.initrd,
        append=("root=/dev/vda", "rw", "console=ttyS0", *append),
        devices=("-drive", f"file={disk},format=raw,if=virtio,cache=unsafe"),
    )


def read_crash_dir(disk: Path, out: Path) -> Path:
    """Copy ``/var/crash`` out of a (powered off) guest's disk into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        ["debugfs", "-R", f"rdump /var/crash {out}", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0 or not (out / "crash").is_dir():
        raise TestbedError(f"debugfs could not read /var/crash from {disk}: {p.stderr.strip()}")
    return out / "crash"


def flattened_to_elf(dump: Path, out: Path) -> Path:
    """Rebuild makedumpfile's flattened stream (kdump-config's ``-F``) as a file."""
    with dump.open("rb") as src:
        p = subprocess.run(
            ["makedumpfile", "-R", str(out)], stdin=src, capture_output=True, check=False
        )
    if p.returncode != 0:
        raise TestbedError(f"makedumpfile -R {dump} failed: {p.stderr.decode(errors='replace')}")
    return out


def main() -> None:
    """Build the root and the image with this tree's .deb ahead of time
    (scripts/setup calls this)."""
    start = time.monotonic()
    image = host_image(debpkg.ensure_deb())
    print(f"Debian 12 kdump host: {image.disk} ({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    os.umask(0o022)
    main()
