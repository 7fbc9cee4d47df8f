// SPDX-License-Identifier: GPL-2.0-or-later
/**
 * kexecd_core.h - the whole API of kexecd's C core.
 *
 * Every function returns 0 or a negative errno. Out parameters come last and
 * are named ret. The cffi cdef in kexecd/_build_core.py mirrors this header.
 */
#ifndef KEXECD_CORE_H
#define KEXECD_CORE_H

#include <stddef.h>
#include <stdint.h>

// include/uapi/linux/kexec.h: at most 16 segments per load.
#define KEXECD_MAX_SEGMENTS 16

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

/** The arguments of the last kexec syscall a traced program made. */
struct kexecd_load {
	int syscall;		// enum kexecd_syscall
	int64_t result;		// the syscall's return value (-errno on failure)
	uint64_t entry;
	uint64_t flags;
	uint32_t nr_segments;
	struct kexecd_segment segments[KEXECD_MAX_SEGMENTS];
	// kexec_file_load only
	char *cmdline;
	uint64_t cmdline_len;
	int calls;		// how many kexec syscalls the program made
};

/**
 * kexecd_trace_run() - run a program and capture its kexec syscalls.
 * @argv: NULL-terminated argument vector; argv[0] is looked up in PATH.
 * @mode: enum kexecd_trace_mode.
 * @ret: zeroed, then filled with the arguments of the last kexec syscall.
 *	Free its buffers with kexecd_load_deinit(), on error too.
 * @status_ret: the program's wait status.
 *
 * The program runs under ptrace with a seccomp filter that stops it only at
 * kexec_load and kexec_file_load, so every other syscall runs at full speed.
 * Return: 0, or -errno when the program could not be traced.
 */
int kexecd_trace_run(const char *const *argv, int mode, struct kexecd_load *ret,
		     int *status_ret);

/** kexecd_load_deinit() - free the buffers of a struct kexecd_load. */
void kexecd_load_deinit(struct kexecd_load *load);

#endif // KEXECD_CORE_H
