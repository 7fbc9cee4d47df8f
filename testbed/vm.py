# SPDX-License-Identifier: GPL-2.0-or-later
"""The QEMU test bed: boot Debian's kernel under TCG, drive it, crash it, read the dump.

The guest's userspace is the host's root, shared read-only over 9p, so the
guest runs this checkout's venv and the host's kexec-tools. A second, writable
9p share (the run directory, mounted at the same path in the guest) carries
files out. Every wait has a timeout; on failure the run directory (console
log, QMP log, the crash kernel's serial output) is kept and named.

This module is the test bed's one face for the VM tests and the benchmarks;
each job lives in a module of its own:

- :mod:`testbed.boot`: :func:`boot`, :func:`launch`, the boot retry, ACPI tables;
- :mod:`testbed.qemu`: :class:`Machine`, :class:`BootSpec`, the QEMU command line;
- :mod:`testbed.guest`: :class:`Guest`, the face of a running guest;
- :mod:`testbed.transport`: the guest agent's channel, :class:`Result`, errors;
- :mod:`testbed.hotplug`: CPUs, pc-dimms and virtio-mem over QMP;
- :mod:`testbed.kdump`: crash loads by kexec-tools and kexecd, kexecd's daemon;
- :mod:`testbed.dumps`: the crash, :class:`Vmcore` and :func:`parse_elf_core`;
- :mod:`testbed.guest_lock`: one process's guests at a time on this machine.
"""

from __future__ import annotations

from testbed.boot import (
    BOOT_ATTEMPTS,
    NEEDS_ACPI_UPGRADE,
    GuestBootPanic,
    boot,
    boot_panic,
    launch,
    new_run_dir,
    read_acpi_tables,
)
from testbed.dumps import KERNEL_TEXT_MAP, Phdr, Vmcore, parse_elf_core
from testbed.guest import Guest
from testbed.hotplug import VIRTIO_MEM_RAM
from testbed.kdump import CRASH_APPEND
from testbed.qemu import VIRTIO_MEM_ID, VIRTIO_MEM_QOM, BootSpec, Machine, qemu_argv
from testbed.transport import Result, TestbedError

__all__ = [
    "BOOT_ATTEMPTS",
    "CRASH_APPEND",
    "KERNEL_TEXT_MAP",
    "NEEDS_ACPI_UPGRADE",
    "VIRTIO_MEM_ID",
    "VIRTIO_MEM_QOM",
    "VIRTIO_MEM_RAM",
    "BootSpec",
    "Guest",
    "GuestBootPanic",
    "Machine",
    "Phdr",
    "Result",
    "TestbedError",
    "Vmcore",
    "boot",
    "boot_panic",
    "launch",
    "new_run_dir",
    "parse_elf_core",
    "qemu_argv",
    "read_acpi_tables",
]
