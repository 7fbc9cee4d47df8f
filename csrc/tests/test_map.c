// SPDX-License-Identifier: GPL-2.0-or-later
// Tests of kexecd_map_segment(): where a segment's file is mapped, and what it reads.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kexecd_core.h"
#include "check.h"

#define LEN ((3u << 20) + 100u)	// longer than the span, not a page multiple

int main(void)
{
	static const uint64_t mems[] = { 0, 0x1000, 0x38e00000, 0x3876b000, 0x1fffff000, 0x40001ff000 };
	char path[] = "/tmp/kexecd-map-XXXXXX";
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint8_t *data = malloc(LEN);
	void *addr;
	int fd;

	CHECK(data != NULL);
	for (uint32_t i = 0; i < LEN; i++)
		data[i] = (uint8_t)(i * 7 + (i >> 12));
	fd = mkstemp(path);
	CHECK(fd >= 0 && write(fd, data, LEN) == (ssize_t)LEN);
	CHECK(unlink(path) == 0);

	for (size_t i = 0; i < sizeof(mems) / sizeof(mems[0]); i++) {
		uint64_t mem = mems[i];

		CHECK(kexecd_map_segment(fd, LEN, mem, &addr) == 0);
		// One page past mem modulo the span: never the same index in a
		// direct-mapped TLB of any power-of-two size.
		CHECK((((uintptr_t)addr - mem) & (KEXECD_MAP_SPAN - 1)) == page);
		CHECK(memcmp(addr, data, LEN) == 0);
		CHECK(kexecd_unmap_segment(addr, LEN) == 0);
	}
	// Smaller than a page, at an unaligned mem: still a page past it.
	CHECK(kexecd_map_segment(fd, 100, 0x3cf4e123, &addr) == 0);
	CHECK((((uintptr_t)addr - 0x3cf4e000) & (KEXECD_MAP_SPAN - 1)) == page);
	CHECK(memcmp(addr, data, 100) == 0);
	CHECK(kexecd_unmap_segment(addr, 100) == 0);

	CHECK(kexecd_map_segment(fd, 0, 0, &addr) == -EINVAL);
	CHECK(kexecd_map_segment(fd, UINT64_MAX, 0, &addr) == -EINVAL);
	CHECK(kexecd_map_segment(-1, LEN, 0, &addr) == -EBADF);
	CHECK(close(fd) == 0);
	free(data);
	return check_done();
}
