# SPDX-License-Identifier: GPL-2.0-or-later
"""The package build's own check, run by dh_auto_test with the system's python3.

Needs nothing but what was just built and the ground-truth captures in
tests/data (no pytest, nothing from PyPI): the C core is the one in the build
directory, it rebuilds byte for byte the headers kexec-tools loaded (fresh,
and from another capture's header as template), and the command line starts.

Usage: PYTHONPATH=BUILD_DIR python3 debian/build-check.py tests/data
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from kexecd import _core, core
from kexecd.arch import of_machine
from kexecd.image import elfcore
from kexecd.system.kexectools import rules_for
from kexecd.system.root import Root
from kexecd.system.state import read_system

CAPTURES = ("boot", "hotadd", "hotremove")


def header_and_backup(capture: Path) -> tuple[bytes, int]:
    """The elfcorehdr segment of a capture, and where the backup segment went."""
    load = capture / "load"
    segments = json.loads((load / "manifest.json").read_text())["segments"]
    header = b""
    for seg in segments:
        data = (load / seg["file"]).read_bytes() if seg["file"] else b""
        if data[:4] == b"\x7fELF" and data[16] == 4:  # ET_CORE
            header = data
    (backup,) = [s["mem"] for s in segments if s["zero"] and s["bufsz"] > 4096]
    return header, backup


def main() -> None:
    data = Path(sys.argv[1])
    build_dir = Path(os.environ["PYTHONPATH"]).resolve()
    assert Path(_core.__file__).resolve().is_relative_to(build_dir), _core.__file__
    headers = {name: header_and_backup(data / name) for name in CAPTURES}
    for name, (header, backup) in headers.items():
        # The captures are x86_64's: read by its rules whatever the build
        # machine (the arm64 package is built on arm64).
        arch = of_machine(elfcore.parse(header, name).machine)
        state = read_system(Root(data / name / "root"), rules=rules_for(None, arch))
        assert elfcore.build(elfcore.spec_fresh(state, backup)) == header, name
        template = elfcore.parse(headers["boot"][0])
        assert elfcore.build(elfcore.spec_from_template(template, state)) == header, name
    sha = core.Sha256()
    sha.update(b"abc")
    assert sha.digest().hex().startswith("ba7816bf"), "SHA-256 of 'abc'"
    # From the build directory: -m puts the working directory first on sys.path.
    p = subprocess.run(
        [sys.executable, "-m", "kexecd.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=build_dir,
    )
    out = p.stdout.strip()
    assert p.returncode == 0 and out.startswith("kexecd "), (p.returncode, p.stderr)
    print(f"build-check: {_core.__file__}: {len(CAPTURES)} captures rebuilt byte for byte; {out}")


if __name__ == "__main__":
    main()
