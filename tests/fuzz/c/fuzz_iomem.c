// SPDX-License-Identifier: GPL-2.0-or-later
// /proc/iomem text from the input: the first byte picks the rules (x86 or
// arm64, the limit on ranges, "System RAM" exact or not), the rest is the
// text. kexecd_iomem_parse() and kexecd_iomem_collect() must agree on
// whether the text is good, never read past it, and collect no more than the
// limit (x86) or lines plus cuts (arm64); a fault names a line inside the
// text. arm64's cuts only shrink a range; x86's exclude_region() can wrap an
// end below a cut's start past zero, as kexec-tools does, so only there
// may a range reach outside every line.
#include <errno.h>

#include "fuzz.h"

static const char *const names[] = { "ACPI Tables", "reserved", "Persistent Memory" };
static const int types[] = { KEXECD_RANGE_ACPI, KEXECD_RANGE_RESERVED, KEXECD_RANGE_PMEM };
static const char *const skipped[] = { "GART" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	uint8_t pick = take8(&in);
	struct kexecd_iomem_rules rules = {
		.ram_exact = pick & 1,
		.max_ranges = (pick & 2) ? 4 : 32768,
		.max_crash_reserved = (pick & 4) ? 2 : 8,
		.sort_ranges = !!(pick & 8),
		.type_names = names,
		.types = types,
		.nr_types = 3,
		.skipped = skipped,
		.nr_skipped = (pick & 8) ? 0 : 1,
	};
	// An exact copy, so that ASan sees a read past the text.
	uint8_t *text = malloc(in.left ? in.left : 1);
	uint64_t len = in.left;
	struct kexecd_resource *res;
	struct kexecd_iomem_error err;
	struct kexecd_crash_ranges cr;
	uint32_t nr = 0, cap = (uint32_t)len + 1;
	int rp, rc;

	if (len)
		memcpy(text, in.p, len);
	res = malloc(cap * sizeof(*res));
	rp = kexecd_iomem_parse(text, len, res, cap, &nr, &err);
	CHECK(rp == 0 || rp == -EBADMSG);
	if (rp < 0)
		CHECK(err.fault >= KEXECD_IOMEM_MALFORMED && err.fault <= KEXECD_IOMEM_ZEROS &&
		      err.line_off + err.line_len <= len);
	for (uint32_t i = 0; rp == 0 && i < nr; i++)
		CHECK(res[i].start <= res[i].end && res[i].name_off + res[i].name_len <= len);

	rc = kexecd_iomem_collect(text, len, &rules, &cr);
	CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOSPC);
	if (rp < 0) {
		CHECK(rc == -EBADMSG && cr.error.fault == err.fault && cr.error.line == err.line);
	} else if (rc == -ENOSPC) {
		CHECK(!rules.sort_ranges && cr.error.fault == KEXECD_IOMEM_TOO_MANY);
		CHECK(cr.error.cut_start <= cr.error.cut_end);
	} else {
		CHECK(rc == 0 && cr.nr_reserved <= rules.max_crash_reserved);
		if (!rules.sort_ranges)
			CHECK(cr.nr_ranges <= rules.max_ranges && cr.nr_ranges <= nr + 1);
		else
			CHECK(cr.nr_ranges <= nr + cr.nr_reserved);
		for (uint32_t i = 0; i < cr.nr_ranges; i++) {
			int inside = 0;

			if (!rules.sort_ranges)
				continue;
			for (uint32_t k = 0; k < nr && !inside; k++)
				inside = res[k].start <= cr.ranges[i].start &&
					 cr.ranges[i].end <= res[k].end;
			CHECK(inside && cr.ranges[i].start <= cr.ranges[i].end);
			if (i)
				CHECK(cr.ranges[i - 1].start <= cr.ranges[i].start);
		}
	}
	kexecd_crash_ranges_deinit(&cr);
	free(res);
	free(text);
	return 0;
}
