# SPDX-License-Identifier: GPL-2.0-or-later
"""Run a Python fuzz target under atheris (libFuzzer), or write its seeds.

    python -m tests.fuzz.run list
    python -m tests.fuzz.run seeds TARGET DIR
    python -m tests.fuzz.run fuzz TARGET [--seeds DIR] [libFuzzer flags] [CORPUS_DIR ...]
    python -m tests.fuzz.run fuzz TARGET CRASH_FILE      (replays one input)

``--seeds DIR`` writes the target's seeds into DIR first (pass DIR as a
corpus directory too). scripts/fuzz drives this for every target; see
tests/fuzz/targets.py for what each one checks.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path


def write_seeds(name: str, out: Path) -> None:
    from tests.fuzz.targets import TARGETS

    out.mkdir(parents=True, exist_ok=True)
    for seed in TARGETS[name].seeds():
        (out / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


def fuzz(name: str, args: list[str]) -> None:
    import atheris

    # Coverage of kexecd and of what parses for it (pyelftools, json).
    with atheris.instrument_imports(include=["kexecd", "elftools", "json"]):
        from tests.fuzz.targets import TARGETS, check, guard_kexec
    guard_kexec()
    target = TARGETS[name]
    if args[:1] == ["--seeds"]:
        write_seeds(name, Path(args[1]))
        args = args[2:]
    else:
        target.seeds()  # what they make once (a state directory), made before fuzzing

    def one(data: bytes) -> None:
        check(target, data)

    atheris.Setup([sys.argv[0], *args], one)
    atheris.Fuzz()


def main(argv: list[str]) -> int:
    if argv[:1] == ["list"]:
        from tests.fuzz.targets import TARGETS

        print(" ".join(TARGETS))
        return 0
    if argv[:1] == ["seeds"] and len(argv) == 3:
        from tests.fuzz.targets import guard_kexec

        guard_kexec()
        write_seeds(argv[1], Path(argv[2]))
        return 0
    if argv[:1] == ["fuzz"] and len(argv) >= 2:
        fuzz(argv[1], argv[2:])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
