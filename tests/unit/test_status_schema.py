# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd status --json`` against docs/status.schema.json: real output, in every
state the fake roots give, validates; the schema refuses what it does not describe."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from kexecd.cli import main
from kexecd.cli.status import SCHEMA, Status
from kexecd.image import loader
from kexecd.loads import KexecCall, LoadCapture
from kexecd.service import udevmask
from kexecd.service.config import Config
from kexecd.service.daemon import Daemon
from kexecd.service.statefile import (
    FORMAT,
    DaemonState,
    ErrorRecord,
    EventRecord,
    LoadTiming,
    UpdateRecord,
)
from kexecd.system.kmsg import Drop
from kexecd.system.root import Root
from testbed.images import NO_MEMHOTPLUG, image, loaded_root
from tests.unit import fakes
from tests.unit.fakes import ARGV, FakeBackend, FakeMonitor, added, tracer_for

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "status.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def status_json(
    capsys: pytest.CaptureFixture[str], state: Path, root: Path, run: Path, *extra: str
) -> tuple[int, dict[str, Any]]:
    args = ["--state-dir", str(state), "--root", str(root), "--runtime-dir", str(run)]
    rc = main(["status", *args, "--json", *extra])
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return rc, out


def _loaded(tmp: Path, name: str = "boot", **kwargs: Any) -> tuple[Path, Path]:
    # A state directory with the boot image loaded, and the capture's root.
    root = loaded_root(name, tmp, **kwargs)
    loader.load(ARGV, tmp / "state", root=Root(root), tracer=tracer_for(image("boot")))
    return tmp / "state", root


def _daemon(tmp: Path, state: Path, root: Path, backend: FakeBackend) -> Daemon:
    cfg = Config(state_dir=state, runtime_dir=tmp / "run", root=root, metrics_dir="")
    return Daemon(cfg, FakeMonitor(), backend=backend)


# Each: set up a state in tmp, return (state dir, root, the exit code expected).
Setup = Callable[[Path], tuple[Path, Path, int]]


def current(tmp: Path) -> tuple[Path, Path, int]:
    return (*_loaded(tmp), 0)


def stale(tmp: Path) -> tuple[Path, Path, int]:
    state, _ = _loaded(tmp)
    return state, loaded_root("hotadd", tmp), 1


def not_loaded(tmp: Path) -> tuple[Path, Path, int]:
    state, root = _loaded(tmp)
    (root / "sys/kernel/kexec_crash_loaded").write_text("0\n")
    return state, root, 3


def no_snapshot(tmp: Path) -> tuple[Path, Path, int]:
    return tmp / "none", loaded_root("boot", tmp), 2


def bad_manifest(tmp: Path) -> tuple[Path, Path, int]:
    state, root = _loaded(tmp)
    (state / "snapshot/manifest.json").write_text("{")
    return state, root, 2


def no_loaded_record(tmp: Path) -> tuple[Path, Path, int]:
    # An error halfway: the image is partly described.
    state, root = _loaded(tmp)
    (state / "snapshot/loaded.json").unlink()
    return state, root, 2


def odd_loaded_record(tmp: Path) -> tuple[Path, Path, int]:
    # loaded.json is kexecd's own, yet status --json keeps its promise on any.
    state, root = _loaded(tmp)
    (state / "snapshot/loaded.json").write_text('{"time": 5, "how": ["kexecd"]}')
    return state, root, 0


def bad_sysfs(tmp: Path) -> tuple[Path, Path, int]:
    # An error before the kernel was read.
    state, root = _loaded(tmp)
    (root / "sys/kernel/kexec_crash_loaded").write_text("yes\n")
    return state, root, 2


def bad_state_json(tmp: Path) -> tuple[Path, Path, int]:
    state, root = _loaded(tmp)
    (tmp / "run").mkdir()
    (tmp / "run/state.json").write_text("[]")
    return state, root, 2


def other_version_state_json(tmp: Path) -> tuple[Path, Path, int]:
    # A package upgrade in progress: the old daemon's state.json, unread.
    state, root = _loaded(tmp)
    (tmp / "run").mkdir()
    (tmp / "run/state.json").write_text('{"format": 2, "pid": 1}')
    return state, root, 0


def daemon_current(tmp: Path) -> tuple[Path, Path, int]:
    # The daemon reloaded after events, then stopped: every record filled;
    # the distro's rule masked.
    state, _ = _loaded(tmp)
    root = loaded_root("hotadd", tmp)
    (root / "lib/udev/rules.d").mkdir(parents=True)
    (root / "lib/udev/rules.d/50-kdump-tools.rules").write_text("\n")
    udevmask.mask(Root(root), tmp / "run", reload=lambda: None)
    daemon = _daemon(tmp, state, root, FakeBackend())
    daemon.on_events([added(32), added(33)])
    daemon.reconcile("events", first_event=daemon.clock() - 0.1)
    daemon.state.stopped = daemon.state.started
    daemon.reconcile("request")
    return state, root, 0


def daemon_failed(tmp: Path) -> tuple[Path, Path, int]:
    # A load failed and was rolled back: the daemon retries, status says stale.
    state, _ = _loaded(tmp)
    root = loaded_root("hotadd", tmp)
    _daemon(tmp, state, root, FakeBackend(fail=1, root=root)).reconcile("start")
    return state, root, 1


def daemon_not_loaded(tmp: Path) -> tuple[Path, Path, int]:
    state, root, _ = not_loaded(tmp)
    _daemon(tmp, state, root, FakeBackend()).reconcile("start")
    return state, root, 3


def kernel_updates(tmp: Path) -> tuple[Path, Path, int]:
    state, root = _loaded(tmp)
    (root / "sys/devices/system/cpu/crash_hotplug").write_text("1\n")
    _daemon(tmp, state, root, FakeBackend()).reconcile("start")
    return state, root, 0


def kernel_dropped(tmp: Path) -> tuple[Path, Path, int]:
    # The kernel logged that it could not build a new header: the daemon's
    # real path counts it and loads a current header itself.
    state, root = _loaded(tmp)
    (root / "sys/devices/system/cpu/crash_hotplug").write_text("1\n")
    backend = FakeBackend()
    daemon = _daemon(tmp, state, root, backend)
    daemon.reconcile("start")
    daemon.on_kernel_log({Drop.NOT_BUILT})
    assert daemon.run_due() is not None and len(backend.loads) == 1
    return state, root, 0


def acpi_appended(tmp: Path) -> tuple[Path, Path, int]:
    root = loaded_root("boot", tmp, memory_hotplug=True)
    cap = image("boot", strip=NO_MEMHOTPLUG, spare=64)
    loader.load(ARGV, tmp / "state", root=Root(root), tracer=tracer_for(cap))
    fakes.refresh(tmp / "state", root=Root(root), backend=FakeBackend())
    return tmp / "state", root, 0


def acpi_cannot(tmp: Path) -> tuple[Path, Path, int]:
    root = loaded_root("boot", tmp, memory_hotplug=True)
    cap = image("boot", strip=NO_MEMHOTPLUG, spare=10)
    loader.load(ARGV, tmp / "state", root=Root(root), tracer=tracer_for(cap))
    return tmp / "state", root, 0


def file_loaded(tmp: Path) -> tuple[Path, Path, int]:
    cap = LoadCapture(
        KexecCall.KEXEC_FILE_LOAD,
        0,
        0,
        0,
        (),
        b"root=/dev/sda1\0",
        1,
        0,
        crash_loads=1,
        unloads=0,
        reboot_loads=0,
    )
    root = loaded_root("boot", tmp, memory_hotplug=True)
    loader.load([*ARGV, "-s"], tmp / "state", root=Root(root), tracer=tracer_for(cap))
    # This host can hot-add memory: the next (whole) reload appends
    # acpi_no_memhotplug to the line the command gives, so it is stale until then.
    return tmp / "state", root, 1


def adopted(tmp: Path) -> tuple[Path, Path, int]:
    # The daemon took over the distro's crash kernel (kdump-tools' kexec_cmd).
    root = loaded_root("boot", tmp)
    cmd = root / "var/crash/kexec_cmd"
    cmd.parent.mkdir(parents=True)
    cmd.write_text("/sbin/kexec -p --initrd=/i.img /vmlinuz\n")
    cfg = Config(state_dir=tmp / "state", runtime_dir=tmp / "run", root=root, metrics_dir="")
    daemon = Daemon(cfg, FakeMonitor(), backend=FakeBackend(), tracer=tracer_for(image("boot")))
    daemon.kexec_cmd = cmd  # as run() finds it
    assert daemon.adopt_if_needed("start") is not None
    return tmp / "state", root, 0


STATES: list[Setup] = [
    current,
    stale,
    not_loaded,
    no_snapshot,
    bad_manifest,
    no_loaded_record,
    odd_loaded_record,
    bad_sysfs,
    bad_state_json,
    other_version_state_json,
    daemon_current,
    daemon_failed,
    daemon_not_loaded,
    kernel_updates,
    kernel_dropped,
    acpi_appended,
    acpi_cannot,
    file_loaded,
    adopted,
]


@pytest.mark.parametrize("setup", STATES, ids=[s.__name__ for s in STATES])
def test_real_output_validates(
    setup: Setup,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    validator: jsonschema.protocols.Validator,
) -> None:
    state, root, expected = setup(tmp_path)
    rc, out = status_json(capsys, state, root, tmp_path / "run")
    assert rc == expected == out["exit_code"]
    assert out["schema"] == SCHEMA == 1
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(out)]
    assert errors == []


def test_the_states_cover_every_field_that_can_be_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every key the schema describes appears, non-null, in some real output:
    # the validation above is not vacuous.
    seen: dict[str, set[str]] = {"": set(), "image": set(), "header": set(), "daemon": set()}
    for i, setup in enumerate(STATES):
        tmp = tmp_path / str(i)
        tmp.mkdir()
        state, root, _ = setup(tmp)
        _, out = status_json(capsys, state, root, tmp / "run")
        seen[""] |= {k for k, v in out.items() if v not in (None, [], {})}
        for part in ("image", "header", "daemon"):
            seen[part] |= {k for k, v in (out[part] or {}).items() if v is not None}
    schema = json.loads(SCHEMA_FILE.read_text())
    assert seen[""] == set(schema["properties"])
    for part in ("image", "header", "daemon"):
        assert seen[part] == set(schema["$defs"][part]["properties"]), part


def test_the_schema_names_every_field_kexecd_has() -> None:
    # A field added to Status or DaemonState fails here until it is documented.
    schema = json.loads(SCHEMA_FILE.read_text())
    defs = schema["$defs"]
    assert set(schema["properties"]) == {"schema"} | {f.name for f in fields(Status)}
    assert set(defs["daemon"]["properties"]) == {"format"} | {f.name for f in fields(DaemonState)}
    assert defs["daemon"]["properties"]["format"] == {"const": FORMAT, **_description(defs)}
    for name, cls in (
        ("event", EventRecord),
        ("update", UpdateRecord),
        ("error", ErrorRecord),
        ("load", LoadTiming),
    ):
        assert set(defs[name]["properties"]) == {f.name for f in fields(cls)}, name
        assert set(defs[name]["required"]) == {f.name for f in fields(cls)}, name
    assert set(schema["required"]) == set(schema["properties"])
    assert set(defs["daemon"]["required"]) == set(defs["daemon"]["properties"])


def _description(defs: dict[str, Any]) -> dict[str, Any]:
    return {"description": defs["daemon"]["properties"]["format"]["description"]}


def test_the_schema_refuses_what_it_does_not_describe(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    validator: jsonschema.protocols.Validator,
) -> None:
    state, root, _ = daemon_current(tmp_path)
    _, good = status_json(capsys, state, root, tmp_path / "run")
    assert validator.is_valid(good)

    def bad(change: Callable[[dict[str, Any]], None]) -> bool:
        out = copy.deepcopy(good)
        change(out)
        return not validator.is_valid(out)

    assert bad(lambda d: d.update(colour="blue"))  # an unknown top-level key
    assert bad(lambda d: d.update(exit_code="0"))  # a wrong type
    assert bad(lambda d: d.update(exit_code=4))
    assert bad(lambda d: d.update(schema=2))
    assert bad(lambda d: d.pop("current"))
    assert bad(lambda d: d["image"].update(size=1))
    assert bad(lambda d: d["image"].pop("kernel"))
    assert bad(lambda d: d["header"].pop("phnum"))
    assert bad(lambda d: d["header"].update(cpus=-1))
    assert bad(lambda d: d["daemon"].update(events=None))
    assert bad(lambda d: d["daemon"].update(format=2))
    assert bad(lambda d: d["daemon"]["last_update"].update(extra=1))
    assert bad(lambda d: d["daemon"].update(started="yesterday"))
    assert bad(lambda d: d.update(acpi_no_memhotplug="maybe"))
    assert bad(lambda d: d.update(masked=["99-other.rules"]))
