# SPDX-License-Identifier: GPL-2.0-or-later
"""``python -m tests.unit.guarded_cli ARGS``: kexecd's command line in a child
process with the kernel's kexec_load and the tracer's pass mode out of reach
(the unit tier's guard, conftest.py's), for tests that need a real process:
the interpreter's own flush of stdout at exit."""

from __future__ import annotations

import sys

from kexecd import core
from kexecd.cli import main
from tests.unit.conftest import _GuardedLib

core.lib = _GuardedLib(core.lib)  # type: ignore[assignment]
sys.exit(main(sys.argv[1:]))
