// SPDX-License-Identifier: GPL-2.0-or-later
// Memory range arithmetic: kexec-tools' exclusion, and plain set operations.
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kexecd_core.h"

// exclude_region()'s overlap test, strict on both sides.
static int overlaps(const struct kexecd_range *r, uint64_t start, uint64_t end)
{
	return start < r->end && end > r->start;
}

int kexecd_ranges_exclude(struct kexecd_range *ranges, uint32_t *nr, uint32_t cap,
			  uint64_t start, uint64_t end)
{
	// kexec-tools crashdump-x86.c: exclude_region(). Its overlap test is
	// strict on both sides and it remembers one split only; both kept.
	struct kexecd_range split = { 0 };
	uint32_t tidx = 0;

	if (start > end)
		return -EINVAL;
	// A split that does not fit is refused before anything is cut, so that
	// the list is left as it was (kexec-tools has cut it by then).
	if (*nr >= cap) {
		for (uint32_t i = 0; i < *nr; i++)
			if (overlaps(&ranges[i], start, end) && start != ranges[i].start &&
			    end != ranges[i].end)
				return -ENOSPC;
	}
	for (uint32_t i = 0; i < *nr; i++) {
		uint64_t mstart = ranges[i].start, mend = ranges[i].end;

		if (!overlaps(&ranges[i], start, end))
			continue;
		if (start != mstart && end != mend) {
			ranges[i].end = start - 1;
			split.start = end + 1;
			split.end = mend;
			split.type = KEXECD_RANGE_RAM;
			tidx = i + 1;
		} else if (start != mstart) {
			ranges[i].end = start - 1;
		} else {
			ranges[i].start = end + 1;
		}
	}
	if (tidx) {
		memmove(&ranges[tidx + 1], &ranges[tidx], (*nr - tidx) * sizeof(*ranges));
		ranges[tidx] = split;
		(*nr)++;
	}
	return 0;
}

static int cmp_start(const void *a, const void *b)
{
	const struct kexecd_range *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return 0;
}

int kexecd_ranges_normalize(struct kexecd_range *ranges, uint32_t *nr)
{
	uint32_t out = 0;

	if (*nr == 0)
		return 0;
	qsort(ranges, *nr, sizeof(*ranges), cmp_start);
	for (uint32_t i = 0; i < *nr; i++) {
		struct kexecd_range r = ranges[i];

		if (r.start > r.end)
			continue; // empty
		r.type = KEXECD_RANGE_RAM;
		// Merge with the last kept range if they overlap or touch.
		if (out && (ranges[out - 1].end == UINT64_MAX ||
			    r.start <= ranges[out - 1].end + 1)) {
			if (r.end > ranges[out - 1].end)
				ranges[out - 1].end = r.end;
			continue;
		}
		ranges[out++] = r;
	}
	*nr = out;
	return 0;
}

int kexecd_ranges_subtract(const struct kexecd_range *a, uint32_t nr_a,
			   const struct kexecd_range *b, uint32_t nr_b,
			   struct kexecd_range *ret, uint32_t cap, uint32_t *nr_ret)
{
	uint32_t n = 0, j = 0;

	*nr_ret = 0;
	for (uint32_t i = 0; i < nr_a; i++) {
		uint64_t pos = a[i].start;
		int done = 0;

		// Skip the b ranges that end before this a range starts.
		while (j < nr_b && b[j].end < pos)
			j++;
		for (uint32_t k = j; k < nr_b && b[k].start <= a[i].end; k++) {
			if (b[k].start > pos) {
				if (n >= cap)
					return -ENOSPC;
				ret[n++] = (struct kexecd_range){ pos, b[k].start - 1,
								  KEXECD_RANGE_RAM };
			}
			if (b[k].end >= a[i].end) {
				done = 1;
				break;
			}
			if (b[k].end + 1 > pos)
				pos = b[k].end + 1;
		}
		if (!done) {
			if (n >= cap)
				return -ENOSPC;
			ret[n++] = (struct kexecd_range){ pos, a[i].end, KEXECD_RANGE_RAM };
		}
		*nr_ret = n;
	}
	*nr_ret = n;
	return 0;
}
