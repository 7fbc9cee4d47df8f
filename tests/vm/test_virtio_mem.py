# SPDX-License-Identifier: GPL-2.0-or-later
"""virtio-mem: the guest grows and shrinks block by block; the dump stays whole.

The virtio-mem driver adds each plugged block as ``System RAM (virtio_mem)``
under a ``virtioN`` resource spanning the device (drivers/virtio/virtio_mem.c,
Linux 6.1); adjacent blocks merge into one resource (MHP_MERGE_RESOURCE), and
unplugging one splits it again. kexec-tools 2.0.22 and later dump any
``System RAM ...`` line, nested or not, and so does kexecd.
"""

from __future__ import annotations

import time

import pytest

from testbed.vm import Guest
from tests.vm.captures import VMEM_GROWN_MIB, virtio_mem_blocks, virtio_mem_punch
from tests.vm.test_daemon import status, wait_current

pytestmark = pytest.mark.vm

STATE = "/run/kexecd-state"
# The fixture asks both kernels to online hot-added memory movable (6.12's
# Debian build onlines it itself, CONFIG_MEMORY_HOTPLUG_DEFAULT_ONLINE=y, but
# to ZONE_NORMAL, where a block the kernel allocated from cannot be unplugged).
KERNELS = ["6.1", "6.12"]
# "6.1 offline": 6.1's own policy (auto_online_blocks "offline"): the grown
# blocks stay offline and are dumped all the same; the daemon sees only
# their add events until the shrink onlines all but one.


def wait_settled(guest: Guest, timeout: float = 60.0) -> str:
    """Wait until status is current and the daemon has seen no event for 1.5 s."""
    out = wait_current(guest, timeout)
    deadline = time.monotonic() + timeout
    seen = guest.daemon_state()["events"]
    while True:
        time.sleep(1.5)
        now = guest.daemon_state()["events"]
        if now == seen:
            return wait_current(guest, timeout)
        if time.monotonic() > deadline:
            return out
        seen = now


@pytest.mark.parametrize("vmem_guest", [*KERNELS, "6.1 offline"], indirect=True)
def test_daemon_follows_virtio_mem_and_the_dump_is_whole(vmem_guest: Guest) -> None:
    guest = vmem_guest
    guest.kexecd_load(STATE)
    guest.start_daemon(STATE)
    assert guest.daemon_state()["events"] == 0
    grown = guest.resize_virtio_mem(VMEM_GROWN_MIB)
    blocks = virtio_mem_blocks(guest, grown)
    assert len(blocks) == 5
    bs = guest.memory_block_size()
    states = guest.sh(
        "cat " + " ".join(f"/sys/devices/system/memory/memory{s // bs}/state" for s, _ in blocks)
    ).split()
    policy = guest.read("/sys/devices/system/memory/auto_online_blocks").strip()
    assert states == ["offline" if policy == "offline" else "online"] * 5
    wait_settled(guest)
    after_grow = guest.daemon_state()
    # One "add" uevent per block, and one "online" each when the kernel onlines it.
    assert after_grow["events"] == (5 if policy == "offline" else 10)
    assert after_grow["reloads"] >= 1
    assert status(guest)[0] == 0
    plugged, unplugged = virtio_mem_punch(guest, grown)
    # Sparse: the second block and the top one are gone.
    assert len(plugged) == 2 and len(unplugged) == 2
    assert unplugged == [virtio_mem_blocks(guest, grown)[i] for i in (1, 4)]
    wait_settled(guest)
    st = guest.daemon_state()
    assert st["reloads"] > after_grow["reloads"] and st["failed"] == 0
    rc, out = status(guest)
    assert rc == 0 and out.startswith("crash kernel   loaded and current"), out
    share = guest.run_dir / "share"
    guest.sh(f"cat /proc/iomem >{share}/iomem; cp /run/kexecd.log {share}/kexecd.log")
    keys = ("events", "reloads", "full_reloads", "ranges", "last_update")
    print(f"\ngrown: { {k: after_grow[k] for k in keys} }\nshrunk: { {k: st[k] for k in keys} }")
    vmcore = guest.crash()
    print(f"PT_LOADs: {[(hex(s), hex(e)) for s, e in vmcore.ram_loads]}")
    for start, end in plugged:
        assert vmcore.covers(start, end), f"{start:#x}-{end:#x} missing from the dump"
    for start, end in unplugged:
        assert not vmcore.overlaps(start, end), f"unplugged {start:#x}-{end:#x} in the dump"


@pytest.mark.parametrize("vmem_guest", KERNELS, indirect=True)
def test_refreshed_header_equals_a_fresh_kexec(vmem_guest: Guest) -> None:
    guest = vmem_guest
    guest.kexecd_load(STATE)
    grown = guest.resize_virtio_mem(VMEM_GROWN_MIB)
    out = guest.run(["kexecd", "refresh", "--state-dir", STATE]).stdout
    assert f"+ {grown[0][0]:#x}-{grown[0][1] - 1:#x} (640 MiB)" in out
    _, unplugged = virtio_mem_punch(guest, grown)
    out = guest.run(["kexecd", "refresh", "--state-dir", STATE]).stdout
    assert "reload the header and purgatory's digest: done in" in out
    for start, end in unplugged:
        assert f"- {start:#x}-{end - 1:#x} (128 MiB)" in out, out
    ours = guest.run_dir / "share" / "ours.bin"
    guest.run(["cp", f"{STATE}/snapshot/loaded-header.bin", str(ours)])
    fresh = guest.capture_load("fresh")
    assert ours.read_bytes() == fresh.header
    assert fresh.root.joinpath("proc/iomem").read_text().count("System RAM (virtio_mem)") == 2
