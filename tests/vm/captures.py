# SPDX-License-Identifier: GPL-2.0-or-later
"""Ground-truth captures: what kexec-tools read and what it passed to kexec_load.

``python -m tests.vm.captures [DIR]`` (``make captures``) boots one guest and
writes three captures to DIR (default ``tests/data``):

* ``boot``: right after boot (2 CPUs, 1 GiB);
* ``hotadd``: after hot-adding one CPU and two 512 MiB DIMMs, all onlined;
* ``hotremove``: after offlining and unplugging the first DIMM.

``python -m tests.vm.captures virtio_mem [DIR]`` writes a fourth, from a
guest with a virtio-mem device (:func:`make_virtio_mem_capture`):

* ``virtio_mem``: after plugging five 128 MiB blocks and unplugging two, one
  in the middle and one at the top, so /proc/iomem holds two
  ``System RAM (virtio_mem)`` ranges under the device's ``virtioN``.

Each is ``root/`` (a fake root) plus ``load/`` (the kexec_load arguments), as
:mod:`testbed.guest_capture` writes them, and ``scenario.json`` saying what
was plugged where.

``python -m tests.vm.captures --set NAME [DIR]`` writes one of :data:`SETS`
instead: captures of another kernel and kexec-tools, ``NAME-boot`` and
``NAME-hotadd``, their scenario.json naming the command that made them.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.vm import Guest, Machine, boot

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
# A guest whose virtio-mem device can plug 1 GiB in 128 MiB blocks, and whose
# hot-added memory is onlined movable at once, as a cloud image's udev rule
# or its kernel's default does (6.1's Debian build leaves it offline).
VMEM_MACHINE = Machine(virtio_mem_mib=1024)
VMEM_APPEND = ("memhp_default_state=online_movable",)
VMEM_GROWN_MIB = 640
VMEM_SHRUNK_MIB = 384


@dataclass(frozen=True)
class CaptureSet:
    """Captures of one kernel and kexec-tools (:data:`SETS`)."""

    kernel: str
    kexec_tools: str
    options: tuple[str, ...] = ()
    hot_add_cpu: bool = True


# The captures of kernels and kexec-tools besides 6.1 and 2.0.25. 6.12 hot-adds
# memory only: under TCG its CPUs need the test bed's ACPI table upgrade.
SETS = {
    "5.10-2.0.20": CaptureSet("5.10", "2.0.20"),
    "6.12-2.0.29-c": CaptureSet("6.12", "2.0.29", ("-c",), hot_add_cpu=False),
}


def capture(
    guest: Guest, out: Path, scenario: dict[str, Any], options: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Capture the guest's state and a traced ``kexec -p`` into ``out``."""
    made = guest.capture_load(out.name, options=options)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(made.path, out)
    (out / "scenario.json").write_text(json.dumps(scenario, indent=2) + "\n")
    return made.manifest


def make_captures(dest: Path = DATA) -> list[Path]:
    """Boot a guest, hotplug, and capture the three states into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    guest = boot("captures")
    try:
        out = [dest / "boot", dest / "hotadd", dest / "hotremove"]
        capture(guest, out[0], {"cpus_online": guest.online_cpus(), "dimms": {}})
        cpu = guest.hot_add_cpu()
        guest.set_cpu_online(cpu)
        for _ in range(2):
            start, end = guest.hot_add_memory(512)
            guest.set_memory_online(start, end)
        dimms = {k: [hex(s), hex(e)] for k, (s, e) in guest.dimms.items()}
        capture(
            guest,
            out[1],
            {"cpus_online": guest.online_cpus(), "added_cpu": cpu, "dimms": dimms},
        )
        removed = guest.hot_remove_memory("dimm1")
        dimms = {k: [hex(s), hex(e)] for k, (s, e) in guest.dimms.items()}
        capture(
            guest,
            out[2],
            {
                "cpus_online": guest.online_cpus(),
                "dimms": dimms,
                "removed": [hex(removed[0]), hex(removed[1])],
            },
        )
        return out
    finally:
        guest.close()


def make_set(name: str, dest: Path = DATA) -> list[Path]:
    """Boot the set's kernel, capture it at boot and after hot-adding two DIMMs
    (and a CPU where the set does), with the set's kexec-tools."""
    how = SETS[name]
    dest.mkdir(parents=True, exist_ok=True)
    guest = boot(
        f"captures-{name}",
        kernel_version=how.kernel,
        kexec_tools=how.kexec_tools,
        append=["memhp_default_state=offline"],
    )
    made = f"python -m tests.vm.captures --set {name} tests/data"
    try:
        out = [dest / f"{name}-boot", dest / f"{name}-hotadd"]
        scenario: dict[str, Any] = {"made_by": made, "cpus_online": guest.online_cpus()}
        capture(guest, out[0], {**scenario, "dimms": {}}, how.options)
        if how.hot_add_cpu:
            cpu = guest.hot_add_cpu()
            guest.set_cpu_online(cpu)
            scenario["added_cpu"] = cpu
        for _ in range(2):
            start, end = guest.hot_add_memory(512)
            guest.set_memory_online(start, end)
        dimms = {k: [hex(s), hex(e)] for k, (s, e) in guest.dimms.items()}
        scenario["cpus_online"] = guest.online_cpus()
        capture(guest, out[1], {**scenario, "dimms": dimms}, how.options)
        return out
    finally:
        guest.close()


Ranges = list[tuple[int, int]]


def virtio_mem_blocks(guest: Guest, ranges: Ranges) -> Ranges:
    """The memory blocks (start, end) that ``ranges`` span."""
    bs = guest.memory_block_size()
    return [(b * bs, (b + 1) * bs) for s, e in ranges for b in range(s // bs, e // bs)]


def virtio_mem_punch(guest: Guest, grown: Ranges) -> tuple[Ranges, Ranges]:
    """Offline the second plugged block (and online movable any other left
    offline), then shrink the device to :data:`VMEM_SHRUNK_MIB`. Return (the
    plugged ranges, the unplugged blocks).

    The driver unplugs offline blocks first, then online ones from the top
    (drivers/virtio/virtio_mem.c, virtio_mem_bbm_unplug_request(), Linux 6.1:
    a 128 MiB device block is one memory block, so it runs in Big Block
    Mode), so this leaves a hole in the middle and one at the end.
    """
    blocks = virtio_mem_blocks(guest, grown)
    bs = guest.memory_block_size()
    # Writing a block's state again fails (6.1: EIO for "offline" on an
    # offline block), so each is written only if it must change.
    script = "set -e; " + "; ".join(
        f"f=/sys/devices/system/memory/memory{s // bs}/state; "
        + (
            '[ "$(cat $f)" = offline ] || echo offline >$f'
            if i == 1
            else '[ "$(cat $f)" = online ] || echo online_movable >$f'
        )
        for i, (s, _) in enumerate(blocks)
    )
    guest.sh(script)
    plugged = guest.resize_virtio_mem(VMEM_SHRUNK_MIB)
    unplugged = [b for b in blocks if not any(s <= b[0] and b[1] <= e for s, e in plugged)]
    return plugged, unplugged


def make_virtio_mem_capture(dest: Path = DATA) -> Path:
    """Boot a guest with a virtio-mem device, plug and unplug blocks sparsely,
    and capture ``kexec -p`` into ``dest/virtio_mem``."""
    dest.mkdir(parents=True, exist_ok=True)
    guest = boot("captures-virtio-mem", machine=VMEM_MACHINE, append=VMEM_APPEND)
    try:
        grown = guest.resize_virtio_mem(VMEM_GROWN_MIB)
        plugged, unplugged = virtio_mem_punch(guest, grown)
        out = dest / "virtio_mem"
        capture(
            guest,
            out,
            {
                "cpus_online": guest.online_cpus(),
                "virtio_mem_plugged": [[hex(s), hex(e)] for s, e in plugged],
                "virtio_mem_unplugged": [[hex(s), hex(e)] for s, e in unplugged],
            },
        )
        return out
    finally:
        guest.close()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--set"]:
        dest = Path(argv[2]) if len(argv) > 2 else DATA
        paths = make_set(argv[1], dest)
    elif argv[:1] == ["virtio_mem"]:
        paths = [make_virtio_mem_capture(Path(argv[1]) if argv[1:] else DATA)]
    else:
        paths = make_captures(Path(argv[0]) if argv else DATA)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
