# SPDX-License-Identifier: GPL-2.0-or-later
"""cffi build script: compiles csrc/ into the extension module ``kexecd._core``.

The cdef is ``csrc/kexecd_core.h`` itself, less its preprocessor lines, so the
two cannot drift apart.
"""

import re
from pathlib import Path

from cffi import FFI

_CSRC = Path(__file__).resolve().parent.parent / "csrc"
_SOURCES = [
    "trace.c",
    "arch.c",
    "ranges.c",
    "iomem.c",
    "elfcore.c",
    "sha256.c",
    "kexec.c",
    "watch.c",
]
# Compiled through arch.c (the one the compiler targets), or included.
_DEPENDS = ["arch_x86_64.c", "arch_aarch64.c", "arch.h", "kexecd_core.h", "pytext.h"]


def cdef_from_header(text: str) -> str:
    """The cdef: kexecd_core.h without its preprocessor lines but integer #defines."""
    lines = []
    for line in text.splitlines():
        if line.startswith("#"):
            if re.match(r"#define \w+ \d+\s*(//.*)?$", line):
                lines.append(line.split("//")[0])
            continue
        lines.append(line)
    return "\n".join(lines)


ffibuilder = FFI()
ffibuilder.cdef(cdef_from_header((_CSRC / "kexecd_core.h").read_text()))
ffibuilder.set_source(
    "kexecd._core",
    '#include "kexecd_core.h"',
    # Relative to setup.py, where pip runs the build.
    sources=[f"csrc/{name}" for name in _SOURCES],
    depends=[f"csrc/{name}" for name in _DEPENDS],
    include_dirs=["csrc"],
    extra_compile_args=["-std=gnu11", "-Wall", "-Wextra", "-Werror"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
