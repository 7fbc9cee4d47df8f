// SPDX-License-Identifier: GPL-2.0-or-later
// The kexec_load(2) syscall, and the mappings of the segments it copies.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/kexec.h>
#include <stdint.h>
#include <sys/mman.h>
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

int kexecd_map_segment(int fd, uint64_t len, uint64_t mem, void **addr_ret)
{
	const uint64_t span = KEXECD_MAP_SPAN;
	long page = sysconf(_SC_PAGESIZE);
	uint64_t pages, total, want, at;
	uint8_t *room, *addr;

	if (len == 0 || page <= 0 || len > SIZE_MAX - 2 * span)
		return -EINVAL;
	// Reserve the address space, place the file in it, return the rest.
	pages = (len + (uint64_t)page - 1) & ~((uint64_t)page - 1);
	total = pages + span;
	room = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (room == MAP_FAILED)
		return -errno;
	want = ((mem & ~((uint64_t)page - 1)) + (uint64_t)page) & (span - 1);
	at = (want - ((uintptr_t)room & (span - 1))) & (span - 1);
	addr = mmap(room + at, len, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	if (addr == MAP_FAILED) {
		int err = errno;

		munmap(room, total);
		return -err;
	}
	if (at)
		munmap(room, at);
	if (at + pages < total)
		munmap(room + at + pages, total - at - pages);
	*addr_ret = addr;
	return 0;
}

int kexecd_unmap_segment(void *addr, uint64_t len)
{
	return munmap(addr, len) ? -errno : 0;
}
