// SPDX-License-Identifier: GPL-2.0-or-later
// Lines and whitespace as Python's str.splitlines() and str.isspace() see
// them, over UTF-8 bytes: iomem.c numbers /proc/iomem's lines as kexecd's
// messages always have (the text decoded, then split). Internal to the C
// core: not part of kexecd_core.h, so not of the cffi module.
#ifndef KEXECD_PYTEXT_H
#define KEXECD_PYTEXT_H

#include <stdint.h>

// The length of the line separator at p (str.splitlines()' separators, the
// multi-byte ones UTF-8 encoded), or 0.
static inline uint64_t sep_len(const uint8_t *p, uint64_t left)
{
	switch (p[0]) {
	case '\n':
	case '\v':
	case '\f':
	case 0x1c:
	case 0x1d:
	case 0x1e:
		return 1;
	case '\r':
		return left > 1 && p[1] == '\n' ? 2 : 1;
	case 0xc2: // U+0085
		return left > 1 && p[1] == 0x85 ? 2 : 0;
	case 0xe2: // U+2028, U+2029
		return left > 2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9) ? 3 : 0;
	default:
		return 0;
	}
}

// The first bytes of the separators, for a fast scan.
static const uint8_t may_end[256] = {
	['\n'] = 1, ['\v'] = 1, ['\f'] = 1, ['\r'] = 1, [0x1c] = 1,
	[0x1d] = 1,  [0x1e] = 1, [0xc2] = 1, [0xe2] = 1,
};

// The length of the whitespace character (str.isspace(), less the line
// separators) at p, or 0.
static inline uint64_t space_len(const uint8_t *p, uint64_t left)
{
	if (p[0] == ' ' || p[0] == '\t' || p[0] == 0x1f)
		return 1;
	if (left > 1 && p[0] == 0xc2 && p[1] == 0xa0)
		return 2;
	if (left < 3)
		return 0;
	if (p[0] == 0xe1 && p[1] == 0x9a && p[2] == 0x80) // U+1680
		return 3;
	if (p[0] == 0xe2 && p[1] == 0x80 && ((p[2] >= 0x80 && p[2] <= 0x8a) || p[2] == 0xaf))
		return 3; // U+2000-200A, U+202F
	if (p[0] == 0xe2 && p[1] == 0x81 && p[2] == 0x9f) // U+205F
		return 3;
	if (p[0] == 0xe3 && p[1] == 0x80 && p[2] == 0x80) // U+3000
		return 3;
	return 0;
}

static inline int blank(const uint8_t *p, uint64_t n)
{
	uint64_t i = 0, k;

	while (i < n) {
		k = space_len(p + i, n - i);
		if (!k)
			return 0;
		i += k;
	}
	return 1;
}

#endif // KEXECD_PYTEXT_H
