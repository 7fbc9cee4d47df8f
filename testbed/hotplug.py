# SPDX-License-Identifier: GPL-2.0-or-later
"""Hotplug in a test-bed guest: CPUs and pc-dimms over QMP, virtio-mem by its
requested size, and the guest's side of each (sysfs, /proc/iomem)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kexecd.system.cpus import parse_cpu_list
from kexecd.system.iomem import parse_iomem
from testbed.qemu import VIRTIO_MEM_QOM, Machine
from testbed.qmp import QMP, QMPError
from testbed.transport import Agent, TestbedError

__all__ = ["VIRTIO_MEM_RAM", "Hotplug"]

# What the virtio-mem driver names the RAM it adds (drivers/virtio/virtio_mem.c,
# add_memory_driver_managed(); Linux 5.8 on), nested under a "virtioN"
# resource that spans the device's whole region.
VIRTIO_MEM_RAM = "System RAM (virtio_mem)"


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


class Hotplug:
    """Plugs CPUs and memory into one guest and waits for the guest to take them.

    :ivar dimms: the pc-dimms plugged and not removed: QMP id -> (start, end).
    :ivar cpu_devices: the hot-added CPUs: number -> QMP id.
    :ivar removed_cpu_slots: the QMP ids of the CPUs unplugged.
    """

    def __init__(self, agent: Agent, qmp: QMP, machine: Machine) -> None:
        self.agent = agent
        self.qmp = qmp
        self.machine = machine
        self.dimms: dict[str, tuple[int, int]] = {}
        self.cpu_devices: dict[int, str] = {}
        self.removed_cpu_slots: set[str] = set()
        self._cpu_acpi_slots: dict[str, str] = {}  # QMP id -> ACPI slot
        self._dimm_count = 0

    # -- CPUs ---------------------------------------------------------------

    def online_cpus(self) -> list[int]:
        return parse_cpu_list(self.agent.read("/sys/devices/system/cpu/online"))

    def present_cpus(self) -> list[int]:
        return parse_cpu_list(self.agent.read("/sys/devices/system/cpu/present"))

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
            raise self.agent.fail("no free CPU slot (raise Machine.maxcpus)")
        slot = min(free, key=lambda c: sorted(c["props"].items()))
        dev_id = _cpu_device_id(slot["props"])
        self.qmp.execute("device_add", driver=slot["type"], id=dev_id, **slot["props"])
        try:
            ost = self.qmp.wait_event("ACPI_DEVICE_OST", timeout, where=_ost(dev_id, 1))
        except QMPError:
            raise self.agent.fail(
                f"the guest did not answer the plug of {dev_id} (no _OST)"
            ) from None
        status = ost["data"]["info"]["status"]
        if status != 0:
            dmesg = self.agent.run(["dmesg"], check=False).stdout.splitlines()
            raise self.agent.fail(
                f"the guest refused the CPU {dev_id}: _OST status {status:#x}\n"
                + "\n".join(dmesg[-8:])
            )
        cpu = self._registered_cpu(before, dev_id, timeout)
        self.cpu_devices[cpu] = dev_id
        self._cpu_acpi_slots[dev_id] = ost["data"]["info"]["slot"]
        if self.agent.read(_cpu_sysfs(cpu, "online")).strip() != "0":
            self.set_cpu_online(cpu, False)
        return cpu

    def _registered_cpu(self, before: set[int], dev_id: str, timeout: float) -> int:
        """The number of the CPU ``dev_id`` once it is present beyond ``before``
        and can be onlined (``cpuN/online`` exists)."""
        deadline = time.monotonic() + timeout
        look = time.monotonic() + 2.0  # when to read dmesg for the refusal below
        while True:
            new = sorted(set(self.present_cpus()) - before)
            online = _cpu_sysfs(new[0], "online") if new else ""
            if new and self.agent.run(["test", "-e", online], check=False).rc == 0:
                return new[0]
            if not new and look and time.monotonic() > look:
                look = 0.0
                # The processor driver's failure does not fail the ACPI scan,
                # so _OST says 0 (seen on 6.12 without the table upgrade).
                if "Unable to map lapic to logical cpu number" in self.agent.sh("dmesg"):
                    raise self.agent.fail(
                        f"the guest's kernel has no hot-pluggable CPU for {dev_id} ('Unable "
                        "to map lapic'): boot a 6.12 guest with Machine.acpi_upgrade "
                        "(testbed/acpi.py)"
                    )
            if time.monotonic() > deadline:
                raise self.agent.fail(
                    f"the guest did not register the CPU {dev_id} within {timeout} s"
                )
            time.sleep(0.2)

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
            raise self.agent.fail(f"the guest did not eject {dev_id} within {timeout} s") from None
        if ost["data"]["info"]["status"] != 0:
            raise self.agent.fail(f"the guest refused to eject {dev_id}: {ost['data']['info']}")
        deadline = time.monotonic() + timeout
        while (
            cpu in self.present_cpus()
            or self.agent.run(["test", "-e", _cpu_sysfs(cpu)], check=False).rc == 0
        ):
            if time.monotonic() > deadline:
                raise self.agent.fail(f"the guest kept CPU {cpu} after device_del")
            time.sleep(0.2)

    def set_cpu_online(self, cpu: int, online: bool = True) -> None:
        self.agent.sh(f"echo {int(online)} > /sys/devices/system/cpu/cpu{cpu}/online")

    # -- memory ---------------------------------------------------------------

    def memory_block_size(self) -> int:
        return int(self.agent.read("/sys/devices/system/memory/block_size_bytes"), 16)

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
            self._dimm_count += 1
            name = f"dimm{self._dimm_count}"
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
        blocks = [b for s, e in ranges for b in self.memory_blocks(s, e)]
        script = " && ".join(f"test -d /sys/devices/system/memory/memory{b}" for b in blocks)
        deadline = time.monotonic() + timeout
        while self.agent.run(script, check=False).rc != 0:
            if time.monotonic() > deadline:
                raise self.agent.fail(f"the guest did not see the memory blocks {blocks}")
            time.sleep(0.2)
        return ranges

    def virtio_mem_ranges(self) -> list[tuple[int, int]]:
        """The guest's ``System RAM (virtio_mem)`` resources in /proc/iomem, as
        (start, end exclusive), in file order."""
        return [
            (r.start, r.end + 1)
            for r in parse_iomem(self.agent.read("/proc/iomem"))
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
                raise self.agent.fail(
                    f"virtio-mem did not reach {mib} MiB within {timeout} s: the device has "
                    f"{size >> 20} MiB plugged, /proc/iomem "
                    f"{sum(e - s for s, e in ranges) >> 20} MiB in {len(ranges)} ranges"
                )
            time.sleep(0.3)

    def memory_blocks(self, start: int, end: int) -> list[int]:
        """The numbers of the memory blocks (``memoryN`` in sysfs) of [start, end)."""
        bs = self.memory_block_size()
        return list(range(start // bs, end // bs))

    def set_memory_online(self, start: int, end: int, online: bool = True) -> None:
        """Online (movable, so it can be removed again) or offline a physical range."""
        state = "online_movable" if online else "offline"
        script = "; ".join(
            f"echo {state} > /sys/devices/system/memory/memory{b}/state"
            for b in self.memory_blocks(start, end)
        )
        self.agent.sh(f"set -e; {script}")

    def hot_remove_memory(self, name: str, timeout: float = 60.0) -> tuple[int, int]:
        """Offline a DIMM's blocks, unplug it, wait until the guest lets go of it."""
        start, end = self.dimms.pop(name)
        self.set_memory_online(start, end, online=False)
        self.qmp.execute("device_del", id=name)
        self.qmp.wait_event("DEVICE_DELETED", timeout, device=name)
        blocks = self.memory_blocks(start, end)
        script = " || ".join(f"test -d /sys/devices/system/memory/memory{b}" for b in blocks)
        deadline = time.monotonic() + timeout
        while self.agent.run(script, check=False).rc == 0:
            if time.monotonic() > deadline:
                raise self.agent.fail(f"the guest kept {name}'s memory blocks {blocks}")
            time.sleep(0.2)
        self.qmp.execute("object-del", id=f"mem-{name}")
        return start, end
