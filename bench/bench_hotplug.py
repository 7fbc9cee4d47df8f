# SPDX-License-Identifier: GPL-2.0-or-later
"""P1, P2 and P4, measured in the test-bed guest, side by side in the same run.

* P1 update latency: from a uevent's arrival in the guest to the new image
  being loaded, for one 128 MiB memory block and for one CPU: the kexecd
  daemon vs Debian kdump-tools' per-event path (unload, then ``kexec -p``)
  vs a bare ``kexec_load`` of the same segments (the floor: the daemon's own
  call, on segments whose kernel it has cut, :mod:`kexecd.image.trim`) and of
  kexec-tools' layout (the floor before the cut, ``bench.guest_floor``).
* P2 burst: 8 GiB of DIMMs (64 blocks) onlined at once: reloads, time from
  the first event until the loaded header matches the system, and time spent
  without a crash kernel loaded; with 32 GiB (256 blocks), reloads and the
  time from the last event that changes the header (``bench.guest_uevents``
  records when each arrived) until the header is current.
* P4 idle cost of the daemon: wake-ups per minute and memory.
* P6 start-up: ``kexecd status`` wall time against ``python3 -c pass``.
* The 6.12 anchor: on Linux 6.12 (bookworm-backports), kexecd keeping a plain
  ``kexec -p`` image current against the kernel's own update of a
  ``kexec -s -p`` image (``crash_hotplug`` 1).

Every time is read from the guest's CLOCK_MONOTONIC (QEMU TCG on a 2-core
host: several times what real hardware takes, for both sides alike).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.guestio import STATE, baseline_records, history_len, start_baseline, verdict, wait
from bench.p2_burst import p2, p2_line
from testbed.vm import Guest, Machine, boot

__all__ = ["anchor_612", "chart", "p1_p4", "p2", "p6", "summarize"]


def _proc_status(g: Guest, pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in g.read(f"/proc/{pid}/status").splitlines():
        key, _, value = line.partition(":")
        if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            out[key] = int(value)
        elif key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


P1_VS_UNLOAD, P1_VS_FLOOR, P6_VS_PYTHON = 10.0, 1.1, 1.5
# P1 times lone hotplugs: each after the daemon's quiet period (settle_ms plus
# the last reload, about 320 ms here), else it is the trailing edge of the one
# before (kexecd.service.coalesce.Coalescer).
P1_PAUSE_S = 1.0


def _wall(g: Guest, cmd: str, n: int) -> list[float]:
    """Seconds of ``cmd`` in the guest, ``n`` times, by the guest's own clock."""
    out = g.sh(
        f"for i in $(seq {n}); do a=$(cat /proc/uptime); {cmd} >/dev/null 2>&1; "
        "b=$(cat /proc/uptime); echo ${a%% *} ${b%% *}; done",
        timeout=60 * n,
    )
    return [float(b) - float(a) for a, b in (line.split() for line in out.splitlines())]


def layout_floor(g: Guest, n: int) -> list[float]:
    """ms of ``n`` bare ``kexec_load`` of the snapshot as kexec-tools laid it
    out (before any kexecd reload cut its kernel segment)."""
    out = g.python("-m", "bench.guest_floor", STATE, str(n), timeout=60 + 10 * n).stdout
    return [float(x) for x in json.loads(out)]


def p6(g: Guest, n: int) -> dict[str, list[float]]:
    """``kexecd status`` against ``python3 -c pass`` (the venv's Python both)."""
    py = sys.executable
    return {
        "status": _wall(g, f"kexecd status --state-dir {STATE}", n),
        "python": _wall(g, f"{py} -c pass", n),
    }


def p1_p4(n: int = 9, idle_seconds: float = 30.0) -> dict[str, Any]:
    """One guest: P4 idle, then P1 with the daemon, P6, then P1 with the per-event path."""
    g = boot("bench-p1", Machine(maxcpus=2 + 2 * n, slots=2 * n, maxmem_mib=1024 + 256 * n))
    res: dict[str, Any] = {"n": n}
    try:
        g.kexecd_load(STATE)
        res["floor_kexec_tools"] = layout_floor(g, n)
        pid = g.start_daemon(STATE)
        seg_bytes = int(g.sh(f"cat {STATE}/snapshot/seg-*.bin | wc -c"))
        seg_files = int(g.sh(f"find {STATE}/snapshot -name 'seg-*.bin' -size +0 | wc -l"))
        a = _proc_status(g, pid)
        time.sleep(idle_seconds)
        b = _proc_status(g, pid)
        switches = sum(b[k] - a[k] for k in a if k.endswith("ctxt_switches"))
        maps = g.read(f"/proc/{pid}/maps")
        res["p4"] = {
            "wakeups_per_min": switches * 60 / idle_seconds,
            "rss_kib": b["VmRSS"],
            "rss_anon_kib": b["RssAnon"],
            "segments_kib": seg_bytes // 1024,
            "segments_mapped_when_idle": maps.count("/seg-"),
            "segment_files": seg_files,
        }
        kexecd: dict[str, list[float]] = {"memory": [], "cpu": [], "floor": []}
        for kind in ("memory", "cpu"):
            for _ in range(n):
                time.sleep(P1_PAUSE_S)
                before = history_len(g)
                if kind == "memory":
                    start, end = g.hot_add_memory(128)
                else:
                    g.hot_add_cpu()
                wait(lambda before=before: history_len(g) > before, "a kexecd reload", g)
                h = g.daemon_state()["history"][-1]
                kexecd[kind].append((h["done_mono"] - h["first_event_mono"]) * 1000)
                kexecd["floor"].append(h["load_ms"])
                if kind == "memory":
                    g.set_memory_online(start, end)
        res["p6"] = p6(g, n)
        # The daemon's profile of each reload (kexecd.timing, at debug level).
        log = g.read("/run/kexecd.log").splitlines()
        res["p1_spans"] = [line for line in log if "refresh (reload-header)" in line]
        g.sh(f"kill -TERM {pid}")
        res["p1_kexecd"] = kexecd

        out, stop = start_baseline(g, "baseline-p1")
        base: dict[str, list[float]] = {"memory": [], "cpu": []}
        for kind in ("memory", "cpu"):
            for _ in range(n):
                before = len(baseline_records(out))
                if kind == "memory":
                    g.set_memory_online(*g.hot_add_memory(128))
                else:
                    g.hot_add_cpu()

                def done(before: int = before) -> Any:
                    r = baseline_records(out)
                    return r[before] if len(r) > before else None

                rec = wait(done, "a kdump-tools style reload", g)
                base[kind].append((rec["loaded"] - rec["arrived"]) * 1000)
        g.sh(f"touch {stop}")
        res["p1_baseline"] = base
    except BaseException:
        log = g.run(["cat", "/run/kexecd.log"], check=False).stdout
        print(f"--- the daemon's log ---\n{log[-4000:]}", file=sys.stderr)
        raise
    finally:
        g.close()
    return res


def _spread(xs: list[float]) -> str:
    return f"min {min(xs):.0f}, max {max(xs):.0f}"


_ONLINE = """
import sys, time
path = sys.argv[1]
t = time.monotonic()
with open(path, "w") as f:
    f.write("online")
print(time.monotonic() - t)
"""


def _timed_online(g: Guest, start: int, end: int) -> float:
    """Seconds the kernel takes to online one block (one write to its state)."""
    (block,) = g.memory_blocks(start, end)
    out = g.python("-c", _ONLINE, f"/sys/devices/system/memory/memory{block}/state").stdout
    return float(out)


def anchor_612(n: int = 9) -> dict[str, Any]:
    """One Linux 6.12 guest, hot-added blocks left offline (``memhp_default_state``):

    * ``kernel``: ``kexec -s -p`` loaded, so the kernel rewrites the header
      itself inside the online (``crash_hotplug`` reads 1): the write's time;
    * ``online_only``: the same write with no crash kernel loaded (onlining
      alone, what the kernel's update adds to);
    * ``kexecd``: a plain ``kexec -p`` image (``crash_hotplug`` 0) kept
      current by the daemon: first uevent to the new image loaded.
    """
    machine = Machine(slots=3 * n, maxmem_mib=1024 + 128 * 3 * n)
    g = boot(
        "bench-anchor-6.12", machine, kernel_version="6.12", append=["memhp_default_state=offline"]
    )
    res: dict[str, Any] = {"kernel_release": g.kernel.package, "n": n}
    try:
        argv = g.kexec_argv()
        g.run([argv[0], "-s", *argv[1:]], timeout=120)
        if g.read("/sys/devices/system/memory/crash_hotplug").strip() != "1":
            raise g.fail("kexec -s -p loaded, but memory/crash_hotplug is not 1")
        res["kernel"] = [_timed_online(g, *g.hot_add_memory(128)) * 1000 for _ in range(n)]
        g.run([argv[0], "-p", "-u"])
        res["online_only"] = [_timed_online(g, *g.hot_add_memory(128)) * 1000 for _ in range(n)]
        g.kexecd_load(STATE)
        if g.read("/sys/devices/system/memory/crash_hotplug").strip() != "0":
            raise g.fail("a plain kexec -p image, but memory/crash_hotplug is not 0")
        res["floor_kexec_tools"] = layout_floor(g, n)
        g.start_daemon(STATE)
        kx, floor = [], []
        for _ in range(n):
            time.sleep(P1_PAUSE_S)
            before = history_len(g)
            start, end = g.hot_add_memory(128)
            wait(lambda before=before: history_len(g) > before, "a kexecd reload", g)
            h = g.daemon_state()["history"][-1]
            kx.append((h["done_mono"] - h["first_event_mono"]) * 1000)
            floor.append(h["load_ms"])
            g.set_memory_online(start, end)
        res["kexecd"], res["floor"] = kx, floor
        if g.run(["kexecd", "status", "--state-dir", STATE], check=False).rc != 0:
            raise g.fail("kexecd status is not 0 on 6.12 after the hot-adds")
    finally:
        g.close()
    return res


def summarize(r: dict[str, Any]) -> list[str]:
    """The table, and one SUMMARY line per figure, each with its target and verdict."""
    med = statistics.median
    k, b = r["p1_kexecd"], r["p1_baseline"]
    floor = med(k["floor"])
    lines = [f"P1 update latency, uevent arrival to image loaded, median of {r['n']} (ms)"]
    old = med(r["floor_kexec_tools"]) if "floor_kexec_tools" in r else None
    lines.append(
        f"  {'':14}{'kexecd':>10}{'(min-max)':>12}{'unload+load':>14}{'floor':>8}"
        f"{'vs unload':>11}{'vs floor':>10}"
        + ("" if old is None else f"{'kexec-tools floor':>19}{'vs it':>8}")
    )
    p1 = {}
    for kind in ("memory", "cpu"):
        kx, bl = med(k[kind]), med(b[kind])
        p1[kind] = (kx, bl)
        lines.append(
            f"  {kind + ' block' if kind == 'memory' else 'one CPU':14}{kx:10.0f}"
            f"{f'{min(k[kind]):.0f}-{max(k[kind]):.0f}':>12}{bl:14.0f}"
            f"{floor:8.0f}{bl / kx:10.1f}x{kx / floor:9.2f}x"
            + ("" if old is None else f"{old:19.0f}{kx / old:7.2f}x")
        )
    for kind, (kx, bl) in p1.items():
        lines.append(
            f"SUMMARY P1 {kind}: kexecd {kx:.0f} ms ({_spread(k[kind])}), unload+load {bl:.0f} ms "
            f"({_spread(b[kind])}): {bl / kx:.1f}x, target >= {P1_VS_UNLOAD:.0f}x: "
            f"{verdict(bl / kx >= P1_VS_UNLOAD)}; " + _floors(kx, k["floor"], r)
        )
    if "p6" in r:
        st, py = r["p6"]["status"], r["p6"]["python"]
        ratio = med(st) / med(py)
        lines.append(
            f"SUMMARY P6 start-up: kexecd status {med(st) * 1000:.0f} ms "
            f"(min {min(st) * 1000:.0f}, max {max(st) * 1000:.0f}), python3 -c pass "
            f"{med(py) * 1000:.0f} ms (min {min(py) * 1000:.0f}, max {max(py) * 1000:.0f}): "
            f"{ratio:.2f}x, target <= {P6_VS_PYTHON}x: {verdict(ratio <= P6_VS_PYTHON)}"
        )
    for key in ("p2", "p2_256"):
        if key not in r:
            continue
        lines.append(p2_line(r[key]["blocks"], r[key]["kexecd"]))
    if "p2" in r and "baseline" in r["p2"]:
        p2r = r["p2"]
        kx, bl = p2r["kexecd"], p2r["baseline"]
        lines.append(f"P2 burst: {p2r['blocks']} memory blocks (8 GiB) onlined at once")
        for name, x in (("kexecd", kx), ("unload+load", bl)):
            lines.append(
                f"  {name:<12} {x['reloads']:3d} reloads, consistent after "
                f"{x['consistent_ms']:7.0f} ms, without a crash kernel "
                f"{x['without_crash_kernel_ms']:7.0f} ms"
                + (f" (reloading until {x['churn_ms']:.0f} ms)" if "churn_ms" in x else "")
            )
        lines.append(
            f"SUMMARY P2 burst: kexecd {kx['reloads']} reloads, consistent "
            f"{kx['after_last_event_ms']:.0f} ms after the last event, "
            f"{kx['without_crash_kernel_ms']:.0f} ms without a crash kernel; unload+load "
            f"{bl['reloads']} reloads, {bl['without_crash_kernel_ms']:.0f} ms without "
            f"({bl['without_crash_kernel_ms'] / max(kx['without_crash_kernel_ms'], 1):.0f}x)"
        )
    if "anchor" in r:
        a = r["anchor"]
        k, kx, alone = med(a["kernel"]), med(a["kexecd"]), med(a["online_only"])
        lines.append(
            f"SUMMARY anchor 6.12: the kernel's own update (kexec -s -p, crash_hotplug 1): "
            f"online {k:.0f} ms ({_spread(a['kernel'])}) against {alone:.0f} ms with no crash "
            f"kernel, so about {max(k - alone, 0):.0f} ms of update; kexecd (kexec -p, "
            f"crash_hotplug 0): {kx:.0f} ms ({_spread(a['kexecd'])}) from the first uevent to "
            f"loaded, " + _floors(kx, a["floor"], a) + " (the anchor to approach)"
        )
    p4 = r["p4"]
    mib = {k: p4[k] / 1024 for k in ("rss_kib", "rss_anon_kib", "segments_kib")}
    lines.append(
        f"SUMMARY P4 idle: {p4['wakeups_per_min']:.1f} wake-ups/min, RSS {mib['rss_kib']:.1f} MiB "
        f"(anonymous {mib['rss_anon_kib']:.1f} MiB; the {mib['segments_kib']:.1f} MiB of "
        f"segments are mapped from the snapshot's files, never copied: "
        f"{p4['segments_mapped_when_idle']} mapped when idle, kept open and verified ahead)"
    )
    return lines


def _floors(kx: float, daemon: list[float], r: dict[str, Any]) -> str:
    # kexecd against the floor of its own call (the kernel segment cut) and,
    # where measured, against the floor of kexec-tools' layout.
    med = statistics.median
    own = med(daemon)
    text = (
        f"floor {own:.0f} ms ({_spread(daemon)}; the daemon's kexec_load, the kernel cut): "
        f"kexecd {kx / own:.2f}x it, target <= {P1_VS_FLOOR}x: {verdict(kx / own <= P1_VS_FLOOR)}"
    )
    if "floor_kexec_tools" in r:
        old = r["floor_kexec_tools"]
        text += (
            f"; kexec-tools' layout floor {med(old):.0f} ms ({_spread(old)}): kexecd "
            f"{kx / med(old):.2f}x it, target <= {P1_VS_FLOOR}x: "
            f"{verdict(kx / med(old) <= P1_VS_FLOOR)}"
        )
    return text


def chart(r: dict[str, Any], path: Path) -> None:
    """P1 and P2 as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = statistics.median
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    kinds = ["memory", "cpu"]
    x = range(len(kinds))
    k, b = r["p1_kexecd"], r["p1_baseline"]
    floor = med(k["floor"])
    w = 0.27
    ax1.bar([i - w for i in x], [med(b[c]) for c in kinds], w, label="unload + kexec -p")
    ax1.bar(list(x), [med(k[c]) for c in kinds], w, label="kexecd")
    ax1.bar([i + w for i in x], [floor, floor], w, label="bare kexec_load")
    ax1.set_xticks(list(x), ["one memory block", "one CPU"])
    ax1.set_ylabel("ms, uevent to image loaded (median)")
    ax1.set_title("P1 update latency")
    ax1.legend()
    if "p2" in r:
        kx, bl = r["p2"]["kexecd"], r["p2"]["baseline"]
        labels = ["reloads", "s without a crash kernel", "s until consistent"]
        kv = [kx["reloads"], kx["without_crash_kernel_ms"] / 1000, kx["consistent_ms"] / 1000]
        bv = [bl["reloads"], bl["without_crash_kernel_ms"] / 1000, bl["consistent_ms"] / 1000]
        x2 = range(len(labels))
        ax2.bar([i - 0.2 for i in x2], bv, 0.4, label="unload + kexec -p, per event")
        ax2.bar([i + 0.2 for i in x2], kv, 0.4, label="kexecd")
        ax2.set_xticks(list(x2), labels)
        ax2.set_yscale("log")
        ax2.set_title(f"P2 burst: {r['p2']['blocks']} blocks onlined at once")
        ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
