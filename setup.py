# SPDX-License-Identifier: GPL-2.0-or-later
# setuptools' cffi_modules hook is the one piece pyproject.toml cannot express:
# it compiles csrc/ into the out-of-line API extension kexecd._core.
from setuptools import setup

setup(cffi_modules=["kexecd/_build_core.py:ffibuilder"])
