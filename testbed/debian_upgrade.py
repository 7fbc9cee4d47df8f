# SPDX-License-Identifier: GPL-2.0-or-later
"""The Debian 12 host's disk upgraded to Debian 13 with ``apt-get full-upgrade``,
natively on the test bed's machine, while the guest is powered off.

Run live in the guest, under TCG, the same upgrade takes about 24 minutes
(docs/debian13.md: 10 of them building initrds), more than the CI's budget
holds; here, in a chroot of the guest's own disk, about 1.5 minutes. What
the guest's disk holds afterwards is what the live upgrade leaves on it:
Debian's maintainer scripts ran, the kernel's postinst built the 6.12
initrd; only what they would have started or restarted at once did not
run (no systemd runs in the chroot; ``policy-rc.d`` says so to
``invoke-rc.d``), and it runs at the next boot instead.

Two stages:

1. :func:`upgrade_cache` (``scripts/setup``): the trixie packages and apt
   lists that ``apt-get full-upgrade`` of the Debian 12 host's root wants,
   downloaded once per bookworm base root (in a copy of it: its own apt
   configuration and dpkg status) into ``$KEXECD_VM_CACHE/debian-upgrade``.
2. :func:`upgrade_disk` (the VM test): the powered-off guest's disk mounted,
   trixie's sources and those lists put in, ``apt-get full-upgrade
   --no-download`` from those packages, kdump-tools' initrd for the new
   kernel built as its kernel hook builds it, with the sysctl record
   kdump-config compares at each load (``latest_sysctls-KVER``), and the new
   kernel and its initrd copied out for the reboot (the test bed boots its
   Debian hosts with QEMU's ``-kernel``, as a boot loader would load them).
   Without that, kdump-config builds the initrd at the first boot on the new
   kernel: the hook skips itself in a chroot ("Executing in a chroot,
   skipping initramfs generation"), and even where it ran (a live upgrade)
   the missing sysctl record makes kdump-config delete its initrd and build
   it again; 71 s under TCG (seen in the test's first runs), kdump-tools'
   own work, not kexecd's. The base roots of :mod:`testbed.debian_suites`
   do the same for the same reason.

Safety: everything runs in a mount namespace of its own (``unshare
--mount``), and the chroot's processes have ``CAP_SYS_BOOT`` and
``CAP_SYS_MODULE`` taken out of their bounding set (``setpriv``): nothing in
a maintainer script can load a kexec image into, or reboot, the machine the
test bed runs on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from testbed import assets, debian_host
from testbed.debian_suites import (
    BOOKWORM,
    KDUMP_INITRAMFS_CONF,
    KDUMP_SYSCTL_RECORD,
    TRIXIE,
    TRIXIE_BUILD,
)
from testbed.transport import TestbedError

__all__ = ["UpgradedKernel", "upgrade_cache", "upgrade_disk"]

# Bump when the download's steps change.
CACHE_RECIPE = 1
# The chroot's processes may neither kexec nor reboot nor load modules.
CHROOT = ("setpriv", "--bounding-set=-sys_boot,-sys_module", "chroot")
APT_ENV = "DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1"

# $1 the root (a copy of the bookworm base root), $2 its sources.list text.
_DOWNLOAD = f"""
set -eu
root=$1
mount -t proc proc "$root/proc"
mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
printf '%s' "$2" >"$root/etc/apt/sources.list"
{" ".join(CHROOT)} "$root" apt-get update -q
{" ".join(CHROOT)} "$root" apt-get full-upgrade -y -q --download-only
"""

# $1 the disk, $2 the package cache, $3 where the new kernel goes, $4 the
# sources.list text. Every mount is in this namespace, undone in reverse.
_UPGRADE = f"""
set -eu
disk=$1 cache=$2 out=$3
mnt=$(mktemp -d)
mount -o loop "$disk" "$mnt"
mount -t proc proc "$mnt/proc"
mount --bind "$cache/archives" "$mnt/var/cache/apt/archives"
rm -rf "$mnt/var/lib/apt/lists"
cp -a "$cache/lists" "$mnt/var/lib/apt/lists"
printf '%s' "$4" >"$mnt/etc/apt/sources.list"
printf '#!/bin/sh\\nexit 101\\n' >"$mnt/usr/sbin/policy-rc.d"
chmod 755 "$mnt/usr/sbin/policy-rc.d"
env {APT_ENV} {" ".join(CHROOT)} "$mnt" apt-get full-upgrade -y -q --no-download \\
	-o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-unsafe-io
rm "$mnt/usr/sbin/policy-rc.d"
kver=$(ls -v "$mnt/usr/lib/modules" | tail -n 1)
{" ".join(CHROOT)} "$mnt" sh -eu -c '
kver=$1
d=/var/lib/kdump
{KDUMP_INITRAMFS_CONF}{TRIXIE_BUILD}{KDUMP_SYSCTL_RECORD}' sh "$kver"
cp "$mnt/boot/vmlinuz-$kver" "$mnt/boot/initrd.img-$kver" "$out/"
echo "$kver" >"$out/kver"
umount "$mnt/var/cache/apt/archives" "$mnt/proc"
umount "$mnt"
rmdir "$mnt"
"""


def _sources() -> str:
    return "".join(f"{m}\n" for m in TRIXIE.mirrors)


def _dir() -> Path:
    path = assets.cache_dir() / "debian-upgrade"
    path.mkdir(exist_ok=True)
    return path


def _namespace(script: str, *args: str) -> list[str]:
    # --propagation=private: no mount of the chroot's reaches the machine's tree.
    return ["unshare", "--mount", "--propagation=private", "--", "sh", "-c", script, "sh", *args]


def upgrade_cache() -> Path:
    """The cached trixie packages (``archives/``) and apt lists (``lists/``)
    that ``apt-get full-upgrade`` of the Debian 12 host wants (downloaded once
    per bookworm base root).

    :raises TestbedError: the download failed (its log is named).
    """
    base = debian_host.base_root(BOOKWORM)
    key = assets.content_key(str(base), _sources(), _DOWNLOAD, str(CACHE_RECIPE))
    done = _dir() / f"upgrade-{key}"
    if (done / "ok").exists():
        return done
    work = done.with_name(done.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    log = work / "download.log"
    root = work / "root"
    debian_host.run_logged(["cp", "-a", str(base), str(root)], log, "copying the base root")
    debian_host.run_logged(
        _namespace(_DOWNLOAD, str(root), _sources()),
        log,
        "apt-get full-upgrade --download-only of the Debian 12 host's root to trixie",
    )
    (work / "archives").mkdir()
    debs = sorted((root / "var/cache/apt/archives").glob("*.deb"))
    if not debs:
        raise TestbedError(f"the download fetched no package; see {log}")
    for deb in debs:
        deb.rename(work / "archives" / deb.name)
    lists = root / "var/lib/apt/lists"
    shutil.rmtree(lists / "partial", ignore_errors=True)
    (lists / "lock").unlink(missing_ok=True)
    lists.rename(work / "lists")
    shutil.rmtree(root)
    (work / "ok").write_text(f"{len(debs)} packages\n")
    shutil.rmtree(done, ignore_errors=True)
    work.rename(done)
    debian_host.newest_only(_dir(), done)
    return done


@dataclass(frozen=True)
class UpgradedKernel:
    """The kernel the upgrade installed, copied out of the disk to boot it.

    :ivar kver: its release (``uname -r``).
    :ivar vmlinuz: its image.
    :ivar initrd: the initrd its postinst built.
    :ivar seconds: how long the upgrade took, kdump-tools' initrd included.
    """

    kver: str
    vmlinuz: Path
    initrd: Path
    seconds: float


def upgrade_disk(disk: Path, out: Path, cache: Path | None = None) -> UpgradedKernel:
    """Upgrade the powered-off Debian 12 host on ``disk`` to trixie (the log
    is ``out/upgrade.log``; the new kernel and initrd are copied into ``out``).

    :raises TestbedError: the upgrade failed (its log is named).
    """
    cache = cache or upgrade_cache()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "upgrade.log"
    start = time.monotonic()
    debian_host.run_logged(
        _namespace(_UPGRADE, str(disk), str(cache), str(out), _sources()),
        log,
        "apt-get full-upgrade of the Debian 12 host's disk to trixie",
    )
    kver = (out / "kver").read_text().strip()
    return UpgradedKernel(
        kver, out / f"vmlinuz-{kver}", out / f"initrd.img-{kver}", time.monotonic() - start
    )


def main(argv: list[str] | None = None) -> None:
    """Download the upgrade's packages ahead of time (scripts/setup calls
    this): ``python -m testbed.debian_upgrade``."""
    argparse.ArgumentParser(prog="python -m testbed.debian_upgrade").parse_args(argv)
    start = time.monotonic()
    done = upgrade_cache()
    print(f"Debian 12 -> 13 upgrade packages: {done} ({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    os.umask(0o022)
    main()
