# SPDX-License-Identifier: GPL-2.0-or-later
"""The crash kernel's command line: found in the captured boot parameters,
amended with acpi_no_memhotplug where the host can hot-add memory, and
loaded with purgatory's digest to match; on the real captures, with a
variant whose line lacks the word (as kdump-tools' default does)."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from kexecd.arch.x86_64 import bootparams
from kexecd.errors import CmdlineError, LoadError, SnapshotError
from kexecd.image import cmdline, loader, plan
from kexecd.image.plan import Action, Why
from kexecd.image.store import Store, open_snapshot
from kexecd.loads import LoadCapture, Segment
from kexecd.system.root import Root
from testbed.capture import Capture
from testbed.images import NO_MEMHOTPLUG, SETUP, image, kexec_tools_digest, loaded_root
from tests.unit import fakes
from tests.unit.data import ALL_CAPTURES, DATA, manifest
from tests.unit.fakes import ARGV, FakeBackend, tracer_for

LINE_AT = 0x5000  # where kexec-tools 2.0.25 put the line in the captures
DIGEST_AT = 0x5020  # and purgatory's digest


def stripped(name: str = "boot", spare: int = 64) -> LoadCapture:
    return image(name, strip=NO_MEMHOTPLUG, spare=spare)


def line_of(setup: bytes, at: int = LINE_AT) -> bytes:
    return setup[at : setup.index(b"\0", at)]


def with_appended(setup: bytes, word: bytes) -> bytes:
    """The boot parameters with ``word`` appended to the line, written here
    with plain bytes (not by the code under test)."""
    line = line_of(setup) + b" " + word
    out = setup[:LINE_AT] + line + b"\0"
    return out + bytes(len(setup) - len(out))


# -- the locator --------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_finds_the_line_in_every_capture(name: str) -> None:
    segs = image(name).segments
    cl = bootparams.find(segs)
    # kexec-tools 2.0.20 has no setup_data segment before the boot
    # parameters, and puts the line 0x1200 bytes lower in them.
    setup, at = (2, 0x3E00) if manifest(name)["kexec_tools"] == "2.0.20" else (SETUP, LINE_AT)
    assert (cl.segment, cl.offset, cl.room) == (setup, at, 64)
    assert cl.text.encode() == line_of(bytes(segs[setup].buf), at)
    header = Capture(DATA / name).header_segment["mem"]
    assert cl.text.endswith(f" elfcorehdr={header >> 10}K")
    assert cmdline.has(cl.text, "acpi_no_memhotplug")
    assert cmdline.has(cl.text, "elfcorehdr") and not cmdline.has(cl.text, "elfcore")


def test_append_uses_the_spare_bytes_and_no_more() -> None:
    segs = stripped().segments
    setup = bytes(segs[SETUP].buf)
    cl = bootparams.find(segs)
    assert not cmdline.has(cl.text, "acpi_no_memhotplug") and cl.room == 64
    text = cmdline.appended(cl.text, "acpi_no_memhotplug")
    assert text == cl.text + " acpi_no_memhotplug"
    assert bootparams.patched(setup, cl, text) == with_appended(setup, NO_MEMHOTPLUG)
    # 64 bytes more still fit (the NUL goes into the segment's last byte); 65 do not.
    full = bootparams.patched(setup, cl, cl.text + "x" * 64)
    assert len(full) == len(setup) and full[-1] == 0 and full[-2:-1] == b"x"
    with pytest.raises(CmdlineError, match="grow by 65 bytes, but only 64 are free"):
        bootparams.patched(setup, cl, cl.text + "x" * 65)


def test_a_shorter_line_leaves_zeros() -> None:
    segs = image().segments
    setup = bytes(segs[SETUP].buf)
    cl = bootparams.find(segs)
    out = bootparams.patched(setup, cl, "elfcorehdr=1K")
    assert out[:LINE_AT] == setup[:LINE_AT]
    assert out[LINE_AT:] == b"elfcorehdr=1K" + bytes(len(setup) - LINE_AT - 13)


def test_words_as_the_kernel_splits_them() -> None:
    text = 'root=/dev/vda  dyndbg="file x.c +p"\tacpi-no-memhotplug elfcorehdr=5K'
    assert cmdline.words(text) == [
        "root=/dev/vda",
        'dyndbg="file x.c +p"',
        "acpi-no-memhotplug",
        "elfcorehdr=5K",
    ]
    assert cmdline.has(text, "acpi_no_memhotplug")  # '-' and '_' alike (parameqn)
    assert not cmdline.has('a="x acpi_no_memhotplug"', "acpi_no_memhotplug")


def test_appending_refuses_what_would_not_reach_the_kernel() -> None:
    with pytest.raises(CmdlineError, match="arguments to init after '--'"):
        cmdline.appended("elfcorehdr=1K -- single", "acpi_no_memhotplug")
    for bad in ("a b", 'x="y"', "", "a\0b", "x" * 200):
        with pytest.raises(CmdlineError, match="not a plain kernel parameter"):
            cmdline.appended("elfcorehdr=1K", bad)
    assert cmdline.appended("", "elfcorehdr=1K") == "elfcorehdr=1K"


def _setup_with(edit: dict[int, bytes]) -> list[Segment]:
    segs = list(image().segments)
    buf = bytearray(segs[SETUP].buf)
    for at, data in edit.items():
        buf[at : at + len(data)] = data
    segs[SETUP] = replace(segs[SETUP], buf=bytes(buf))
    return segs


def _u32(v: int) -> bytes:
    return struct.pack("<I", v)


MEM = Capture(DATA / "boot").manifest["segments"][SETUP]["mem"]
ODD = {
    "no setup header": ({0x202: b"HdrT"}, "no segment holds x86 boot parameters"),
    "protocol before 2.02": ({0x206: b"\x01\x02"}, "no segment holds x86 boot parameters"),
    "pointer outside": ({0x228: _u32(MEM - 16)}, "no segment holds x86 boot parameters"),
    "high half set": ({0x0C8: _u32(1)}, "no segment holds x86 boot parameters"),
    "no NUL": ({LINE_AT + 125: b"y" * 65}, "has no NUL within its segment"),
    "data after": ({LINE_AT + 180: b"\1"}, "followed by more than zeros"),
    "no elfcorehdr": ({LINE_AT + 106: b"x"}, "has no elfcorehdr="),
    "longer than cmdline_size": ({0x238: _u32(100)}, "more than the kernel's cmdline_size"),
}


@pytest.mark.parametrize("case", sorted(ODD))
def test_odd_boot_parameters_are_errors(case: str) -> None:
    edit, match = ODD[case]
    with pytest.raises(CmdlineError, match=match):
        bootparams.find(_setup_with(edit))


def test_two_segments_with_boot_parameters_are_refused() -> None:
    segs = list(image().segments)
    twin = segs[SETUP]
    segs.append(replace(twin, mem=twin.mem))  # points at itself too
    with pytest.raises(CmdlineError, match="segments 3, 7 all hold boot parameters"):
        bootparams.find(segs)
    with pytest.raises(CmdlineError, match="no segment"):
        bootparams.find([Segment(b"HdrS", 0, 4096)])


def test_room_is_capped_by_cmdline_size() -> None:
    segs = _setup_with({0x238: _u32(130)})  # the line is 125 bytes
    assert bootparams.find(segs).room == 5


# -- the plan and the load ----------------------------------------------------------


@pytest.fixture
def hot(tmp_path: Path) -> Path:
    """The boot capture's root on a host with ACPI memory hotplug."""
    return loaded_root("boot", tmp_path, memory_hotplug=True)


def load(state: Path, root: Path, cap: LoadCapture) -> None:
    loader.load(ARGV, state, root=Root(root), tracer=tracer_for(cap))


def assert_verifies(segs: list[bytes], cap: LoadCapture) -> None:
    """Purgatory's digest is SHA-256 over every other segment as loaded
    (hashlib, as purgatory hashes the regions at panic)."""
    whole = [Segment(b, s.mem, s.memsz) for b, s in zip(segs, cap.segments, strict=True)]
    assert segs[4][DIGEST_AT : DIGEST_AT + 32] == kexec_tools_digest(whole, 4)
    orig = bytes(cap.segments[4].buf)
    assert segs[4][:DIGEST_AT] == orig[:DIGEST_AT]
    assert segs[4][DIGEST_AT + 32 :] == orig[DIGEST_AT + 32 :]


def test_the_plan_appends_acpi_no_memhotplug(hot: Path, tmp_path: Path) -> None:
    cap = stripped()
    state = tmp_path / "state"
    load(state, hot, cap)
    backend = FakeBackend()
    r = fakes.refresh(state, root=Root(hot), backend=backend)
    assert (r.decision.action, r.decision.why) == (Action.RELOAD_HEADER, Why.CMDLINE)
    assert "append acpi_no_memhotplug to the crash kernel's command line" in r.decision.reason
    assert r.cmdline.startswith("appended acpi_no_memhotplug")
    ((entry, flags, segs),) = backend.loads
    assert (entry, flags) == (cap.entry, cap.flags)
    setup = bytes(cap.segments[SETUP].buf)
    assert segs[SETUP] == with_appended(setup, NO_MEMHOTPLUG)
    for i in (0, 1, 2, 5, 6):
        assert segs[i] == bytes(cap.segments[i].buf)  # byte for byte
    assert_verifies(segs, cap)
    snap = open_snapshot(state)
    assert snap.record.words() == ("acpi_no_memhotplug",)
    assert snap.record.info()["digest"] == segs[4][DIGEST_AT : DIGEST_AT + 32].hex()
    Store.verify(snap)  # the segment files are the captured ones still
    # kexecd restarts: the plan made again finds the image current.
    p = plan.make(open_snapshot(state), Root(hot))
    assert p.decision.why is Why.CURRENT and p.in_sync
    assert p.cmdline is not None and p.cmdline.no_memhotplug == "appended"
    assert p.cmdline.text == line_of(setup).decode() + " acpi_no_memhotplug"
    again = fakes.refresh(state, root=Root(hot), backend=backend)
    assert again.decision.action is Action.NOTHING and len(backend.loads) == 1


def test_header_and_command_line_in_one_load(tmp_path: Path) -> None:
    cap = stripped()
    state = tmp_path / "state"
    add = loaded_root("hotadd", tmp_path, memory_hotplug=True)
    load(state, add, cap)
    backend = FakeBackend()
    r = fakes.refresh(state, root=Root(add), backend=backend)
    assert r.decision.why is Why.STALE
    assert r.decision.reason.endswith(
        "append acpi_no_memhotplug to the crash kernel's "
        "command line (this host can hot-add memory)"
    )
    ((_, _, segs),) = backend.loads
    assert segs[5] == Capture(DATA / "hotadd").header
    assert segs[SETUP] == with_appended(bytes(cap.segments[SETUP].buf), NO_MEMHOTPLUG)
    assert_verifies(segs, cap)
    # A later refresh (memory removed) keeps the word, hashing from the state
    # saved before the boot parameters.
    remove = loaded_root("hotremove", tmp_path, memory_hotplug=True)
    r = fakes.refresh(state, root=Root(remove), backend=backend)
    assert r.decision.why is Why.STALE and r.cmdline == ""
    segs = backend.loads[-1][2]
    assert segs[5] == Capture(DATA / "hotremove").header
    assert segs[SETUP] == with_appended(bytes(cap.segments[SETUP].buf), NO_MEMHOTPLUG)
    assert_verifies(segs, cap)


def test_with_the_setting_off_nothing_is_appended(hot: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    load(state, hot, stripped())
    backend = FakeBackend()
    r = fakes.refresh(state, root=Root(hot), backend=backend, acpi_no_memhotplug=False)
    assert r.decision.why is Why.CURRENT and backend.loads == []
    assert r.plan.cmdline is not None and r.plan.cmdline.no_memhotplug == "off"


def test_turned_off_after_it_was_appended(hot: Path, tmp_path: Path) -> None:
    cap = stripped()
    state = tmp_path / "state"
    load(state, hot, cap)
    backend = FakeBackend()
    fakes.refresh(state, root=Root(hot), backend=backend)
    r = fakes.refresh(state, root=Root(hot), backend=backend, acpi_no_memhotplug=False)
    assert r.decision.why is Why.CMDLINE and "drop acpi_no_memhotplug" in r.decision.reason
    segs = backend.loads[-1][2]
    assert segs[SETUP] == bytes(cap.segments[SETUP].buf)  # kexec-tools' own again
    assert_verifies(segs, cap)
    assert open_snapshot(state).record.words() == ()


def test_no_room_loads_nothing(hot: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    load(state, hot, stripped(spare=10))
    backend = FakeBackend()
    r = fakes.refresh(state, root=Root(hot), backend=backend)
    assert r.decision.why is Why.CURRENT and backend.loads == []
    c = r.plan.cmdline
    assert c is not None and c.no_memhotplug == "cannot"
    assert (
        c.problem
        == "the command line would grow by 19 bytes, but only 10 are free after it in its segment"
    )


def test_a_host_that_cannot_hot_add_memory_is_left_alone(tmp_path: Path) -> None:
    root = loaded_root("boot", tmp_path)  # no /sys/firmware/acpi/hotplug/memory
    state = tmp_path / "state"
    load(state, root, stripped())
    backend = FakeBackend()
    r = fakes.refresh(state, root=Root(root), backend=backend)
    assert r.decision.why is Why.CURRENT and backend.loads == []
    assert r.plan.cmdline is not None and r.plan.cmdline.no_memhotplug == "not-needed"


def test_a_line_that_has_it_is_left_alone(hot: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    load(state, hot, image())
    r = fakes.refresh(state, root=Root(hot), backend=FakeBackend())
    assert r.decision.why is Why.CURRENT
    assert r.plan.cmdline is not None and r.plan.cmdline.no_memhotplug == "present"


def test_a_failed_load_rolls_back_to_the_line_loaded(hot: Path, tmp_path: Path) -> None:
    cap = stripped()
    state = tmp_path / "state"
    load(state, hot, cap)
    backend = FakeBackend(fail=1, root=hot)
    with pytest.raises(LoadError, match="previous image was loaded again"):
        fakes.refresh(state, root=Root(hot), backend=backend)
    new, old = backend.loads
    assert new[2][SETUP] == with_appended(bytes(cap.segments[SETUP].buf), NO_MEMHOTPLUG)
    assert old[2] == [bytes(s.buf) for s in cap.segments]  # exactly what kexec-tools loaded
    snap = open_snapshot(state)
    assert snap.record.words() == () and snap.record.intent() is None
    r = fakes.refresh(state, root=Root(hot), backend=FakeBackend(root=hot))
    assert r.decision.why is Why.CMDLINE and r.loaded


def test_an_interrupted_append_is_loaded_again(hot: Path, tmp_path: Path) -> None:
    cap = stripped()
    state = tmp_path / "state"
    load(state, hot, cap)
    snap = open_snapshot(state)
    snap.record.begin(snap.record.header(), ("acpi_no_memhotplug",))  # then killed
    backend = FakeBackend()
    r = fakes.refresh(state, root=Root(hot), backend=backend)
    assert r.decision.why is Why.UNCERTAIN and "append acpi_no_memhotplug" in r.decision.reason
    assert backend.loads[0][2][SETUP] == with_appended(
        bytes(cap.segments[SETUP].buf), NO_MEMHOTPLUG
    )
    assert open_snapshot(state).record.words() == ("acpi_no_memhotplug",)


def test_a_full_reload_is_amended_at_once(tmp_path: Path) -> None:
    # The header outgrew its segment: kexec-tools loads again (its own line),
    # and the word is appended right after, not at the next event.
    cap = stripped()
    small = list(cap.segments)
    small[5] = replace(small[5], memsz=1024)  # hotadd's header needs 2048
    add = loaded_root("hotadd", tmp_path, memory_hotplug=True)
    state = tmp_path / "state"
    load(state, add, replace(cap, segments=tuple(small)))
    tracer = tracer_for(stripped("hotadd"))
    backend = FakeBackend()
    r = fakes.refresh(state, root=Root(add), backend=backend, tracer=tracer)
    assert r.decision.why is Why.TOO_BIG and r.cmdline.startswith("appended acpi_no_memhotplug")
    ((_, _, segs),) = backend.loads  # the append; kexec-tools made the full load
    assert_verifies(segs, stripped("hotadd"))
    assert open_snapshot(state).record.words() == ("acpi_no_memhotplug",)


def test_a_manifest_without_the_state_before_the_boot_parameters(
    hot: Path, tmp_path: Path
) -> None:
    # Written before kexecd amended command lines: the digest is hashed from
    # the first segment, slower, the same.
    cap = stripped()
    state = tmp_path / "state"
    load(state, hot, cap)
    path = state / "snapshot/manifest.json"
    m = json.loads(path.read_text())
    assert m["digest"]["setup"] == SETUP
    del m["digest"]["setup"], m["digest"]["setup_state"]
    path.write_text(json.dumps(m))
    backend = FakeBackend()
    fakes.refresh(state, root=Root(hot), backend=backend)
    assert_verifies(backend.loads[0][2], cap)


@pytest.mark.parametrize("bad", ["acpi_no_memhotplug", ["a b"], [1], ["x"] * 9])
def test_loaded_words_are_checked(hot: Path, tmp_path: Path, bad: object) -> None:
    state = tmp_path / "state"
    load(state, hot, stripped())
    path = state / "snapshot/loaded.json"
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "cmdline_appended": bad}))
    with pytest.raises(SnapshotError, match=r"loaded\.json: cmdline_appended: .*load' again"):
        fakes.refresh(state, root=Root(hot), backend=FakeBackend())


def test_the_state_before_the_boot_parameters_spares_hashing_the_kernel() -> None:
    # What the state saved before the boot parameters buys: the captures'
    # image is 70 MB in memory (the kernel's 64 MB mostly zeros), hashed
    # from the start on every reload without it.
    import time

    from kexecd.image import purgatory

    segs = list(stripped().segments)
    loc = purgatory.locate(segs, 4, 5, setup=SETUP)
    assert loc is not None
    bare = replace(loc, setup=None, setup_state=None)

    def ms(location: purgatory.DigestLocation) -> float:
        t = time.perf_counter()
        purgatory.digest_of(location, segs, 4, 5, [SETUP])
        return (time.perf_counter() - t) * 1000

    assert min(ms(loc) for _ in range(3)) * 10 < min(ms(bare) for _ in range(3))
