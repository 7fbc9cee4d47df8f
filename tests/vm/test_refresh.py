# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd load`` and ``kexecd refresh`` in the guest, proven by real crashes."""

from __future__ import annotations

import pytest

from testbed.vm import Guest, parse_elf_core

pytestmark = pytest.mark.vm

PURGATORY_CONSOLE = ("--console-serial", "--serial=ttyS1", "--serial-baud=115200")
DIGEST_MISMATCH = "sha256 digests do not match"
STATE = "/run/kexecd-state"  # the guest's / is the host's, read-only; /run is tmpfs


def refresh(guest: Guest) -> str:
    return guest.run(["kexecd", "refresh", "--state-dir", STATE]).stdout


def hot_add(guest: Guest) -> tuple[tuple[int, int], int]:
    mem = guest.hot_add_memory(512)
    guest.set_memory_online(*mem)
    cpu = guest.hot_add_cpu()
    guest.set_cpu_online(cpu)
    return mem, cpu


def test_refresh_after_hot_add_gives_a_whole_dump(guest: Guest) -> None:
    out = guest.kexecd_load(STATE)
    assert "header is segment 5, room for 291 program headers" in out
    assert "purgatory digest at +0x5020" in out
    (start, end), cpu = hot_add(guest)
    out = refresh(guest)
    assert "reload the header and purgatory's digest: done in" in out
    assert f"+ CPU {cpu}" in out and f"+ {start:#x}-{end - 1:#x} (512 MiB)" in out
    assert "nothing to do" in refresh(guest)
    vmcore = guest.crash()
    assert vmcore.covers(start, end)
    assert vmcore.prstatus == len([0, 1, cpu]) == 3


def _header_notes(guest: Guest, name: str) -> int:
    """PT_NOTE program headers of the ELF core header kexecd has loaded (one
    per CPU, one for vmcoreinfo)."""
    out = guest.run_dir / "share" / name
    guest.run(["cp", f"{STATE}/snapshot/loaded-header.bin", str(out)])
    return sum(1 for p in parse_elf_core(out.read_bytes()).phdrs if p.type == "PT_NOTE")


def test_refresh_after_cpu_hot_add_on_612(guest_612: Guest) -> None:
    # The 6.1 test above, on Linux 6.12: its hot-added CPU needs the test
    # bed's upgraded ACPI tables (testbed/acpi.py), and the image is a plain
    # 'kexec -p' one (crash_hotplug 0), so kexecd keeps its header.
    g = guest_612
    g.kexecd_load(STATE)
    assert g.read("/sys/devices/system/cpu/crash_hotplug").strip() == "0"
    notes = _header_notes(g, "before.bin")
    cpu = g.hot_add_cpu()
    g.set_cpu_online(cpu)
    out = refresh(g)
    assert "reload the header and purgatory's digest: done in" in out
    assert f"+ CPU {cpu}" in out
    assert _header_notes(g, "after.bin") == notes + 1
    vmcore = g.crash()
    assert vmcore.prstatus == len([0, 1, cpu]) == 3


def test_refresh_after_hot_remove_drops_the_range(guest: Guest) -> None:
    start, end = guest.hot_add_memory(512)
    guest.set_memory_online(start, end)
    guest.kexecd_load(STATE)
    guest.hot_remove_memory("dimm1")
    out = refresh(guest)
    assert f"- {start:#x}-{end - 1:#x} (512 MiB)" in out
    vmcore = guest.crash()
    assert not vmcore.overlaps(start, end)
    assert vmcore.prstatus == 2


# The control's refresh: kexecd's own, but what reaches kexec_load has
# purgatory as kexec-tools built it, its digest that of the old header.
_STALE_DIGEST = """
import sys
from pathlib import Path
from kexecd.image.deps import Deps, KernelBackend
from kexecd.image.refresher import Refresher
from kexecd.image.store import Store
from kexecd.loads import Segment

store = Store(Path(sys.argv[1]))
snap = store.open()
purg = snap.segments[snap.purgatory]
stale = bytes(purg.buf)


class StaleDigest(KernelBackend):
    def load(self, entry, flags, segments):
        segs = [Segment(stale, s.mem, s.memsz) if s.mem == purg.mem else s for s in segments]
        super().load(entry, flags, segs)


assert Refresher(store, Deps(backend=StaleDigest())).refresh().loaded
"""


def test_stale_digest_hangs_the_crash_kernel(guest: Guest) -> None:
    # The control: the same reload with purgatory's digest left as it was.
    # Purgatory prints to the crash kernel's serial port (ttyS1) and says why
    # it stops: purgatory/purgatory.c verify_sha256_digest(), then for (;;).
    guest.kexecd_load(STATE, options=PURGATORY_CONSOLE)
    hot_add(guest)
    guest.python("-c", _STALE_DIGEST, STATE)
    log, spinning = guest.panic_until(DIGEST_MISMATCH, timeout=60)
    assert "I'm in purgatory" in log
    assert DIGEST_MISMATCH in log
    assert spinning  # it never went on: no crash kernel powered the guest off
    assert "KEXECD-VMCORE-BEGIN" not in log


def test_refreshed_header_equals_a_fresh_kexec(guest: Guest) -> None:
    guest.kexecd_load(STATE)
    hot_add(guest)
    refresh(guest)
    ours = guest.run_dir / "share" / "ours.bin"
    guest.run(["cp", f"{STATE}/snapshot/loaded-header.bin", str(ours)])
    fresh = guest.capture_load("fresh")
    assert ours.read_bytes() == fresh.header


def test_corrupt_snapshot_is_refused_and_the_crash_kernel_kept(guest: Guest) -> None:
    guest.kexecd_load(STATE)
    (start, end), _ = hot_add(guest)
    guest.sh(f"printf X | dd of={STATE}/snapshot/seg-02.bin bs=1 seek=4096 conv=notrunc")
    res = guest.run(["kexecd", "refresh", "--state-dir", STATE], check=False)
    assert res.rc == 2
    assert "seg-02.bin: does not match the SHA-256" in res.stderr
    assert "nothing was loaded" in res.stderr
    assert guest.read("/sys/kernel/kexec_crash_loaded").strip() == "1"
    # The image loaded before is still there and still dumps (stale, as loaded).
    vmcore = guest.crash()
    assert vmcore.prstatus == 2
    assert not vmcore.overlaps(start, end)
