# SPDX-License-Identifier: GPL-2.0-or-later
"""The Debian suites a kdump host of :mod:`testbed.debian_host` is built from.

Each :class:`HostSuite` says what ``mmdebstrap`` installs (the same kdump
host in each: systemd, udev, kdump-tools, makedumpfile, kexec-tools, Debian's
kernel, initramfs-tools and kexecd's Depends), how kdump-tools' own initrd is
built in the root (its kernel hook cannot build it there), and the QEMU
machine the host needs.

- :data:`BOOKWORM`: Debian 12, Linux 6.1, kdump-tools 1:1.8.1, kexec-tools
  1:2.0.25 (``kexec -p`` is ``kexec_load``), systemd 252, Python 3.11.
- :data:`TRIXIE`: Debian 13, Linux 6.12 (modules under ``/usr/lib/modules``),
  kdump-tools 1:1.10.7, kexec-tools 1:2.0.29 (``kexec -p`` tries
  ``kexec_file_load`` first), systemd 257, Python 3.13, makedumpfile 1.7.6.
  Linux 6.12 under TCG hot-adds CPUs only with upgraded ACPI tables
  (FIELD-NOTES section 11): its machine asks for them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from testbed import assets
from testbed.qemu import Machine
from testbed.transport import TestbedError

__all__ = ["BOOKWORM", "SUITES", "TRIXIE", "HostSuite"]


@dataclass(frozen=True)
class HostSuite:
    """One Debian suite's kdump host recipe.

    :ivar name: the suite (``mmdebstrap``'s SUITE argument).
    :ivar version: Debian's version number (``"12"``).
    :ivar mirrors: the sources ``mmdebstrap`` installs from.
    :ivar packages: what it installs besides the essential set.
    :ivar essential_hook: run once the essential packages are in (``$1`` is the root).
    :ivar base_hook: run after ``mmdebstrap``: kdump-tools' initrd built as its
        kernel hook builds it, the hostname and fstab (``$1`` is the root).
    :ivar machine: the QEMU machine the host boots in.
    :ivar cache_prefix: put in front of the cache's ``base-KEY`` and
        ``image-KEY`` names; empty for bookworm, whose names predate the suites.
    :ivar own_lists: whether :meth:`kernel_package` reads apt lists of the
        suite's own, of its :attr:`mirrors`, in the cache (the host's sources
        untouched; :meth:`update_lists`); else the host's, which are
        bookworm's (the machine the test bed runs on; ``scripts/setup`` runs
        ``apt-get update``).
    """

    name: str
    version: str
    mirrors: tuple[str, ...]
    packages: tuple[str, ...] = field(repr=False)
    essential_hook: str = field(repr=False)
    base_hook: str = field(repr=False)
    machine: Machine
    cache_prefix: str
    own_lists: bool

    def _lists(self) -> Path:
        return assets.cache_dir() / "apt" / f"host-{self.name}"

    def _apt_options(self) -> list[str]:
        d = self._lists()
        return [
            f"-oDir::Etc::SourceList={d / 'sources.list'}",
            "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::State::Lists={d / 'lists'}",
            f"-oDir::Cache={d / 'cache'}",
        ]

    def update_lists(self) -> None:
        """``apt-get update`` of the suite's own lists (nothing for the host's).

        :raises TestbedError: it failed.
        """
        if not self.own_lists:
            return
        d = self._lists()
        (d / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (d / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        (d / "sources.list").write_text("".join(f"{m}\n" for m in self.mirrors))
        (d / "lists" / "ok").unlink(missing_ok=True)
        r = subprocess.run(
            ["apt-get", *self._apt_options(), "update", "-qq"],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            raise TestbedError(f"apt-get update of {self.name} in {d} failed: {r.stderr.strip()}")
        (d / "lists" / "ok").write_text("")

    def kernel_package(self) -> str:
        """The exact kernel package the suite's ``linux-image-amd64`` depends on
        (the suite's own lists updated first if they never were).

        :raises TestbedError: apt does not know ``linux-image-amd64``.
        """
        if not self.own_lists:
            return assets.kernel_package()
        if not (self._lists() / "lists" / "ok").exists():
            self.update_lists()
        out = subprocess.run(
            ["apt-cache", *self._apt_options(), "depends", "linux-image-amd64"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        for line in out.splitlines():
            what, _, package = line.strip().partition(":")
            if what == "Depends" and package.strip().startswith("linux-image-"):
                return package.strip()
        raise TestbedError(
            f"apt-cache does not know {self.name}'s linux-image-amd64: remove "
            f"{self._lists()} and try again"
        )

    def base_key(self, kernel: str) -> str:
        """The key of the suite's base root built with ``kernel`` (a package name)."""
        return assets.content_key(
            self.name, *self.mirrors, *self.packages, self.essential_hook, self.base_hook, kernel
        )


# What a minimal Debian kdump host has, plus kexecd's Depends (so that
# installing the .deb needs no network) and python3 for the agent. The same
# names in both suites.
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
# (1:1.10.7's hook skips itself where ischroot says so; set aside all the same.)
ESSENTIAL_HOOK = r"""
set -eu
chroot "$1" dpkg-divert --quiet --local --rename --divert \
	/etc/kernel/postinst.d/kdump-tools.testbed --add /etc/kernel/postinst.d/kdump-tools
"""


# kdump-tools' initramfs-tools copy as its kernel hook makes it
# (/etc/kernel/postinst.d/kdump-tools), with the modules the crash kernel
# needs to mount the guest's virtio disk named: shell lines run in the root,
# ``$d`` being /var/lib/kdump.
KDUMP_INITRAMFS_CONF = r"""rm -rf $d/initramfs-tools
cp -pr /etc/initramfs-tools $d/
mkdir -p $d/initramfs-tools/conf.d
echo MODULES=list >$d/initramfs-tools/conf.d/zzz-kdump
printf "%s\n" virtio_pci virtio_blk ext4 >>$d/initramfs-tools/modules
echo KDUMP=y >>$d/initramfs-tools/initramfs.conf
"""
# The sysctl record kdump-config compares /etc/kdump/sysctl.conf with at each
# load: without it, it deletes the initrd and builds it again
# (check_sysctl_change(), kdump-config 1:1.8.1 and 1:1.10.7).
KDUMP_SYSCTL_RECORD = "cp /etc/kdump/sysctl.conf $d/latest_sysctls-$kver\n"


def _kdump_hook(modules: str, build: str) -> str:
    """What runs in the new root after mmdebstrap (``$1`` is the root): the
    kernel hook put back, then kdump-tools' initrd as that hook builds it
    (``build``: the suite's own mkinitramfs lines), with the modules the crash
    kernel needs to mount the guest's virtio disk named, and the symlinks and
    sysctl record kdump-config checks at boot (else it deletes and rebuilds
    the initrd). ``modules``: where the root keeps its kernel's modules."""
    return (
        "\nset -eu\nroot=$1\n"
        f'kver=$(ls "$root/{modules}")\n'
        'chroot "$root" dpkg-divert --quiet --local --rename --remove '
        "/etc/kernel/postinst.d/kdump-tools\n"
        r"""chroot "$root" sh -eu -c '
kver=$1
d=/var/lib/kdump
mkdir -p $d
"""
        + KDUMP_INITRAMFS_CONF
        + build
        + KDUMP_SYSCTL_RECORD
        + r"""ln -fs /boot/vmlinuz-$kver $d/vmlinuz
ln -fs $d/initrd.img-$kver $d/initrd.img
echo kexecd-host >/etc/hostname
printf "/dev/vda / ext4 rw 0 1\n" >/etc/fstab
' sh "$kver"
"""
    )


BOOKWORM_HOOK = _kdump_hook(
    "lib/modules", "mkinitramfs -d $d/initramfs-tools -o $d/initrd.img-$kver $kver\n"
)
# kdump-tools 1:1.10.7's kernel hook (/etc/kernel/postinst.d/kdump-tools) does
# what 1:1.8.1's did, and more: mkinitramfs -k in a TMPDIR of its own, whose
# unpacked tree's size (du -sm) it records in size_initrd.img-KVER for
# kdump-config's crashkernel estimate ("kdump-config show"). kdump-config
# looks where 1:1.8.1 did: /var/lib/kdump/vmlinuz and initrd.img (symlinks
# it checks against the running kernel) and latest_sysctls-KVER (compared
# with /etc/kdump/sysctl.conf at each load; a difference deletes the initrd).
TRIXIE_BUILD = (
    "tmp=$(mktemp -d)\n"
    "TMPDIR=$tmp mkinitramfs -k -d $d/initramfs-tools -o $d/initrd.img-$kver $kver\n"
    "du -sm $(find $tmp -mindepth 1 -maxdepth 1 -type d) | cut -f1 >$d/size_initrd.img-$kver\n"
    "rm -rf $tmp\n"
)
TRIXIE_HOOK = _kdump_hook("usr/lib/modules", TRIXIE_BUILD)

BOOKWORM = HostSuite(
    name="bookworm",
    version="12",
    mirrors=(
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ),
    packages=PACKAGES,
    essential_hook=ESSENTIAL_HOOK,
    base_hook=BOOKWORM_HOOK,
    machine=Machine(),
    cache_prefix="",
    own_lists=False,
)
TRIXIE = HostSuite(
    name="trixie",
    version="13",
    mirrors=(
        "deb http://deb.debian.org/debian trixie main",
        "deb http://deb.debian.org/debian trixie-updates main",
        "deb http://deb.debian.org/debian-security trixie-security main",
    ),
    packages=PACKAGES,
    essential_hook=ESSENTIAL_HOOK,
    base_hook=TRIXIE_HOOK,
    machine=Machine(acpi_upgrade=True),
    cache_prefix="trixie-",
    own_lists=True,
)
SUITES = {suite.name: suite for suite in (BOOKWORM, TRIXIE)}
