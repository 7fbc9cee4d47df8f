# SPDX-License-Identifier: GPL-2.0-or-later
"""arm64: the header kexec-tools loads goes stale on a memory hot-add (FIELD-NOTES 13).

One arm64 guest (Debian's cloud-arm64 6.1 under TCG, :mod:`testbed.arm64`):
``kexec -p`` under kexecd's tracer (compiled for aarch64 in the guest's
root), so the test has the five segments kexec-tools 2.0.25 loads (a
ground-truth capture, :mod:`testbed.guest_capture`, kept in
``$KEXECD_VM_CACHE/results/arm64-boot``); a 256 MiB
pc-dimm hot-added over QMP and onlined; then a second ``kexec -p``, traced
with its kexec calls answered without reaching the kernel, gives the header a
reload would load now, and the guest crashes with the one loaded at boot.

* the fresh header covers the DIMM, the loaded one does not, and neither
  does the capture kernel's /proc/vmcore, whose RAM is that of the loaded
  header to the byte;
* the DTB kexec-tools loaded names that header in ``/chosen/linux,elfcorehdr``.

What it costs and the load's segments are written to
``$KEXECD_VM_CACHE/results/arm64.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator

import pytest

from kexecd.arch.aarch64 import fdt
from testbed import arm64, arm64_disk, assets
from testbed.capture import Capture
from testbed.dumps import Vmcore, parse_elf_core
from testbed.vm import Guest

pytestmark = pytest.mark.vm

DIMM_MIB = 256
CRASH_TIMEOUT = 240.0


@pytest.fixture
def arm64_guest(request: pytest.FixtureRequest) -> Iterator[Guest]:
    image = arm64_disk.disk_image()
    assert image.core, "kexecd's C core did not compile for aarch64 in the guest's root"
    guest = arm64.boot(request.node.name, image=image)
    yield guest
    guest.close()
    if request.session.testsfailed:
        print(f"\nkept the guest's logs: {guest.run_dir}")
    else:
        shutil.rmtree(guest.run_dir, ignore_errors=True)


def _pt_loads(header: bytes) -> list[tuple[int, int]]:
    return parse_elf_core(header).loads


def _record(facts: dict[str, object]) -> None:
    results = assets.cache_dir() / "results"
    results.mkdir(exist_ok=True)
    (results / "arm64.json").write_text(json.dumps(facts, indent=2))
    print(f"\narm64: {json.dumps(facts)}")


def _dtb(cap: Capture) -> tuple[dict[str, object], bytes]:
    """The DTB segment of a capture: its manifest record and bytes."""
    for seg in cap.manifest["segments"]:
        if seg["file"] and cap.segment(seg["index"])[:4] == fdt.MAGIC.to_bytes(4, "big"):
            return seg, cap.segment(seg["index"])
    raise AssertionError(f"{cap.path}: no DTB segment")


def test_stale_header_misses_hot_added_memory(arm64_guest: Guest) -> None:
    guest = arm64_guest
    facts: dict[str, object] = {"boot_s": round(guest.boot_seconds, 1)}
    arm64.fix_kallsyms(guest)
    start = time.monotonic()
    # Kept in the cache: the run directory goes when the test passes.
    cap = arm64.capture_load(guest, assets.cache_dir() / "results" / "arm64-boot")
    facts["captured_load_s"] = round(time.monotonic() - start, 1)
    assert guest.read("/sys/kernel/kexec_crash_loaded").strip() == "1"
    segs = cap.manifest["segments"]
    facts["segments"] = [[hex(s["mem"]), hex(s["memsz"]), hex(s["bufsz"])] for s in segs]
    assert len(segs) == 5 and cap.manifest["kexec_tools"] == "2.0.25"
    # The DTB names the header kexec-tools loaded, at its address, with its size.
    _, dtb = _dtb(cap)
    tree = fdt.read(dtb)
    prop = tree.find("/chosen", "linux,elfcorehdr")
    assert prop is not None
    header = cap.header_segment
    assert fdt.cells_of(tree.value(prop)) == (0, header["mem"], 0, header["bufsz"])

    dimm = guest.hot_add_memory(DIMM_MIB)
    assert "System RAM" in guest.sh(f"grep -i '^ *{dimm[0]:x}-' /proc/iomem")
    start = time.monotonic()
    fresh = arm64.traced_load(guest, skip=True)
    facts["fresh_header_s"] = round(time.monotonic() - start, 1)
    (assets.cache_dir() / "results" / "arm64-kexec-debug.txt").write_text(fresh.stderr)
    assert parse_elf_core(fresh.header).covers(*dimm), _pt_loads(fresh.header)
    assert not parse_elf_core(cap.header).overlaps(*dimm), _pt_loads(cap.header)

    start = time.monotonic()
    vmcore: Vmcore = guest.crash(CRASH_TIMEOUT)
    facts["crash_to_vmcore_s"] = round(time.monotonic() - start, 1)
    facts["vmcore_loads"] = [[hex(s), hex(e)] for s, e in vmcore.loads]
    facts["dimm"] = [hex(dimm[0]), hex(dimm[1])]
    _record(facts)
    assert not vmcore.overlaps(*dimm), vmcore.loads
    assert sorted(vmcore.loads) == sorted(_pt_loads(cap.header))
    assert vmcore.prstatus == 2
