# SPDX-License-Identifier: GPL-2.0-or-later
"""A real Debian kdump host for the VM tier, built from Debian's archive:
Debian 12 (bookworm) or 13 (trixie), :mod:`testbed.debian_suites`.

Two stages, both cached in ``$KEXECD_VM_CACHE/debian-host`` outside the repo
(a suite's names start with its ``cache_prefix``; bookworm's have none):

1. **The base root** (:func:`base_root`): ``mmdebstrap`` of the suite with
   systemd, udev, kdump-tools, makedumpfile, kexec-tools, Debian's kernel,
   initramfs-tools and kexecd's Debian dependencies. kdump-tools' own initrd
   is built in the root as its kernel hook would build it at boot
   (``/etc/kernel/postinst.d/kdump-tools``), but with ``MODULES=list``:
   ``MODULES=dep`` cannot see the guest's disk from a chroot. Rebuilt only
   when the suite's packages, hooks or kernel package change (bookworm about
   70 s, trixie 40-75 s of mmdebstrap here).
2. **The host image** (:func:`host_image`): a copy of the base root with
   ``kexecd_*.deb`` installed by ``apt-get install ./kexecd_*.deb`` (the way
   a user installs it), the test bed's agent as a systemd service, and the
   one setting the test needs in ``/etc/default/kdump-tools``
   (``MAKEDUMP_ARGS``), written to a raw ext4 image with ``mkfs.ext4 -d``.
   Rebuilt when the package, the agent or this recipe change (about 15 s).

:func:`boot_host` boots a copy of the image with its own kernel and initrd
in the suite's machine;
:func:`read_crash_dir` reads ``/var/crash`` back out of a disk image with
``debugfs`` after the guest has written a dump and rebooted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testbed import assets, debpkg
from testbed.boot import launch, new_run_dir
from testbed.debian_suites import BOOKWORM, SUITES, HostSuite
from testbed.guest import Guest
from testbed.qemu import BootSpec, Machine
from testbed.transport import TestbedError

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
    """A bootable Debian kdump host: its disk, its own kernel and initrd, its suite."""

    disk: Path
    kernel: assets.Kernel
    initrd: Path
    kver: str
    suite: HostSuite


def _dir() -> Path:
    path = assets.cache_dir() / "debian-host"
    path.mkdir(exist_ok=True)
    return path


def run_logged(argv: list[str], log: Path, what: str) -> None:
    """Run ``argv`` with its output appended to ``log``.

    :raises TestbedError: it failed (``what`` and ``log`` named).
    """
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        p = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if p.returncode != 0:
        raise TestbedError(f"{what} failed (exit {p.returncode}); see {log}")


def newest_only(parent: Path, keep: Path) -> None:
    """Remove the older builds of ``keep``'s kind (``STEM-KEY``, KEY 16 hex
    digits, and its ``.tmp``): another suite's (another STEM) stay."""
    stem = keep.name.rsplit("-", 1)[0]
    same = re.compile(rf"{re.escape(stem)}-[0-9a-f]{{16}}(\.tmp)?")
    for old in parent.iterdir():
        if old != keep and same.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)


def base_root(suite: HostSuite = BOOKWORM) -> Path:
    """The cached root of ``suite`` with kdump-tools set up (built once per recipe)."""
    for tool in ("mmdebstrap", "mkfs.ext4", "debugfs"):
        if not shutil.which(tool):
            raise TestbedError(f"{tool} is missing: run 'bash scripts/setup'")
    key = suite.base_key(suite.kernel_package())
    done = _dir() / f"{suite.cache_prefix}base-{key}"
    if (done / "ok").exists():
        return done / "root"
    work = done.with_name(done.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    hook, essential = work / "hook.sh", work / "essential-hook.sh"
    hook.write_text(suite.base_hook)
    essential.write_text(suite.essential_hook)
    log = work / "build.log"
    run_logged(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            f"--include={','.join(suite.packages)}",
            f'--essential-hook=sh {essential} "$1"',
            f'--customize-hook=sh {hook} "$1"',
            suite.name,
            str(work / "root"),
            *suite.mirrors,
        ],
        log,
        f"mmdebstrap of the Debian {suite.version} host's root",
    )
    (work / "ok").write_text(time.strftime("%F %T\n"))
    shutil.rmtree(done, ignore_errors=True)
    work.rename(done)
    newest_only(_dir(), done)
    return done / "root"


def _agent_sources() -> list[tuple[str, bytes]]:
    here = Path(__file__).parent
    return [(name, (here / name).read_bytes()) for name in AGENT_FILES]


def host_image(deb: Path, suite: HostSuite = BOOKWORM) -> HostImage:
    """The Debian host's disk image of ``suite`` with ``deb`` installed (cached
    per package)."""
    base = base_root(suite)
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
    done = _dir() / f"{suite.cache_prefix}image-{key}"
    if not (done / "ok").exists():
        _build_image(base, deb, agent, done)
    info = json.loads((done / "ok").read_text())
    kver = info["kver"]
    # The modules stay in the image: the guest boots from its own disk.
    kernel = assets.Kernel(info["package"], done / f"vmlinuz-{kver}", done / "no-modules")
    return HostImage(done / "disk.img", kernel, done / f"initrd.img-{kver}", kver, suite)


def _build_image(base: Path, deb: Path, agent: list[tuple[str, bytes]], done: Path) -> None:
    work = done.with_name(done.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    log = work / "build.log"
    root = work / "root"
    run_logged(["cp", "-a", str(base), str(root)], log, "copying the base root")
    # The package, installed the way a user installs it. No network: its
    # dependencies are in the base root already. No systemd runs in the
    # chroot, so the unit is enabled but not started (deb-systemd-invoke).
    shutil.copy(deb, root / "tmp" / deb.name)
    run_logged(
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
    kver = kernel_version(root)
    shutil.copy(root / "boot" / f"vmlinuz-{kver}", work / f"vmlinuz-{kver}")
    shutil.copy(root / "boot" / f"initrd.img-{kver}", work / f"initrd.img-{kver}")
    run_logged(
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
    newest_only(_dir(), done)


def kernel_version(root: Path) -> str:
    """The one kernel release installed in ``root`` (``usr/lib/modules``: merged
    /usr in both suites, the one place in trixie).

    :raises TestbedError: none or more than one.
    """
    modules = root / "usr/lib/modules"
    kvers = sorted(p.name for p in modules.iterdir()) if modules.is_dir() else []
    if len(kvers) != 1:
        raise TestbedError(f"expected one kernel in {modules}, found {kvers}")
    return kvers[0]


def boot_host(
    image: HostImage,
    name: str,
    machine: Machine | None = None,
    append: tuple[str, ...] = (),
    timeout: float = 300.0,
    disk: Path | None = None,
) -> Guest:
    """Boot a fresh copy of the Debian host's disk; wait for its agent.

    :param machine: the QEMU machine; by default the suite's.
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
    """What :func:`boot_host` boots: ``image``'s kernel and initrd, ``disk`` as
    its root, in ``machine`` (by default the suite's)."""
    return BootSpec(
        machine or image.suite.machine,
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


def main(argv: list[str] | None = None) -> None:
    """Build a suite's root and image with this tree's .deb ahead of time
    (scripts/setup calls this): ``python -m testbed.debian_host [--suite trixie]``."""
    parser = argparse.ArgumentParser(prog="python -m testbed.debian_host")
    parser.add_argument("--suite", choices=sorted(SUITES), default=BOOKWORM.name)
    suite = SUITES[parser.parse_args(argv).suite]
    start = time.monotonic()
    suite.update_lists()
    image = host_image(debpkg.ensure_deb(), suite)
    print(f"Debian {suite.version} kdump host: {image.disk} ({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    os.umask(0o022)
    main()
