/*
 * libckpt's secretstream (ckpt/src/secretstream.c) against libsodium's own:
 * every chunk pushed must be the same bytes and leave the same state, every
 * chunk either writes must pull with the other, and a flipped bit must be
 * refused with the buffer and the state untouched. Run once with the engine
 * the build picks (libcrypto where it has it) and once with
 * CKPT_SEAL_ENGINE=libsodium.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "secretstream.h"

#define ABYTES crypto_secretstream_xchacha20poly1305_ABYTES
#define MAXLEN 70000

static const unsigned char tags[] = { crypto_secretstream_xchacha20poly1305_TAG_MESSAGE,
				      crypto_secretstream_xchacha20poly1305_TAG_PUSH,
				      crypto_secretstream_xchacha20poly1305_TAG_REKEY,
				      crypto_secretstream_xchacha20poly1305_TAG_FINAL };

static void same_state(const ckpt_ss_state *a, const ckpt_ss_state *b)
{
	assert_memory_equal(a->k, b->k, sizeof a->k);
	assert_memory_equal(a->nonce, b->nonce, sizeof a->nonce);
}

/* The engine is the one the build and the environment ask for. */
static void test_secretstream__engine_is_the_one_asked_for(void **state)
{
	(void)state;
	const char *e = getenv("CKPT_SEAL_ENGINE");
	assert_int_equal(ckpt__ss_ready(), 0);
#ifdef CKPT_HAVE_LIBCRYPTO
	assert_string_equal(ckpt__ss_engine(), e && strcmp(e, "libsodium") == 0 ? "libsodium" : "openssl");
#else
	(void)e;
	assert_string_equal(ckpt__ss_engine(), "libsodium");
#endif
}

/*
 * Streams of random chunks (0 to 70000 bytes, every tag, associated data of
 * 0 to 99 bytes, a counter set to wrap now and then): pushed by both, the
 * same bytes and state; each pulled by the other.
 */
static void test_secretstream__same_bytes_and_state_as_libsodium(void **state)
{
	(void)state;
	unsigned char *m = malloc(MAXLEN), *ca = malloc(MAXLEN + ABYTES), *cb = malloc(MAXLEN + ABYTES);
	unsigned char *back = malloc(MAXLEN), key[32], hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES], ad[100];
	assert_int_equal(ckpt__ss_ready(), 0);
	assert_non_null(m);
	assert_non_null(ca);
	assert_non_null(cb);
	assert_non_null(back);
	for (int stream = 0; stream < 40; stream++) {
		ckpt_ss_state a, b, pa, pb;
		crypto_secretstream_xchacha20poly1305_keygen(key);
		crypto_secretstream_xchacha20poly1305_init_push(&a, hdr, key);
		assert_int_equal(crypto_secretstream_xchacha20poly1305_init_pull(&pa, hdr, key), 0);
		b = a;
		pb = pa;
		for (int k = 0; k < 12; k++) {
			size_t len = k % 3 == 0 ? randombytes_uniform(200) : randombytes_uniform(MAXLEN + 1);
			size_t adlen = randombytes_uniform(sizeof ad);
			unsigned char tag = tags[randombytes_uniform(4)], ta = 0xff, tb = 0xff;
			unsigned long long la = 0, lb = 0, ga = 0, gb = 0;
			randombytes_buf(m, len);
			randombytes_buf(ad, adlen);
			if (randombytes_uniform(8) == 0) {      /* the 32-bit counter wraps after this chunk: a rekey */
				memset(a.nonce, 0xff, 4);
				memset(b.nonce, 0xff, 4);
				memset(pa.nonce, 0xff, 4);
				memset(pb.nonce, 0xff, 4);
			}
			crypto_secretstream_xchacha20poly1305_push(&a, ca, &la, m, len, ad, adlen, tag);
			ckpt__ss_push(&b, cb, &lb, m, len, ad, adlen, tag);
			assert_int_equal(la, len + ABYTES);
			assert_int_equal(lb, la);
			assert_memory_equal(ca, cb, (size_t)la);
			same_state(&a, &b);
			/* libsodium's chunk through ours, ours through libsodium's */
			assert_int_equal(ckpt__ss_pull(&pb, back, &gb, &tb, ca, (size_t)la, ad, adlen), 0);
			assert_int_equal(gb, len);
			assert_int_equal(tb, tag);
			assert_memory_equal(back, m, len);
			assert_int_equal(crypto_secretstream_xchacha20poly1305_pull(&pa, back, &ga, &ta, cb, (size_t)lb, ad,
										    adlen), 0);
			assert_int_equal(ga, len);
			assert_int_equal(ta, tag);
			same_state(&pa, &a);
			same_state(&pb, &a);
		}
	}
	free(m);
	free(ca);
	free(cb);
	free(back);
}

/* A bit flipped anywhere in a chunk, or in its associated data, or a chunk cut short: refused, the buffer and state untouched. */
static void test_secretstream__tampering_is_refused_and_touches_nothing(void **state)
{
	(void)state;
	enum { LEN = 5000 };
	unsigned char m[LEN], c[LEN + ABYTES], back[LEN], key[32], hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
	unsigned char ad[24] = "step=10 rank=1 file=x";
	unsigned long long clen, got = 77;
	unsigned char tag = 0x55;
	ckpt_ss_state w, r, before;

	assert_int_equal(ckpt__ss_ready(), 0);
	randombytes_buf(m, sizeof m);
	crypto_secretstream_xchacha20poly1305_keygen(key);
	crypto_secretstream_xchacha20poly1305_init_push(&w, hdr, key);
	ckpt__ss_push(&w, c, &clen, m, sizeof m, ad, sizeof ad, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
	assert_int_equal(crypto_secretstream_xchacha20poly1305_init_pull(&r, hdr, key), 0);
	before = r;
	for (size_t at = 0; at < clen; at += at < 80 || at > clen - 80 ? 1 : 97) {
		c[at] ^= (unsigned char)(1u << (at % 8));
		memset(back, 0xa5, sizeof back);
		assert_int_equal(ckpt__ss_pull(&r, back, &got, &tag, c, (size_t)clen, ad, sizeof ad), -1);
		c[at] ^= (unsigned char)(1u << (at % 8));
		for (size_t i = 0; i < sizeof back; i++)
			assert_int_equal(back[i], 0xa5);
		assert_memory_equal(&r, &before, sizeof r);
	}
	ad[3] ^= 1;
	assert_int_equal(ckpt__ss_pull(&r, back, &got, &tag, c, (size_t)clen, ad, sizeof ad), -1);
	ad[3] ^= 1;
	assert_int_equal(ckpt__ss_pull(&r, back, &got, &tag, c, (size_t)clen - 1, ad, sizeof ad), -1);
	assert_int_equal(ckpt__ss_pull(&r, back, &got, &tag, c, ABYTES - 1, ad, sizeof ad), -1);
	assert_int_equal(got, 0);        /* what libsodium reports for a refused chunk */
	assert_int_equal(tag, 0xff);
	assert_memory_equal(&r, &before, sizeof r);
	assert_int_equal(ckpt__ss_pull(&r, back, &got, &tag, c, (size_t)clen, ad, sizeof ad), 0);
	assert_memory_equal(back, m, sizeof m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_secretstream__engine_is_the_one_asked_for),
		cmocka_unit_test(test_secretstream__same_bytes_and_state_as_libsodium),
		cmocka_unit_test(test_secretstream__tampering_is_refused_and_touches_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
