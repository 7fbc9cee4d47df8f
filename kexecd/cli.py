# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``kexecd`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kexecd import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kexecd",
        description="Keep the kdump crash kernel's ELF core header current across hotplug.",
    )
    parser.add_argument("--version", action="version", version=f"kexecd {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kexecd`` command line; return its exit code."""
    parser = _parser()
    parser.parse_args(argv)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
