# SPDX-License-Identifier: GPL-2.0-or-later
"""arm64: kexecd keeps a ``kexec -p`` header current after memory hotplug
(FIELD-NOTES 13: no kernel and no other tool does), with real crashes.

Each test boots one arm64 guest (Debian's cloud-arm64 kernel under TCG,
:mod:`testbed.arm64`; a boot costs 4-5 s, less than restoring a saved state
would save) and runs kexecd's CLI there (``python3 -m kexecd.cli``, its C
core compiled for aarch64 on the guest's disk):

* ``test_refresh_in_place_after_hot_add``: ground-truth captures of what
  kexec-tools loads at boot and after a 256 MiB pc-dimm
  (:mod:`testbed.guest_capture`, nothing reaching the kernel; kept in
  ``$KEXECD_VM_CACHE/results/arm64-COMBO-boot`` and ``-hotadd``, the sources
  of ``tests/data/arm64-6.1-2.0.25-*`` and ``arm64-6.12-2.0.29-c-*``);
  ``kexecd load``, the DIMM, ``kexecd refresh``: the header kexecd loads is
  kexec-tools' to the byte, and the crash kernel's /proc/vmcore has the DIMM;
* ``test_daemon_move_and_hot_remove`` (kexecd as the arm64 .deb installed it
  with apt): ``kexecd run`` follows two DIMMs in,
  ``kexecd grow`` moves the header (the DTB repointed) while it runs, one DIMM
  is unplugged, 256 MiB of virtio-mem is plugged: the dump has the DIMM kept
  and the virtio-mem memory (which arm64's kexec-tools never dumps), not the
  DIMM unplugged;
* ``test_daemon_moves_an_outgrown_header_on_its_own``: 70 DIMMs outgrow the
  header's page (72 program headers); the daemon moves it, the DTB
  repointed, and the dump has every DIMM. On 6.1 with 2.0.25, and on 6.12
  with 2.0.29's ``kexec -p`` as it comes (:data:`testbed.arm64.TRIXIE_AUTO`):
  its ``kexec_file_load`` fails with ENOSYS (no Debian arm64 kernel has
  one) and it falls back to ``kexec_load``, which kexecd records; ``kexec
  -s -p`` (``kexec_file_load`` alone) fails and kexecd records nothing,
  the crash kernel it keeps still loaded.

The first two run on 6.1 with kexec-tools 2.0.25 and on 6.12 with 2.0.29 ``-c``
(:data:`testbed.arm64.TRIXIE`). Then, on 6.1, what makedumpfile reads of the
stock header (no ``_text``) and of kexecd's.

Timings go to ``$KEXECD_VM_CACHE/results/arm64-COMBO.json`` and
``arm64-COMBO-daemon.json``.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator

import pytest

from kexecd.arch.aarch64 import fdt
from testbed import arm64, arm64_disk, assets
from testbed.capture import Capture
from testbed.dumps import Vmcore, parse_elf_core
from testbed.qemu import Machine
from testbed.vm import Guest
from tests.vm.conftest import _guest

pytestmark = pytest.mark.vm

DIMM_MIB = 256
VIRTIO_MIB = 256
CRASH_TIMEOUT = 240.0


# The kernels and kexec-tools the main tests run on (the makedumpfile ones are
# about 6.1's kallsyms: 6.12's cloud-arm64 has KALLSYMS_ALL, so _text).
COMBOS = [arm64.DEFAULT, arm64.TRIXIE]


@pytest.fixture
def arm64_guest(request: pytest.FixtureRequest) -> Iterator[Guest]:
    combo: arm64.Combo = getattr(request, "param", arm64.DEFAULT)
    image = arm64_disk.disk_image()
    assert image.core, "the arm64 .deb has no C core to put in the guest's GUEST_DIR"
    yield from _guest(request, request.node.name, arm64.boot, image=image, combo=combo)


def _pt_loads(header: bytes) -> list[tuple[int, int]]:
    return parse_elf_core(header).loads


def _record(facts: dict[str, object], name: str = "arm64.json") -> None:
    results = assets.cache_dir() / "results"
    results.mkdir(exist_ok=True)
    (results / name).write_text(json.dumps(facts, indent=2))
    print(f"\narm64: {json.dumps(facts)}")


def _dtb(cap: Capture) -> tuple[dict[str, object], bytes]:
    """The DTB segment of a capture: its manifest record and bytes."""
    for seg in cap.manifest["segments"]:
        if seg["file"] and cap.segment(seg["index"])[:4] == fdt.MAGIC.to_bytes(4, "big"):
            return seg, cap.segment(seg["index"])
    raise AssertionError(f"{cap.path}: no DTB segment")


STATE = "/run/kexecd-state"


# kexecd in the guest: the tree's sources and C core on the disk, or the arm64
# .deb installed there with apt (/usr/bin/kexecd; the agent's PYTHONPATH,
# which names the sources, unset).
SOURCES = ("python3", "-m", "kexecd.cli")
PACKAGE = ("env", "-u", "PYTHONPATH", "/usr/bin/kexecd")


def kexecd(guest: Guest, *args: str, check: bool = True, cli: tuple[str, ...] = SOURCES) -> str:
    """kexecd's CLI in the guest."""
    argv = [*cli, *args, "--state-dir", STATE]
    return guest.run(argv, timeout=300, check=check).stdout


def kexecd_load(
    guest: Guest, combo: arm64.Combo, cli: tuple[str, ...] = SOURCES, append: str = ""
) -> str:
    load = [*cli, "load", "--state-dir", STATE, "--"]
    out = guest.run([*load, *arm64.kexec_argv(append=append, combo=combo)], timeout=300).stdout
    assert guest.read("/sys/kernel/kexec_crash_loaded").strip() == "1"
    return out


def loaded_header(guest: Guest) -> bytes:
    """The header kexecd says it loaded last (its load record)."""
    return base64.b64decode(guest.sh(f"base64 {STATE}/snapshot/loaded-header.bin"))


@pytest.mark.parametrize("arm64_guest", COMBOS, ids=str, indirect=True)
def test_refresh_in_place_after_hot_add(
    arm64_guest: Guest, request: pytest.FixtureRequest
) -> None:
    guest = arm64_guest
    combo: arm64.Combo = request.node.callspec.params["arm64_guest"]
    facts: dict[str, object] = {"boot_s": round(guest.boot_seconds, 1)}
    arm64.fix_kallsyms(guest)
    start = time.monotonic()
    # Kept in the cache: the run directory goes when the test passes.
    results = assets.cache_dir() / "results"
    boot = arm64.capture_load(guest, results / f"arm64-{combo}-boot", skip=True, combo=combo)
    facts["captured_load_s"] = round(time.monotonic() - start, 1)
    segs = boot.manifest["segments"]
    facts["segments"] = [[hex(s["mem"]), hex(s["memsz"]), hex(s["bufsz"])] for s in segs]
    assert len(segs) == 5 and boot.manifest["kexec_tools"] == combo.kexec_tools
    # The DTB names the header kexec-tools loaded, at its address, with its size.
    _, dtb = _dtb(boot)
    tree = fdt.read(dtb)
    prop = tree.find("/chosen", "linux,elfcorehdr")
    assert prop is not None
    header = boot.header_segment
    assert fdt.cells_of(tree.value(prop)) == (0, header["mem"], 0, header["bufsz"])

    start = time.monotonic()
    kexecd_load(guest, combo)
    facts["kexecd_load_s"] = round(time.monotonic() - start, 1)
    assert loaded_header(guest) == boot.header
    dimm = guest.hot_add_memory(DIMM_MIB)
    assert "System RAM" in guest.sh(f"grep -i '^ *{dimm[0]:x}-' /proc/iomem")
    # What kexec-tools would load now (nothing reaches the kernel).
    hotadd = arm64.capture_load(guest, results / f"arm64-{combo}-hotadd", skip=True, combo=combo)
    assert parse_elf_core(hotadd.header).covers(*dimm), _pt_loads(hotadd.header)
    assert not parse_elf_core(boot.header).overlaps(*dimm), _pt_loads(boot.header)

    start = time.monotonic()
    out = kexecd(guest, "refresh")
    facts["refresh_s"] = round(time.monotonic() - start, 1)
    assert "reload the header and purgatory's digest: done in" in out, out
    # kexecd's header is kexec-tools' to the byte.
    assert loaded_header(guest) == hotadd.header
    assert guest.run([*SOURCES, "status", "--state-dir", STATE], check=False).rc == 0

    start = time.monotonic()
    vmcore: Vmcore = guest.crash(CRASH_TIMEOUT)
    facts["crash_to_vmcore_s"] = round(time.monotonic() - start, 1)
    facts["vmcore_loads"] = [[hex(s), hex(e)] for s, e in vmcore.loads]
    facts["dimm"] = [hex(dimm[0]), hex(dimm[1])]
    _record(facts, f"arm64-{combo}.json")
    assert vmcore.covers(*dimm), vmcore.loads
    assert sorted(vmcore.loads) == sorted(_pt_loads(hotadd.header))
    assert vmcore.prstatus == 2


def start_daemon(guest: Guest, cli: tuple[str, ...] = SOURCES) -> None:
    """``kexecd run`` on kernel uevents (the guest has no udevd); wait for its
    first reconcile. Its log is ``/run/kexecd.log``."""
    guest.sh(
        f"setsid {' '.join(cli)} run --source kernel --state-dir {STATE} "
        "--runtime-dir /run/kexecd -v >/run/kexecd.log 2>&1 </dev/null &"
    )
    wait_current(guest, cli)


def wait_current(guest: Guest, cli: tuple[str, ...] = SOURCES, timeout: float = 90.0) -> str:
    """``kexecd status`` once it exits 0 (the daemon has caught up)."""
    deadline = time.monotonic() + timeout
    while True:
        res = guest.run([*cli, "status", "--state-dir", STATE], check=False)
        if res.rc == 0:
            return res.stdout
        if time.monotonic() > deadline:
            log = guest.run(["cat", "/run/kexecd.log"], check=False).stdout
            raise AssertionError(f"status never became current:\n{res.stdout}\n--- log ---\n{log}")
        time.sleep(0.5)


def daemon_state(guest: Guest) -> dict[str, object]:
    state: dict[str, object] = json.loads(guest.read("/run/kexecd/state.json"))
    return state


@pytest.mark.parametrize("arm64_guest", COMBOS, ids=str, indirect=True)
def test_daemon_move_and_hot_remove(arm64_guest: Guest, request: pytest.FixtureRequest) -> None:
    # Under the daemon: two DIMMs in, the header moved by hand (kexecd grow)
    # while the daemon runs, one DIMM out; the crash has the one kept.
    guest = arm64_guest
    combo: arm64.Combo = request.node.callspec.params["arm64_guest"]
    facts: dict[str, object] = {"boot_s": round(guest.boot_seconds, 1)}
    arm64.fix_kallsyms(guest)
    # The package, as apt installed it.
    pkg = guest.sh("dpkg-query -W -f='${Status} ${Architecture}' kexecd").strip()
    assert pkg == "install ok installed arm64", pkg
    cli = PACKAGE
    kexecd_load(guest, combo, cli)
    start_daemon(guest, cli)
    before = kexecd(guest, "status", cli=cli)
    old = int(re.search(r"program headers, at (0x[0-9a-f]+)", before).group(1), 16)  # type: ignore[union-attr]
    start = time.monotonic()
    kept, gone = guest.hot_add_memories([DIMM_MIB, DIMM_MIB])
    out = wait_current(guest, cli)
    facts["two_dimms_current_s"] = round(time.monotonic() - start, 1)
    assert out.startswith("crash kernel   loaded and current"), out
    out = kexecd(guest, "grow", "--capacity", "8192", cli=cli)
    m = re.search(r"to (\d+) program headers: move it to (0x[0-9a-f]+) \((\d+) bytes\)", out)
    assert m, out
    mem = int(m.group(2), 16)
    assert mem != old and "done in" in out
    assert f"at {mem:#x}" in kexecd(guest, "status", cli=cli)
    (name,) = [n for n, r in guest.dimms.items() if r == gone]
    start = time.monotonic()
    guest.hot_remove_memory(name)
    wait_current(guest, cli)
    facts["remove_current_s"] = round(time.monotonic() - start, 1)
    # virtio-mem: "System RAM (virtio_mem)", which arm64's kexec-tools never
    # puts in a header; kexecd's has it.
    start = time.monotonic()
    virtio = guest.resize_virtio_mem(VIRTIO_MIB)
    wait_current(guest, cli)
    facts["virtio_mem_current_s"] = round(time.monotonic() - start, 1)
    st = daemon_state(guest)
    facts["daemon"] = {k: st[k] for k in ("events", "reloads", "full_reloads", "failed")}
    assert st["reloads"] and not st["failed"] and not st["full_reloads"], st
    assert f"at {mem:#x}" in kexecd(guest, "status", cli=cli)
    vmcore = guest.crash(CRASH_TIMEOUT)
    _record(facts, f"arm64-{combo}-daemon.json")
    assert vmcore.covers(*kept), vmcore.loads
    assert not vmcore.overlaps(*gone), vmcore.loads
    assert virtio and all(vmcore.covers(s, e) for s, e in virtio), (virtio, vmcore.loads)
    # The capture kernel read the header at its new place, as the DTB said:
    # the old place kept the header of the load, without either DIMM.


# A real overflow: an arm64 header's page holds 72 program headers (2 CPUs,
# vmcoreinfo, the kernel text and 4 RAM ranges at boot); 70 DIMMs of 128 MiB,
# each its own "System RAM", outgrow it. The capture kernel gets
# acpi_no_memhotplug: without it, it finds the 70 DIMMs in ACPI and hot-adds
# them, whose struct pages (2 MiB a DIMM) do not fit crashkernel=256M ("Out of
# memory and no killable processes" at boot, seen here). kexecd cannot add the
# word to arm64's packed DTB (CmdlineError: pass it with kexec -p --append, as
# here).
OUTGROW_DIMMS = 70
OUTGROW = Machine(
    smp=2,
    maxcpus=2,
    mem_mib=2048,
    slots=OUTGROW_DIMMS,
    maxmem_mib=2048 + OUTGROW_DIMMS * 128 + 512,
    virtio_mem_mib=512,
)


@pytest.fixture
def outgrow_guest(request: pytest.FixtureRequest) -> Iterator[Guest]:
    combo: arm64.Combo = request.param
    image = arm64_disk.disk_image()
    yield from _guest(
        request, request.node.name, arm64.boot, machine=OUTGROW, image=image, combo=combo
    )


@pytest.mark.parametrize(
    "outgrow_guest", [arm64.DEFAULT, arm64.TRIXIE_AUTO], ids=str, indirect=True
)
def test_daemon_moves_an_outgrown_header_on_its_own(
    outgrow_guest: Guest, request: pytest.FixtureRequest
) -> None:
    guest = outgrow_guest
    combo: arm64.Combo = request.node.callspec.params["outgrow_guest"]
    facts: dict[str, object] = {"boot_s": round(guest.boot_seconds, 1)}
    arm64.fix_kallsyms(guest)
    kexecd_load(guest, combo, append="acpi_no_memhotplug")
    if combo == arm64.TRIXIE_AUTO:
        # 2.0.29's default: kexec_file_load (ENOSYS here), then kexec_load,
        # the one kexecd recorded.
        manifest = json.loads(guest.read(f"{STATE}/snapshot/manifest.json"))
        assert manifest["syscall"] == "kexec_load", manifest
        # kexec -s: kexec_file_load alone, which fails; kexecd records nothing
        # and the crash kernel it keeps stays loaded and current.
        argv = arm64.kexec_argv(["-s"], combo=combo)
        res = guest.run([*SOURCES, "load", "--state-dir", STATE, "--", *argv], check=False)
        facts["kexec_s"] = {"rc": res.rc, "stderr": res.stderr.strip()[-300:]}
        assert res.rc != 0 and "nothing was recorded" in res.stderr, res
        assert "kexec_file_load not available" in res.stderr, res.stderr
        assert guest.read("/sys/kernel/kexec_crash_loaded").strip() == "1"
        assert json.loads(guest.read(f"{STATE}/snapshot/manifest.json")) == manifest
    start_daemon(guest)
    start = time.monotonic()
    ranges = guest.hot_add_memories([128] * OUTGROW_DIMMS, timeout=600)
    facts["hot_add_s"] = round(time.monotonic() - start, 1)
    out = wait_current(guest, timeout=300)
    facts["current_s"] = round(time.monotonic() - start, 1)
    st = daemon_state(guest)
    facts["daemon"] = {k: st[k] for k in ("events", "reloads", "moves", "full_reloads", "failed")}
    assert st["moves"] == 1 and st["full_reloads"] == 0 and st["failed"] == 0, st
    m = re.search(r"of (\d+) program headers, at (0x[0-9a-f]+)", out)
    assert m and int(m.group(1)) > 72, out
    vmcore = guest.crash(CRASH_TIMEOUT)
    _record(facts, f"arm64-{combo}-outgrow.json")
    assert len(vmcore.phdrs) > 72
    assert all(vmcore.covers(s, e) for s, e in ranges), vmcore.loads


# Debian's arm64 /proc/kallsyms has no _text (no KALLSYMS_ALL): what stock
# kexec-tools 2.0.25 loads then, and what makedumpfile, run in the capture
# kernel as kdump-tools runs it, makes of the dump (FIELD-NOTES 13).
MAKEDUMPFILE = "kexecd.makedumpfile"


def test_stock_header_without_text_defeats_makedumpfile(arm64_guest: Guest) -> None:
    # The control: kexec-tools' header, as loaded on a stock Debian arm64 host.
    # Reading the head of /proc/vmcore runs into the kernel PT_LOAD, at a
    # physical address no RAM has (0x80006f400000 here): the capture kernel
    # oopses in copy_oldmem_page() (its messages then cut into the console's
    # copy of the head, so only its size is read here).
    guest = arm64_guest
    guest.run(arm64.kexec_argv(append=MAKEDUMPFILE), timeout=120)
    guest.panic(CRASH_TIMEOUT, "no dump: the guest did not power off")
    console = guest.console_log.read_text(errors="replace")
    size = re.search(r"KEXECD-VMCORE-BEGIN size=(\d+)", console)
    assert size, "the crash kernel sent no vmcore"
    report = arm64.makedumpfile_report(guest)
    oops = "Internal error: Oops" in console and "copy_oldmem_page" in console
    facts = {"vmcore_size": int(size[1]), "oops": oops, **report.__dict__}
    _record(facts, "arm64-stock-text.json")
    assert int(size[1]) > 1 << 63  # the kernel PT_LOAD of ~2^64 bytes
    assert report.dmesg_rc != 0 and "makedumpfile Failed" in report.dmesg_log
    assert report.d31_rc != 0 and report.d31_bytes == 0


def test_kexecd_repairs_the_stock_header(arm64_guest: Guest) -> None:
    # The same load under kexecd: its refresh rebuilds the kernel PT_LOAD and
    # the direct map with _text from VMCOREINFO, and the dump reads.
    guest = arm64_guest
    load = [*SOURCES, "load", "--state-dir", STATE, "--"]
    guest.run([*load, *arm64.kexec_argv(append=MAKEDUMPFILE)], timeout=300)
    status = guest.run([*SOURCES, "status", "--state-dir", STATE], check=False)
    assert status.rc == 1, status.stdout  # kexec-tools' header is not the one wanted
    out = kexecd(guest, "refresh")
    assert "reload the header and purgatory's digest: done in" in out, out
    header = parse_elf_core(loaded_header(guest))
    text = [(s, e) for s, e in header.loads if e - s > 1 << 40]
    assert not text, header.loads
    vmcore = guest.crash(CRASH_TIMEOUT)
    report = arm64.makedumpfile_report(guest)
    _record({"vmcore_size": vmcore.size, **report.__dict__}, "arm64-repaired-text.json")
    assert vmcore.size < 4 << 30
    assert report.dmesg_rc == 0, report.dmesg_log
    assert "Starting crashdump kernel" in report.dmesg, report.dmesg
    assert report.d31_rc == 0 and report.d31_bytes > 1 << 20, report.d31_log
