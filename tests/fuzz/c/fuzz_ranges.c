// SPDX-License-Identifier: GPL-2.0-or-later
// The range functions on lists decoded from the input: a sequence of
// kexecd_ranges_exclude() calls on a list allocated to its capacity (as
// crash_ranges() cuts the crash kernel and GART out of /proc/iomem), then
// kexecd_ranges_normalize() and kexecd_ranges_subtract() into an output of
// fuzzed capacity. Nothing may be written past a capacity, and where every
// address is below 256 the results are checked point by point against
// bitmaps.
#include <errno.h>

#include "fuzz.h"

#define SMALL 256

struct list {
	struct kexecd_range *r;
	uint32_t nr, cap;
};

static struct list take_list(struct input *in, uint32_t max)
{
	struct list l;

	l.nr = take8(in) % (max + 1);
	l.cap = l.nr + take8(in) % 4;
	l.r = exact_alloc(l.cap * sizeof(*l.r));
	for (uint32_t i = 0; i < l.nr; i++) {
		l.r[i].start = take_addr(in);
		l.r[i].end = take_addr(in);
		l.r[i].type = take8(in) % 12;
	}
	return l;
}

static int small(const struct kexecd_range *r, uint32_t nr)
{
	for (uint32_t i = 0; i < nr; i++)
		if (r[i].end >= SMALL)
			return 0;
	return 1;
}

/* The points of the non-empty ranges (those below SMALL). */
static void points(const struct kexecd_range *r, uint32_t nr, uint8_t map[SMALL])
{
	memset(map, 0, SMALL);
	for (uint32_t i = 0; i < nr; i++)
		for (uint64_t x = r[i].start; x <= r[i].end && x < SMALL; x++)
			map[x] = 1;
}

static void check_normalized(const struct kexecd_range *r, uint32_t nr)
{
	for (uint32_t i = 0; i < nr; i++) {
		CHECK(r[i].start <= r[i].end && r[i].type == KEXECD_RANGE_RAM);
		// Sorted, and apart: neither overlapping nor touching.
		if (i)
			CHECK(r[i - 1].end < UINT64_MAX && r[i - 1].end + 1 < r[i].start);
	}
}

static struct kexecd_range *copy(const struct list *l)
{
	struct kexecd_range *c = exact_alloc(l->nr * sizeof(*c));

	if (l->nr)
		memcpy(c, l->r, l->nr * sizeof(*c));
	return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	struct list a = take_list(&in, 64), b;
	uint8_t before[SMALL], after[SMALL], bmap[SMALL];
	struct kexecd_range *out, *saved;
	uint32_t nr_out = 0, cap_out, n;
	int cuts = take8(&in) % 10, r;

	// kexec-tools' exclusion, several cuts in a row.
	for (int c = 0; c < cuts; c++) {
		uint64_t start = take_addr(&in), end = take_addr(&in);
		uint32_t old = a.nr;

		saved = copy(&a);
		r = kexecd_ranges_exclude(a.r, &a.nr, a.cap, start, end);
		CHECK(r == 0 || r == -ENOSPC || r == -EINVAL);
		CHECK(a.nr <= a.cap);
		if (r == -EINVAL)
			CHECK(start > end);
		if (r < 0) // refused: the list is as it was
			CHECK(a.nr == old && (!old || !memcmp(saved, a.r, old * sizeof(*saved))));
		else
			CHECK(a.nr == old || a.nr == old + 1);
		free(saved);
	}

	// Normalize: sorted, merged, the same points.
	n = a.nr;
	saved = copy(&a);
	CHECK(kexecd_ranges_normalize(a.r, &a.nr) == 0);
	CHECK(a.nr <= n);
	check_normalized(a.r, a.nr);
	if (small(saved, n)) {
		points(saved, n, before);
		points(a.r, a.nr, after);
		CHECK(!memcmp(before, after, SMALL));
	}
	free(saved);

	// Subtract a normalized b, into an output of fuzzed capacity.
	b = take_list(&in, 64);
	CHECK(kexecd_ranges_normalize(b.r, &b.nr) == 0);
	check_normalized(b.r, b.nr);
	cap_out = take8(&in) % (a.nr + b.nr + 2);
	out = exact_alloc(cap_out * sizeof(*out));
	r = kexecd_ranges_subtract(a.r, a.nr, b.r, b.nr, out, cap_out, &nr_out);
	CHECK(r == 0 || r == -ENOSPC);
	CHECK(nr_out <= cap_out);
	if (r == 0) {
		check_normalized(out, nr_out);
		if (small(a.r, a.nr)) {
			points(a.r, a.nr, before);
			points(b.r, b.nr, bmap);
			points(out, nr_out, after);
			for (int x = 0; x < SMALL; x++)
				CHECK(after[x] == (before[x] && !bmap[x]));
		}
		// a \ b never has more ranges than a and b together, plus one.
		CHECK(nr_out <= a.nr + b.nr + 1);
	} else {
		// No room even for a \ b when its capacity is a.nr + b.nr + 1.
		CHECK(cap_out < a.nr + b.nr + 1);
	}
	free(out);
	free(a.r);
	free(b.r);
	return 0;
}
