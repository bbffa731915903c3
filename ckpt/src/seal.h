/*
 * Sealed checkpoint files: confidentiality and integrity against tampering.
 *
 * With a key, every shard and the manifest is one libsodium secretstream
 * (XChaCha20-Poly1305) per file:
 *
 *   "CKPTSEAL"  u32 LE version (1)  u32 LE chunk (plaintext bytes per chunk)
 *   24-byte secretstream header (random per file: a retry writes new files, so new headers)
 *   chunks: chunk plaintext bytes + 17 (tag byte, MAC), the last one shorter
 *           (possibly empty) and tagged FINAL
 *
 * Every chunk's associated data binds the first 16 bytes above, the
 * generation's step, the rank (-1: the manifest) and the file name, so a file
 * moved to another generation, rank or name fails authentication. The
 * manifest lists each sealed shard's size and, in its "xxh3" member, the
 * xxh3-64 of the shard's first 40 bytes (its stream identity): a shard of an
 * earlier save of the same step and rank (another header) is refused, and the
 * sealed manifest authenticates that list. A missing FINAL tag is truncation.
 * Nothing is handed out before its chunk's tag is verified.
 */
#ifndef CKPT_SEAL_H
#define CKPT_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

#define CKPT_SEAL_MAGIC "CKPTSEAL"
#define CKPT_SEAL_PREAMBLE 40               /* magic, version, chunk, stream header */
#define CKPT_SEAL_CHUNK_DEFAULT (1u << 20)
#define CKPT_SEAL_CHUNK_MIN 4096u
#define CKPT_SEAL_CHUNK_MAX (16u << 20)

typedef struct ckpt_seal_ring ckpt_seal_ring;

typedef struct ckpt_seal_key {
	unsigned char k[32];
	uint32_t chunk;             /* plaintext bytes per chunk written */
	int allow_unsealed;         /* read generations written without a key */
	ckpt_seal_ring *rings;      /* the writers' rings (seal.c), kept from one file to the next: a cache */
} ckpt_seal_key;

/*
 * Load a key file: 32 raw bytes, or 64 hex digits (a newline may follow).
 * Refused (-EPERM) unless a regular file owned by this user that neither its
 * group nor others may read or write. why says what is wrong and how to fix it.
 */
int ckpt__seal_key_load(ckpt_seal_key **out, const char *path, char *why, size_t wl);
void ckpt__seal_key_free(ckpt_seal_key *k);
/* The key CKPT_KEY_FILE names, loaded once per process (ckpt-tool); NULL without it or if it fails. */
const ckpt_seal_key *ckpt__seal_key_env(void);

/* The key of a configuration (key_file, else CKPT_KEY_FILE), checked; *out NULL without one. */
int ckpt__seal_setup(ckpt_io *io, const ckpt_config *cfg, ckpt_seal_key **out);

/*
 * A save will seal shards of about plain_bytes: where that takes the sealer
 * thread, map the writer's ring now (kept by the key), so that the first save
 * does not pay for it (7-9 ms of a 128 MiB shard's 200 here). A restore of
 * such shards reads through the same ring (ckpt__seal_ring_lend).
 */
void ckpt__seal_prepare(ckpt_seal_key *k, uint64_t plain_bytes);

/*
 * The ring the key keeps for its writers, lent to a reader of a sealed file
 * (ckpt__stream_open), so that a restore maps no ring either; NULL (*len 0)
 * when the key keeps none or a writer has it. Returned with
 * ckpt__seal_ring_return (NULL is fine) after the stream is closed.
 */
unsigned char *ckpt__seal_ring_lend(const ckpt_seal_key *k, size_t *len);
void ckpt__seal_ring_return(const ckpt_seal_key *k, unsigned char *base, size_t len);

/* Do these bytes start like a sealed file? */
bool ckpt__seal_is_sealed(const void *buf, size_t len);

/*
 * Writing one sealed file through a write stream (its preamble at begin;
 * the caller finishes the stream after end).
 * size_hint: the plaintext bytes to come; from CKPT_STREAM_MIN_BYTES on, a
 * thread seals chunks while the caller's thread writes the ones before.
 */
typedef struct ckpt_sealw ckpt_sealw;
int ckpt__sealw_begin(ckpt_sealw **out, ckpt_seal_key *k, ckpt_io *io, ckpt_wstream *ws, const char *path,
		      uint64_t step, int rank, const char *name, uint64_t size_hint);
int ckpt__sealw_write(ckpt_sealw *w, const void *buf, size_t len);
/* Every buffer given to write stays unchanged until end: whole chunks are sealed in place, not copied. */
void ckpt__sealw_stable(ckpt_sealw *w);
/* The FINAL chunk; *size: bytes on disk, *ident: the stream identity. Frees w. */
int ckpt__sealw_end(ckpt_sealw *w, uint64_t *size, uint64_t *ident);
void ckpt__sealw_free(ckpt_sealw *w);

/*
 * Reading one: from a read-ahead stream (file_size bytes) or, with mem, from memory. begin
 * reads the preamble and authenticates the first chunk; *plain_len is the
 * plaintext's length, *ident the stream identity. read hands out exactly len
 * verified bytes; end checks that the FINAL chunk was reached and nothing follows.
 */
typedef struct ckpt_sealr ckpt_sealr;
int ckpt__sealr_begin(ckpt_sealr **out, const ckpt_seal_key *k, ckpt_io *io, ckpt_stream *in, const unsigned char *mem,
		      const char *path, uint64_t file_size, uint64_t step, int rank, const char *name,
		      uint64_t *plain_len, uint64_t *ident);
int ckpt__sealr_read(ckpt_sealr *r, void *buf, size_t len);
int ckpt__sealr_end(ckpt_sealr *r);
void ckpt__sealr_free(ckpt_sealr *r);

/*
 * The manifest of generation `name` just read (*text, *len): the key policy,
 * then, if sealed, its plaintext in place of the ciphertext. *sealed and
 * *ident say what it was. A sealed manifest without a key, or a plain one with
 * a key and no allow_unsealed, is refused (-EACCES) with the reason.
 */
int ckpt__seal_manifest_open(ckpt_io *io, const char *name, const char *path, char **text, size_t *len,
			     int *sealed, uint64_t *ident);

#endif
