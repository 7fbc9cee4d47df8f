# SPDX-License-Identifier: GPL-2.0-or-later
"""cffi build script: compiles csrc/ into the extension module ``kexecd._core``.

The cdef below mirrors ``csrc/kexecd_core.h``; keep the two in step.
"""

from cffi import FFI

_SOURCES = ["trace.c", "ranges.c", "elfcore.c"]

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

enum kexecd_range_type {
    KEXECD_RANGE_RAM = 0,
    KEXECD_RANGE_RESERVED = 1,
    KEXECD_RANGE_ACPI = 2,
    KEXECD_RANGE_ACPI_NVS = 3,
    KEXECD_RANGE_PMEM = 6,
    KEXECD_RANGE_PRAM = 11,
};

struct kexecd_range {
    uint64_t start;
    uint64_t end;
    int type;
};

int kexecd_ranges_exclude(struct kexecd_range *ranges, uint32_t *nr, uint32_t cap,
                          uint64_t start, uint64_t end);
int kexecd_ranges_normalize(struct kexecd_range *ranges, uint32_t *nr);
int kexecd_ranges_subtract(const struct kexecd_range *a, uint32_t nr_a,
                           const struct kexecd_range *b, uint32_t nr_b,
                           struct kexecd_range *ret, uint32_t cap, uint32_t *nr_ret);

struct kexecd_note {
    uint64_t addr;
    uint64_t size;
};

struct kexecd_header_spec {
    uint16_t machine;
    uint32_t nr_cpus_conf;
    const struct kexecd_note *cpu_notes;
    uint32_t nr_cpu_notes;
    int has_vmcoreinfo;
    struct kexecd_note vmcoreinfo;
    int has_kernel;
    uint64_t kernel_paddr;
    uint64_t kernel_vaddr;
    uint64_t kernel_size;
    const struct kexecd_range *ranges;
    uint32_t nr_ranges;
    uint64_t page_offset;
    uint64_t backup_src_start;
    uint64_t backup_src_size;
    uint64_t backup_start;
    uint32_t align;
};

int kexecd_elfcore_size(const struct kexecd_header_spec *spec, uint64_t *size_ret);
int kexecd_elfcore_build(const struct kexecd_header_spec *spec, uint8_t *buf, uint64_t cap,
                         uint64_t *len_ret);

struct kexecd_phdr {
    uint32_t type;
    uint32_t flags;
    uint64_t offset;
    uint64_t vaddr;
    uint64_t paddr;
    uint64_t filesz;
    uint64_t memsz;
    uint64_t align;
};

int kexecd_elfcore_parse(const uint8_t *buf, uint64_t len, struct kexecd_phdr *phdrs,
                         uint32_t cap, uint32_t *nr_ret, uint16_t *machine_ret);
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
