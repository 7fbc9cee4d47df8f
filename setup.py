# SPDX-License-Identifier: GPL-2.0-or-later
# setuptools' cffi_modules hook is the one piece pyproject.toml cannot express:
# it compiles csrc/ into the out-of-line API extension kexecd._core.
#
# The license is here too. Debian 12's setuptools (66, which builds the .deb)
# rejects pyproject's SPDX string form (license = "...", setuptools 77+), and
# setuptools 77+ deprecates the table form that 66 takes; a setup() argument
# means the same to both.
from setuptools import setup

setup(
    cffi_modules=["kexecd/_build_core.py:ffibuilder"],
    license="GPL-2.0-or-later",
)
