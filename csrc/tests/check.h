// SPDX-License-Identifier: GPL-2.0-or-later
// The C tests' one assertion macro and their closing line.
#ifndef KEXECD_TESTS_CHECK_H
#define KEXECD_TESTS_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond)                                                                \
	do {                                                                       \
		if (cond) {                                                        \
			passed++;                                                  \
		} else {                                                           \
			failed++;                                                  \
			fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond); \
		}                                                                  \
	} while (0)

static inline int check_done(void)
{
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

#endif
