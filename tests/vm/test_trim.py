# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel segment cut to its buffer (issue 27 item 6), proven by crashes.

On each kernel Debian runs kdump with (5.10, 6.1, 6.12): kexec-tools loads
the crash kernel through ``kexecd load``; the memory between the end of the
kernel's buffer and the ``init_size`` extent kexec-tools gave it is filled
with 0xff through the kernel (``testbed.guest_poison``: a crash image of
that one segment); memory and a CPU are hot-added and ``kexecd refresh``
reloads the header with the kernel segment cut, which leaves that memory
as it is. The crash kernel must boot from there and dump the system whole.
"""

from __future__ import annotations

import json
import time

import pytest

from testbed.vm import Guest
from tests.vm.conftest import Combo

pytestmark = pytest.mark.vm

STATE = "/run/kexecd-state"
PAGE = 4096
KERNELS = [Combo("5.10", "2.0.20"), Combo("6.1", "2.0.25"), Combo("6.12", "2.0.25")]


def _kernel(guest: Guest, mem: int | None = None) -> tuple[int, int, int]:
    # The kernel segment as the snapshot's manifest records it: the one at
    # ``mem``; before the cut, the one whose memsz exceeds its buffer by the
    # most (tens of MB, kexec-tools' init_size; the others by a page or so).
    m = json.loads(guest.read(f"{STATE}/snapshot/manifest.json"))
    if mem is None:
        seg = max(m["segments"], key=lambda s: s["memsz"] - s["bufsz"])
    else:
        (seg,) = [s for s in m["segments"] if s["mem"] == mem]
    return seg["mem"], seg["memsz"], seg["bufsz"]


@pytest.mark.parametrize("combo_guest", KERNELS, ids=str, indirect=True)
def test_a_cut_kernel_boots_over_a_filled_tail(combo_guest: tuple[Combo, Guest]) -> None:
    combo, g = combo_guest
    g.kexecd_load(STATE, options=combo.options, timeout=300)
    mem, memsz, bufsz = _kernel(g)
    cut = -(-bufsz // PAGE) * PAGE
    assert memsz - cut > 32 << 20, (memsz, bufsz)  # init_size: tens of MB zero-filled
    g.python("-m", "testbed.guest_poison", hex(mem + cut), hex(memsz - cut))
    start, end = g.hot_add_memory(512)
    g.set_memory_online(start, end)
    cpu = g.hot_add_cpu()
    g.set_cpu_online(cpu)
    out = g.run(["kexecd", "refresh", "--state-dir", STATE]).stdout
    assert "reload the header and purgatory's digest: done in" in out, out
    assert f"loaded {cut} bytes long from now on, not the {memsz}" in out, out
    assert _kernel(g, mem) == (mem, cut, bufsz)
    rc = g.run(["kexecd", "status", "--state-dir", STATE], check=False).rc
    assert rc == 0
    t0 = time.monotonic()
    vmcore = g.crash()
    print(f"\n{combo}: crash to dump {time.monotonic() - t0:.1f} s")
    assert vmcore.covers(start, end)
    assert vmcore.prstatus == 3
