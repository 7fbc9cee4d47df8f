# SPDX-License-Identifier: GPL-2.0-or-later
"""A kernel that keeps the header itself, and drops an update: the message in
the kernel log, the decision, and the daemon loading a current image once."""

from __future__ import annotations

import json
import os
import selectors
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from kexecd.cli import main
from kexecd.image import loader
from kexecd.image.plan import Action, Why
from kexecd.loads import KexecCall, LoadCapture
from kexecd.service.daemon import Daemon
from kexecd.system.kmsg import Drop, KmsgWatch, dropped_update, is_missed_update, worst
from kexecd.system.root import Root
from testbed.capture import Capture
from testbed.images import image, loaded_root
from tests.unit import fakes
from tests.unit.data import DATA
from tests.unit.fakes import (
    ARGV,
    KEXEC,
    FakeBackend,
    FakeMonitor,
    daemon_env,
    kernel_updates,
    run_until,
    tracer_for,
)

# As kernel/crash_core.c logs them: 6.6 on, and later (Debian's 6.12.95 in the test bed).
OLD = "6,2071,78724423,-;crash hp: kexec_trylock() failed, elfcorehdr may be inaccurate"
NEW = "6,2071,78724423,-;crash hp: kexec_trylock() failed, kdump image may be inaccurate"
# As arch/x86/kernel/crash.c arch_crash_handle_hotplug_event() logs them, 6.6
# and 6.12 alike (pr_err, so priority 3; no newline, so closed by the next
# record); 6.12 with CONFIG_PRINTK_CALLER adds the caller to the prefix.
TOO_LARGE_66 = "3,2210,91234567,-;crash hp: update elfcorehdr elfsz 921664 > memsz 917504"
TOO_LARGE_612 = (
    "3,5120,61000123,-,caller=T1234;crash hp: update elfcorehdr elfsz 925760 > memsz 918528"
)
NOT_BUILT_66 = "3,2211,91234570,-;crash hp: unable to create new elfcorehdr"
NOT_BUILT_612 = "3,5121,61000130,-,caller=T1234;crash hp: unable to create new elfcorehdr"


@pytest.mark.parametrize(
    ("record", "drop"),
    [
        (OLD, Drop.LOCK_BUSY),
        (NEW, Drop.LOCK_BUSY),
        (OLD + "\n SUBSYSTEM=cpu", Drop.LOCK_BUSY),
        (TOO_LARGE_66, Drop.TOO_LARGE),
        (TOO_LARGE_612, Drop.TOO_LARGE),
        (NOT_BUILT_66, Drop.NOT_BUILT),
        (NOT_BUILT_612, Drop.NOT_BUILT),
        ("6,1,2,-;crash hp: hp_action 1, cpu 2", None),
        ("crash hp: kexec_trylock() failed, elfcorehdr may be inaccurate", None),  # no header
        ("6,1,2,-;x crash hp: kexec_trylock() failed, elfcorehdr may be inaccurate", None),
        ("3,1,2,-;crash hp: update elfcorehdr elfsz 1 > memsz", None),  # cut short
        ("3,1,2,-;kexec: unable to create new elfcorehdr", None),  # another prefix
        ("3,1,2,-;crash hp: mapping elfcorehdr segment failed", None),  # not a drop of these
        ("", None),
    ],
)
def test_the_messages(record: str, drop: Drop | None) -> None:
    assert dropped_update(record) is drop
    assert is_missed_update(record) is (drop is not None)


def test_worst_of_several() -> None:
    assert worst(set()) is None
    assert worst({Drop.LOCK_BUSY, Drop.NOT_BUILT}) is Drop.NOT_BUILT
    assert worst(set(Drop)) is Drop.TOO_LARGE


def _fifo_root(root: Path) -> Path:
    (root / "dev").mkdir(exist_ok=True)
    os.mkfifo(root / "dev/kmsg")
    return root / "dev/kmsg"


def test_watch_reads_what_comes_after_it_opened(tmp_path: Path) -> None:
    fifo = _fifo_root(tmp_path)
    watch = KmsgWatch.open(Root(tmp_path))
    assert watch is not None
    try:
        assert watch.drain() == set()  # nothing yet, and no wait
        with fifo.open("w") as w:
            w.write("6,1,2,-;memory32 online\n")
            w.flush()
            assert watch.drain() == set()
            w.write(NEW + "\n")
            w.flush()
            assert watch.drain() == {Drop.LOCK_BUSY}
            w.write(TOO_LARGE_612 + "\n" + NOT_BUILT_66 + "\n")
            w.flush()
            assert watch.drain() == {Drop.TOO_LARGE, Drop.NOT_BUILT}
    finally:
        watch.close()
    assert KmsgWatch.open(Root(tmp_path / "none")) is None


def test_hotplug_image_gets_a_current_header_once(tmp_path: Path) -> None:
    # A kexec_load --hotplug image: the header is not in purgatory's digest,
    # so kexecd can load a current one; the kernel goes on updating it.
    root = loaded_root("hotadd", tmp_path)
    kernel_updates(root)
    state = tmp_path / "state"
    cap = image("boot", header_hashed=False)
    loader.load(ARGV, state, root=Root(root), tracer=tracer_for(cap))
    backend = FakeBackend()
    r = fakes.refresh(state, root=Root(root), backend=backend)
    assert r.decision.why is Why.KERNEL_UPDATES and backend.loads == []
    r = fakes.refresh(state, root=Root(root), backend=backend, kernel_missed=Drop.LOCK_BUSY)
    assert r.decision.action is Action.RELOAD_HEADER and r.decision.why is Why.KERNEL_MISSED
    ((_, _, segs),) = backend.loads
    assert segs[5] == Capture(DATA / "hotadd").header
    assert segs[4] == bytes(cap.segments[4].buf)  # purgatory as it was: not hashed


def test_current_header_is_loaded_all_the_same(tmp_path: Path) -> None:
    # What the kernel holds is unknown: kexecd's record says nothing of it.
    root = loaded_root("boot", tmp_path)
    kernel_updates(root)
    state = tmp_path / "state"
    loader.load(ARGV, state, root=Root(root), tracer=tracer_for(image(header_hashed=False)))
    backend = FakeBackend()
    r = fakes.refresh(state, root=Root(root), backend=backend, kernel_missed=Drop.LOCK_BUSY)
    assert r.decision.why is Why.KERNEL_MISSED and len(backend.loads) == 1


@pytest.mark.parametrize("drop", list(Drop))
def test_file_loaded_image_is_loaded_whole(tmp_path: Path, drop: Drop) -> None:
    # Whatever the kernel dropped: it sizes and builds a new header at load.
    cap = LoadCapture(
        KexecCall.KEXEC_FILE_LOAD,
        0,
        0,
        0,
        (),
        b"elfcorehdr=1K\0",
        1,
        0,
        1,
        0,
        0,
        KEXEC.read_bytes(),
    )
    root = loaded_root("boot", tmp_path)
    kernel_updates(root)
    state = tmp_path / "state"
    loader.load([*ARGV, "-s"], state, root=Root(root), tracer=tracer_for(cap))
    tracer = tracer_for(replace(cap))
    r = fakes.refresh(
        state, root=Root(root), backend=FakeBackend(), tracer=tracer, kernel_missed=drop
    )
    assert r.decision.action is Action.FULL_RELOAD and r.decision.why is Why.KERNEL_MISSED
    assert tracer.calls == [(*ARGV, "-s")]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("line", "kind", "action", "said"),
    [
        (OLD, "lock-busy", "reload-header", "kexec_trylock() failed"),
        (NOT_BUILT_66, "not-built", "reload-header", "could not build a new header"),
        (NOT_BUILT_612, "not-built", "reload-header", "could not build a new header"),
        (TOO_LARGE_66, "too-large", "full-reload", "larger than the header segment"),
        (TOO_LARGE_612, "too-large", "full-reload", "larger than the header segment"),
    ],
)
def test_daemon_loads_once_when_the_kernel_says_so(
    tmp_path: Path, line: str, kind: str, action: str, said: str
) -> None:
    cfg = daemon_env(tmp_path, settle_ms=50, max_delay_ms=300)
    # daemon_env loaded the boot image with its header hashed; load one the
    # kernel could update (kexec-tools --hotplug leaves the header out).
    root = tmp_path / "root-boot"
    cap = image(header_hashed=False)
    loader.load(ARGV, cfg.state_dir, root=Root(root), tracer=tracer_for(cap))
    kernel_updates(root)
    fifo = _fifo_root(root)
    backend, monitor, tracer = FakeBackend(), FakeMonitor(), tracer_for(cap)
    daemon = Daemon(cfg, monitor, backend=backend, tracer=tracer)
    writer: list[int] = []

    def log_it() -> None:
        while daemon.state.reconciles == 0:  # standing aside at start
            threading.Event().wait(0.01)
        fd = os.open(fifo, os.O_WRONLY)
        writer.append(fd)
        # The record before it: a kernel message is logged alongside.
        os.write(fd, ("6,2209,91234560,-;memory32 online\n" + line + "\n").encode())

    def loaded() -> int:
        return len(backend.loads) + len(tracer.calls)  # type: ignore[attr-defined]

    t = threading.Thread(target=log_it)
    t.start()
    try:
        run_until(daemon, monitor, lambda: loaded() == 1 and not daemon.session.kernel_missed)
    finally:
        t.join()
        for fd in writer:
            os.close(fd)
    # Once: the header alone, or the whole command again (the kernel's own
    # header outgrew a segment kexecd does not move for a --hotplug image).
    assert loaded() == 1
    assert (len(tracer.calls) == 1) is (action == "full-reload")  # type: ignore[attr-defined]
    st = daemon.state
    assert st.last_update is not None and st.last_update.action == action
    assert "dropped an update" in str(st.last_update.reason)
    assert said in str(st.last_update.reason)
    assert st.kernel_drops == {kind: 1} and st.kernel_drop == kind
    assert daemon.reconcile("events").action == "stand-aside"  # and then it stands aside again
    # What status and the metrics say of it, from the files the daemon wrote.
    prom = (Path(cfg.metrics_dir) / "kexecd.prom").read_text()
    assert f'kexecd_kernel_dropped_updates_total{{kind="{kind}"}} 1' in prom


def test_status_says_what_the_kernel_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = daemon_env(tmp_path, settle_ms=50, max_delay_ms=300)
    root = tmp_path / "root-boot"
    kernel_updates(root)
    daemon = Daemon(cfg, FakeMonitor(), backend=FakeBackend())
    daemon.reconcile("start")
    daemon.on_kernel_log({Drop.LOCK_BUSY})
    daemon.on_kernel_log({Drop.TOO_LARGE, Drop.LOCK_BUSY})
    assert daemon.session.kernel_missed is Drop.TOO_LARGE  # the most demanding
    assert daemon.state.kernel_drops == {"lock-busy": 2, "too-large": 1}
    args = ["--state-dir", str(cfg.state_dir), "--root", str(root)]
    main(["status", *args, "--runtime-dir", str(cfg.runtime_dir)])
    out = capsys.readouterr().out
    assert "kernel dropped lock-busy 2, too-large 1 (the last: too-large)" in out, out
    main(["status", *args, "--runtime-dir", str(cfg.runtime_dir), "--json"])
    d = json.loads(capsys.readouterr().out)["daemon"]
    assert d["kernel_drops"] == {"lock-busy": 2, "too-large": 1}
    assert d["kernel_drop"] == "too-large"


def test_unreadable_log_is_dropped_not_fatal(tmp_path: Path) -> None:
    # A read error other than EPIPE/EAGAIN stops the watch with a warning;
    # the daemon's loop goes on (here: a directory read as the log).
    cfg = daemon_env(tmp_path, settle_ms=50, max_delay_ms=300)
    daemon = Daemon(cfg, FakeMonitor(), backend=FakeBackend())
    watch = KmsgWatch(os.open(tmp_path, os.O_RDONLY))
    daemon.loop.open(selectors.SelectSelector())  # epoll takes no directory
    daemon.loop.add_reader(watch.fd, lambda: daemon.read_kernel_log(watch))
    other = KmsgWatch(os.open(tmp_path, os.O_RDONLY))
    with pytest.raises(IsADirectoryError):
        other.drain()
    other.close()
    daemon.loop.run_once()  # the directory reads as ready; its read fails
    assert watch.fd == -1 and daemon.loop.watched() == 0
    daemon.loop.close()
    watch.close()  # again: nothing to do
    assert not daemon.session.kernel_missed


@pytest.mark.parametrize(
    ("file_load", "flags", "stands_aside"),
    [(True, 0, True), (False, 0x4, True), (False, 0x8, True), (False, 0, False)],
)
def test_busy_lock_does_not_hide_the_kernels_updates(
    tmp_path: Path, file_load: bool, flags: int, stands_aside: bool
) -> None:
    # Linux 6.12's crash_hotplug reads 0 while another task holds the kexec
    # lock, whatever the image: the image's load flags decide instead.
    root = loaded_root("boot", tmp_path)
    for s in ("cpu", "memory"):
        (root / f"sys/devices/system/{s}/crash_hotplug").write_text("0\n")
    state = tmp_path / "state"
    if file_load:
        cap = LoadCapture(
            KexecCall.KEXEC_FILE_LOAD,
            0,
            0,
            0,
            (),
            b"elfcorehdr=1K\0",
            1,
            0,
            1,
            0,
            0,
            KEXEC.read_bytes(),
        )
    else:
        cap = image(header_hashed=False)
        cap = replace(cap, flags=cap.flags | flags)
    loader.load(ARGV, state, root=Root(root), tracer=tracer_for(cap))
    backend, tracer = FakeBackend(), tracer_for(cap)
    r = fakes.refresh(state, root=Root(root), backend=backend, tracer=tracer)
    assert (r.decision.why is Why.KERNEL_UPDATES) is stands_aside
    assert r.plan.kexec.kernel_updates is stands_aside
    assert backend.loads == [] and tracer.calls == []  # type: ignore[attr-defined]
    if not stands_aside:
        assert r.decision.why is Why.CURRENT
    # A kernel without crash_hotplug (before 6.6) has no updates to keep.
    for s in ("cpu", "memory"):
        (root / f"sys/devices/system/{s}/crash_hotplug").unlink()
    r = fakes.refresh(state, root=Root(root), backend=backend, tracer=tracer)
    assert r.decision.why is not Why.KERNEL_UPDATES
