// SPDX-License-Identifier: GPL-2.0-or-later
// The kexec_load(2) syscall.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/kexec.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kexecd_core.h"

int kexecd_kexec_load(uint64_t entry, uint64_t flags, const struct kexecd_segment *segments,
		      uint32_t nr_segments)
{
	struct kexec_segment segs[KEXEC_SEGMENT_MAX];

	// kernel/kexec.c kexec_load_check() refuses more with EINVAL too.
	if (nr_segments > KEXEC_SEGMENT_MAX)
		return -EINVAL;
	for (uint32_t i = 0; i < nr_segments; i++) {
		segs[i] = (struct kexec_segment){
			.buf = segments[i].buf,
			.bufsz = segments[i].bufsz,
			.mem = (const void *)(uintptr_t)segments[i].mem,
			.memsz = segments[i].memsz,
		};
	}
	if (syscall(SYS_kexec_load, entry, (unsigned long)nr_segments, segs, flags) < 0)
		return -errno;
	return 0;
}
