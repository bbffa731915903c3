/*
 * Sums whose bits do not depend on the world size or on MPI.
 *
 * Every floating-point sum in reftrain runs in a fixed order: gradients are
 * summed element by element over virtual workers 0, 1, ..., V-1; norms are
 * summed over fixed chunks of the parameter vector in chunk order. MPI only
 * moves bytes (all-to-all, all-gather), never adds, so the algorithm Open MPI
 * picks cannot change a bit.
 */
#ifndef REFTRAIN_REDUCE_H
#define REFTRAIN_REDUCE_H

#include <stddef.h>

/*
 * Elements per chunk, a function of the vector's length alone (about 1024
 * chunks, a power of two from 64 up), so that it does not depend on the world
 * size. Shards are made of whole chunks; norms are summed chunk by chunk.
 */
static inline size_t reftrain_chunk_size(size_t n)
{
	size_t c = 64;
	while (c < (1u << 20) && c * 1024 < n)
		c *= 2;
	return c;
}

typedef struct reftrain_shard {
	size_t begin;          /* first element owned */
	size_t end;            /* one past the last */
	size_t chunk_begin;    /* first chunk owned */
	size_t chunk_end;
} reftrain_shard;

static inline size_t reftrain_chunk_count(size_t n)
{
	size_t c = reftrain_chunk_size(n);
	return (n + c - 1) / c;
}

/* Rank r's share of n elements among w ranks: a contiguous run of chunks. */
reftrain_shard reftrain_shard_of(size_t n, int w, int r);

/* out[i] = (((in[0][i] + in[1][i]) + in[2][i]) + ...), in = nvec vectors of n. */
void reftrain_sum_vectors(float *out, const float *in, size_t nvec, size_t n);

/* Sum of squares of each chunk-sized piece of g (len elements, the last piece may be short). */
void reftrain_chunk_sumsq(const float *g, size_t len, size_t chunk, double *out);

/* Left-to-right sum. */
double reftrain_sum_f64(const double *v, size_t n);
float reftrain_sum_f32(const float *v, size_t n);

#endif
