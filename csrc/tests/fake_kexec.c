// SPDX-License-Identifier: GPL-2.0-or-later
// A stand-in for kexec-tools in the C tests: makes kexec syscalls with flags
// the kernel rejects with EINVAL, so that even an untraced run loads nothing.
// The tracer's skip mode answers them with 0 before they reach the kernel.
//
// usage: fake_kexec load|file|none|twice
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BAD_FLAGS 0x80000100UL // unknown arch and flag bits: always EINVAL

struct seg {
	const void *buf;
	size_t bufsz;
	unsigned long mem;
	size_t memsz;
};

static long load(unsigned long entry)
{
	static uint8_t a[5000], b[3];
	struct seg segs[3] = {
		{ a, sizeof(a), 0x100000, 0x2000 },
		{ NULL, 0, 0x200000, 0x1000 },
		{ b, sizeof(b), 0x300000, 0x1000 },
	};

	for (size_t i = 0; i < sizeof(a); i++)
		a[i] = (uint8_t)(i * 7);
	memcpy(b, "xyz", 3);
	return syscall(SYS_kexec_load, entry, 3UL, segs, BAD_FLAGS);
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "load";
	long r = 0;

	if (!strcmp(what, "load")) {
		r = load(0x1234);
	} else if (!strcmp(what, "twice")) {
		r = load(0x1111) | load(0x2222);
	} else if (!strcmp(what, "file")) {
		const char cmdline[] = "console=ttyS0 elfcorehdr=123K";

		r = syscall(SYS_kexec_file_load, -1, -1, sizeof(cmdline), cmdline,
			    BAD_FLAGS);
	}
	printf("%ld\n", r);
	return r == 0 ? 0 : 1;
}
