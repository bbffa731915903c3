/*
 * libsodium's crypto_secretstream_xchacha20poly1305, push and pull, byte for
 * byte the same: what one writes the other reads, and both leave the same
 * state. The per-chunk work (ChaCha20 over the message, Poly1305 over the
 * ciphertext) is done by OpenSSL's libcrypto when the build has it and it
 * agrees with libsodium on a known answer at first use: there it runs at
 * 2.4-2.6 GB/s a core against libsodium 1.0.18's 0.6-1.0 (AVX-512 against
 * AVX2 and SSE2 code, measured on this project's 2-core machine). Otherwise,
 * and for the stream's header, key derivation and rekeying always,
 * libsodium's own functions. CKPT_SEAL_ENGINE=libsodium (or =openssl)
 * chooses instead, for benchmarks and tests; an engine that is not there or
 * disagrees is never used.
 *
 * The state is libsodium's (its public layout: the key k, then the nonce,
 * a 32-bit little-endian counter and 8 bytes of inonce).
 */
#ifndef CKPT_SECRETSTREAM_H
#define CKPT_SECRETSTREAM_H

#include <sodium.h>
#include <stddef.h>

typedef crypto_secretstream_xchacha20poly1305_state ckpt_ss_state;

/* sodium_init and the choice of engine, once per process; 0, or -1 if libsodium cannot start. */
int ckpt__ss_ready(void);
/* "openssl" or "libsodium": the engine pushes and pulls take (after ckpt__ss_ready). */
const char *ckpt__ss_engine(void);

/*
 * The state libsodium's push and pull leave after a chunk with this MAC
 * (the last 16 bytes of its ciphertext), when they do not rekey: the
 * inonce XOR the MAC's first 8 bytes, the 32-bit counter + 1.
 */
void ckpt__ss_after(ckpt_ss_state *st, const unsigned char *mac);

/* As crypto_secretstream_xchacha20poly1305_push: c holds mlen + ABYTES bytes. */
void ckpt__ss_push(ckpt_ss_state *st, unsigned char *c, unsigned long long *clen, const unsigned char *m, size_t mlen,
		   const unsigned char *ad, size_t adlen, unsigned char tag);
/*
 * As crypto_secretstream_xchacha20poly1305_pull: the MAC is checked before
 * a byte is decrypted into m; 0, or -1 with m and the state untouched.
 */
int ckpt__ss_pull(ckpt_ss_state *st, unsigned char *m, unsigned long long *mlen, unsigned char *tag,
		  const unsigned char *c, size_t clen, const unsigned char *ad, size_t adlen);

#endif
