// SPDX-License-Identifier: GPL-2.0-or-later
// Tests of /proc/iomem parsing and crash range collection, and of the
// program header summary.
#include <elf.h>
#include <errno.h>
#include <string.h>

#include "kexecd_core.h"
#include "check.h"

static const char *const x86_names[] = { "ACPI Tables", "reserved" };
static const int x86_types[] = { KEXECD_RANGE_ACPI, KEXECD_RANGE_RESERVED };
static const char *const x86_skipped[] = { "GART" };

static struct kexecd_iomem_rules x86(uint32_t max_ranges)
{
	return (struct kexecd_iomem_rules){
		.max_ranges = max_ranges,
		.max_crash_reserved = 8,
		.type_names = x86_names,
		.types = x86_types,
		.nr_types = 2,
		.skipped = x86_skipped,
		.nr_skipped = 1,
	};
}

static int collect(const char *text, const struct kexecd_iomem_rules *rules,
		   struct kexecd_crash_ranges *cr)
{
	return kexecd_iomem_collect((const uint8_t *)text, strlen(text), rules, cr);
}

static const char BOOT[] = "00000000-00000fff : reserved\n"
			   "00001000-0009fbff : System RAM\n"
			   "000f0000-000fffff : reserved\n"
			   "  000f0000-000fffff : System ROM\n"
			   "00100000-3ffdffff : System RAM\n"
			   "  2b000000-3affffff : Crash kernel\n"
			   "  3b000000-3b0fffff : GART\n"
			   "3ffe0000-3fffffff : ACPI Tables\n"
			   "100000000-13fffffff : System RAM (kmem)\n";

static void test_x86_collect(void)
{
	struct kexecd_iomem_rules rules = x86(32768);
	struct kexecd_crash_ranges cr;

	CHECK(collect(BOOT, &rules, &cr) == 0);
	CHECK(cr.nr_reserved == 1 && cr.reserved[0].start == 0x2b000000);
	// reserved, RAM, reserved, RAM split by the crash kernel and trimmed by
	// GART, ACPI, kmem; System ROM is not collected
	CHECK(cr.nr_ranges == 7);
	CHECK(cr.ranges[0].type == KEXECD_RANGE_RESERVED && cr.ranges[0].end == 0xfff);
	CHECK(cr.ranges[3].start == 0x100000 && cr.ranges[3].end == 0x2affffff);
	CHECK(cr.ranges[4].start == 0x3b100000 && cr.ranges[4].end == 0x3ffdffff);
	CHECK(cr.ranges[2].start == 0xf0000 && cr.ranges[2].type == KEXECD_RANGE_RESERVED);
	CHECK(cr.ranges[5].type == KEXECD_RANGE_ACPI);
	CHECK(cr.ranges[6].start == 0x100000000 && cr.ranges[6].type == KEXECD_RANGE_RAM);
	kexecd_crash_ranges_deinit(&cr);

	rules.ram_exact = 1; // kexec-tools 2.0.20: "System RAM (kmem)" is not RAM
	CHECK(collect(BOOT, &rules, &cr) == 0 && cr.ranges[cr.nr_ranges - 1].type ==
							   KEXECD_RANGE_ACPI);
	kexecd_crash_ranges_deinit(&cr);
	kexecd_crash_ranges_deinit(NULL);
}

static void test_x86_limits(void)
{
	struct kexecd_iomem_rules rules = x86(2);
	struct kexecd_crash_ranges cr;

	// Collection stops silently at the limit; "Crash kernel" lines still count.
	CHECK(collect("0-fff : reserved\n1000-1fff : reserved\n2000-2fff : System RAM\n"
		      "3000-3fff : Crash kernel\n",
		      &rules, &cr) == 0);
	CHECK(cr.nr_ranges == 2 && cr.nr_reserved == 1);
	kexecd_crash_ranges_deinit(&cr);
	// A split past the limit fails, naming the cut. (A GART line after the
	// limit is not even remembered, as in kexec-tools.)
	CHECK(collect("1000-4fff : System RAM\n  2000-2fff : GART\n5000-5fff : reserved\n",
		      &rules, &cr) == -ENOSPC);
	CHECK(cr.error.fault == KEXECD_IOMEM_TOO_MANY && cr.error.cut == 0);
	CHECK(cr.error.cut_start == 0x2000 && cr.error.cut_end == 0x2fff);
	kexecd_crash_ranges_deinit(&cr);
}

static void test_arm64_collect(void)
{
	struct kexecd_iomem_rules rules = { .max_ranges = UINT32_MAX, .max_crash_reserved = 2,
					    .sort_ranges = 1 };
	struct kexecd_crash_ranges cr;

	// mem_regions_exclude(): the upper half appended, then sorted by start.
	CHECK(collect("40000000-7fffffff : System RAM\n  50000000-5fffffff : Crash kernel\n"
		      "80000000-8fffffff : System RAM\n",
		      &rules, &cr) == 0);
	CHECK(cr.nr_ranges == 3);
	CHECK(cr.ranges[0].start == 0x40000000 && cr.ranges[0].end == 0x4fffffff);
	CHECK(cr.ranges[1].start == 0x60000000 && cr.ranges[1].end == 0x7fffffff);
	CHECK(cr.ranges[2].start == 0x80000000);
	kexecd_crash_ranges_deinit(&cr);
	// A range equal to the cut goes.
	CHECK(collect("50000000-5fffffff : System RAM\n  50000000-5fffffff : Crash kernel\n",
		      &rules, &cr) == 0 && cr.nr_ranges == 0);
	kexecd_crash_ranges_deinit(&cr);
}

static void fault(const char *text, int want, uint32_t line)
{
	struct kexecd_iomem_rules rules = x86(32768);
	struct kexecd_crash_ranges cr;
	struct kexecd_resource res[8];
	struct kexecd_iomem_error err;
	uint32_t nr;

	CHECK(collect(text, &rules, &cr) == -EBADMSG);
	CHECK(cr.error.fault == want && cr.error.line == line);
	kexecd_crash_ranges_deinit(&cr);
	CHECK(kexecd_iomem_parse((const uint8_t *)text, strlen(text), res, 8, &nr, &err) ==
	      -EBADMSG);
	CHECK(err.fault == want && err.line == line);
}

static void test_faults(void)
{
	fault("", KEXECD_IOMEM_EMPTY, 0);
	fault("\n  \n", KEXECD_IOMEM_EMPTY, 0);
	fault("00000000-00000000 : reserved\n", KEXECD_IOMEM_ZEROS, 0);
	fault("0-fff : reserved\nnonsense\n", KEXECD_IOMEM_MALFORMED, 2);
	fault("0-fff : reserved\r\n\r\n1000-fff : x\n", KEXECD_IOMEM_BACKWARDS, 3);
	fault("0-10000000000000000 : x\n", KEXECD_IOMEM_PAST_64, 1);
	fault("10000000000000000-1 : x\n", KEXECD_IOMEM_BACKWARDS, 1);
	fault("0-fff: x\n", KEXECD_IOMEM_MALFORMED, 1);
	fault("0-fff : x\v\x1c" "0-1 :\n", KEXECD_IOMEM_MALFORMED, 3); // \v, \x1c end lines
	fault("\t0-fff : x\n", KEXECD_IOMEM_MALFORMED, 1);
}

static void test_parse(void)
{
	const char text[] = "  0-ffffffffffffffff : a b\n\n \t\n0000000000000000001-2 : \n";
	struct kexecd_resource res[2];
	struct kexecd_iomem_error err;
	uint32_t nr;

	CHECK(kexecd_iomem_parse((const uint8_t *)text, strlen(text), res, 2, &nr, &err) == 0);
	CHECK(nr == 2 && res[0].depth == 1 && res[0].end == UINT64_MAX);
	CHECK(res[0].name_len == 3 && !memcmp(text + res[0].name_off, "a b", 3));
	CHECK(res[1].start == 1 && res[1].end == 2 && res[1].name_len == 0);
	CHECK(kexecd_iomem_parse((const uint8_t *)text, strlen(text), res, 1, &nr, &err) ==
	      -ENOSPC);
}

static void test_summary(void)
{
	const uint64_t text_map = 0xffffffff80000000;
	struct kexecd_phdr ph[] = {
		{ .type = PT_NOTE, .paddr = 0x1000, .memsz = 368 },
		{ .type = PT_LOAD, .vaddr = 0xffffffff81000000, .paddr = 0x1000000 },
		{ .type = PT_LOAD, .offset = 0x2000, .vaddr = 0xffff888000001000,
		  .paddr = 0x1000, .memsz = 0x9f000 },
		{ .type = PT_LOAD, .offset = 0x100000, .vaddr = 0xffff888000100000,
		  .paddr = 0x100000, .memsz = UINT64_MAX },
		{ .type = PT_LOAD, .vaddr = 1, .paddr = 5, .memsz = 0 },
	};
	struct kexecd_phdr_filter loads = { KEXECD_PICK_LOADS, text_map };
	struct kexecd_phdr_filter ram = { KEXECD_PICK_RAM, text_map };
	struct kexecd_phdr_filter notes = { KEXECD_PICK_NOTES, text_map };
	struct kexecd_header_summary s;
	struct kexecd_range r[4];
	uint32_t idx[4], nr;

	CHECK(kexecd_elfcore_summary(ph, 5, text_map, &s) == 0);
	CHECK(s.nr_notes == 1 && s.nr_loads == 4 && s.nr_ram == 3);
	CHECK(s.kernel_text == 1 && s.first_ram == 2 && s.backup == 2);
	CHECK(s.ram_bytes_hi == 1 && s.ram_bytes_lo == 0x9f000 - 1);
	CHECK(kexecd_elfcore_pick(ph, 5, &loads, idx, 4, &nr) == 0 && nr == 4 && idx[0] == 1);
	CHECK(kexecd_elfcore_pick(ph, 5, &loads, idx, 3, &nr) == -ENOSPC && nr == 4);
	CHECK(kexecd_elfcore_pick(ph, 5, &ram, idx, 4, &nr) == 0 && nr == 3 && idx[0] == 2);
	CHECK(kexecd_elfcore_pick(ph, 5, &notes, idx, 4, &nr) == 0 && nr == 1 && idx[0] == 0);
	CHECK(kexecd_elfcore_ram(ph, 5, text_map, r, 4, &nr) == 0 && nr == 2);
	CHECK(r[0].start == 0x1000 && r[0].end == 0x9ffff && r[1].end == UINT64_MAX);
	CHECK(kexecd_elfcore_ram(ph, 5, text_map, r, 1, &nr) == -ENOSPC);
}

int main(void)
{
	test_x86_collect();
	test_x86_limits();
	test_arm64_collect();
	test_faults();
	test_parse();
	test_summary();
	return check_done();
}
