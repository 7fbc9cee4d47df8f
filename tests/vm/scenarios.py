# SPDX-License-Identifier: GPL-2.0-or-later
"""The stale-dump demonstration, shared by its VM tests and ``make demo``.

A kdump host loads its crash kernel at boot. Then one CPU and 512 MiB are
hot-added and onlined, and the kernel panics. Three ways to live with it:

* ``stale``: nothing reloads the crash kernel; the dump misses both;
* ``reload``: ``kexec -p -u && kexec -p`` after the hotplug, as the distros'
  udev rules do; the dump has both;
* ``kexecd``: ``kexecd load`` at boot and ``kexecd run``; the daemon reloads
  only the header; the dump has both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kexecd.core import subtract_ranges
from kexecd.model import MemRange, human
from kexecd.system.iomem import crash_ranges, parse_iomem
from testbed.vm import Vmcore, boot, parse_elf_core

HOTPLUG_MIB = 512
MODES = {
    "stale": "stale: loaded at boot",
    "reload": "reload: kexec -p again",
    "kexecd": "kexecd run",
}
STATE = "/run/kexecd-state"


@dataclass(frozen=True)
class Outcome:
    """What one run of the scenario left in the dump."""

    mode: str
    added_range: tuple[int, int]
    added_cpu: int
    cpus_online: list[int]
    crash_notes: dict[int, int]  # CPU -> physical address of its crash_notes
    header: Vmcore  # the elfcorehdr loaded when the kernel panicked
    vmcore: Vmcore  # what the crash kernel's /proc/vmcore showed
    update_seconds: float | None  # from the hotplug to a current crash kernel
    seconds: float
    boot_ram: list[tuple[int, int]]  # RAM there at boot, less crashkernel= [start, end)
    crash_kernel: tuple[int, int]  # the crashkernel= reservation [start, end)

    @property
    def label(self) -> str:
        return MODES[self.mode]

    @property
    def header_cpus(self) -> list[int]:
        """The CPUs whose crash_notes the loaded header lists."""
        notes = {p.paddr for p in self.header.phdrs if p.type == "PT_NOTE"}
        return sorted(cpu for cpu, addr in self.crash_notes.items() if addr in notes)


def run(mode: str) -> Outcome:
    """Boot, load kdump, hot-add a CPU and memory, update (or not) as ``mode`` says, crash."""
    if mode not in MODES:
        raise ValueError(f"mode is one of {', '.join(MODES)}")
    start = time.monotonic()
    guest = boot(f"stale-dump-{mode}")
    try:
        if mode == "kexecd":
            guest.kexecd_load(STATE)
            guest.start_daemon(STATE)
        else:
            header = parse_elf_core(guest.capture_load("load-boot").header)
        mem = guest.hot_add_memory(HOTPLUG_MIB)
        guest.set_memory_online(*mem)
        cpu = guest.hot_add_cpu()
        guest.set_cpu_online(cpu)
        update = None
        if mode == "reload":
            # Timed as kdump-tools does it per event, then again under the
            # tracer to see the header it loads (the same bytes).
            update = guest.run(["kexec", "-p", "-u"]).seconds
            update += guest.run(guest.kexec_argv()).seconds
            header = parse_elf_core(guest.capture_load("load-after").header)
        elif mode == "kexecd":
            deadline = time.monotonic() + 60
            while guest.run(["kexecd", "status", "--state-dir", STATE], check=False).rc != 0:
                if time.monotonic() > deadline:
                    raise guest.fail("kexecd never brought the crash kernel up to date")
                time.sleep(0.5)
            last = guest.daemon_state()["last_update"]
            update = last["latency_ms"] / 1000
            out = guest.run_dir / "share" / "kexecd-header.bin"
            guest.run(["cp", f"{STATE}/snapshot/loaded-header.bin", str(out)])
            header = parse_elf_core(out.read_bytes())
        memory = crash_ranges(parse_iomem(guest.read("/proc/iomem")))
        added = MemRange(mem[0], mem[1] - 1)
        boot_ram = [(r.start, r.end + 1) for r in subtract_ranges(memory.ram, [added])]
        reserved = memory.crash_reserved[0]
        online = guest.online_cpus()
        notes = {
            c: int(guest.read(f"/sys/devices/system/cpu/cpu{c}/crash_notes"), 16) for c in online
        }
        vmcore = guest.crash()
    finally:
        guest.close()
    return Outcome(
        mode,
        mem,
        cpu,
        online,
        notes,
        header,
        vmcore,
        update,
        time.monotonic() - start,
        boot_ram,
        (reserved.start, reserved.end + 1),
    )


def _yes(ok: bool) -> str:
    return "yes" if ok else "MISSING"


def side_by_side(*outcomes: Outcome) -> str:
    """The vmcores next to each other, as a table a person reads at a glance."""
    w = 26

    def row(label: str, cells: list[str]) -> str:
        return f"{label:<43}" + "".join(f"{c:<{w}}" for c in cells)

    def at(r: tuple[int, int] | None) -> str:
        return f"{human(r[1] - r[0])} at {r[0]:#x}" if r else "MISSING"

    lines = [
        row("", [o.label for o in outcomes]),
        row("crashkernel= (KASLR moves it)", [at(o.crash_kernel) for o in outcomes]),
        row(
            "vmcore: RAM of boot, less crashkernel=",
            [_yes(all(o.vmcore.covers(s, e) for s, e in o.boot_ram)) for o in outcomes],
        ),
    ]

    a, b = outcomes[0].added_range
    lines += [
        row("vmcore: kernel text", [at(o.vmcore.kernel_text) for o in outcomes]),
        row(
            f"vmcore: hot-added {human(b - a)} at {a:#x}",
            [_yes(o.vmcore.covers(a, b)) for o in outcomes],
        ),
        row(
            f"header: hot-added CPU {outcomes[0].added_cpu}",
            [_yes(o.added_cpu in o.header_cpus) for o in outcomes],
        ),
        row(
            "vmcore: NT_PRSTATUS notes / CPUs online",
            [f"{o.vmcore.prstatus} / {len(o.cpus_online)}" for o in outcomes],
        ),
        row(
            "hotplug to current crash kernel",
            [
                "never" if o.update_seconds is None else f"{o.update_seconds * 1000:.0f} ms"
                for o in outcomes
            ],
        ),
        row("scenario time", [f"{o.seconds:.1f} s" for o in outcomes]),
    ]
    return "\n".join(line.rstrip() for line in lines)
