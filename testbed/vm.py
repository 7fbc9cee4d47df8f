# SPDX-License-Identifier: GPL-2.0-or-later
"""The QEMU test bed: boot Debian's kernel under TCG, drive it, crash it, read the dump.

The guest's userspace is the host's root, shared read-only over 9p, so the
guest runs this checkout's venv and the host's kexec-tools. A second, writable
9p share (the run directory, mounted at the same path in the guest) carries
files out. Every wait has a timeout; on failure the run directory (console
log, QMP log, the crash kernel's serial output) is kept and named.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elftools.elf.elffile import ELFFile

from kexecd.system.cpus import parse_cpu_list
from kexecd.system.iomem import parse_iomem
from testbed import acpi, assets
from testbed.capture import Capture
from testbed.guest_safety import MARK
from testbed.qmp import QMP, QMPError

REPO = Path(__file__).resolve().parents[1]
AGENT = Path(__file__).with_name("guest_agent.py")
# The crash kernel's command line. acpi_no_memhotplug keeps the crash kernel
# from onlining the hot-added DIMMs it is meant to dump (Fedora's default too).
CRASH_APPEND = (
    "console=ttyS0 irqpoll nr_cpus=1 reset_devices acpi_no_memhotplug panic=1 kexecd.crash=1"
)


# arch/x86/include/asm/page_64_types.h: __START_KERNEL_map, where the kernel
# text is mapped; the direct map of RAM (PAGE_OFFSET) lies far below it.
KERNEL_TEXT_MAP = 0xFFFFFFFF80000000
# Run in the guest by Guest.fresh_header: trace kexec-tools in skip mode and
# keep the segment that is an ELF core file (e_type ET_CORE).
_FRESH_HEADER = """
import sys
from kexecd.core import trace_kexec
cap = trace_kexec(sys.argv[2:], skip=True)
if cap.exit_code != 0:
    sys.exit(f"{sys.argv[2]} exited {cap.exit_code}")
(hdr,) = [s.buf for s in cap.segments if s.buf[:4] == b"\\x7fELF" and s.buf[16] == 4]
open(sys.argv[1], "wb").write(hdr)
"""
# How long boot() waits for another guest on this machine to finish.
GUEST_LOCK_WAIT = 3600.0
# The kernels that boot with upgraded ACPI tables (testbed/acpi.py): 6.12
# drops the MADT's disabled CPUs under TCG unless the FADT claims ACPI 6.3
# and the MADT marks them Online Capable, so no CPU could be hot-added.
NEEDS_ACPI_UPGRADE = frozenset({"6.12"})
# The QMP id of Machine.virtio_mem_mib's device, and its QOM path.
VIRTIO_MEM_ID = "vmem0"
VIRTIO_MEM_QOM = f"/machine/peripheral/{VIRTIO_MEM_ID}"
# What the virtio-mem driver names the RAM it adds (drivers/virtio/virtio_mem.c,
# add_memory_driver_managed(); Linux 5.8 on), nested under a "virtioN"
# resource that spans the device's whole region.
VIRTIO_MEM_RAM = "System RAM (virtio_mem)"


class TestbedError(RuntimeError):
    """A test-bed step failed; the message names the logs to read."""

    __test__ = False  # not a pytest class, whatever its name


class GuestBootPanic(TestbedError):
    """The guest's kernel panicked before its agent answered.

    :ivar why: the console's first Oops or panic line.
    :ivar run_dir: the run directory, with the boot's logs.
    """

    def __init__(self, message: str, why: str, run_dir: Path) -> None:
        super().__init__(message)
        self.why = why
        self.run_dir = run_dir


# How often :func:`launch` starts a guest whose kernel panics while booting.
# QEMU 7.2's multi-threaded TCG can run a stale translation of kernel text
# being live-patched on another vCPU: Linux 6.12 then hits the int3 of a
# text_poke_bp() that has already ended ("Oops: int3" in sched_clock_cpu when
# "sched_clock: Marking stable" flips its static key, about 1 boot in 25 on
# 2 vCPUs, arch/x86/kernel/alternative.c). That is the emulator, not the code
# under test, so a boot that panics is tried once more; a second panic fails.
BOOT_ATTEMPTS = 2
_PANIC = "Kernel panic - not syncing:"


def boot_panic(console_log: Path) -> str | None:
    """The first Oops or panic line of a guest console log, if its kernel panicked."""
    try:
        text = console_log.read_text(errors="replace")
    except OSError:
        return None
    if _PANIC not in text:
        return None
    for line in text.splitlines():
        if "Oops:" in line or "BUG:" in line or _PANIC in line:
            return line.split("] ", 1)[-1].strip()
    return None


@dataclass
class Result:
    """What a command run in the guest did."""

    argv: list[str]
    rc: int | None
    stdout: str
    stderr: str
    seconds: float

    def check(self) -> Result:
        if self.rc != 0:
            raise TestbedError(
                f"guest command {shlex.join(self.argv)} exited {self.rc}\n"
                f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
            )
        return self


@dataclass(frozen=True)
class Phdr:
    """One program header of a vmcore or ELF core header."""

    type: str
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class Vmcore:
    """The program headers and notes at the head of the crash kernel's /proc/vmcore."""

    size: int
    phdrs: tuple[Phdr, ...]
    notes: tuple[tuple[str, str], ...]  # (name, type)

    @property
    def loads(self) -> list[tuple[int, int]]:
        """The PT_LOAD ranges as (physical start, end exclusive)."""
        return [(p.paddr, p.paddr + p.memsz) for p in self.phdrs if p.type == "PT_LOAD"]

    @property
    def ram_loads(self) -> list[tuple[int, int]]:
        """The PT_LOADs of the direct map (RAM), without the kernel text one."""
        return [
            (p.paddr, p.paddr + p.memsz)
            for p in self.phdrs
            if p.type == "PT_LOAD" and p.vaddr < KERNEL_TEXT_MAP
        ]

    @property
    def kernel_text(self) -> tuple[int, int] | None:
        """The kernel text PT_LOAD (physical start, end), if there is one."""
        for p in self.phdrs:
            if p.type == "PT_LOAD" and p.vaddr >= KERNEL_TEXT_MAP:
                return (p.paddr, p.paddr + p.memsz)
        return None

    @property
    def prstatus(self) -> int:
        """How many NT_PRSTATUS notes (one per CPU the dump knows) there are."""
        return sum(1 for _, t in self.notes if t == "NT_PRSTATUS")

    def covers(self, start: int, end: int) -> bool:
        """Whether the PT_LOADs cover [start, end) entirely."""
        pos = start
        for s, e in sorted(self.loads):
            if s <= pos < e:
                pos = e
        return pos >= end

    def overlaps(self, start: int, end: int) -> bool:
        """Whether any PT_LOAD touches [start, end)."""
        return any(s < end and start < e for s, e in self.loads)


def parse_elf_core(data: bytes, size: int | None = None) -> Vmcore:
    """Parse the program headers and notes of an ELF core file's head."""
    elf = ELFFile(io.BytesIO(data))
    phdrs = []
    notes = []
    for seg in elf.iter_segments():
        h = seg.header
        phdrs.append(Phdr(h.p_type, h.p_offset, h.p_vaddr, h.p_paddr, h.p_filesz, h.p_memsz))
        if h.p_type == "PT_NOTE" and h.p_offset + h.p_filesz <= len(data):
            notes.extend((n["n_name"], n["n_type"]) for n in seg.iter_notes())
    return Vmcore(size if size is not None else len(data), tuple(phdrs), tuple(notes))


@dataclass
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


def _cpu_device_id(props: dict[str, Any]) -> str:
    # One QMP id per CPU slot: cpu-<core-id>-<die-id>-<socket-id>-<thread-id>...
    return "cpu-" + "-".join(str(v) for _, v in sorted(props.items()))


def _cpu_sysfs(cpu: int, attr: str = "") -> str:
    return f"/sys/devices/system/cpu/cpu{cpu}" + (f"/{attr}" if attr else "")


def _ost(dev_id: str, source: int) -> Callable[[dict[str, Any]], bool]:
    """Matches the data of an ACPI_DEVICE_OST event for one device and _OST
    source event (1: insertion, 3: eject request)."""

    def match(data: dict[str, Any]) -> bool:
        info = data.get("info", {})
        return bool(info.get("device") == dev_id and info.get("source") == source)

    return match


def _ejected(data: dict[str, Any], slot: str) -> bool:
    """Whether ACPI_DEVICE_OST data is the guest's last word on an eject
    request (source 3) for the CPU slot: any status but 0x84 (in progress)."""
    info = data.get("info", {})
    return bool(info.get("source") == 3 and info.get("slot") == slot and info["status"] != 0x84)


@dataclass
class Guest:
    """A running test-bed guest. Use :func:`boot` to get one."""

    name: str
    run_dir: Path
    machine: Machine
    kernel: assets.Kernel
    initramfs: Path
    proc: subprocess.Popen[bytes]
    qmp: QMP
    sock: socket.socket
    boot_seconds: float = 0.0
    _buf: bytes = b""
    _next_id: int = 0
    _dimms: int = 0
    dimms: dict[str, tuple[int, int]] = field(default_factory=dict)
    cpu_devices: dict[int, str] = field(default_factory=dict)  # hot-added CPU -> QMP id
    locked: bool = False  # holds the guest lock, released by close()
    kexec: str = str(assets.HOST_KEXEC)  # the kexec-tools build loads run (assets.KEXEC_TOOLS)
    acpi_key: str | None = None  # the shape whose upgraded ACPI tables it booted with
    removed_cpu_slots: set[str] = field(default_factory=set)  # QMP ids of unplugged CPUs
    _cpu_acpi_slots: dict[str, str] = field(default_factory=dict)  # QMP id -> ACPI slot

    # -- logs and failures ------------------------------------------------

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def qmp_log(self) -> Path:
        return self.run_dir / "qmp.log"

    @property
    def crash_log(self) -> Path:
        return self.run_dir / "ttyS1.out"

    def fail(self, what: str) -> TestbedError:
        """An error naming the logs of this run, with the console's tail."""
        tail = ""
        if self.console_log.exists():
            lines = self.console_log.read_text(errors="replace").splitlines()
            tail = "\n".join(lines[-25:])
        return TestbedError(
            f"{what}\n  console log: {self.console_log}\n  QMP log:     {self.qmp_log}\n"
            f"  crash out:   {self.crash_log}\n--- console tail ---\n{tail}"
        )

    # -- the agent ----------------------------------------------------------

    def _recv(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise self.fail(
                    "the guest agent did not answer"
                    + (" (QEMU exited)" if self.proc.poll() is not None else "")
                )
            self.sock.settimeout(min(left, 1.0))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise self.fail("the guest agent's channel closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def _request(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        self._next_id += 1
        req["id"] = self._next_id
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == self._next_id:
                return reply

    def run(
        self,
        argv: list[str] | str,
        *,
        timeout: float = 120.0,
        input: str | None = None,
        env: dict[str, str] | None = None,
        check: bool = True,
    ) -> Result:
        """Run a command in the guest (a string runs under ``sh -c``)."""
        if isinstance(argv, str):
            argv = ["sh", "-c", argv]
        reply = self._request(
            {"op": "run", "argv": argv, "input": input, "timeout": timeout, "env": env or {}},
            timeout + 30,
        )
        if reply.get("timeout"):
            raise self.fail(f"guest command {shlex.join(argv)} timed out after {timeout} s")
        res = Result(argv, reply["rc"], reply["stdout"], reply["stderr"], reply["seconds"])
        return res.check() if check else res

    def sh(self, script: str, timeout: float = 120.0) -> str:
        """Run a shell script in the guest; return its stdout; raise if it fails."""
        return self.run(script, timeout=timeout).stdout

    def read(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    def python(self, *args: str, timeout: float = 300.0, check: bool = True) -> Result:
        """Run this checkout's venv Python in the guest."""
        return self.run([sys.executable, *args], timeout=timeout, check=check)

    # -- CPUs and memory ----------------------------------------------------

    def online_cpus(self) -> list[int]:
        return parse_cpu_list(self.read("/sys/devices/system/cpu/online"))

    def present_cpus(self) -> list[int]:
        return parse_cpu_list(self.read("/sys/devices/system/cpu/present"))

    def hot_add_cpu(self, timeout: float = 60.0) -> int:
        """Plug one CPU in over QMP; return its number once the guest can online it.

        Waits for the guest's ACPI ``_OST`` on the insertion (QMP
        ``ACPI_DEVICE_OST``, source 1, status 0), then for ``cpuN/online`` in
        sysfs. A 6.12 guest without upgraded ACPI tables answers 0 too but
        logs "Unable to map lapic": that is reported at once.

        The CPU is left **present and offline**, as 6.1 and 6.12 both leave a
        hot-added CPU (neither onlines it by itself; this guest has no udev);
        if something onlined it, it is taken offline again so that every
        kernel hands it over the same way.

        :raises TestbedError: no free slot, a CPU was unplugged from this guest
            before (QEMU 7.2 under TCG aborts on any CPU plug after that), or
            the guest did not take the CPU.
        """
        if self.removed_cpu_slots:
            # Seen with a second plug into the unplugged slot and into another.
            gone = ", ".join(sorted(self.removed_cpu_slots))
            raise TestbedError(
                f"a CPU was unplugged from this guest ({gone}); QEMU 7.2 under TCG then "
                "aborts ('double free or corruption') on the next "
                "CPU plug, so the test bed refuses it: boot another guest"
            )
        before = set(self.present_cpus())
        free = [c for c in self.qmp.execute("query-hotpluggable-cpus") if "qom-path" not in c]
        if not free:
            raise self.fail("no free CPU slot (raise Machine.maxcpus)")
        slot = min(free, key=lambda c: sorted(c["props"].items()))
        dev_id = _cpu_device_id(slot["props"])
        self.qmp.execute("device_add", driver=slot["type"], id=dev_id, **slot["props"])
        try:
            ost = self.qmp.wait_event("ACPI_DEVICE_OST", timeout, where=_ost(dev_id, 1))
        except QMPError:
            raise self.fail(f"the guest did not answer the plug of {dev_id} (no _OST)") from None
        status = ost["data"]["info"]["status"]
        if status != 0:
            dmesg = self.run(["dmesg"], check=False).stdout.splitlines()
            raise self.fail(
                f"the guest refused the CPU {dev_id}: _OST status {status:#x}\n"
                + "\n".join(dmesg[-8:])
            )
        deadline = time.monotonic() + timeout
        look = time.monotonic() + 2.0  # when to read dmesg for the refusal below
        while True:
            new = sorted(set(self.present_cpus()) - before)
            if new and self.run(["test", "-e", _cpu_sysfs(new[0], "online")], check=False).rc == 0:
                cpu = new[0]
                break
            if not new and look and time.monotonic() > look:
                look = 0.0
                # The processor driver's failure does not fail the ACPI scan,
                # so _OST says 0 (seen on 6.12 without the table upgrade).
                if "Unable to map lapic to logical cpu number" in self.sh("dmesg"):
                    raise self.fail(
                        f"the guest's kernel has no hot-pluggable CPU for {dev_id} ('Unable to "
                        "map lapic'): boot a 6.12 guest with acpi_upgrade (testbed/acpi.py)"
                    )
            if time.monotonic() > deadline:
                raise self.fail(f"the guest did not register the CPU {dev_id} within {timeout} s")
            time.sleep(0.2)
        self.cpu_devices[cpu] = dev_id
        self._cpu_acpi_slots[dev_id] = ost["data"]["info"]["slot"]
        if self.read(_cpu_sysfs(cpu, "online")).strip() != "0":
            self.set_cpu_online(cpu, False)
        return cpu

    def hot_remove_cpu(self, cpu: int, timeout: float = 60.0) -> None:
        """Offline a hot-added CPU, unplug it, wait until the guest has ejected
        it (its last ``_OST`` on the request, status 0) and let go of it (no
        ``cpuN`` in sysfs, not present).

        No CPU can be plugged in afterwards (see :meth:`hot_add_cpu`).
        """
        dev_id = self.cpu_devices.pop(cpu)
        self.set_cpu_online(cpu, False)
        slot = self._cpu_acpi_slots.pop(dev_id)
        self.qmp.execute("device_del", id=dev_id)
        self.removed_cpu_slots.add(dev_id)
        # QEMU 7.2 (TCG) reports only the CPU's lapic child deleted, never the
        # CPU itself: the guest's last _OST on the eject request says it is
        # done (0x84, "ejection in progress", comes first; the final one
        # names the slot only, the device being gone).
        try:
            ost = self.qmp.wait_event(
                "ACPI_DEVICE_OST", timeout, where=lambda d: _ejected(d, slot)
            )
        except QMPError:
            raise self.fail(f"the guest did not eject {dev_id} within {timeout} s") from None
        if ost["data"]["info"]["status"] != 0:
            raise self.fail(f"the guest refused to eject {dev_id}: {ost['data']['info']}")
        deadline = time.monotonic() + timeout
        while (
            cpu in self.present_cpus()
            or self.run(["test", "-e", _cpu_sysfs(cpu)], check=False).rc == 0
        ):
            if time.monotonic() > deadline:
                raise self.fail(f"the guest kept CPU {cpu} after device_del")
            time.sleep(0.2)

    def set_cpu_online(self, cpu: int, online: bool = True) -> None:
        self.sh(f"echo {int(online)} > /sys/devices/system/cpu/cpu{cpu}/online")

    def memory_block_size(self) -> int:
        return int(self.read("/sys/devices/system/memory/block_size_bytes"), 16)

    def hot_add_memory(self, size_mib: int, timeout: float = 60.0) -> tuple[int, int]:
        """Plug a pc-dimm in; return its (start, end) once the guest has its blocks."""
        return self.hot_add_memories([size_mib], timeout)[0]

    def hot_add_memories(
        self, sizes_mib: list[int], timeout: float = 60.0
    ) -> list[tuple[int, int]]:
        """Plug several pc-dimms in at once (back to back over QMP), then wait for
        the guest to have all their blocks; return their (start, end)."""
        added = []
        for size_mib in sizes_mib:
            self._dimms += 1
            name = f"dimm{self._dimms}"
            self.qmp.execute(
                "object-add",
                **{"qom-type": "memory-backend-ram", "id": f"mem-{name}"},
                size=size_mib << 20,
            )
            self.qmp.execute("device_add", driver="pc-dimm", id=name, memdev=f"mem-{name}")
            added.append(name)
        devices = {
            d["data"].get("id"): d["data"] for d in self.qmp.execute("query-memory-devices")
        }
        ranges = []
        for name in added:
            start, end = devices[name]["addr"], devices[name]["addr"] + devices[name]["size"]
            self.dimms[name] = (start, end)
            ranges.append((start, end))
        blocks = [b for s, e in ranges for b in self._blocks(s, e)]
        script = " && ".join(f"test -d /sys/devices/system/memory/memory{b}" for b in blocks)
        deadline = time.monotonic() + timeout
        while self.run(script, check=False).rc != 0:
            if time.monotonic() > deadline:
                raise self.fail(f"the guest did not see the memory blocks {blocks}")
            time.sleep(0.2)
        return ranges

    def virtio_mem_ranges(self) -> list[tuple[int, int]]:
        """The guest's ``System RAM (virtio_mem)`` resources in /proc/iomem, as
        (start, end exclusive), in file order."""
        return [
            (r.start, r.end + 1)
            for r in parse_iomem(self.read("/proc/iomem"))
            if r.name == VIRTIO_MEM_RAM
        ]

    def virtio_mem_size(self) -> int:
        """How many bytes the virtio-mem device has plugged (its ``size``)."""
        size: int = self.qmp.execute("qom-get", path=VIRTIO_MEM_QOM, property="size")
        return size

    def resize_virtio_mem(self, mib: int, timeout: float = 120.0) -> list[tuple[int, int]]:
        """Ask the virtio-mem device to hold ``mib`` MiB (``qom-set requested-size``);
        wait until the guest driver has plugged or unplugged that much (the
        device's ``size``) and /proc/iomem shows as much ``System RAM
        (virtio_mem)``; return those ranges (start, end exclusive).

        The driver adds and removes the memory itself; whether an added block
        is onlined is the kernel's auto-online policy
        (/sys/devices/system/memory/auto_online_blocks, ``memhp_default_state=``).
        Unplugging online memory needs the driver to offline it first, which
        works best for ZONE_MOVABLE (``online_movable``).
        """
        if not self.machine.virtio_mem_mib:
            raise TestbedError("this machine has no virtio-mem device (Machine.virtio_mem_mib)")
        if not 0 <= mib <= self.machine.virtio_mem_mib:
            raise TestbedError(f"{mib} MiB is outside 0-{self.machine.virtio_mem_mib} MiB")
        want = mib << 20
        self.qmp.execute("qom-set", path=VIRTIO_MEM_QOM, property="requested-size", value=want)
        deadline = time.monotonic() + timeout
        while True:
            size = self.virtio_mem_size()
            ranges = self.virtio_mem_ranges() if size == want else []
            if size == want and sum(e - s for s, e in ranges) == want:
                return ranges
            if time.monotonic() > deadline:
                ranges = self.virtio_mem_ranges()
                raise self.fail(
                    f"virtio-mem did not reach {mib} MiB within {timeout} s: the device has "
                    f"{size >> 20} MiB plugged, /proc/iomem "
                    f"{sum(e - s for s, e in ranges) >> 20} MiB in {len(ranges)} ranges"
                )
            time.sleep(0.3)

    def _blocks(self, start: int, end: int) -> list[int]:
        bs = self.memory_block_size()
        return list(range(start // bs, end // bs))

    def set_memory_online(self, start: int, end: int, online: bool = True) -> None:
        """Online (movable, so it can be removed again) or offline a physical range."""
        state = "online_movable" if online else "offline"
        script = "; ".join(
            f"echo {state} > /sys/devices/system/memory/memory{b}/state"
            for b in self._blocks(start, end)
        )
        self.sh(f"set -e; {script}")

    def hot_remove_memory(self, name: str, timeout: float = 60.0) -> tuple[int, int]:
        """Offline a DIMM's blocks, unplug it, wait until the guest lets go of it."""
        start, end = self.dimms.pop(name)
        self.set_memory_online(start, end, online=False)
        self.qmp.execute("device_del", id=name)
        self.qmp.wait_event("DEVICE_DELETED", timeout, device=name)
        blocks = self._blocks(start, end)
        script = " || ".join(f"test -d /sys/devices/system/memory/memory{b}" for b in blocks)
        deadline = time.monotonic() + timeout
        while self.run(script, check=False).rc == 0:
            if time.monotonic() > deadline:
                raise self.fail(f"the guest kept {name}'s memory blocks {blocks}")
            time.sleep(0.2)
        self.qmp.execute("object-del", id=f"mem-{name}")
        return start, end

    # -- kdump ----------------------------------------------------------------

    def kexec_argv(self, append: str = "", options: Sequence[str] = ()) -> list[str]:
        """The ``kexec -p`` command that loads the test bed's crash kernel.

        :param options: more kexec options, before the kernel (``-c``, ``-s``,
            ``--hotplug``).
        """
        return [
            self.kexec,
            "-p",
            *options,
            str(self.kernel.vmlinuz),
            f"--initrd={self.initramfs}",
            f"--append={CRASH_APPEND} {append}".strip(),
        ]

    def capture_load(self, name: str, append: str = "", options: Sequence[str] = ()) -> Capture:
        """``kexec -p`` under kexecd's tracer, with the files it read (a capture).

        Written to the share as ``name``; see :mod:`testbed.guest_capture`.
        """
        out = self.run_dir / "share" / name
        argv = self.kexec_argv(append, options)
        self.python("-m", "testbed.guest_capture", str(out), "--", *argv)
        return Capture(out)

    def fresh_header(self, append: str = "", options: Sequence[str] = ()) -> bytes:
        """The ELF core header ``kexec -p`` would load now, from a traced run whose
        kexec calls are answered without reaching the kernel (nothing loaded)."""
        out = self.run_dir / "share" / "fresh-header.bin"
        self.python("-c", _FRESH_HEADER, str(out), *self.kexec_argv(append, options))
        return out.read_bytes()

    def kexecd_load(
        self,
        state_dir: str,
        append: str = "",
        options: Sequence[str] = (),
        timeout: float = 120.0,
    ) -> str:
        """``kexecd load -- kexec -p ...`` in the guest; return what it printed.

        :param options: more kexec options (:meth:`kexec_argv`).
        """
        argv = self.kexec_argv(append, options)
        out = self.run(["kexecd", "load", "--state-dir", state_dir, "--", *argv], timeout=timeout)
        if self.read("/sys/kernel/kexec_crash_loaded").strip() != "1":
            raise self.fail("kexecd load succeeded but no crash kernel is loaded")
        return out.stdout

    def start_daemon(
        self,
        state_dir: str,
        runtime_dir: str = "/run/kexecd",
        timeout: float = 60.0,
        config: str | None = None,
        wrapper: str = "",
    ) -> int:
        """Start ``kexecd run`` (kernel uevents: the guest has no udevd); wait for its
        first reconcile; return its pid. Its log is ``RUNTIME_DIR.log``.

        :param wrapper: a command the daemon runs under (``setpriv ...``).
        """
        self.sh(f"rm -f {runtime_dir}/state.json")
        conf = f"--config {config} " if config else ""
        self.sh(
            f"setsid {wrapper} kexecd run {conf}--source kernel --state-dir {state_dir} "
            f"--runtime-dir {runtime_dir} -v >{runtime_dir}.log 2>&1 </dev/null & echo $! "
            f">{runtime_dir}.pid"
        )
        deadline = time.monotonic() + timeout
        while self.run(["test", "-e", f"{runtime_dir}/state.json"], check=False).rc != 0:
            if time.monotonic() > deadline:
                log = self.run(["cat", f"{runtime_dir}.log"], check=False).stdout
                raise self.fail(f"kexecd run did not reconcile within {timeout} s:\n{log}")
            time.sleep(0.2)
        return int(self.read(f"{runtime_dir}.pid"))

    def daemon_state(self, runtime_dir: str = "/run/kexecd") -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.read(f"{runtime_dir}/state.json"))
        return state

    def kdump_tools_load(self, kexec_cmd: str, append: str = "") -> str:
        """Load the crash kernel as Debian's kdump-config does: ``eval $KEXEC_CMD``,
        then the command written to ``kexec_cmd``. Returns the command line."""
        cmdline = f"{CRASH_APPEND} {append}".strip()
        line = (
            f'{self.kexec} -p --command-line="{cmdline}" '
            f"--initrd={self.initramfs} {self.kernel.vmlinuz}"
        )
        self.sh(
            f"mkdir -p {shlex.quote(os.path.dirname(kexec_cmd))} && "
            f"KEXEC_CMD={shlex.quote(line)} && eval $KEXEC_CMD && "
            f'echo "$KEXEC_CMD" >{shlex.quote(kexec_cmd)}'
        )
        if self.read("/sys/kernel/kexec_crash_loaded").strip() != "1":
            raise self.fail("the kdump-tools-style load succeeded but no crash kernel is loaded")
        return line

    def load_crash_kernel(self, append: str = "") -> Result:
        """Load the crash kernel with kexec-tools in the guest."""
        res = self.run(self.kexec_argv(append), timeout=120)
        if self.read("/sys/kernel/kexec_crash_loaded").strip() != "1":
            raise self.fail("kexec -p succeeded but no crash kernel is loaded")
        return res

    def crash(self, timeout: float = 240.0) -> Vmcore:
        """Panic the guest; return the head of the vmcore its crash kernel saw.

        The watchdog is ``timeout``: a crash kernel that never boots (a stale
        purgatory digest spins forever) raises :class:`TestbedError`.
        """
        self.panic(timeout, "no dump: the guest did not power off")
        return self.read_vmcore()

    def panic(self, timeout: float, what: str) -> None:
        """sysrq-c in the guest; wait until QEMU exits (the crash kernel powered
        off or rebooted). After ``timeout`` s QEMU is killed and ``what`` raised."""
        self._request({"op": "panic"}, 30)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise self.fail(f"{what} within {timeout:.0f} s") from None

    def crash_kernel_view(self) -> tuple[str, str]:
        """The crash kernel's /proc/cmdline and /proc/iomem, as it sent them
        before the vmcore (after :meth:`crash`)."""
        text = self.crash_log.read_text(errors="replace") if self.crash_log.exists() else ""
        line = re.search(r"^KEXECD-CMDLINE (.*)$", text, re.M)
        iomem = re.search(r"KEXECD-IOMEM-BEGIN\s*\n(.*?)KEXECD-IOMEM-END", text, re.S)
        if not line or not iomem:
            raise self.fail("the crash kernel sent no command line or /proc/iomem")
        return line.group(1).strip(), iomem.group(1).replace("\r", "")

    def read_vmcore(self) -> Vmcore:
        text = self.crash_log.read_text(errors="replace") if self.crash_log.exists() else ""
        m = re.search(r"KEXECD-VMCORE-BEGIN size=(\d+)\s*\n(.*?)KEXECD-VMCORE-END", text, re.S)
        if not m:
            raise self.fail("the crash kernel sent no vmcore")
        data = base64.b64decode(re.sub(r"[^A-Za-z0-9+/=]", "", m.group(2)))
        (self.run_dir / "vmcore-head.bin").write_bytes(data)
        return parse_elf_core(data, int(m.group(1)))

    # -- lifetime -------------------------------------------------------------

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.qmp.execute("quit")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.sock.close()
        self.qmp.close()
        if self.locked:
            self.locked = False
            _guest_unlock()


_lock_fd = -1
_lock_users = 0


def _guest_lock(timeout: float) -> None:
    # One test run, benchmark or helper boots guests at a time on this
    # machine: a 2-core host runs one TCG guest well, not two. The lock is
    # held per process (a test may hold a shared guest while it boots its
    # own) and released when the process's last guest closes.
    global _lock_fd, _lock_users
    if _lock_users == 0:
        path = assets.cache_dir() / "guest.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise TestbedError(
                        f"another process has held {path} for {timeout:.0f} s; "
                        "is a test run or benchmark still going?"
                    ) from None
                time.sleep(0.5)
        _lock_fd = fd
    _lock_users += 1


def _guest_unlock() -> None:
    global _lock_fd, _lock_users
    _lock_users -= 1
    if _lock_users == 0:
        os.close(_lock_fd)  # releases the flock
        _lock_fd = -1


def _check_acpi_upgrade(guest: Guest) -> None:
    # drivers/acpi/tables.c (6.12) logs each table it takes from the initrd.
    dmesg = guest.run(["dmesg"]).stdout
    missing = [t for t in acpi.TABLES if not re.search(rf"Table Upgrade: override \[{t}-", dmesg)]
    if missing:
        raise guest.fail(
            f"the kernel did not take the upgraded ACPI tables {', '.join(missing)} "
            f"(cache {acpi.cache_path(guest.acpi_key or '?')}); is CONFIG_ACPI_TABLE_UPGRADE on?"
        )


def _new_run_dir(name: str) -> Path:
    runs = assets.cache_dir() / "runs"
    runs.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs / f"{stamp}-{os.getpid()}-{len(list(runs.iterdir()))}"
    path.mkdir()
    (path / "name").write_text(name + "\n")
    return path


def boot(
    name: str = "guest",
    machine: Machine | None = None,
    timeout: float = 240.0,
    kernel_version: str = "6.1",
    append: Sequence[str] = (),
    kexec_tools: str = "2.0.25",
    acpi_upgrade: bool | None = None,
) -> Guest:
    """Boot a test-bed guest and wait for its agent (after any other guest has closed).

    :param kernel_version: which of :data:`testbed.assets.KERNELS`.
    :param append: more words for the kernel command line.
    :param kexec_tools: which of :data:`testbed.assets.KEXEC_TOOLS` the guest's
        crash loads run (:attr:`Guest.kexec`).
    :param acpi_upgrade: boot with upgraded ACPI tables (see :func:`launch`);
        by default for the kernels in :data:`NEEDS_ACPI_UPGRADE`.
    """
    kexec = assets.ensure_kexec_tools(kexec_tools)
    kernel = assets.ensure_kernel(kernel_version)
    initramfs = assets.build_initramfs(kernel)
    run_dir = _new_run_dir(name)
    share = run_dir / "share"
    share.mkdir()
    append = [
        "console=ttyS0",
        f"kexecd.share={share}",
        f"kexecd.python={sys.executable}",
        f"kexecd.agent={AGENT}",
        *append,
    ]
    devices = [
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={share},mount_tag=share,security_model=none,multidevs=remap",
    ]
    if acpi_upgrade is None:
        acpi_upgrade = kernel_version in NEEDS_ACPI_UPGRADE
    guest = launch(
        name,
        run_dir,
        machine or Machine(),
        kernel,
        initramfs,
        append,
        devices,
        timeout,
        acpi_upgrade=acpi_upgrade,
    )
    guest.kexec = str(kexec)
    return guest


def qemu_argv(
    run_dir: Path,
    machine: Machine,
    kernel: assets.Kernel,
    initrd: Path,
    cmdline: str,
    devices: list[str],
) -> list[str]:
    """The QEMU command line of a test-bed guest."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise TestbedError("qemu-system-x86_64 is missing: apt-get install qemu-system-x86")
    if machine.mem_mib + machine.virtio_mem_mib > machine.maxmem_mib:
        raise TestbedError(
            f"maxmem {machine.maxmem_mib} MiB is less than RAM {machine.mem_mib} MiB and "
            f"virtio-mem {machine.virtio_mem_mib} MiB"
        )
    if machine.virtio_mem_mib:
        devices = [
            *devices,
            "-object",
            f"memory-backend-ram,id={VIRTIO_MEM_ID}-mem,size={machine.virtio_mem_mib}M",
            "-device",
            f"virtio-mem-pci,id={VIRTIO_MEM_ID},memdev={VIRTIO_MEM_ID}-mem,"
            f"requested-size=0,block-size={machine.virtio_mem_block_mib}M",
        ]
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
        str(kernel.vmlinuz),
        "-initrd",
        str(initrd),
        "-append",
        cmdline,
        "-display",
        "none",
        "-nic",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
        "-serial",
        f"file:{run_dir / 'console.log'}",
        "-serial",
        f"file:{run_dir / 'ttyS1.out'}",
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


def read_acpi_tables(guest: Guest, names: Sequence[str] = acpi.TABLES) -> dict[str, bytes]:
    """The ACPI tables the guest's kernel uses (``/sys/firmware/acpi/tables``)."""
    return {
        name: base64.b64decode(guest.run(["base64", f"/sys/firmware/acpi/tables/{name}"]).stdout)
        for name in names
    }


def _acpi_tables(
    name: str,
    argv: list[str],
    machine: Machine,
    kernel: assets.Kernel,
    initrd: Path,
    append: list[str],
    devices: list[str],
    timeout: float,
) -> tuple[str, dict[str, bytes]]:
    """The cache key and raw FADT and MADT of this QEMU shape: from the cache,
    or read from a guest booted once with the shape (and cached)."""
    shape = acpi.shape(argv)
    key = acpi.shape_key(shape)
    raw = acpi.load_cached(key)
    if raw is None:
        # The probe boots with the same options (the devices may name this
        # run's share: the guests are one after the other, never together).
        probe_dir = _new_run_dir(f"{name} (reading the ACPI tables)")
        probe = launch(
            f"{name}-acpi", probe_dir, machine, kernel, initrd, append, devices, timeout
        )
        try:
            raw = read_acpi_tables(probe)
        finally:
            probe.close()
        try:
            acpi.store(key, shape, raw)
        except acpi.AcpiError as e:
            raise TestbedError(f"QEMU's ACPI tables cannot be upgraded: {e}") from e
        shutil.rmtree(probe_dir, ignore_errors=True)
    return key, raw


def launch(
    name: str,
    run_dir: Path,
    machine: Machine,
    kernel: assets.Kernel,
    initrd: Path,
    append: list[str],
    devices: list[str],
    timeout: float,
    acpi_upgrade: bool = False,
) -> Guest:
    """Start QEMU with the test bed's machine shape, its QMP socket and the agent's
    virtio-serial port; wait for the agent (after any other guest has closed).

    :param append: the kernel command line; ``crashkernel=``, ``panic=1`` and the
        test bed's guest mark are added.
    :param devices: more QEMU options (the guest's root: a 9p share or a disk).
    :param acpi_upgrade: put QEMU's FADT and MADT, upgraded so that disabled
        CPUs are hot-pluggable (:mod:`testbed.acpi`), in front of the initrd.
        The tables of a new machine shape are read from a guest booted once
        without them, then cached. The guest's ``initramfs`` (the crash
        kernel's) stays ``initrd``. Raises if the kernel did not take them.
    """
    cmdline = " ".join([*append, f"crashkernel={machine.crashkernel}", "panic=1", MARK])
    argv = qemu_argv(run_dir, machine, kernel, initrd, cmdline, devices)
    key = None
    if acpi_upgrade:
        key, raw = _acpi_tables(name, argv, machine, kernel, initrd, append, devices, timeout)
        argv[argv.index("-initrd") + 1] = str(acpi.upgraded_initrd(raw, initrd))
    (run_dir / "qemu.argv").write_text(shlex.join(argv) + "\n")
    for attempt in range(1, BOOT_ATTEMPTS):
        try:
            return _start(name, run_dir, machine, kernel, initrd, argv, timeout, key)
        except GuestBootPanic as e:
            kept = _keep_logs(run_dir, f"boot{attempt}")
            print(
                f"testbed: {name}: the guest's kernel panicked while booting ({e.why}); "
                f"booting it again (logs of the panic: {kept})",
                file=sys.stderr,
            )
    return _start(name, run_dir, machine, kernel, initrd, argv, timeout, key)


def _keep_logs(run_dir: Path, tag: str) -> Path:
    """Move a failed boot's console, QMP and crash logs aside as ``STEM.TAG.EXT``;
    return where the console went."""
    kept = run_dir / f"console.{tag}.log"
    for log in ("console.log", "qmp.log", "ttyS1.out"):
        if (run_dir / log).exists():
            stem, _, ext = log.partition(".")
            (run_dir / log).rename(run_dir / f"{stem}.{tag}.{ext}")
    return kept


def _start(
    name: str,
    run_dir: Path,
    machine: Machine,
    kernel: assets.Kernel,
    initrd: Path,
    argv: list[str],
    timeout: float,
    key: str | None,
) -> Guest:
    """One try of :func:`launch`: run QEMU, wait for the agent's first message."""
    acpi_upgrade = key is not None
    _guest_lock(GUEST_LOCK_WAIT)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=(run_dir / "qemu.out").open("wb"),
            stderr=subprocess.STDOUT,
        )
    except BaseException:
        _guest_unlock()
        raise
    qmp: QMP | None = None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        qmp = QMP(run_dir / "qmp.sock", run_dir / "qmp.log")
        sock.connect(str(run_dir / "agent.sock"))
        guest = Guest(
            name, run_dir, machine, kernel, initrd, proc, qmp, sock, locked=True, acpi_key=key
        )
        ready = guest._recv(time.monotonic() + timeout)
        if not ready.get("ready"):
            raise guest.fail(f"unexpected first message from the agent: {ready}")
        guest.boot_seconds = time.monotonic() - start
        if acpi_upgrade:
            _check_acpi_upgrade(guest)
        return guest
    except BaseException as e:
        proc.kill()
        proc.wait()
        _guest_unlock()
        sock.close()
        if qmp:
            qmp.close()
        if isinstance(e, TestbedError):
            why = boot_panic(run_dir / "console.log")
            if why is not None:
                raise GuestBootPanic(str(e), why, run_dir) from e
            raise
        raise TestbedError(f"booting the guest failed: {e}; logs in {run_dir}") from e
