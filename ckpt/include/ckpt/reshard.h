/*
 * Elastic restore: the arithmetic of resharding.
 *
 * A per-rank tensor is described globally: saved rank s held elements
 * [off[s], off[s] + len[s]) of a tensor of global elements; the job that
 * restores holds [goff, goff + local) on this rank, whatever its world size.
 * A plan says, piece by piece, which saved rank's bytes fill which part of
 * this rank's slice. Every element is taken from the lowest saved rank that
 * holds it (a replicated tensor, held whole by every rank, comes from rank
 * 0, its canonical copy). ckpt_restore uses it when a generation was saved
 * by another world size, reading each saved shard it needs in full, so that
 * every byte it copies has been hash-checked with the rest of its file.
 */
#ifndef CKPT_RESHARD_H
#define CKPT_RESHARD_H

#include <stddef.h>
#include <stdint.h>

typedef struct ckpt_reshard_piece {
	int src_rank;           /* the saved rank whose part holds these elements */
	uint64_t src_elem;      /* first element, counted within that rank's part */
	uint64_t dst_elem;      /* where it goes, counted within this rank's part */
	uint64_t elems;
} ckpt_reshard_piece;

/*
 * Plan the copy of [goff, goff + local) from the saved slices of nsaved
 * ranks. Up to max pieces into out (out may be NULL with max 0, to count).
 * Returns the number of pieces (which may exceed max: nothing beyond max is
 * written), or -CKPT_ECORRUPT when some element of the range is held by no
 * saved rank (a gap: the generation cannot fill this rank's slice).
 */
int ckpt_reshard_plan(const uint64_t *off, const uint64_t *len, int nsaved, uint64_t goff, uint64_t local,
		      ckpt_reshard_piece *out, int max);

#endif
