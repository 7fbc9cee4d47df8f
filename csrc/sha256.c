// SPDX-License-Identifier: GPL-2.0-or-later
// SHA-256 (FIPS 180-4) whose state is plain data: kexecd keeps the state
// after the segments that precede the ELF core header, so a refresh hashes
// only the header and what follows it.
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "kexecd_core.h"

static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
	0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
	0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
	0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
	0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
	0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
	0xc67178f2,
};

static inline uint32_t ror(uint32_t x, unsigned int n)
{
	return (x >> n) | (x << (32 - n));
}

static void compress(uint32_t h[8], const uint8_t block[64])
{
	uint32_t w[64], a, b, c, d, e, f, g, k;

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
		       (uint32_t)block[4 * i + 2] << 8 | block[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);

		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t s1 = ror(e, 6) ^ ror(e, 11) ^ ror(e, 25);
		uint32_t ch = (e & f) ^ (~e & g);
		uint32_t t1 = k + s1 + ch + K[i] + w[i];
		uint32_t s0 = ror(a, 2) ^ ror(a, 13) ^ ror(a, 22);
		uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
		uint32_t t2 = s0 + maj;

		k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

static void compress_blocks_c(uint32_t h[8], const uint8_t *data, uint64_t blocks)
{
	for (; blocks; blocks--, data += 64)
		compress(h, data);
}

#if defined(__x86_64__)
// The same with the SHA extensions (Intel SHA-NI, AMD Zen): four rounds per
// group, SHA256RNDS2 doing two at a time on the state split as ABEF and CDGH,
// SHA256MSG1/MSG2 extending the message schedule.
__attribute__((target("sha,sse4.1"))) static void compress_blocks_ni(uint32_t h[8],
								     const uint8_t *data,
								     uint64_t blocks)
{
	const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
	__m128i abef, cdgh, t, w[4];

	t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xb1); // B A D C
	cdgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1b); // H G F E
	abef = _mm_alignr_epi8(t, cdgh, 8);
	cdgh = _mm_blend_epi16(cdgh, t, 0xf0);
	for (; blocks; blocks--, data += 64) {
		__m128i abef0 = abef, cdgh0 = cdgh;

		for (int g = 0; g < 16; g++) {
			__m128i *cur = &w[g & 3];

			if (g < 4) {
				*cur = _mm_shuffle_epi8(
					_mm_loadu_si128((const __m128i *)(data + 16 * g)), bswap);
			} else {
				// W[4g..] = sigma1 terms on top of W[-16] + sigma0(W[-15]) + W[-7].
				t = _mm_sha256msg1_epu32(*cur, w[(g - 3) & 3]);
				t = _mm_add_epi32(t, _mm_alignr_epi8(w[(g - 1) & 3], w[(g - 2) & 3], 4));
				*cur = _mm_sha256msg2_epu32(t, w[(g - 1) & 3]);
			}
			t = _mm_add_epi32(*cur, _mm_loadu_si128((const __m128i *)&K[4 * g]));
			cdgh = _mm_sha256rnds2_epu32(cdgh, abef, t);
			abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(t, 0x0e));
		}
		abef = _mm_add_epi32(abef, abef0);
		cdgh = _mm_add_epi32(cdgh, cdgh0);
	}
	t = _mm_shuffle_epi32(abef, 0x1b); // F E B A
	cdgh = _mm_shuffle_epi32(cdgh, 0xb1); // D C H G
	_mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(t, cdgh, 0xf0)); // D C B A
	_mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(cdgh, t, 8)); // H G F E
}

static int have_sha_ni(void)
{
	unsigned int a, b, c, d;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
		return 0;
	return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA);
}
#endif

typedef void (*compress_fn)(uint32_t h[8], const uint8_t *data, uint64_t blocks);

// The fastest way this CPU has; KEXECD_SHA256_PORTABLE in the environment
// forces the portable one (the tests compare the two).
static compress_fn compress_blocks(void)
{
	static compress_fn fn;
	compress_fn pick = __atomic_load_n(&fn, __ATOMIC_RELAXED);

	if (pick)
		return pick;
	pick = compress_blocks_c;
#if defined(__x86_64__)
	if (have_sha_ni() && !getenv("KEXECD_SHA256_PORTABLE"))
		pick = compress_blocks_ni;
#endif
	__atomic_store_n(&fn, pick, __ATOMIC_RELAXED);
	return pick;
}

void kexecd_sha256_init(struct kexecd_sha256 *s)
{
	static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
					0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };

	memset(s, 0, sizeof(*s));
	memcpy(s->h, iv, sizeof(iv));
}

int kexecd_sha256_restore(struct kexecd_sha256 *ret, const uint8_t *state, uint64_t len)
{
	struct kexecd_sha256 s;

	kexecd_sha256_init(ret);
	if (len != sizeof(s))
		return -EINVAL;
	memcpy(&s, state, sizeof(s));
	if (s.buflen >= 64 || s.buflen != s.len % 64 || s.len >= (UINT64_C(1) << 61))
		return -EINVAL;
	*ret = s;
	return 0;
}

void kexecd_sha256_update(struct kexecd_sha256 *s, const uint8_t *data, uint64_t len)
{
	s->len += len;
	if (s->buflen) {
		uint64_t n = 64 - s->buflen < len ? 64 - s->buflen : len;

		memcpy(s->buf + s->buflen, data, n);
		s->buflen += (uint32_t)n;
		data += n;
		len -= n;
		if (s->buflen < 64)
			return;
		compress(s->h, s->buf);
		s->buflen = 0;
	}
	if (len >= 64) {
		compress_blocks()(s->h, data, len / 64);
		data += len / 64 * 64;
		len %= 64;
	}
	memcpy(s->buf, data, len);
	s->buflen = (uint32_t)len;
}

void kexecd_sha256_zeros(struct kexecd_sha256 *s, uint64_t len)
{
	static const uint8_t zeros[4096];

	while (len) {
		uint64_t n = len < sizeof(zeros) ? len : sizeof(zeros);

		kexecd_sha256_update(s, zeros, n);
		len -= n;
	}
}

void kexecd_sha256_final(const struct kexecd_sha256 *state, uint8_t digest_ret[32])
{
	struct kexecd_sha256 s = *state;
	uint64_t bits = s.len * 8;
	uint8_t pad[72] = { 0x80 };
	uint64_t padlen = (s.buflen < 56 ? 56 : 120) - s.buflen;

	for (int i = 0; i < 8; i++)
		pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
	kexecd_sha256_update(&s, pad, padlen + 8);
	for (int i = 0; i < 8; i++) {
		digest_ret[4 * i] = (uint8_t)(s.h[i] >> 24);
		digest_ret[4 * i + 1] = (uint8_t)(s.h[i] >> 16);
		digest_ret[4 * i + 2] = (uint8_t)(s.h[i] >> 8);
		digest_ret[4 * i + 3] = (uint8_t)s.h[i];
	}
}
