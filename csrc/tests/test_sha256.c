// SPDX-License-Identifier: GPL-2.0-or-later
// SHA-256 against the FIPS 180-4 examples, state copies, and kexec_load's
// argument check (the only path that runs without calling the kernel).
#include <errno.h>
#include <string.h>

#include "kexecd_core.h"
#include "check.h"

static int hex_is(const uint8_t d[32], const char *hex)
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < 32; i++)
		if (hex[2 * i] != digits[d[i] >> 4] || hex[2 * i + 1] != digits[d[i] & 15])
			return 0;
	return 1;
}

int main(void)
{
	struct kexecd_sha256 s, saved;
	struct kexecd_segment segs[KEXECD_MAX_SEGMENTS + 1] = { 0 };
	uint8_t d[32];
	static uint8_t million_a[1000000];

	kexecd_sha256_init(&s);
	kexecd_sha256_final(&s, d);
	CHECK(hex_is(d, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));

	kexecd_sha256_update(&s, (const uint8_t *)"abc", 3);
	kexecd_sha256_final(&s, d);
	CHECK(hex_is(d, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));

	// Two blocks, fed in odd pieces, through a saved copy of the state.
	const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	kexecd_sha256_init(&s);
	kexecd_sha256_update(&s, (const uint8_t *)two, 5);
	saved = s;
	kexecd_sha256_update(&saved, (const uint8_t *)two + 5, strlen(two) - 5);
	kexecd_sha256_final(&saved, d);
	CHECK(hex_is(d, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));

	memset(million_a, 'a', sizeof(million_a));
	kexecd_sha256_init(&s);
	kexecd_sha256_update(&s, million_a, sizeof(million_a));
	kexecd_sha256_final(&s, d);
	CHECK(hex_is(d, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));

	// zeros() is update() with a zero buffer.
	memset(million_a, 0, sizeof(million_a));
	kexecd_sha256_init(&s);
	kexecd_sha256_update(&s, million_a, 12345);
	kexecd_sha256_final(&s, d);
	uint8_t d2[32];
	kexecd_sha256_init(&s);
	kexecd_sha256_zeros(&s, 12345);
	kexecd_sha256_final(&s, d2);
	CHECK(!memcmp(d, d2, 32));

	// A restored state is checked field by field (it comes from a file).
	struct kexecd_sha256 r, bad;
	kexecd_sha256_init(&s);
	kexecd_sha256_update(&s, (const uint8_t *)two, 5);
	CHECK(kexecd_sha256_restore(&r, (const uint8_t *)&s, sizeof(s)) == 0);
	CHECK(r.len == 5 && r.buflen == 5 && !memcmp(r.h, s.h, sizeof(s.h)));
	CHECK(kexecd_sha256_restore(&r, (const uint8_t *)&s, sizeof(s) - 1) == -EINVAL);
	bad = s;
	bad.buflen = 0x7fffffff; // would index buf far out of bounds
	CHECK(kexecd_sha256_restore(&r, (const uint8_t *)&bad, sizeof(bad)) == -EINVAL);
	CHECK(r.len == 0 && r.buflen == 0); // left initialised
	bad = s;
	bad.buflen = 64;
	CHECK(kexecd_sha256_restore(&r, (const uint8_t *)&bad, sizeof(bad)) == -EINVAL);
	bad = s;
	bad.len = 6; // buflen must be len % 64
	CHECK(kexecd_sha256_restore(&r, (const uint8_t *)&bad, sizeof(bad)) == -EINVAL);
	bad = s;
	bad.len = (UINT64_C(1) << 61) + 5;
	CHECK(kexecd_sha256_restore(&r, (const uint8_t *)&bad, sizeof(bad)) == -EINVAL);

	CHECK(kexecd_kexec_load(0, 0, segs, KEXECD_MAX_SEGMENTS + 1) == -EINVAL);
	return check_done();
}
