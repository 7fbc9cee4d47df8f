// SPDX-License-Identifier: GPL-2.0-or-later
// Tests of the header builder and parser and of the range arithmetic.
#include <elf.h>
#include <errno.h>
#include <string.h>

#include "kexecd_core.h"
#include "check.h"

static const struct kexecd_note notes[] = { { 0x3f83a400, 368 }, { 0x3f8ba400, 368 } };

static struct kexecd_range ranges[8] = {
	{ 0x0, 0xfff, KEXECD_RANGE_RESERVED },
	{ 0x1000, 0x9fbff, KEXECD_RANGE_RAM },
	{ 0x100000, 0x3ffdefff, KEXECD_RANGE_RAM },
	{ 0xfed1c000, 0xfed1ffff, KEXECD_RANGE_RESERVED },
};

static struct kexecd_header_spec spec(uint32_t nr_ranges)
{
	return (struct kexecd_header_spec){
		.machine = EM_X86_64,
		.nr_cpus_conf = 4,
		.cpu_notes = notes,
		.nr_cpu_notes = 2,
		.has_vmcoreinfo = 1,
		.vmcoreinfo = { 0x11e4000, 0x1024 },
		.has_kernel = 1,
		.kernel_paddr = 0x7600000,
		.kernel_vaddr = 0xffffffff86200000,
		.kernel_size = 0x3430000,
		.ranges = ranges,
		.nr_ranges = nr_ranges,
		.page_offset = 0xffff9c0000000000,
		.backup_src_start = 0x1000,
		.backup_src_size = 0x9ec00,
		.backup_start = 0x3ef61000,
		.align = 1024,
	};
}

static void test_build_and_parse(void)
{
	struct kexecd_header_spec s = spec(4);
	struct kexecd_phdr ph[16];
	uint8_t buf[2048];
	uint64_t len, size;
	uint32_t nr;
	uint16_t machine;

	memset(buf, 0xa5, sizeof(buf));
	CHECK(kexecd_elfcore_size(&s, &size) == 0 && size == 1024);
	CHECK(kexecd_elfcore_build(&s, buf, sizeof(buf), &len) == 0 && len == 1024);
	CHECK(buf[1024] == 0xa5); // nothing past the header
	CHECK(!memcmp(buf, ELFMAG, SELFMAG) && buf[EI_CLASS] == ELFCLASS64);
	CHECK(kexecd_elfcore_parse(buf, len, ph, 16, &nr, &machine) == 0);
	CHECK(nr == 6 && machine == EM_X86_64);
	CHECK(ph[0].type == PT_NOTE && ph[0].paddr == 0x3f83a400 && ph[0].offset == 0x3f83a400);
	CHECK(ph[0].vaddr == 0 && ph[0].memsz == 368 && ph[0].filesz == 368);
	CHECK(ph[2].type == PT_NOTE && ph[2].paddr == 0x11e4000 && ph[2].memsz == 0x1024);
	CHECK(ph[3].type == PT_LOAD && ph[3].vaddr == 0xffffffff86200000);
	CHECK(ph[3].flags == (PF_R | PF_W | PF_X));
	// The backup source points at the copy; other RAM at itself.
	CHECK(ph[4].paddr == 0x1000 && ph[4].offset == 0x3ef61000 && ph[4].memsz == 0x9ec00);
	CHECK(ph[4].vaddr == 0xffff9c0000001000);
	CHECK(ph[5].paddr == 0x100000 && ph[5].offset == 0x100000);
	// Every byte past the program headers is zero.
	for (uint64_t i = 64 + 6 * 56; i < len; i++)
		if (buf[i]) {
			CHECK(!"tail not zero");
			break;
		}
}

static void test_capacity(void)
{
	struct kexecd_header_spec s = spec(4);
	struct kexecd_phdr ph[2];
	uint8_t buf[1100];
	uint64_t len;
	uint32_t nr;
	uint16_t machine;

	memset(buf, 0x5a, sizeof(buf));
	CHECK(kexecd_elfcore_build(&s, buf, 1023, &len) == -ENOSPC && len == 0);
	CHECK(buf[0] == 0x5a); // nothing written at all
	CHECK(kexecd_elfcore_build(&s, buf, 1024, &len) == 0);
	CHECK(kexecd_elfcore_parse(buf, len, ph, 2, &nr, &machine) == -ENOSPC && nr == 6);
	s.align = 1000;
	CHECK(kexecd_elfcore_build(&s, buf, sizeof(buf), &len) == -EINVAL);
	s = spec(4);
	s.nr_cpus_conf = 1; // fewer CPUs than notes
	CHECK(kexecd_elfcore_build(&s, buf, sizeof(buf), &len) == -EINVAL);
}

static void test_parse_rejects(void)
{
	struct kexecd_header_spec s = spec(4);
	struct kexecd_phdr ph[16];
	uint8_t buf[1024];
	uint64_t len;
	uint32_t nr;
	uint16_t machine;

	CHECK(kexecd_elfcore_build(&s, buf, sizeof(buf), &len) == 0);
	CHECK(kexecd_elfcore_parse(buf, 63, ph, 16, &nr, &machine) == -EBADMSG);
	CHECK(kexecd_elfcore_parse(buf, 64 + 5 * 56, ph, 16, &nr, &machine) == -EBADMSG);
	buf[16] = ET_EXEC;
	CHECK(kexecd_elfcore_parse(buf, len, ph, 16, &nr, &machine) == -EBADMSG);
	buf[16] = ET_CORE;
	buf[0] = 0;
	CHECK(kexecd_elfcore_parse(buf, len, ph, 16, &nr, &machine) == -EBADMSG);
}

static void test_exclude_like_kexec_tools(void)
{
	struct kexecd_range r[8] = {
		{ 0x1000, 0x9fbff, KEXECD_RANGE_RAM },
		{ 0x100000, 0x3ffdefff, KEXECD_RANGE_RAM },
		{ 0x3ffdf000, 0x3fffffff, KEXECD_RANGE_RESERVED },
	};
	uint32_t nr = 3;

	// crashkernel=256M in the middle of RAM: split, upper half inserted.
	CHECK(kexecd_ranges_exclude(r, &nr, 8, 0x2f000000, 0x3effffff) == 0 && nr == 4);
	CHECK(r[1].start == 0x100000 && r[1].end == 0x2effffff);
	CHECK(r[2].start == 0x3f000000 && r[2].end == 0x3ffdefff && r[2].type == KEXECD_RANGE_RAM);
	CHECK(r[3].type == KEXECD_RANGE_RESERVED);
	// Trims at either end.
	CHECK(kexecd_ranges_exclude(r, &nr, 8, 0x3ff00000, 0x3ffdefff) == 0 && nr == 4);
	CHECK(r[2].end == 0x3fefffff);
	CHECK(kexecd_ranges_exclude(r, &nr, 8, 0x1000, 0x1fff) == 0 && r[0].start == 0x2000);
	// No room for a split.
	CHECK(kexecd_ranges_exclude(r, &nr, 4, 0x200000, 0x2fffff) == -ENOSPC);
	CHECK(kexecd_ranges_exclude(r, &nr, 8, 2, 1) == -EINVAL);
}

static void test_normalize_and_subtract(void)
{
	struct kexecd_range a[4] = {
		{ 0x300, 0x3ff, 0 }, { 0x100, 0x1ff, 0 }, { 0x200, 0x2ff, 0 }, { 0x500, 0x5ff, 0 },
	};
	struct kexecd_range b[2] = { { 0x180, 0x37f, 0 }, { 0x500, 0x5ff, 0 } };
	struct kexecd_range out[4];
	uint32_t na = 4, nb = 2, n;

	CHECK(kexecd_ranges_normalize(a, &na) == 0 && na == 2);
	CHECK(a[0].start == 0x100 && a[0].end == 0x3ff && a[1].start == 0x500);
	CHECK(kexecd_ranges_subtract(a, na, b, nb, out, 4, &n) == 0 && n == 2);
	CHECK(out[0].start == 0x100 && out[0].end == 0x17f);
	CHECK(out[1].start == 0x380 && out[1].end == 0x3ff);
	CHECK(kexecd_ranges_subtract(a, na, b, nb, out, 1, &n) == -ENOSPC);
}

int main(void)
{
	test_build_and_parse();
	test_capacity();
	test_parse_rejects();
	test_exclude_like_kexec_tools();
	test_normalize_and_subtract();
	return check_done();
}
