# SPDX-License-Identifier: GPL-2.0-or-later
"""cffi build script: compiles csrc/ into the extension module ``kexecd._core``.

The cdef below mirrors ``csrc/kexecd_core.h``; keep the two in step.
"""

from cffi import FFI

_SOURCES = ["trace.c"]

CDEF = """
#define KEXECD_MAX_SEGMENTS 16

enum kexecd_syscall {
    KEXECD_SYS_NONE = 0,
    KEXECD_SYS_KEXEC_LOAD = 1,
    KEXECD_SYS_KEXEC_FILE_LOAD = 2,
};

enum kexecd_trace_mode {
    KEXECD_TRACE_PASS = 0,
    KEXECD_TRACE_SKIP = 1,
};

struct kexecd_segment {
    uint8_t *buf;
    uint64_t bufsz;
    uint64_t mem;
    uint64_t memsz;
};

struct kexecd_load {
    int syscall;
    int64_t result;
    uint64_t entry;
    uint64_t flags;
    uint32_t nr_segments;
    struct kexecd_segment segments[16];
    char *cmdline;
    uint64_t cmdline_len;
    int calls;
};

int kexecd_trace_run(const char *const *argv, int mode, struct kexecd_load *ret,
                     int *status_ret);
void kexecd_load_deinit(struct kexecd_load *load);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "kexecd._core",
    '#include "kexecd_core.h"',
    # Relative to setup.py, where pip runs the build.
    sources=[f"csrc/{name}" for name in _SOURCES],
    include_dirs=["csrc"],
    extra_compile_args=["-std=gnu11", "-Wall", "-Wextra", "-Werror"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
