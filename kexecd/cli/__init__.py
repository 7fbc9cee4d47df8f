# SPDX-License-Identifier: GPL-2.0-or-later
"""The command line: ``kexecd load|refresh|run|status|inspect``."""

from kexecd.cli.main import main

__all__ = ["main"]
