/*
 * Damage at rest to libckpt's chunk store (incremental checkpoints): the
 * damage target FILE "@shared-chunk" names, in the picked generation, the
 * first chunk of rank 0's recipe (rank-00000.chunks) that the next older
 * generation's rank-0 recipe also lists: a chunk two generations share.
 * Recipes are read as libckpt writes them: an 8-byte little-endian header
 * length, the header, then one 16-byte xxh3-128 per chunk; the chunk is
 * ROOT/chunks/HH/<32 hex>. Read-only, never through a link.
 */
#ifndef HARNESS_CHUNKPICK_H
#define HARNESS_CHUNKPICK_H

#include <stddef.h>

#define HARNESS_SHARED_CHUNK "@shared-chunk"

/* The shared chunk of generation dir gen (and older, its predecessor) as "chunks/HH/HEX". 0, or -ENOENT. */
int harness_chunk_pick_shared(const char *root, const char *gen, const char *older, char *rel, size_t len);

/* 1 if generation dir gen (any rank's recipe) references the chunk "chunks/HH/HEX", else 0. */
int harness_chunk_referenced(const char *root, const char *gen, const char *rel);

#endif
