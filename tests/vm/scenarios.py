# SPDX-License-Identifier: GPL-2.0-or-later
"""The stale-dump demonstration, shared by its VM test and ``make demo``.

A kdump host loads its crash kernel at boot. Then one CPU and 512 MiB are
hot-added and onlined, and the kernel panics. Without a reload the dump
misses both; with ``kexec -p`` run again after the hotplug it has both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from kexecd.inspect import human
from tests.vm.testbed import Vmcore, boot, parse_elf_core

HOTPLUG_MIB = 512


@dataclass(frozen=True)
class Outcome:
    """What one run of the scenario left in the dump."""

    label: str
    added_range: tuple[int, int]
    added_cpu: int
    cpus_online: list[int]
    crash_notes: dict[int, int]  # CPU -> physical address of its crash_notes
    header: Vmcore  # the elfcorehdr loaded when the kernel panicked
    vmcore: Vmcore  # what the crash kernel's /proc/vmcore showed
    seconds: float

    @property
    def header_cpus(self) -> list[int]:
        """The CPUs whose crash_notes the loaded header lists."""
        notes = {p.paddr for p in self.header.phdrs if p.type == "PT_NOTE"}
        return sorted(cpu for cpu, addr in self.crash_notes.items() if addr in notes)


def run(reload_after_hotplug: bool) -> Outcome:
    """Boot, load kdump, hot-add a CPU and memory, maybe reload, crash."""
    label = "fresh: kexec -p again" if reload_after_hotplug else "stale: loaded at boot"
    start = time.monotonic()
    guest = boot("stale-dump" + ("-reload" if reload_after_hotplug else ""))
    try:
        header = parse_elf_core(guest.capture_load("load-boot").header)
        mem = guest.hot_add_memory(HOTPLUG_MIB)
        guest.set_memory_online(*mem)
        cpu = guest.hot_add_cpu()
        guest.set_cpu_online(cpu)
        if reload_after_hotplug:
            header = parse_elf_core(guest.capture_load("load-after").header)
        online = guest.online_cpus()
        notes = {
            c: int(guest.read(f"/sys/devices/system/cpu/cpu{c}/crash_notes"), 16) for c in online
        }
        vmcore = guest.crash()
    finally:
        guest.close()
    return Outcome(label, mem, cpu, online, notes, header, vmcore, time.monotonic() - start)


def _yes(ok: bool) -> str:
    return "yes" if ok else "MISSING"


def side_by_side(stale: Outcome, fresh: Outcome) -> str:
    """The two vmcores as one table a person can read at a glance."""
    ranges = sorted(set(stale.vmcore.ram_loads) | set(fresh.vmcore.ram_loads))
    w = 34
    lines = [
        f"{'':38}{stale.label:<{w}}{fresh.label:<{w}}",
        f"{'vmcore PT_LOADs of RAM (physical)':38}",
    ]
    for s, e in ranges:
        lines.append(
            f"  {s:#014x}-{e - 1:#014x}  {human(e - s):>9}  "
            f"{_yes((s, e) in stale.vmcore.loads):<{w}}{_yes((s, e) in fresh.vmcore.loads):<{w}}"
        )

    def text(o: Outcome) -> str:
        t = o.vmcore.kernel_text
        return f"{human(t[1] - t[0])} at {t[0]:#x}" if t else "MISSING"

    lines.append(
        f"{'kernel text (KASLR: moves each boot)':38}{text(stale):<{w}}{text(fresh):<{w}}"
    )
    a, b = stale.added_range
    lines.append(
        f"{f'hot-added {human(b - a)} at {a:#x}':38}"
        f"{_yes(stale.vmcore.covers(a, b)):<{w}}{_yes(fresh.vmcore.covers(a, b)):<{w}}"
    )
    lines.append(
        f"{f'hot-added CPU {stale.added_cpu} in the header':38}"
        f"{_yes(stale.added_cpu in stale.header_cpus):<{w}}"
        f"{_yes(fresh.added_cpu in fresh.header_cpus):<{w}}"
    )
    lines.append(
        f"{'NT_PRSTATUS notes / CPUs online':38}"
        f"{f'{stale.vmcore.prstatus} / {len(stale.cpus_online)}':<{w}}"
        f"{f'{fresh.vmcore.prstatus} / {len(fresh.cpus_online)}':<{w}}"
    )
    lines.append(
        f"{'scenario time':38}{f'{stale.seconds:.1f} s':<{w}}{f'{fresh.seconds:.1f} s':<{w}}"
    )
    return "\n".join(line.rstrip() for line in lines)


def write_report(path: Path, stale: Outcome, fresh: Outcome) -> None:
    path.write_text(side_by_side(stale, fresh) + "\n")
