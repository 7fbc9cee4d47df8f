# SPDX-License-Identifier: GPL-2.0-or-later
"""decide() from hand-built facts: every rule, no fake root, no snapshot."""

from __future__ import annotations

from typing import Any

import pytest

from kexecd.image.cmdline import NO_MEMHOTPLUG, Amendment
from kexecd.image.decide import Action, Drop, Facts, Request, Why, decide

H = b"\x7fELF" + bytes(60)  # a header; only its bytes and size matter here
H2 = b"\x7fELF" + bytes(59) + b"\1"
BIG = bytes(20000)
APPEND = Amendment(None, (), (NO_MEMHOTPLUG,), True, True)
# A kexec_load image with a hashed header in a 16 KiB segment, loaded and current.
OK: dict[str, Any] = {
    "crash_loaded": True,
    "kernel_updates": False,
    "header_memsz": 16384,
    "loaded": H,
    "wanted": H,
    "digest": True,
    "header_hashed": True,
    "movable": True,
}
HOLE = (0x30000000, 32768)

# (facts that differ from OK, the request, the action, the rule)
TABLE: list[tuple[dict[str, Any], Request, Action, Why]] = [
    ({}, Request(), Action.NOTHING, Why.CURRENT),
    ({"crash_loaded": False}, Request(), Action.NOTHING, Why.NOT_LOADED),
    ({"kernel_updates": True}, Request(), Action.STAND_ASIDE, Why.KERNEL_UPDATES),
    (
        {"kernel_updates": True},
        Request(kernel_missed=Drop.LOCK_BUSY),
        Action.RELOAD_HEADER,
        Why.KERNEL_MISSED,
    ),
    (  # the kernel could not build one: kexecd builds it (its segment holds it)
        {"kernel_updates": True},
        Request(kernel_missed=Drop.NOT_BUILT),
        Action.RELOAD_HEADER,
        Why.KERNEL_MISSED,
    ),
    (  # the kernel's header outgrew a --hotplug image's segment: whole, not moved
        {"kernel_updates": True, "header_hashed": False, "movable": False, "move": None},
        Request(kernel_missed=Drop.TOO_LARGE),
        Action.FULL_RELOAD,
        Why.KERNEL_MISSED,
    ),
    *(
        (
            {"kernel_updates": True, "file_load": True, "loaded": None, "wanted": None},
            Request(kernel_missed=drop),
            Action.FULL_RELOAD,
            Why.KERNEL_MISSED,
        )
        for drop in Drop
    ),
    (
        {"file_load": True, "loaded": None, "wanted": None},
        Request(),
        Action.FULL_RELOAD,
        Why.FILE_LOAD,
    ),
    (
        {"header_memsz": None, "loaded": None, "wanted": None},
        Request(),
        Action.FULL_RELOAD,
        Why.NO_HEADER,
    ),
    ({"wanted": H2, "uncertain": True}, Request(), Action.RELOAD_HEADER, Why.UNCERTAIN),
    ({"uncertain": True}, Request(), Action.RELOAD_HEADER, Why.UNCERTAIN),
    ({"wanted": H2}, Request(), Action.RELOAD_HEADER, Why.STALE),
    ({"cmdline": APPEND}, Request(), Action.RELOAD_HEADER, Why.CMDLINE),
    ({"wanted": H2, "digest": False}, Request(), Action.FULL_RELOAD, Why.NO_DIGEST),
    ({"wanted": BIG, "move": HOLE}, Request(), Action.RELOCATE, Why.TOO_BIG),
    ({"wanted": BIG, "move": None}, Request(), Action.FULL_RELOAD, Why.TOO_BIG),
    ({"wanted": BIG, "move": HOLE, "movable": False}, Request(), Action.FULL_RELOAD, Why.TOO_BIG),
    ({"move": HOLE}, Request(grow=1000), Action.RELOCATE, Why.GROW),
    ({"move": HOLE}, Request(grow=100), Action.NOTHING, Why.CURRENT),  # room for 291 already
    ({"move": None}, Request(grow=1000), Action.NOTHING, Why.CURRENT),  # no hole: status says so
    ({"crash_loaded": True}, Request(reload_unloaded=True), Action.NOTHING, Why.CURRENT),
]


@pytest.mark.parametrize(("changes", "request_", "action", "why"), TABLE)
def test_every_rule(changes: dict[str, Any], request_: Request, action: Action, why: Why) -> None:
    d = decide(Facts(**{**OK, **changes}), request_)
    assert (d.action, d.why) == (action, why), d.reason


def test_every_why_has_a_row() -> None:
    assert {why for *_, why in TABLE} == set(Why)


def test_reasons_say_what_is_done() -> None:
    for drop, said in (
        (Drop.LOCK_BUSY, "(kexec_trylock() failed): load a current one"),
        (Drop.NOT_BUILT, "(it could not build a new header): load a current one"),
        (Drop.TOO_LARGE, "(its new header was larger than the header segment): load the image"),
    ):
        reason = decide(
            Facts(**{**OK, "kernel_updates": True}), Request(kernel_missed=drop)
        ).reason
        assert said in reason, reason
    assert "purgatory's digest" in decide(Facts(**{**OK, "wanted": H2})).reason
    unhashed = decide(Facts(**{**OK, "wanted": H2, "header_hashed": False}))
    assert unhashed.action is Action.RELOAD_HEADER and "not hashed by purgatory" in unhashed.reason
    grown = decide(Facts(**{**OK, "move": HOLE}), Request(grow=1000))
    assert "room for 291 to 584 program headers" in grown.reason
    assert "0x30000000" in grown.reason
