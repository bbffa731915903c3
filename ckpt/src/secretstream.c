/* libsodium's secretstream, the same bytes, with the bulk in OpenSSL's libcrypto where it agrees (secretstream.h). */
#include "secretstream.h"

#include "ckpt/ckpt.h"

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef CKPT_HAVE_LIBCRYPTO
#include <openssl/evp.h>
#endif

#define ABYTES crypto_secretstream_xchacha20poly1305_ABYTES
#define TAG_REKEY crypto_secretstream_xchacha20poly1305_TAG_REKEY
#define COUNTERBYTES 4           /* libsodium's, not in its headers: the nonce's first 4 bytes */
#define INONCEBYTES 8

_Static_assert(sizeof ((ckpt_ss_state *)0)->k == crypto_stream_chacha20_ietf_KEYBYTES, "secretstream key");
_Static_assert(sizeof ((ckpt_ss_state *)0)->nonce == COUNTERBYTES + INONCEBYTES, "secretstream nonce");

void ckpt__ss_after(ckpt_ss_state *st, const unsigned char *mac)
{
	for (int i = 0; i < INONCEBYTES; i++)
		st->nonce[COUNTERBYTES + i] ^= mac[i];
	sodium_increment(st->nonce, COUNTERBYTES);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int sodium_ok;
static int with_openssl;        /* pushes and pulls go through libcrypto */

#ifdef CKPT_HAVE_LIBCRYPTO
static EVP_CIPHER *chacha;
static EVP_MAC *poly;

/* After a chunk with this MAC and tag: ckpt__ss_after, then a rekey on TAG_REKEY or a counter back at 0. */
static void advance(ckpt_ss_state *st, const unsigned char *mac, unsigned char tag)
{
	ckpt__ss_after(st, mac);
	if ((tag & TAG_REKEY) != 0 || sodium_is_zero(st->nonce, COUNTERBYTES))
		crypto_secretstream_xchacha20poly1305_rekey(st);
}

/* out = in XOR the ChaCha20 (IETF) keystream of st from block ic on; 0, or -1 if libcrypto failed. */
static int ossl_xor(const ckpt_ss_state *st, unsigned char *out, const unsigned char *in, size_t len, uint32_t ic)
{
	unsigned char iv[16];   /* OpenSSL's ChaCha20 IV: the block counter (32 bits, LE), then the 96-bit nonce */
	EVP_CIPHER_CTX *x;
	int n = 0, ok;

	if (len == 0)
		return 0;
	if (len > INT_MAX)
		return -1;
	for (int i = 0; i < 4; i++)
		iv[i] = (unsigned char)(ic >> (8 * i));
	memcpy(iv + 4, st->nonce, sizeof st->nonce);
	if (!(x = EVP_CIPHER_CTX_new()))
		return -1;
	ok = EVP_EncryptInit_ex2(x, chacha, st->k, iv, NULL) && EVP_EncryptUpdate(x, out, &n, in, (int)len) &&
	     n == (int)len;
	EVP_CIPHER_CTX_free(x);        /* clears the key schedule */
	return ok ? 0 : -1;
}

/*
 * The chunk's Poly1305 tag, as libsodium computes it: keyed by block 0 of
 * the keystream, over the associated data, the encrypted tag block (block
 * 1), the ciphertext, each padded to 16 bytes, and the two lengths.
 */
static int ossl_mac(const ckpt_ss_state *st, const unsigned char block[64], const unsigned char *c, size_t mlen,
		    const unsigned char *ad, size_t adlen, unsigned char mac[16])
{
	static const unsigned char pad0[16];
	unsigned char key[64], lens[16];
	size_t padad = (0x10 - adlen) & 0xf, padc = (0x10 - 64 + mlen) & 0xf, got = 0;
	EVP_MAC_CTX *x = EVP_MAC_CTX_new(poly);
	int ok;

	for (int i = 0; i < 8; i++) {
		lens[i] = (unsigned char)((uint64_t)adlen >> (8 * i));
		lens[8 + i] = (unsigned char)((uint64_t)(64 + mlen) >> (8 * i));
	}
	crypto_stream_chacha20_ietf(key, sizeof key, st->nonce, st->k);
	ok = x && EVP_MAC_init(x, key, 32, NULL) && (adlen == 0 || EVP_MAC_update(x, ad, adlen)) &&
	     (padad == 0 || EVP_MAC_update(x, pad0, padad)) && EVP_MAC_update(x, block, 64) &&
	     (mlen == 0 || EVP_MAC_update(x, c, mlen)) && (padc == 0 || EVP_MAC_update(x, pad0, padc)) &&
	     EVP_MAC_update(x, lens, sizeof lens) && EVP_MAC_final(x, mac, &got, 16) && got == 16;
	EVP_MAC_CTX_free(x);
	sodium_memzero(key, sizeof key);
	return ok ? 0 : -1;
}

/* push through libcrypto; 0, or -1 with the state untouched (libcrypto failed: libsodium then does it) */
static int ossl_push(ckpt_ss_state *st, unsigned char *c, const unsigned char *m, size_t mlen, const unsigned char *ad,
		     size_t adlen, unsigned char tag)
{
	unsigned char block[64] = { tag }, *mac = c + 1 + mlen;
	int rc = -1;

	crypto_stream_chacha20_ietf_xor_ic(block, block, sizeof block, st->nonce, 1U, st->k);
	if (ossl_xor(st, c + 1, m, mlen, 2) == 0 && ossl_mac(st, block, c + 1, mlen, ad, adlen, mac) == 0) {
		c[0] = block[0];
		advance(st, mac, tag);
		rc = 0;
	}
	sodium_memzero(block, sizeof block);
	return rc;
}

/* pull through libcrypto: 0; 1, not authentic; -1, libcrypto failed (then libsodium does it). m and st change only on 0. */
static int ossl_pull(ckpt_ss_state *st, unsigned char *m, unsigned long long *mlen_p, unsigned char *tag_p,
		     const unsigned char *in, size_t inlen, const unsigned char *ad, size_t adlen)
{
	unsigned char block[64] = { 0 }, mac[16], tag;
	size_t mlen;
	int rc = -1;

	if (mlen_p)             /* as libsodium: what a refused chunk reports */
		*mlen_p = 0;
	if (tag_p)
		*tag_p = 0xff;
	if (inlen < ABYTES)
		return 1;
	mlen = inlen - ABYTES;
	block[0] = in[0];
	crypto_stream_chacha20_ietf_xor_ic(block, block, sizeof block, st->nonce, 1U, st->k);
	tag = block[0];
	block[0] = in[0];
	if (ossl_mac(st, block, in + 1, mlen, ad, adlen, mac) < 0)
		goto out;
	if (crypto_verify_16(mac, in + 1 + mlen) != 0) {
		rc = 1;
		goto out;
	}
	if (ossl_xor(st, m, in + 1, mlen, 2) < 0)
		goto out;       /* m may hold part of the verified plaintext; libsodium's pull writes it whole */
	advance(st, mac, tag);
	if (mlen_p)
		*mlen_p = mlen;
	if (tag_p)
		*tag_p = tag;
	rc = 0;
out:
	sodium_memzero(block, sizeof block);
	sodium_memzero(mac, sizeof mac);
	return rc;
}

/*
 * libcrypto and libsodium on the same stream, chunk by chunk: messages of
 * every length class around the 16- and 64-byte boundaries, every tag, a
 * counter about to wrap. The same ciphertext and state, the pull accepting
 * each chunk and refusing a flipped bit; else libcrypto is not used.
 */
static int ossl_agrees(void)
{
	static const size_t lens[] = { 0, 1, 15, 16, 17, 63, 64, 65, 129, 1000 };
	static const unsigned char tags[] = { crypto_secretstream_xchacha20poly1305_TAG_MESSAGE,
					      crypto_secretstream_xchacha20poly1305_TAG_PUSH, TAG_REKEY,
					      crypto_secretstream_xchacha20poly1305_TAG_FINAL };
	unsigned char key[32], hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES], m[1000], ad[40];
	unsigned char ca[1000 + ABYTES], cb[1000 + ABYTES], back[1000];
	ckpt_ss_state a, b, p;
	int ok = 1;

	for (size_t i = 0; i < sizeof key; i++)
		key[i] = (unsigned char)(0x5c ^ i * 7);
	for (size_t i = 0; i < sizeof hdr; i++)
		hdr[i] = (unsigned char)(i * 13 + 1);
	for (size_t i = 0; i < sizeof m; i++)
		m[i] = (unsigned char)(i * 31 + 7);
	for (size_t i = 0; i < sizeof ad; i++)
		ad[i] = (unsigned char)(i + 100);
	if (crypto_secretstream_xchacha20poly1305_init_pull(&a, hdr, key) != 0)
		return 0;
	for (size_t i = 0; ok && i < 2 * sizeof lens / sizeof *lens; i++) {
		size_t len = lens[i % (sizeof lens / sizeof *lens)], adlen = i * 3 % sizeof ad;
		unsigned char tag = tags[i % 4], got_tag = 0xff;
		unsigned long long la = 0, got = 0;
		if (i == sizeof lens / sizeof *lens)     /* the second round: the counter wraps after this chunk */
			memset(a.nonce, 0xff, COUNTERBYTES);
		b = a;
		p = a;
		crypto_secretstream_xchacha20poly1305_push(&a, ca, &la, m, len, ad, adlen, tag);
		ok = ossl_push(&b, cb, m, len, ad, adlen, tag) == 0 && la == len + ABYTES &&
		     memcmp(ca, cb, (size_t)la) == 0 && memcmp(a.k, b.k, sizeof a.k) == 0 &&
		     memcmp(a.nonce, b.nonce, sizeof a.nonce) == 0;
		ckpt_ss_state q = p;
		ca[(i * 5) % la] ^= 0x10;
		ok = ok && ossl_pull(&q, back, &got, &got_tag, ca, (size_t)la, ad, adlen) == 1;
		ca[(i * 5) % la] ^= 0x10;
		ok = ok && ossl_pull(&p, back, &got, &got_tag, ca, (size_t)la, ad, adlen) == 0 && got == len &&
		     got_tag == tag && memcmp(back, m, len) == 0 && memcmp(p.k, a.k, sizeof a.k) == 0 &&
		     memcmp(p.nonce, a.nonce, sizeof a.nonce) == 0;
	}
	return ok;
}

static int openssl_start(void)
{
	if (!(chacha = EVP_CIPHER_fetch(NULL, "ChaCha20", NULL)) || !(poly = EVP_MAC_fetch(NULL, "POLY1305", NULL)) ||
	    !ossl_agrees()) {
		EVP_CIPHER_free(chacha);
		EVP_MAC_free(poly);
		chacha = NULL;
		poly = NULL;
		return 0;
	}
	return 1;
}
#endif

static void start(void)
{
	const char *e = getenv("CKPT_SEAL_ENGINE");

	sodium_ok = sodium_init() >= 0;
#ifdef CKPT_HAVE_LIBCRYPTO
	if (sodium_ok && !(e && strcmp(e, "libsodium") == 0))
		with_openssl = openssl_start();
#else
	(void)e;
#endif
}

int ckpt__ss_ready(void)
{
	pthread_once(&once, start);
	return sodium_ok ? 0 : -1;
}

const char *ckpt__ss_engine(void)
{
	return with_openssl ? "openssl" : "libsodium";
}

const char *ckpt_seal_engine(void)
{
	return ckpt__ss_ready() == 0 ? ckpt__ss_engine() : NULL;
}

void ckpt__ss_push(ckpt_ss_state *st, unsigned char *c, unsigned long long *clen, const unsigned char *m, size_t mlen,
		   const unsigned char *ad, size_t adlen, unsigned char tag)
{
#ifdef CKPT_HAVE_LIBCRYPTO
	if (with_openssl && ossl_push(st, c, m, mlen, ad, adlen, tag) == 0) {
		if (clen)
			*clen = mlen + ABYTES;
		return;
	}
#endif
	crypto_secretstream_xchacha20poly1305_push(st, c, clen, m, mlen, ad, adlen, tag);
}

int ckpt__ss_pull(ckpt_ss_state *st, unsigned char *m, unsigned long long *mlen, unsigned char *tag,
		  const unsigned char *c, size_t clen, const unsigned char *ad, size_t adlen)
{
#ifdef CKPT_HAVE_LIBCRYPTO
	if (with_openssl) {
		int rc = ossl_pull(st, m, mlen, tag, c, clen, ad, adlen);
		if (rc >= 0)
			return rc == 0 ? 0 : -1;
	}
#endif
	return crypto_secretstream_xchacha20poly1305_pull(st, m, mlen, tag, c, clen, ad, adlen);
}
