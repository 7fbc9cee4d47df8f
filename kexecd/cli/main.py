# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``kexecd`` command line's entry point.

Start-up is most of a short command: ``kexecd status`` asks the running
daemon first (:mod:`kexecd.cli.quick`), before anything else is imported;
the parser and the commands (:mod:`kexecd.cli.dispatch`) come after.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["CLOSED_PIPE", "main"]

# 128 + SIGPIPE: the exit code a shell reports for a closed pipe.
CLOSED_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kexecd`` command line; return its exit code.

    A reader that went away (``kexecd status | head -1``) is met here, for
    every command and every line it prints: the output is flushed before
    the exit code is returned (or argparse's exit is let through), so a
    closed pipe shows up inside this ``try``, never in the interpreter's
    flush at exit. Then, as the Python documentation advises for
    ``BrokenPipeError``, stdout points at ``/dev/null`` and the exit code
    is 141, what a shell reports of a command that SIGPIPE ended (``yes |
    head -1``): what it did (a load, a record) stands, its output does not.
    """
    try:
        try:
            return _main(sys.argv[1:] if argv is None else list(argv))
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return CLOSED_PIPE


def _main(given: list[str]) -> int:
    if given[:1] == ["status"] and os.geteuid() == 0:
        from kexecd.cli import quick  # the daemon's answer, when one runs

        rc = quick.run(given[1:])
        if rc is not None:
            return rc
    from kexecd.cli import dispatch

    return dispatch.run(given)
