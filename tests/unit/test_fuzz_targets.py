# SPDX-License-Identifier: GPL-2.0-or-later
"""The Python fuzz targets (tests/fuzz/targets.py) on their seeds and on
simple mutations of them: a target that breaks, or a finding that comes back,
shows in the unit tier without the fuzzer. scripts/fuzz runs them for real."""

from __future__ import annotations

import os
import random

import pytest

from tests.fuzz.targets import TARGETS, check, fields, join


@pytest.mark.parametrize("name", list(TARGETS))
def test_seeds_go_all_the_way(name: str) -> None:
    # A seed is good input: the target runs to its end without an error, so
    # that mutations start from the deep end.
    target = TARGETS[name]
    seeds = target.seeds()
    assert seeds
    if name == "kdumptools" and os.geteuid() != 0:
        pytest.skip("a kexec_cmd file must be root's")
    for seed in seeds:
        target.run(seed)


@pytest.mark.parametrize("name", list(TARGETS))
def test_mutated_seeds_keep_the_contract(name: str) -> None:
    target = TARGETS[name]
    rnd = random.Random(name)
    for seed in target.seeds():
        for n in range(0, len(seed), max(1, len(seed) // 32)):
            check(target, seed[:n])
        for _ in range(100):
            b = bytearray(seed)
            for _ in range(rnd.randint(1, 8)):
                b[rnd.randrange(len(b))] = rnd.choice([0, 0x2D, 0x30, 0x39, 0x66, 0xFF, 0x7F])
            check(target, bytes(b))


def test_only_allowed_errors_pass() -> None:
    snapshot = TARGETS["snapshot"]
    check(snapshot, b"[]")  # a SnapshotError: allowed
    with pytest.raises(ZeroDivisionError):  # anything else is a finding

        def boom(data: bytes) -> None:
            raise ZeroDivisionError

        check(type(snapshot)("boom", boom, snapshot.seeds), b"")


def test_fields_round_trip() -> None:
    parts: list[bytes | None] = [b"0-3\n", None, b"", b"a\0b"]
    assert fields(join(parts), 4) == parts
    assert fields(b"x", 3) == [b"x", None, None]
