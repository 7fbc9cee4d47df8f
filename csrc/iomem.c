// SPDX-License-Identifier: GPL-2.0-or-later
// /proc/iomem: its lines, and the memory ranges kexec-tools' crashdump code
// collects from them, with the crash kernel's reservation cut out.
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kexecd_core.h"
#include "pytext.h"

static const char RAM[] = "System RAM";
static const char CRASH[] = "Crash kernel";

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

// Hex digits at p[*i]: their value, whether it passes 64 bits; 0 if none.
static int take_hex(const uint8_t *p, uint64_t n, uint64_t *i, uint64_t *val, int *over)
{
	uint64_t from = *i, v = 0;
	int d;

	while (*i < n && (d = hexval(p[*i])) >= 0) {
		if (v >> 60)
			*over = 1;
		v = v << 4 | (uint64_t)d;
		(*i)++;
	}
	*val = v;
	return *i > from;
}

// The fields of the line at p (@left bytes to the text's end), as
// ^( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$ reads them: all but the name,
// which starts at res->name_off. None of the fields' characters ends a line,
// so a line that matches is never read past its end.
static int parse_fields(const uint8_t *p, uint64_t left, uint64_t off, struct kexecd_resource *res)
{
	uint64_t i = 0, spaces;
	int over_start = 0, over_end = 0;

	while (i < left && p[i] == ' ')
		i++;
	spaces = i;
	if (!take_hex(p, left, &i, &res->start, &over_start) || i >= left || p[i++] != '-')
		return KEXECD_IOMEM_MALFORMED;
	if (!take_hex(p, left, &i, &res->end, &over_end))
		return KEXECD_IOMEM_MALFORMED;
	if (left - i < 3 || memcmp(p + i, " : ", 3))
		return KEXECD_IOMEM_MALFORMED;
	res->name_off = off + i + 3;
	res->depth = (uint32_t)(spaces / 2);
	if (over_end)
		return KEXECD_IOMEM_PAST_64;
	if (over_start || res->end < res->start)
		return KEXECD_IOMEM_BACKWARDS;
	return KEXECD_IOMEM_OK;
}

// Walks the lines of a text, the blank ones skipped.
struct lines {
	const uint8_t *text;
	uint64_t len, pos;
	uint32_t lineno;
	int any, nonzero;
};

// Where the line holding @from ends, and the length of its separator.
static uint64_t line_end(const struct lines *w, uint64_t from, uint64_t *sep_ret)
{
	uint64_t end = from, k = 0;

	for (; end < w->len; end++)
		if (may_end[w->text[end]] && (k = sep_len(w->text + end, w->len - end)))
			break;
	*sep_ret = k;
	return end;
}

// The next resource; 1 and *res filled, 0 at the end, or -EBADMSG.
static int next_resource(struct lines *w, struct kexecd_resource *res,
			 struct kexecd_iomem_error *err)
{
	while (w->pos < w->len) {
		uint64_t start = w->pos, end, k;
		int fault = parse_fields(w->text + start, w->len - start, start, res);

		// Only the name is scanned for the line's end (or a line that
		// does not match, whole).
		end = line_end(w, fault == KEXECD_IOMEM_MALFORMED ? start : res->name_off, &k);
		w->pos = end + k;
		w->lineno++;
		if (fault == KEXECD_IOMEM_MALFORMED && blank(w->text + start, end - start))
			continue;
		if (fault) {
			*err = (struct kexecd_iomem_error){ .fault = fault, .line = w->lineno,
							    .line_off = start,
							    .line_len = end - start };
			return -EBADMSG;
		}
		res->name_len = end - res->name_off;
		w->any = 1;
		w->nonzero |= res->start || res->end;
		return 1;
	}
	if (!w->any || !w->nonzero) {
		*err = (struct kexecd_iomem_error){
			.fault = w->any ? KEXECD_IOMEM_ZEROS : KEXECD_IOMEM_EMPTY
		};
		return -EBADMSG;
	}
	return 0;
}

int kexecd_iomem_parse(const uint8_t *text, uint64_t len, struct kexecd_resource *ret,
		       uint32_t cap, uint32_t *nr_ret, struct kexecd_iomem_error *err_ret)
{
	struct lines w = { .text = text, .len = len };
	struct kexecd_resource res;
	int r;

	*nr_ret = 0;
	memset(err_ret, 0, sizeof(*err_ret));
	while ((r = next_resource(&w, &res, err_ret)) > 0) {
		if (*nr_ret >= cap)
			return -ENOSPC;
		ret[(*nr_ret)++] = res;
	}
	return r;
}

static int name_is(const uint8_t *text, const struct kexecd_resource *res, const char *name)
{
	size_t n = strlen(name);

	return res->name_len == n && !memcmp(text + res->name_off, name, n);
}

static int holds_ram(const uint8_t *text, const struct kexecd_resource *res)
{
	const uint8_t *p = text + res->name_off;
	uint64_t n = res->name_len, k = sizeof(RAM) - 1;

	for (uint64_t i = 0; n >= k && i <= n - k; i++)
		if (p[i] == 'S' && !memcmp(p + i, RAM, k))
			return 1;
	return 0;
}

// Room for one more range.
static int grow(struct kexecd_crash_ranges *cr, uint32_t *cap)
{
	struct kexecd_range *r;
	uint32_t want;

	if (cr->nr_ranges < *cap)
		return 0;
	want = *cap ? *cap * 2 : 64;
	if (want <= *cap)
		return -ENOMEM;
	r = realloc(cr->ranges, (size_t)want * sizeof(*r));
	if (!r)
		return -ENOMEM;
	cr->ranges = r;
	*cap = want;
	return 0;
}

// The names kexec-tools cuts out besides "Crash kernel": the last range of
// each, in the order the names first appear.
struct skips {
	struct kexecd_range last[KEXECD_MAX_CRASH_RESERVED];
	uint32_t order[KEXECD_MAX_CRASH_RESERVED];
	int seen[KEXECD_MAX_CRASH_RESERVED];
	uint32_t nr;
};

// Sorts (range, index) pairs, so that sorting by start is stable.
struct indexed {
	struct kexecd_range r;
	uint32_t i;
};

static int cmp_indexed(const void *a, const void *b)
{
	const struct indexed *x = a, *y = b;

	if (x->r.start != y->r.start)
		return x->r.start < y->r.start ? -1 : 1;
	return x->i < y->i ? -1 : x->i > y->i;
}

static int sort_stable(struct kexecd_crash_ranges *cr)
{
	struct indexed *t;

	if (cr->nr_ranges < 2)
		return 0;
	t = malloc((size_t)cr->nr_ranges * sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (uint32_t i = 0; i < cr->nr_ranges; i++)
		t[i] = (struct indexed){ cr->ranges[i], i };
	qsort(t, cr->nr_ranges, sizeof(*t), cmp_indexed);
	for (uint32_t i = 0; i < cr->nr_ranges; i++)
		cr->ranges[i] = t[i].r;
	free(t);
	return 0;
}

// kexec/mem_regions.c mem_regions_exclude() (arm64): only a range holding
// the cut whole is cut; the upper part of a split is appended (typed RAM) and
// the scan stops there; after a range is removed the next one is not looked
// at (the index moves on past the entry shuffled into its place).
static int regions_exclude(struct kexecd_crash_ranges *cr, uint32_t *cap,
			   const struct kexecd_range *cut)
{
	for (uint32_t i = 0; i < cr->nr_ranges; i++) {
		struct kexecd_range *r = &cr->ranges[i];
		struct kexecd_range upper;

		if (!(r->start <= cut->start && r->end >= cut->end))
			continue;
		if (r->start == cut->start && r->end == cut->end) {
			memmove(r, r + 1, (size_t)(cr->nr_ranges - i - 1) * sizeof(*r));
			cr->nr_ranges--;
		} else if (r->start == cut->start) {
			r->start = cut->end + 1;
		} else if (r->end == cut->end) {
			r->end = cut->start - 1;
		} else {
			upper = (struct kexecd_range){ cut->end + 1, r->end, KEXECD_RANGE_RAM };
			r->end = cut->start - 1;
			if (grow(cr, cap))
				return -ENOMEM;
			cr->ranges[cr->nr_ranges++] = upper;
			break;
		}
	}
	return 0;
}

// x86: exclude_region() for each cut, in order; a split past max_ranges fails.
static int exclude_all(struct kexecd_crash_ranges *cr, uint32_t *cap, uint32_t limit,
		       const struct skips *sk)
{
	for (uint32_t c = 0; c < cr->nr_reserved + sk->nr; c++) {
		int skipped = c < cr->nr_reserved ? -1 : (int)sk->order[c - cr->nr_reserved];
		const struct kexecd_range *cut = skipped < 0 ? &cr->reserved[c] : &sk->last[skipped];
		uint32_t room;
		int r;

		if (grow(cr, cap))
			return -ENOMEM;
		room = cr->nr_ranges + 1 < limit ? cr->nr_ranges + 1 : limit;
		r = kexecd_ranges_exclude(cr->ranges, &cr->nr_ranges, room, cut->start, cut->end);
		if (r == -ENOSPC) {
			cr->error = (struct kexecd_iomem_error){ .fault = KEXECD_IOMEM_TOO_MANY,
								 .cut = skipped,
								 .cut_start = cut->start,
								 .cut_end = cut->end };
			return r;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

// Which range type kexec-tools gives a line: 1 and *type_ret, or 0 (not
// collected; a skipped name's range is remembered instead).
static int classify(const uint8_t *text, const struct kexecd_resource *res,
		    const struct kexecd_iomem_rules *rules, struct skips *sk, int *type_ret)
{
	if (rules->ram_exact ? name_is(text, res, RAM) : holds_ram(text, res)) {
		*type_ret = KEXECD_RANGE_RAM;
		return 1;
	}
	for (uint32_t i = 0; i < rules->nr_skipped; i++) {
		if (name_is(text, res, rules->skipped[i])) {
			if (!sk->seen[i]) {
				sk->seen[i] = 1;
				sk->order[sk->nr++] = i;
			}
			sk->last[i] = (struct kexecd_range){ res->start, res->end, KEXECD_RANGE_RAM };
			return 0;
		}
	}
	for (uint32_t i = 0; i < rules->nr_types; i++) {
		if (name_is(text, res, rules->type_names[i])) {
			*type_ret = rules->types[i];
			return 1;
		}
	}
	return 0;
}

int kexecd_iomem_collect(const uint8_t *text, uint64_t len, const struct kexecd_iomem_rules *rules,
			 struct kexecd_crash_ranges *ret)
{
	struct lines w = { .text = text, .len = len };
	struct kexecd_resource res;
	struct skips sk = { 0 };
	uint32_t cap = 0;
	int r, type;

	memset(ret, 0, sizeof(*ret));
	if (rules->max_crash_reserved > KEXECD_MAX_CRASH_RESERVED ||
	    rules->nr_skipped > KEXECD_MAX_CRASH_RESERVED)
		return -EINVAL;
	while ((r = next_resource(&w, &res, &ret->error)) > 0) {
		if (name_is(text, &res, CRASH) && ret->nr_reserved < rules->max_crash_reserved)
			ret->reserved[ret->nr_reserved++] =
				(struct kexecd_range){ res.start, res.end, KEXECD_RANGE_RAM };
		if (ret->nr_ranges >= rules->max_ranges)
			continue;
		if (!classify(text, &res, rules, &sk, &type))
			continue;
		if (grow(ret, &cap))
			return -ENOMEM;
		ret->ranges[ret->nr_ranges++] = (struct kexecd_range){ res.start, res.end, type };
	}
	if (r < 0)
		return r;
	if (!rules->sort_ranges)
		return exclude_all(ret, &cap, rules->max_ranges, &sk);
	for (uint32_t c = 0; c < ret->nr_reserved; c++)
		if (regions_exclude(ret, &cap, &ret->reserved[c]))
			return -ENOMEM;
	return sort_stable(ret);
}

void kexecd_crash_ranges_deinit(struct kexecd_crash_ranges *cr)
{
	if (!cr)
		return;
	free(cr->ranges);
	cr->ranges = NULL;
	cr->nr_ranges = 0;
}
