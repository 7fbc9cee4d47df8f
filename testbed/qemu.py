# SPDX-License-Identifier: GPL-2.0-or-later
"""What a test-bed guest is: its machine shape, what it boots, and the QEMU
command line for both."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed import assets
from testbed.guest_safety import MARK
from testbed.transport import TestbedError

__all__ = [
    "VIRTIO_MEM_ID",
    "VIRTIO_MEM_QOM",
    "BootSpec",
    "Machine",
    "qemu_argv",
    "virtio_mem_options",
]

# The QMP id of Machine.virtio_mem_mib's device, and its QOM path.
VIRTIO_MEM_ID = "vmem0"
VIRTIO_MEM_QOM = f"/machine/peripheral/{VIRTIO_MEM_ID}"


@dataclass(frozen=True)
class Machine:
    """The QEMU machine shape."""

    smp: int = 2
    maxcpus: int = 4
    mem_mib: int = 1024
    slots: int = 4
    maxmem_mib: int = 4096
    crashkernel: str = "256M"
    # A virtio-mem-pci device (QMP id VIRTIO_MEM_ID) this big at most, none
    # when 0; it starts with nothing plugged (Guest.resize_virtio_mem). Its
    # memory comes out of maxmem, beside any pc-dimm.
    virtio_mem_mib: int = 0
    # Its block size: what it plugs and unplugs at a time. 128 MiB is the
    # guest's memory block size (x86-64 below 64 GiB of RAM), so each device
    # block is one Linux memory block, one memoryN in sysfs.
    virtio_mem_block_mib: int = 128
    # Give the kernel QEMU's FADT and MADT upgraded so that disabled CPUs are
    # hot-pluggable (testbed/acpi.py, testbed.boot.launch). None: boot()
    # decides by the kernel (testbed.boot.NEEDS_ACPI_UPGRADE); launch() reads
    # it as False.
    acpi_upgrade: bool | None = None


@dataclass(frozen=True)
class BootSpec:
    """What :func:`testbed.boot.launch` starts: a machine, a kernel and its initrd,
    the command line and the guest's root.

    :ivar initrd: the initrd; also the crash kernel's (``Guest.initramfs``).
    :ivar append: the kernel command line; ``crashkernel=``, ``panic=1`` and
        the test bed's guest mark are added (:attr:`cmdline`).
    :ivar devices: more QEMU options (the guest's root: a 9p share or a disk).
    :ivar kexec: the kexec-tools binary the guest's crash loads run.
    """

    machine: Machine
    kernel: assets.Kernel
    initrd: Path
    append: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    kexec: str = str(assets.HOST_KEXEC)

    @property
    def cmdline(self) -> str:
        """The guest kernel's whole command line."""
        return " ".join([*self.append, f"crashkernel={self.machine.crashkernel}", "panic=1", MARK])


def control(run_dir: Path, devices: Sequence[str]) -> list[str]:
    """QEMU options of every guest's channels in ``run_dir``: QMP, the given
    devices, and the agent's virtio-serial port."""
    return [
        "-qmp",
        f"unix:{run_dir / 'qmp.sock'},server=on,wait=off",
        *devices,
        "-device",
        "virtio-serial-pci",
        "-chardev",
        f"socket,id=agent,path={run_dir / 'agent.sock'},server=on,wait=off",
        "-device",
        "virtserialport,chardev=agent,name=org.kexecd.agent",
    ]


def reset_log(run_dir: Path) -> list[str]:
    """QEMU options that log each CPU reset (and a "Triple fault") to
    ``run_dir/qemu.log``: under ``-no-reboot`` a guest reset ends QEMU with
    status 0 and not a word on its output."""
    return ["-d", "cpu_reset", "-D", str(run_dir / "qemu.log")]


def virtio_mem_options(machine: Machine) -> list[str]:
    """QEMU options of the machine's virtio-mem-pci device (none without one).

    :raises TestbedError: maxmem cannot hold RAM and the device.
    """
    if machine.mem_mib + machine.virtio_mem_mib > machine.maxmem_mib:
        raise TestbedError(
            f"maxmem {machine.maxmem_mib} MiB is less than RAM {machine.mem_mib} MiB and "
            f"virtio-mem {machine.virtio_mem_mib} MiB"
        )
    if not machine.virtio_mem_mib:
        return []
    return [
        "-object",
        f"memory-backend-ram,id={VIRTIO_MEM_ID}-mem,size={machine.virtio_mem_mib}M",
        "-device",
        f"virtio-mem-pci,id={VIRTIO_MEM_ID},memdev={VIRTIO_MEM_ID}-mem,"
        f"requested-size=0,block-size={machine.virtio_mem_block_mib}M",
    ]


def qemu_argv(run_dir: Path, spec: BootSpec) -> list[str]:
    """The QEMU command line of a test-bed guest whose files are in ``run_dir``."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise TestbedError("qemu-system-x86_64 is missing: apt-get install qemu-system-x86")
    machine = spec.machine
    devices = [*spec.devices, *virtio_mem_options(machine)]
    return [
        qemu,
        "-machine",
        "q35",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        f"{machine.smp},maxcpus={machine.maxcpus}",
        "-m",
        f"{machine.mem_mib}M,slots={machine.slots},maxmem={machine.maxmem_mib}M",
        "-kernel",
        str(spec.kernel.vmlinuz),
        "-initrd",
        str(spec.initrd),
        "-append",
        spec.cmdline,
        "-display",
        "none",
        "-nic",
        "none",
        "-no-reboot",
        *reset_log(run_dir),
        "-monitor",
        "none",
        "-serial",
        f"file:{run_dir / 'console.log'}",
        "-serial",
        f"file:{run_dir / 'ttyS1.out'}",
        *control(run_dir, devices),
    ]
