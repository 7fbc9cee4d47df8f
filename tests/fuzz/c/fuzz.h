// SPDX-License-Identifier: GPL-2.0-or-later
// What every libFuzzer target of the C core shares: a reader that turns the
// fuzz input into integers (zeros once it runs out), and a check that
// aborts with the failed condition, which libFuzzer reports as a crash.
#ifndef KEXECD_FUZZ_H
#define KEXECD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kexecd_core.h"

#define CHECK(cond)                                                                      \
	do {                                                                             \
		if (!(cond)) {                                                           \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
				#cond);                                                  \
			abort();                                                         \
		}                                                                        \
	} while (0)

struct input {
	const uint8_t *p;
	size_t left;
};

static inline uint64_t take(struct input *in, unsigned int bytes)
{
	uint64_t v = 0;

	if (!in->left)
		return 0;
	for (unsigned int i = 0; i < bytes && in->left; i++, in->p++, in->left--)
		v |= (uint64_t)*in->p << (8 * i);
	return v;
}

static inline uint8_t take8(struct input *in)
{
	return (uint8_t)take(in, 1);
}

static inline uint16_t take16(struct input *in)
{
	return (uint16_t)take(in, 2);
}

static inline uint32_t take32(struct input *in)
{
	return (uint32_t)take(in, 4);
}

static inline uint64_t take64(struct input *in)
{
	return take(in, 8);
}

/*
 * An address or size: small values most of the time, so that ranges overlap,
 * touch and nest; the edges of uint64_t often; any value sometimes.
 */
static inline uint64_t take_addr(struct input *in)
{
	uint8_t tag = take8(in);

	switch (tag >> 6) {
	case 0:
	case 1:
		return tag & 0x7f;
	case 2:
		return (tag & 1) ? UINT64_MAX - (tag >> 1 & 0x1f) : (uint64_t)(tag & 0x3e) << 58;
	default:
		return take64(in);
	}
}

/* @n bytes on the heap, exactly (none for 0): ASan catches an access past them. */
static inline void *exact_alloc(size_t n)
{
	void *p = malloc(n);

	CHECK(p || !n);
	return p;
}

#endif // KEXECD_FUZZ_H
