// SPDX-License-Identifier: GPL-2.0-or-later
// The kexec_load(2) syscall.
#define _GNU_SOURCE
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kexecd_core.h"

// The user-space layout of struct kexec_segment (include/uapi/linux/kexec.h).
struct user_kexec_segment {
	const void *buf;
	size_t bufsz;
	unsigned long mem;
	size_t memsz;
};

int kexecd_kexec_load(uint64_t entry, uint64_t flags, const struct kexecd_segment *segments,
		      uint32_t nr_segments)
{
	struct user_kexec_segment segs[KEXECD_MAX_SEGMENTS];

	if (nr_segments > KEXECD_MAX_SEGMENTS)
		return -EINVAL;
	for (uint32_t i = 0; i < nr_segments; i++) {
		segs[i].buf = segments[i].buf;
		segs[i].bufsz = segments[i].bufsz;
		segs[i].mem = segments[i].mem;
		segs[i].memsz = segments[i].memsz;
	}
	if (syscall(SYS_kexec_load, entry, (unsigned long)nr_segments, segs, flags) < 0)
		return -errno;
	return 0;
}
