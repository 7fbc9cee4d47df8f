// SPDX-License-Identifier: GPL-2.0-or-later
// kexecd_sha256_restore() on a saved state from the input (raw, or with its
// fields made consistent so that restore accepts it), then updates, runs of
// zeros and finals in fuzzed sizes. restore must refuse every state that
// would index past buf; the digest must not depend on how the data was cut.
#include <errno.h>

#include "fuzz.h"

#define MAX_DATA (1u << 14)

static uint8_t all[MAX_DATA]; // what was hashed, to hash again in one piece

static void check_state(const struct kexecd_sha256 *s)
{
	CHECK(s->buflen < 64 && s->buflen == s->len % 64);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	struct kexecd_sha256 s, whole, init, saved;
	uint8_t raw[sizeof(struct kexecd_sha256)], d1[32], d2[32];
	uint64_t len = 0, rawlen;
	uint8_t mode = take8(&in);
	int r;

	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = take8(&in);
	if (mode & 1) {
		// Consistent fields: restore must take them.
		struct kexecd_sha256 fix;

		memcpy(&fix, raw, sizeof(fix));
		fix.len &= (UINT64_C(1) << 61) - 1;
		fix.buflen = (uint32_t)(fix.len % 64);
		memcpy(raw, &fix, sizeof(fix));
	}
	// The length the caller claims: usually right.
	rawlen = (mode & 6) == 6 ? take8(&in) : sizeof(raw);
	kexecd_sha256_init(&init);
	memset(&s, 0xa5, sizeof(s));
	r = kexecd_sha256_restore(&s, raw, rawlen);
	CHECK(r == 0 || r == -EINVAL);
	if (mode & 1 && rawlen == sizeof(raw))
		CHECK(r == 0);
	if (r) {
		CHECK(!memcmp(&s, &init, sizeof(s)));
	} else {
		struct kexecd_sha256 want;

		memcpy(&want, raw, sizeof(want));
		CHECK(!memcmp(s.h, want.h, sizeof(s.h)) && s.len == want.len);
		CHECK(!memcmp(s.buf, want.buf, sizeof(s.buf)) && s.buflen == want.buflen);
		check_state(&s);
	}
	whole = s;

	// Updates, zeros and finals as the input says; the same bytes go to
	// `all`, hashed in one piece at the end.
	while (in.left) {
		uint8_t op = take8(&in);
		uint64_t n;

		switch (op & 3) {
		case 0:
		case 1:
			n = take16(&in) % 1024;
			if (n > in.left)
				n = in.left;
			if (len + n > MAX_DATA)
				goto done;
			kexecd_sha256_update(&s, in.p, n);
			memcpy(all + len, in.p, n);
			in.p += n, in.left -= n, len += n;
			break;
		case 2:
			// Mostly short runs; up to 16 KiB (more of them only takes longer).
			n = take16(&in) & (op & 0x80 ? 0x3fff : 0x3ff);
			if (len + n > MAX_DATA)
				goto done;
			kexecd_sha256_zeros(&s, n);
			memset(all + len, 0, n);
			len += n;
			break;
		default:
			saved = s;
			kexecd_sha256_final(&s, d1);
			// final leaves the state as it was
			CHECK(!memcmp(saved.h, s.h, sizeof(s.h)) && saved.len == s.len);
			CHECK(!memcmp(saved.buf, s.buf, sizeof(s.buf)) && saved.buflen == s.buflen);
			break;
		}
		check_state(&s);
	}
done:
	kexecd_sha256_update(&whole, all, len);
	check_state(&whole);
	kexecd_sha256_final(&s, d1);
	kexecd_sha256_final(&whole, d2);
	CHECK(!memcmp(d1, d2, sizeof(d1)));
	return 0;
}
