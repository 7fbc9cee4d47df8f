# SPDX-License-Identifier: GPL-2.0-or-later
"""P7: the work of one refresh without the syscall, on the host, from a fake
root with 4, 1,024 and 32,768 RAM ranges.

Each round adds or removes one RAM range in the fake ``/proc/iomem`` and
refreshes, so every round really builds, hashes and "loads" (a backend that
does nothing: no ``kexec_load`` on the host). Two ways, in the same run:

* **daemon**: what the daemon does per event: the snapshot kept open and
  verified ahead (a :class:`Refresher` kept open, its snapshot hashed once);
* **one-shot** (the baseline): what ``kexecd refresh`` does: open the
  snapshot, hash every segment, then the same.

The image is the boot capture's, its header segment grown (the segments
below it moved down, the boot parameters' ``cmd_line_ptr``, the entry and
purgatory's regions and digest made to match) so that 32,768 ranges fit.

    .venv/bin/python -m bench.bench_refresh [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from kexecd.arch.x86_64 import MAX_RANGES
from kexecd.image import loader
from kexecd.image.refresher import Deps, Refresher
from kexecd.image.store import Store
from kexecd.loads import LoadCapture, Segment, page_up
from kexecd.system.root import Root
from kexecd.system.state import read_system
from testbed.images import CMD_LINE_PTR, SETUP, image, kexec_tools_digest, loaded_root

HEADER = 5  # the boot capture's header segment
TARGET_MS = 10.0
ARGV = ["kexec", "-p", "/boot/vmlinuz"]


class NoLoad:
    """A backend that loads nothing (the host never calls kexec_load)."""

    def load(self, entry: int, flags: int, segments: Sequence[Segment]) -> None:
        pass


def big_image(ranges: int) -> LoadCapture:
    """The boot capture's image with room in its header for ``ranges`` more ranges."""
    cap = image("boot")
    segs = list(cap.segments)
    grow = page_up(64 + 56 * (ranges + 64)) - segs[HEADER].memsz
    grow = max(0, page_up(grow))
    for i in range(1, HEADER):
        segs[i] = replace(segs[i], mem=segs[i].mem - grow)
    h = segs[HEADER]
    segs[HEADER] = replace(h, mem=h.mem - grow, memsz=h.memsz + grow)
    setup = bytearray(segs[SETUP].buf)
    (ptr,) = struct.unpack_from("<I", setup, CMD_LINE_PTR)
    struct.pack_into("<I", setup, CMD_LINE_PTR, ptr - grow)
    segs[SETUP] = replace(segs[SETUP], buf=bytes(setup))
    purg = 4
    pbuf = bytearray(segs[purg].buf)
    off = pbuf.index(kexec_tools_digest(cap.segments, purg))
    regions = b"".join(struct.pack("<QQ", s.mem, s.memsz) for i, s in enumerate(segs) if i != purg)
    pbuf[off + 32 : off + 32 + len(regions)] = regions
    segs[purg] = replace(segs[purg], buf=bytes(pbuf))
    pbuf[off : off + 32] = kexec_tools_digest(segs, purg)
    segs[purg] = replace(segs[purg], buf=bytes(pbuf))
    return replace(cap, entry=cap.entry - grow, segments=tuple(segs))


def _line(n: int) -> str:
    start = 0x10000000000 + n * 0x8000000  # above the capture's own ranges
    return f"{start:x}-{start + 0x7FFFFFF:x} : System RAM\n"


def measure(ranges: int, rounds: int) -> tuple[int, dict[str, list[float]]]:
    """Seconds per refresh, daemon-style and one-shot, with about ``ranges`` RAM
    ranges (at most what fits kexec-tools' limit on ranges in all); returns
    how many RAM ranges the header had."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        root_dir = loaded_root("boot", tmp)
        iomem = root_dir / "proc/iomem"
        base = iomem.read_text()
        root = Root(root_dir)
        others = len(read_system(root).memory.ranges)
        ranges = min(ranges, MAX_RANGES - others - 1)  # room for the toggled one
        extra = "".join(_line(n) for n in range(ranges))
        state = tmp / "state"

        def tracer(argv: Sequence[str]) -> LoadCapture:
            return big_image(ranges)

        loader.load(ARGV, state, root=root, tracer=tracer)
        backend = NoLoad()
        iomem.write_text(base + extra)
        deps = Deps(root, backend)
        # The daemon's way: one Refresher that keeps the snapshot open, its
        # segments hashed once; the one-shot way: a new one per refresh.
        daemon = Refresher(Store(state), deps, keep_open=True)
        first = daemon.refresh()
        assert first.loaded, first.decision
        daemon.verified = True  # as the daemon's hashing ahead leaves it
        out: dict[str, list[float]] = {"daemon": [], "one-shot": []}
        for i in range(rounds):
            for way in out:
                # One range more, then one fewer: every refresh reloads.
                toggle = _line(ranges) if (2 * i + (way == "one-shot")) % 2 == 0 else ""
                iomem.write_text(base + extra + toggle)
                t = time.perf_counter()
                if way == "daemon":
                    r = daemon.refresh()
                else:
                    r = Refresher(Store(state), deps).refresh()
                out[way].append(time.perf_counter() - t)
                assert r.loaded, r.decision
        assert r.plan.ranges is not None
        return r.plan.ranges, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    med = statistics.median
    print(f"P7 refresh work without the syscall, on the host, median of {args.rounds} (ms)")
    print(f"  {'RAM ranges':>10}{'daemon':>10}{'min':>8}{'max':>8}{'one-shot':>11}{'ratio':>8}")
    for n in (4, 1024, MAX_RANGES):
        shown, res = measure(n, args.rounds)
        dm = [x * 1000 for x in res["daemon"]]
        os_ = [x * 1000 for x in res["one-shot"]]
        print(
            f"  {shown:>10}{med(dm):10.2f}{min(dm):8.2f}{max(dm):8.2f}{med(os_):11.2f}"
            f"{med(os_) / med(dm):7.1f}x"
        )
        if n == MAX_RANGES:
            verdict = "met" if med(dm) <= TARGET_MS else "missed"
            print(
                f"SUMMARY P7 refresh-work: {med(dm):.2f} ms at {shown} RAM ranges (32768 in all, "
                f"kexec-tools' limit; min {min(dm):.2f}, "
                f"max {max(dm):.2f}), one-shot {med(os_):.2f} ms ({med(os_) / med(dm):.1f}x); "
                f"target <= {TARGET_MS:.0f} ms: {verdict}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
