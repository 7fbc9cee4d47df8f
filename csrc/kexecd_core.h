// SPDX-License-Identifier: GPL-2.0-or-later
/**
 * kexecd_core.h - the whole API of kexecd's C core.
 *
 * This header IS the cffi cdef of kexecd._core (kexecd/_build_core.py reads it
 * and drops its preprocessor lines but `#define NAME <integer>`), so it must
 * stay parsable by cffi's cdef: plain C types and integer #defines only, no
 * macro or type from another header inside a declaration.
 *
 * Every function returns 0 or a negative errno. Out parameters come last and
 * are named ret.
 */
#ifndef KEXECD_CORE_H
#define KEXECD_CORE_H

#include <stddef.h>
#include <stdint.h>

// include/uapi/linux/kexec.h KEXEC_SEGMENT_MAX: at most 16 segments per load
// (trace.c asserts the two agree).
#define KEXECD_MAX_SEGMENTS 16
// The largest executable kexecd_trace_run() reads (64 MiB).
#define KEXECD_MAX_PROGRAM 67108864

/** Which syscall the traced program made. */
enum kexecd_syscall {
	KEXECD_SYS_NONE = 0,
	KEXECD_SYS_KEXEC_LOAD = 1,
	KEXECD_SYS_KEXEC_FILE_LOAD = 2,
};

/** What the tracer does with the traced kexec syscall. */
enum kexecd_trace_mode {
	/** Let the syscall run; the kernel loads the image. */
	KEXECD_TRACE_PASS = 0,
	/** Skip the syscall and make it return 0 (nothing is loaded). */
	KEXECD_TRACE_SKIP = 1,
};

/** One kexec_load(2) segment, with a private copy of its buffer. */
struct kexecd_segment {
	uint8_t *buf;
	uint64_t bufsz;
	uint64_t mem;
	uint64_t memsz;
};

/**
 * struct kexecd_load - what a traced process tree did with kexec.
 *
 * The fields up to cmdline_len are the arguments of the last crash load any
 * process or thread of the tree made, told from the call's flags: kexec_load
 * with KEXEC_ON_CRASH and at least one segment, or kexec_file_load with
 * KEXEC_FILE_ON_CRASH and without KEXEC_FILE_UNLOAD. With no crash load,
 * syscall is KEXECD_SYS_NONE and they are all zero. The counters cover every
 * kexec call of the tree: calls == crash_loads + unloads + reboot_loads.
 */
struct kexecd_load {
	int syscall;		// enum kexecd_syscall
	int64_t result;		// the crash load's return value: 0 or -errno. Skip
				// mode: 0. Pass mode: -EINPROGRESS if its caller
				// died before the call returned.
	uint64_t entry;		// kexec_load only
	uint64_t flags;
	uint32_t nr_segments;	// kexec_load only
	struct kexecd_segment segments[KEXECD_MAX_SEGMENTS];
	// kexec_file_load only
	char *cmdline;
	uint64_t cmdline_len;
	// The executable of the process that made the crash load, read from
	// /proc/PID/exe at the call (NULL when it could not be read or is
	// larger than KEXECD_MAX_PROGRAM): which kexec-tools built the image.
	uint8_t *program;
	uint64_t program_len;
	int calls;		// every kexec syscall the tree made
	int crash_loads;	// loads of a crash kernel (kexec -p); the last is above
	int unloads;		// kexec_load with no segment, kexec_file_load with
				// KEXEC_FILE_UNLOAD: of the crash kernel or the other
	int reboot_loads;	// loads without the crash flag (kexec -l): the
				// kernel a kexec reboot boots; passed, not recorded
};

/**
 * kexecd_trace_run() - run a program and capture the kexec syscalls of its
 *	whole process tree.
 * @argv: NULL-terminated argument vector; argv[0] is looked up in PATH.
 * @mode: enum kexecd_trace_mode, for every kexec call of the tree.
 * @ret: zeroed, then filled with the last crash load and the counters.
 *	Free its buffers with kexecd_load_deinit(), on error too.
 * @status_ret: the wait status of the program (the top process).
 *
 * The program runs under ptrace with a seccomp filter that stops it only at
 * kexec_load and kexec_file_load, so every other syscall runs at full speed.
 * Its descendants and threads are traced too, until the program exits: then
 * those still running are detached, not waited for, and a kexec call they
 * make afterwards fails with ENOSYS (the filter stays, the tracer is gone).
 * Return: 0, or -errno when the program could not be traced; then it and
 * its descendants were killed.
 */
int kexecd_trace_run(const char *const *argv, int mode, struct kexecd_load *ret,
		     int *status_ret);

/** kexecd_load_deinit() - free the buffers of a struct kexecd_load. */
void kexecd_load_deinit(struct kexecd_load *load);

// ---------------------------------------------------------------------------
// Memory ranges (ranges.c). Inclusive ends, as kexec-tools and /proc/iomem
// have them: [start, end].

/** The kinds of memory range kexec-tools collects (kexec/kexec.h RANGE_*). */
enum kexecd_range_type {
	KEXECD_RANGE_RAM = 0,
	KEXECD_RANGE_RESERVED = 1,
	KEXECD_RANGE_ACPI = 2,
	KEXECD_RANGE_ACPI_NVS = 3,
	KEXECD_RANGE_PMEM = 6,
	KEXECD_RANGE_PRAM = 11,
};

/** One memory range. */
struct kexecd_range {
	uint64_t start;
	uint64_t end;	// inclusive
	int type;	// enum kexecd_range_type
};

/**
 * kexecd_ranges_exclude() - cut [start, end] out of every range, as
 * kexec-tools' exclude_region() does.
 * @ranges: the list, in order; @cap: its capacity; @nr: its length, updated.
 *
 * A range that holds the region strictly inside is split in two; the upper
 * half is inserted after it with type RAM (kexec-tools hard-codes that). A
 * range that starts or ends with the region is trimmed. Only one split is
 * made per call, like kexec-tools.
 * Return: 0, -ENOSPC when a split does not fit, -EINVAL if start > end.
 */
int kexecd_ranges_exclude(struct kexecd_range *ranges, uint32_t *nr, uint32_t cap,
			  uint64_t start, uint64_t end);

/**
 * kexecd_ranges_normalize() - sort by start and merge overlapping or
 * adjacent ranges, in place. Types are ignored (the result is all RAM).
 * Return: 0; *nr is the new length.
 */
int kexecd_ranges_normalize(struct kexecd_range *ranges, uint32_t *nr);

/**
 * kexecd_ranges_subtract() - the set difference a \ b of two normalized
 * lists, into @ret (capacity @cap).
 * Return: 0, or -ENOSPC when @ret is too small; *nr_ret is its length.
 */
int kexecd_ranges_subtract(const struct kexecd_range *a, uint32_t nr_a,
			   const struct kexecd_range *b, uint32_t nr_b,
			   struct kexecd_range *ret, uint32_t cap, uint32_t *nr_ret);

// ---------------------------------------------------------------------------
// /proc/iomem (iomem.c): its lines, and the ranges kexec-tools' crashdump code
// collects from them. Lines end where Python's str.splitlines() ends them (so
// that line numbers agree with the text as Python reads it); a line is
// "start-end : name", indented two spaces per level, hex addresses.

// The most "Crash kernel" ranges any architecture keeps (x86: 8, arm64: 2).
#define KEXECD_MAX_CRASH_RESERVED 16

/** What is wrong with an /proc/iomem text. */
enum kexecd_iomem_fault {
	KEXECD_IOMEM_OK = 0,
	KEXECD_IOMEM_MALFORMED = 1,	// a line is not "start-end : name"
	KEXECD_IOMEM_PAST_64 = 2,	// an end address past 64 bits
	KEXECD_IOMEM_BACKWARDS = 3,	// a range ends before it starts
	KEXECD_IOMEM_EMPTY = 4,		// no line at all
	KEXECD_IOMEM_ZEROS = 5,		// every address zero (what non-root users see)
	KEXECD_IOMEM_TOO_MANY = 6,	// a cut would make more than max_ranges
};

/** Where an /proc/iomem text went wrong, for the caller's message. */
struct kexecd_iomem_error {
	int fault;		// enum kexecd_iomem_fault
	uint32_t line;		// 1-based, for the faults of one line
	uint64_t line_off;	// the line's bytes in the text
	uint64_t line_len;
	int cut;		// KEXECD_IOMEM_TOO_MANY: -1 "Crash kernel", else a
				// skipped name's index in the rules
	uint64_t cut_start;
	uint64_t cut_end;
};

/** One /proc/iomem line; its name is text[name_off, name_off + name_len). */
struct kexecd_resource {
	uint64_t start;
	uint64_t end;	// inclusive
	uint64_t name_off;
	uint64_t name_len;
	uint32_t depth;	// the indent, in levels of two spaces
};

/**
 * kexecd_iomem_parse() - every line of an /proc/iomem text.
 * @ret: filled with up to @cap lines (blank ones skipped).
 * @err_ret: the fault, when the return is -EBADMSG.
 * Return: 0; -EBADMSG for a malformed, empty or all-zero text; -ENOSPC when
 *	@cap is too small.
 */
int kexecd_iomem_parse(const uint8_t *text, uint64_t len, struct kexecd_resource *ret,
		       uint32_t cap, uint32_t *nr_ret, struct kexecd_iomem_error *err_ret);

/** How one kexec-tools version on one architecture collects ranges. */
struct kexecd_iomem_rules {
	int ram_exact;			// RAM is "System RAM" exactly, else any name holding it
	uint32_t max_ranges;		// it stops collecting silently at this many
	uint32_t max_crash_reserved;	// the "Crash kernel" ranges it keeps
	int sort_ranges;		// arm64: mem_regions_exclude(), then sorted by start
	const char *const *type_names;	// the names it collects besides RAM ...
	const int *types;		// ... as these enum kexecd_range_type
	uint32_t nr_types;
	const char *const *skipped;	// names cut out like "Crash kernel" (x86: GART)
	uint32_t nr_skipped;
};

/** The ranges kexec-tools collects for a crash kernel's ELF core header. */
struct kexecd_crash_ranges {
	struct kexecd_range *ranges;	// heap; kexecd_crash_ranges_deinit() frees it
	uint32_t nr_ranges;
	struct kexecd_range reserved[KEXECD_MAX_CRASH_RESERVED];	// "Crash kernel"
	uint32_t nr_reserved;
	struct kexecd_iomem_error error;
};

/**
 * kexecd_iomem_collect() - parse an /proc/iomem text and collect its crash
 * ranges as kexec-tools does (x86 crashdump-x86.c get_crash_memory_ranges(),
 * arm64 crashdump-arm64.c with mem_regions_exclude()).
 *
 * Every line, nested or not, whose name is RAM or one of @rules' types is
 * collected in file order up to max_ranges; then each "Crash kernel" range
 * (and the last range of each skipped name) is cut out.
 * Return: 0; -EBADMSG (a fault of the text) or -ENOSPC (a cut past
 *	max_ranges) with @ret->error set; -EINVAL for bad @rules; -ENOMEM.
 *	Free @ret with kexecd_crash_ranges_deinit(), on error too.
 */
int kexecd_iomem_collect(const uint8_t *text, uint64_t len, const struct kexecd_iomem_rules *rules,
			 struct kexecd_crash_ranges *ret);

/** kexecd_crash_ranges_deinit() - free what kexecd_iomem_collect() allocated. */
void kexecd_crash_ranges_deinit(struct kexecd_crash_ranges *cr);

// ---------------------------------------------------------------------------
// ELF64 core headers (elfcore.c), as kexec-tools' crash_create_elf64_headers()
// lays them out.

/** A note's physical address and size. */
struct kexecd_note {
	uint64_t addr;
	uint64_t size;
};

/** Everything an ELF core header is made of. */
struct kexecd_header_spec {
	uint16_t machine;		// e_machine (EM_X86_64 = 62)
	uint32_t nr_cpus_conf;		// sysconf(_SC_NPROCESSORS_CONF): sizes the buffer
	const struct kexecd_note *cpu_notes;	// one PT_NOTE each, in order
	uint32_t nr_cpu_notes;
	int has_vmcoreinfo;
	struct kexecd_note vmcoreinfo;
	int has_kernel;			// the kernel text PT_LOAD
	uint64_t kernel_paddr;
	uint64_t kernel_vaddr;
	uint64_t kernel_size;
	const struct kexecd_range *ranges;	// every collected range; RAM ones become PT_LOADs
	uint32_t nr_ranges;
	uint64_t page_offset;		// p_vaddr = p_paddr + page_offset
	uint64_t backup_src_start;	// the RAM range whose data purgatory copies ...
	uint64_t backup_src_size;
	uint64_t backup_start;		// ... here, so its p_offset points here
	uint32_t align;			// the buffer is a multiple of this (1024)
};

/**
 * kexecd_elfcore_size() - the buffer size kexec-tools allocates for @spec:
 * 64 + 56 * (nr_cpus_conf + has_vmcoreinfo + nr_ranges + has_kernel),
 * rounded up to align.
 * Return: 0 or -EINVAL (align not a multiple of 1024).
 */
int kexecd_elfcore_size(const struct kexecd_header_spec *spec, uint64_t *size_ret);

/**
 * kexecd_elfcore_build() - write the ELF core header for @spec into @buf.
 * @cap: the capacity of @buf. Nothing is written past it.
 * @len_ret: the bytes written: kexecd_elfcore_size(), zero-padded.
 * Return: 0, -ENOSPC if @cap is too small, -EINVAL for a bad spec.
 */
int kexecd_elfcore_build(const struct kexecd_header_spec *spec, uint8_t *buf, uint64_t cap,
			 uint64_t *len_ret);

/** One program header, as read back. */
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

/**
 * kexecd_elfcore_parse() - read the program headers of an ELF64 core header.
 * @phdrs: filled with up to @cap headers; @nr_ret: how many the file has.
 * @machine_ret: e_machine.
 * Return: 0; -EBADMSG when @buf is not a little-endian ELF64 ET_CORE file with
 * 56-byte program headers inside @len; -ENOSPC when @cap is too small
 * (*nr_ret still tells how many are needed).
 */
int kexecd_elfcore_parse(const uint8_t *buf, uint64_t len, struct kexecd_phdr *phdrs,
			 uint32_t cap, uint32_t *nr_ret, uint16_t *machine_ret);

/** What a core header's program headers say, in one pass (no copies). */
struct kexecd_header_summary {
	uint32_t nr_notes;
	uint32_t nr_loads;
	uint32_t nr_ram;	// PT_LOADs below text_map: RAM through the direct map
	uint64_t ram_bytes_lo;	// their memsz summed, in 128 bits
	uint64_t ram_bytes_hi;
	int64_t first_ram;	// index, or -1
	int64_t backup;		// the first RAM PT_LOAD whose offset is not its paddr, or -1
	int64_t kernel_text;	// the first PT_LOAD at or above text_map, or -1
};

/**
 * kexecd_elfcore_summary() - count and find in parsed program headers.
 * @text_map: where the kernel text is mapped; RAM PT_LOADs lie below it.
 * Return: 0.
 */
int kexecd_elfcore_summary(const struct kexecd_phdr *phdrs, uint32_t nr, uint64_t text_map,
			   struct kexecd_header_summary *ret);

/** Which program headers kexecd_elfcore_pick() picks. */
enum kexecd_pick {
	KEXECD_PICK_NOTES = 0,	// PT_NOTE
	KEXECD_PICK_LOADS = 1,	// PT_LOAD
	KEXECD_PICK_RAM = 2,	// PT_LOAD below text_map: RAM through the direct map
};

/** What to pick, and where the kernel text is mapped (RAM lies below). */
struct kexecd_phdr_filter {
	int pick;		// enum kexecd_pick
	uint64_t text_map;
};

/**
 * kexecd_elfcore_pick() - the indices of the program headers @filter picks, in order.
 * Return: 0, or -ENOSPC when @cap is too small (*@nr_ret is the count).
 */
int kexecd_elfcore_pick(const struct kexecd_phdr *phdrs, uint32_t nr,
			const struct kexecd_phdr_filter *filter, uint32_t *ret, uint32_t cap,
			uint32_t *nr_ret);

/**
 * kexecd_elfcore_ram() - the RAM PT_LOADs (below @text_map) as ranges
 * [paddr, paddr + memsz - 1] (the end clamped to 64 bits; empty ones left
 * out), for set arithmetic.
 * Return: 0, or -ENOSPC when @cap is too small.
 */
int kexecd_elfcore_ram(const struct kexecd_phdr *phdrs, uint32_t nr, uint64_t text_map,
		       struct kexecd_range *ret, uint32_t cap, uint32_t *nr_ret);

// ---------------------------------------------------------------------------
// SHA-256 with a state that is plain data (sha256.c), and kexec_load (kexec.c).

/** A SHA-256 computation in progress; copy it to save it. */
struct kexecd_sha256 {
	uint32_t h[8];
	uint64_t len;
	uint8_t buf[64];
	uint32_t buflen;
};

void kexecd_sha256_init(struct kexecd_sha256 *s);
/**
 * kexecd_sha256_restore() - a state saved as bytes (the struct's), checked.
 * @state: @len bytes, as saved from a struct kexecd_sha256.
 *
 * A saved state comes from a file: every field is checked before use, since
 * kexecd_sha256_update() indexes buf with buflen.
 * Return: 0, or -EINVAL when @len is not the struct's size, buflen is not
 *	below 64 or not len % 64, or len is past what SHA-256 can count (2^61
 *	bytes); then @ret is initialised as by kexecd_sha256_init().
 */
int kexecd_sha256_restore(struct kexecd_sha256 *ret, const uint8_t *state, uint64_t len);
void kexecd_sha256_update(struct kexecd_sha256 *s, const uint8_t *data, uint64_t len);
/** kexecd_sha256_zeros() - hash @len zero bytes (a segment's padding to memsz). */
void kexecd_sha256_zeros(struct kexecd_sha256 *s, uint64_t len);
/** kexecd_sha256_final() - the digest of what @state has seen; @state is unchanged. */
void kexecd_sha256_final(const struct kexecd_sha256 *state, uint8_t digest_ret[32]);

/**
 * kexecd_kexec_load() - call kexec_load(2).
 * @segments: the buffers, mem and memsz of each segment; their buffers are
 *	read by the kernel during the call.
 * Return: 0 or -errno.
 */
int kexecd_kexec_load(uint64_t entry, uint64_t flags, const struct kexecd_segment *segments,
		      uint32_t nr_segments);

// The span within which kexecd_map_segment() places a mapping: 2 MiB, the
// PMD size of 4 KiB pages. The kernel puts a file mapping at least this long
// at a 2 MiB boundary (mm/huge_memory.c thp_get_unmapped_area(), ext4's
// .get_unmapped_area; seen on Debian 12's 6.1), and x86's bzImage is loaded
// at one too (kernel_alignment).
#define KEXECD_MAP_SPAN 2097152

/**
 * kexecd_map_segment() - map a segment's file read-only (MAP_SHARED) at an
 * address one page past @mem modulo KEXECD_MAP_SPAN.
 * @len: the bytes to map from offset 0 (> 0).
 * @mem: the physical address the segment is loaded at.
 * @addr_ret: the mapping; unmap it with kexecd_unmap_segment().
 *
 * kexec_load copies each page to the destination's direct-map address, whose
 * low 30 bits are @mem's (x86_64 page_offset_base is PUD-aligned,
 * arch/x86/mm/kaslr.c). A source at the same address modulo 2 MiB (a
 * 2 MiB-aligned file mapping of a 2 MiB-aligned kernel) shares every page's
 * index in a direct-mapped TLB, QEMU TCG's software TLB: each byte copied
 * then misses (measured: 8 MiB loaded in 265 ms, against 38 ms one page off).
 * An odd page count apart never shares an index in any power-of-two TLB.
 * Return: 0 or -errno.
 */
int kexecd_map_segment(int fd, uint64_t len, uint64_t mem, void **addr_ret);
/** kexecd_unmap_segment() - unmap what kexecd_map_segment() mapped. */
int kexecd_unmap_segment(void *addr, uint64_t len);

// ---------------------------------------------------------------------------
// Watching files (watch.c): inotify, for a file another program rewrites.

/**
 * kexecd_watch_open() - a non-blocking, close-on-exec inotify descriptor.
 * @fd_ret: the descriptor; readable when something changed. Read and discard
 *	what it has (whole struct inotify_event records), then look again.
 * Return: 0 or -errno.
 */
int kexecd_watch_open(int *fd_ret);

/**
 * kexecd_watch_dir() - report changes to the entries of directory @path:
 *	a file modified, written and closed, created, deleted, renamed in or
 *	out, or its attributes changed; and the directory itself deleted or
 *	moved. Several directories may share one @fd.
 * Return: 0 or -errno (-ENOENT when @path does not exist).
 */
int kexecd_watch_dir(int fd, const char *path);

/**
 * kexecd_fs_volatile() - whether @path lies on a file system that a reboot
 * empties (tmpfs, ramfs), where fsync buys nothing: *@ret is 1 or 0.
 *
 * Return: 0, or -errno of statfs(2).
 */
int kexecd_fs_volatile(const char *path, int *ret);

#endif // KEXECD_CORE_H
