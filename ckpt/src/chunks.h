/*
 * Incremental checkpoints: the content-addressed chunk store (chunks.c).
 *
 * Each tensor of a rank is cut into chunks of chunk_size bytes (the last one
 * shorter), each addressed by the xxh3-128 of its bytes, seeded with the
 * chain's base step (the step of the full generation a delta descends from,
 * so chains share nothing and damage to a chunk reaches one chain, at most
 * full_every generations), and stored once, as
 * ROOT/chunks/HH/<32 hex> (HH: its first byte). A chunked generation (manifest
 * version 3) holds per rank a recipe, rank-R.chunks: the shard's safetensors
 * header, then the 16-byte hash of every chunk of its tensors in file order.
 * The recipe's size and xxh3 are in the manifest, so the manifest's checksum
 * covers, through them, the address of every byte; restore hashes what it
 * reads and never trusts a file's name.
 */
#ifndef CKPT_CHUNKS_H
#define CKPT_CHUNKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

#define CKPT_CHUNK_DEFAULT (1u << 20)

/* One rank's incremental state: the chunks of its base (what the next save may reuse). */
typedef struct ckpt_chunks ckpt_chunks;

int ckpt__chunks_new(ckpt_chunks **out, uint32_t chunk_bytes, uint32_t full_every, mode_t file_mode, mode_t dir_mode);
void ckpt__chunks_free(ckpt_chunks *k);
uint32_t ckpt__chunks_size(const ckpt_chunks *k);

/*
 * Save, on every rank, before its recipe is written: hash every chunk of the
 * n tensors (dst, file order), write durably the ones the base does not
 * have (all of them in a full save), phases save.chunk_write and
 * save.chunk_sync. The result is pending until ckpt__chunks_settle.
 */
int ckpt__chunks_save(ckpt_chunks *k, ckpt_io *io, ckpt_entry *const *dst, int n);
/* The pending recipe's hash table (16 bytes per chunk) and chain depth. */
const unsigned char *ckpt__chunks_table(const ckpt_chunks *k, size_t *len);
uint32_t ckpt__chunks_depth(const ckpt_chunks *k);
/* The pending save's chain: the step of its full generation, the seed of its chunk addresses. */
uint64_t ckpt__chunks_chain(const ckpt_chunks *k);
/* Bytes the pending save wrote as new chunks and reused from its base. */
void ckpt__chunks_bytes(const ckpt_chunks *k, uint64_t *written, uint64_t *shared);
/*
 * The agreed outcome of a save or restore: on success the pending chunks
 * become the base (none: the next save is full); on failure they are dropped.
 * Clearing before each attempt: ckpt__chunks_settle(k, false).
 */
void ckpt__chunks_settle(ckpt_chunks *k, bool ok);

/*
 * Verify rank's part of a chunked generation: its recipe (size, xxh3, header
 * against the manifest, table length), then every chunk (a regular file of
 * the expected size whose xxh3-128 is the recipe's), read into dst when not
 * NULL. With keep, a success leaves the recipe pending in keep.
 */
int ckpt__chunks_verify(ckpt_io *io, const char *name, const ckpt_manifest *m, int rank, ckpt_entry *const *dst,
			ckpt_chunks *keep);

/*
 * Mark and sweep: delete every file under ROOT/chunks that no committed
 * generation references (and chunk temporaries). Rank 0, only while no save
 * is in progress. The live set comes from the committed manifests alone; if
 * any committed generation cannot be read or verified (an I/O error, or a
 * manifest or recipe that fails its checks), nothing is deleted. 0, or < 0 with the error in io->err.
 */
int ckpt__chunks_gc(ckpt_io *io, ckpt_journal *j, const char *phase);

/* A chunk a generation references: its address and size. */
typedef struct ckpt_chunk_ref {
	unsigned char h[16];
	uint64_t bytes;
} ckpt_chunk_ref;

/* Every chunk every rank of a loaded chunked generation references (duplicates kept). Caller frees *out. */
int ckpt__chunks_refs(ckpt_io *io, const char *name, const ckpt_manifest *m, ckpt_chunk_ref **out, size_t *n);

/*
 * ckpt-tool ls: for each generation steps[i], the bytes of the distinct
 * chunks it references (total), of those no other listed generation
 * references (own), and of those another one does too (shared). Generations
 * that are not chunked, or cannot be read, get 0.
 */
int ckpt__chunks_usage(ckpt_io *io, const uint64_t *steps, int n, uint64_t *total, uint64_t *own, uint64_t *shared);

#ifdef CKPT_MUTANT_BASE_DELETED_WITH_GEN
void ckpt__chunks_mutant_drop(ckpt_io *io, const char *name);
#endif

#endif
