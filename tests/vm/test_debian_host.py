# SPDX-License-Identifier: GPL-2.0-or-later
"""kexecd's Debian package on a real Debian 12 kdump host, judged by what lands in /var/crash.

The guest is a stock bookworm root (systemd, udev, kdump-tools, makedumpfile,
Debian's kernel) with ``kexecd_*.deb`` installed by ``apt-get install``
(:mod:`testbed.debian_host`). Nothing is typed in the guest but the hotplug,
a process that writes a pattern into hot-added pages, and the crash:
kdump-tools.service loads the crash kernel at boot with Debian's stock
command line, kexecd.service adopts it, kdump-tools' own capture path writes
the dump with makedumpfile, and the host reads it back out of the disk.

Three runs of the same hotplug (1 GiB and one CPU, onlined):

* ``kexecd``: the package as installed. The dump must hold the pattern.
* ``stale``: kexecd stopped and kdump-tools' rule masked by hand, so nothing
  reloads. The same check must find the pattern missing (the test can fail).
* ``stock``: kexecd masked at boot: Debian 12's own hotplug path alone.
  Measured, not assumed: its rule runs in systemd-udevd's sandbox, which
  refuses kexec_load, so nothing reloads and the pattern is missing.

The adopted host is booted once and saved when it is ready
(:func:`testbed.saved.settled_host`); the stale run and the lifecycle test
restore it (about 2 s instead of 35-45 s).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from testbed import assets, debian_host, saved
from testbed.debian_host import HostImage
from testbed.guest_pattern import PAGE, expected_page
from testbed.vm import Guest, TestbedError

pytestmark = pytest.mark.vm

DIMM_MIB = 1024
PATTERN_PAGES = 64
RULE = "50-kdump-tools.rules"
MASK = f"/run/udev/rules.d/{RULE}"
PATTERN_SCRIPT = Path(debian_host.__file__).with_name("guest_pattern.py")
# From the crash to the guest powering off after kdump-tools rebooted it:
# the crash kernel boots its initrd and systemd, then makedumpfile runs.
DUMP_TIMEOUT = 600.0


@dataclass
class Outcome:
    """What one run did and what its dump holds (recorded for the README's comparison table)."""

    mode: str
    boot_s: float = 0.0
    restored: bool = False
    adopted_s: float | None = None
    kexecd_loads: int | None = None
    kexecd_events: int | None = None
    kdump_tools_loaded: int = 0
    kdump_tools_failed: int = 0
    online_cpus: int = 0
    pages: int = 0
    pages_found: int = 0
    pages_missing: int = 0
    prstatus: int = 0
    dimm_in_dump: bool = False
    crash_to_dump_s: float = 0.0
    dump_bytes: int = 0
    crash_cmdline: str = ""
    scrape: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _wait(guest: Guest, script: str, what: str, timeout: float = 180.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        res = guest.run(script, check=False, timeout=60)
        if res.rc == 0:
            return res.stdout
        if time.monotonic() > deadline:
            raise guest.fail(f"{what} within {timeout:.0f} s: {res.stdout}{res.stderr}")
        time.sleep(1)


def _journal(guest: Guest, tag: str) -> list[str]:
    return guest.sh(f"journalctl -b -t {tag} -o cat --no-pager").splitlines()


def _kexecd_counts(guest: Guest) -> tuple[int, int]:
    """The daemon's crash-kernel loads and the uevents it heard, so far."""
    state = json.loads(guest.read("/run/kexecd/state.json"))
    return int(state["reloads"]) + int(state["full_reloads"]), int(state["events"])


def _scrape_text(guest: Guest) -> str:
    """kexecd's lines as node exporter serves them on the guest's loopback."""
    return _wait(
        guest,
        "python3 -c 'import urllib.request as u; "
        'print(u.urlopen("http://127.0.0.1:9100/metrics", timeout=20).read().decode())\' '
        "| grep -E '^(kexecd_|node_textfile_mtime_seconds)'",
        "node exporter served no kexecd metrics",
        120,
    )


def _samples(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        samples[name] = float(value)
    return samples


def _scrape(guest: Guest) -> dict[str, float]:
    return _samples(_scrape_text(guest))


def _guest_time(guest: Guest) -> float:
    return float(guest.sh("date +%s.%N"))


def _hotplug(guest: Guest) -> tuple[int, int]:
    """Hot-add 1 GiB and a CPU over QMP, online them, let udev's queue drain."""
    start, end = guest.hot_add_memory(DIMM_MIB)
    cpu = guest.hot_add_cpu()
    _online(guest, start, end)
    guest.set_cpu_online(cpu)
    guest.sh("udevadm settle --timeout=120", timeout=150)
    return start, end


def _online(guest: Guest, start: int, end: int) -> None:
    """Online the memory blocks of [start, end) that udev left offline (movable)."""
    bs = guest.memory_block_size()
    for block in range(start // bs, end // bs):
        state = f"/sys/devices/system/memory/memory{block}/state"
        if guest.read(state).strip() != "online":
            guest.sh(f"echo online_movable > {state}")


def _write_pattern(guest: Guest, start: int, end: int) -> list[int]:
    guest.run(["sh", "-c", "cat >/run/guest_pattern.py"], input=PATTERN_SCRIPT.read_text())
    # Keep the pattern where the writer put it: no huge pages to collapse,
    # and no compaction of its mlocked pages.
    guest.sh(
        "echo never >/sys/kernel/mm/transparent_hugepage/enabled; "
        "sysctl -qw vm.compact_unevictable_allowed=0; "
        f"setsid python3 /run/guest_pattern.py {start} {end} {PATTERN_PAGES} "
        "/run/pattern.json >/run/pattern.log 2>&1 </dev/null &"
    )
    _wait(guest, "test -e /run/pattern.json", "the pattern writer did not report", 300)
    pages: list[int] = json.loads(guest.read("/run/pattern.json"))["pages"]
    if len(pages) != PATTERN_PAGES:
        raise guest.fail(f"the writer found only {len(pages)} pages in the DIMM")
    return pages


def _crash_and_read(guest: Guest, out: Outcome) -> Path:
    """sysrq-c; wait for kdump-tools to write the dump and reboot; read it back."""
    # A restored host's console starts after its first kernel's boot, so only
    # what the console gains from the crash on is searched.
    logged = len(guest.console_log.read_text(errors="replace"))
    start = time.monotonic()
    guest.panic(DUMP_TIMEOUT, "no reboot after the crash")
    out.crash_to_dump_s = round(time.monotonic() - start, 1)
    console = guest.console_log.read_text(errors="replace")
    if "makedumpfile Failed" in console or "Bad address" in console:
        raise guest.fail("makedumpfile failed in the crash kernel")
    crash = debian_host.read_crash_dir(guest.run_dir / "disk.img", guest.run_dir / "crash")
    stamps = [d for d in crash.iterdir() if d.is_dir()]
    if len(stamps) != 1:
        raise guest.fail(f"expected one dump directory in /var/crash, found {stamps}")
    stamp = stamps[0]
    dumps = list(stamp.glob("dump.*"))
    if len(dumps) != 1 or not list(stamp.glob("dmesg.*")):
        raise guest.fail(f"kdump-tools wrote {sorted(p.name for p in stamp.iterdir())}")
    out.dump_bytes = dumps[0].stat().st_size
    # The crash kernel logs its command line first thing on the console.
    lines = [ln for ln in console[logged:].splitlines() if "Command line:" in ln]
    out.crash_cmdline = lines[0].split("Command line:", 1)[1].strip() if lines else ""
    return debian_host.flattened_to_elf(dumps[0], guest.run_dir / "vmcore.elf")


def _check_dump(elf_path: Path, pages: list[int], dimm: tuple[int, int], out: Outcome) -> None:
    with elf_path.open("rb") as f:
        elf = ELFFile(f)
        loads = []
        for seg in elf.iter_segments():
            h = seg.header
            if h.p_type == "PT_LOAD":
                loads.append((h.p_paddr, h.p_filesz, h.p_memsz, h.p_offset))
            elif h.p_type == "PT_NOTE":
                out.prstatus += sum(1 for n in seg.iter_notes() if n["n_type"] == "NT_PRSTATUS")
        out.dimm_in_dump = any(p < dimm[1] and dimm[0] < p + m for p, _, m, _ in loads)
        for phys in pages:
            data = b""
            for paddr, filesz, _, offset in loads:
                if paddr <= phys and phys + PAGE <= paddr + filesz:
                    f.seek(offset + phys - paddr)
                    data = f.read(PAGE)
                    break
            if data == expected_page(phys):
                out.pages_found += 1
            else:
                out.pages_missing += 1
    out.pages = len(pages)


def _record(out: Outcome) -> None:
    results = assets.cache_dir() / "results"
    results.mkdir(exist_ok=True)
    (results / f"debian-host-{out.mode}.json").write_text(json.dumps(asdict(out), indent=2))
    print(f"\n{out.mode}: {json.dumps(asdict(out))}")


def settle_loaded(guest: Guest) -> None:
    """Wait until kdump-tools.service has loaded the crash kernel, as Debian
    ships it, at boot."""
    _wait(guest, "systemctl is-active kdump-tools.service", "kdump-tools.service did not load")
    if guest.read("/sys/kernel/kexec_crash_loaded").strip() != "1":
        raise guest.fail("kdump-tools.service is active but no crash kernel is loaded")


def settle_adopted(guest: Guest) -> None:
    """Wait until kexecd.service, too, is ready: ``kexecd status`` exits 0 and
    the service is active (READY=1 once its first reconcile is done, which
    status may see first)."""
    settle_loaded(guest)
    _wait(guest, "kexecd status", "kexecd status did not exit 0 after boot", 240)
    _wait(guest, "systemctl is-active kexecd.service", "kexecd.service never became active")


def _boot(host_image: HostImage, runs: dict[str, Guest], out: Outcome, *append: str) -> Guest:
    """The host booted and settled once, restored from then on (testbed.saved):
    with kexecd adopted, or with kdump-tools' load only when kexecd is masked."""
    stock = "systemd.mask=kexecd.service" in append
    settle = settle_loaded if stock else settle_adopted
    # Only the stock run boots so: not saved (no other test would restore it).
    guest = saved.settled_host(
        host_image, f"debian-host-{out.mode}", settle, append, keep=not stock
    )
    runs[out.mode] = guest
    out.boot_s = round(guest.boot_seconds, 1)
    out.restored = guest.restored
    return guest


def _adopted(guest: Guest, out: Outcome) -> None:
    """(a) kexecd.service adopted the crash kernel and masks kdump-tools' rule."""
    out.adopted_s = None if guest.restored else round(guest.ready_seconds, 1)
    assert guest.sh(f"readlink {MASK}").strip() == "/dev/null"
    state = json.loads(guest.read("/run/kexecd/state.json"))
    assert state["adoptions"], state


def test_kexecd_keeps_the_dump_whole(host_run: dict[str, Guest], host_image: HostImage) -> None:
    out = Outcome("kexecd")
    guest = _boot(host_image, host_run, out)
    _adopted(guest, out)
    # The stock command line lacks acpi_no_memhotplug; kexecd appended it.
    status = guest.sh("kexecd status")
    out.notes.append(status.strip())
    loads_before, events_before = _kexecd_counts(guest)
    kdump_before = len(_journal(guest, "kdump-config"))
    before = _scrape(guest)
    assert before["kexecd_in_sync"] == 1, before
    dimm = _hotplug(guest)
    _wait(guest, "kexecd status", "kexecd did not bring the header up to date")
    # The fleet view agrees: in sync again, and the counters moved.
    text = _scrape_text(guest)
    after = _samples(text)
    deadline = time.monotonic() + 60
    while (
        after['kexecd_reloads_total{kind="header"}']
        == before['kexecd_reloads_total{kind="header"}']
    ):
        if time.monotonic() > deadline:
            raise guest.fail(f"kexecd.prom did not count the reload: {after}")
        time.sleep(2)
        text = _scrape_text(guest)
        after = _samples(text)
    out.scrape = text.splitlines()
    assert after["kexecd_in_sync"] == 1, after
    assert after["kexecd_events_total"] > before["kexecd_events_total"], after
    assert after["kexecd_header_cpus"] == after["kexecd_system_cpus"] == 3, after
    assert after["kexecd_header_ram_bytes"] == after["kexecd_system_ram_bytes"], after
    loads, events = _kexecd_counts(guest)
    out.kexecd_loads, out.kexecd_events = loads - loads_before, events - events_before
    new = _journal(guest, "kdump-config")[kdump_before:]
    out.kdump_tools_loaded = sum("loaded kdump kernel" in line for line in new)
    out.kdump_tools_failed = sum("failed" in line for line in new)
    out.online_cpus = len(guest.online_cpus())
    pages = _write_pattern(guest, *dimm)
    elf = _crash_and_read(guest, out)
    _check_dump(elf, pages, dimm, out)
    _record(out)
    assert new == [], f"kdump-tools ran during the hotplug: {new}"
    assert "acpi_no_memhotplug" in out.crash_cmdline.split(), out
    assert 1 <= out.kexecd_loads <= 2, out
    assert out.pages_found == PATTERN_PAGES, out
    assert out.prstatus == out.online_cpus == 3, out


def test_stale_dump_misses_the_pattern(host_run: dict[str, Guest], host_image: HostImage) -> None:
    out = Outcome("stale")
    guest = _boot(host_image, host_run, out)
    _adopted(guest, out)
    # (a) continued: the mask goes with the service.
    assert _scrape(guest)["kexecd_in_sync"] == 1
    guest.sh("systemctl stop kexecd.service")
    stopped = _guest_time(guest)
    assert guest.run(["test", "-e", MASK], check=False).rc != 0
    assert guest.read("/sys/kernel/kexec_crash_loaded").strip() == "1"
    # Nothing reloads now: kdump-tools' rule masked by hand.
    guest.sh(f"ln -s /dev/null /etc/udev/rules.d/{RULE} && udevadm control --reload")
    kdump_before = len(_journal(guest, "kdump-config"))
    dimm = _hotplug(guest)
    new = _journal(guest, "kdump-config")[kdump_before:]
    out.kdump_tools_loaded = sum("loaded kdump kernel" in line for line in new)
    out.online_cpus = len(guest.online_cpus())
    # kexecd status tells the truth without the daemon; the metrics file,
    # which nobody updates now, says so by its age: its heartbeat stopped
    # when kexecd did (docs/kexecd.rules.yml's KexecdDown fires on it).
    assert guest.run(["kexecd", "status"], check=False).rc == 1
    stale = _scrape(guest)
    assert stale["kexecd_heartbeat_timestamp_seconds"] <= stopped, (stale, stopped)
    mtime = [v for k, v in stale.items() if k.startswith("node_textfile_mtime") and "kexecd" in k]
    assert mtime and mtime[0] <= stopped, (stale, stopped)
    pages = _write_pattern(guest, *dimm)
    elf = _crash_and_read(guest, out)
    _check_dump(elf, pages, dimm, out)
    _record(out)
    assert new == [], new
    assert out.pages_missing == PATTERN_PAGES and not out.dimm_in_dump, out
    assert out.prstatus == 2 < out.online_cpus, out


def test_stock_kdump_tools_baseline(host_run: dict[str, Guest], host_image: HostImage) -> None:
    out = Outcome("stock")
    # The same image with kexecd masked: Debian 12's own hotplug path alone.
    guest = _boot(host_image, host_run, out, "systemd.mask=kexecd.service")
    assert guest.run(["test", "-e", MASK], check=False).rc != 0
    kdump_before = len(_journal(guest, "kdump-config"))
    dimm = _hotplug(guest)
    new = _journal(guest, "kdump-config")[kdump_before:]
    out.kdump_tools_loaded = sum("loaded kdump kernel" in line for line in new)
    out.kdump_tools_failed = sum("failed to unload kdump kernel" in line for line in new)
    out.notes.extend(sorted(set(new)))
    out.online_cpus = len(guest.online_cpus())
    pages = _write_pattern(guest, *dimm)
    try:
        elf = _crash_and_read(guest, out)
    except TestbedError as e:
        out.notes.append(f"no readable dump: {str(e).splitlines()[0]}")
        _record(out)
        raise
    _check_dump(elf, pages, dimm, out)
    _record(out)
    # What Debian 12 does today: the rule runs, fails, and reloads nothing.
    assert out.kdump_tools_failed >= 1 and out.kdump_tools_loaded == 0, out
    assert out.pages_missing == PATTERN_PAGES, out
