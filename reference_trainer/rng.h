/*
 * Counter-based random numbers for reftrain.
 *
 * Philox4x32-10 (Salmon et al., SC'11) is a pure function of a 128-bit
 * counter and a 64-bit key; everything random in the trainer is derived from
 * it. Two ways of using it:
 *
 *  - keyed draws (reftrain_philox): data samples and initial weights are a
 *    function of (seed, stream, index) alone, so any rank can compute any
 *    sample without coordination;
 *  - stateful generators (reftrain_gen): dropout and shuffling advance a
 *    position with every draw, as a framework's device generator does. The
 *    position is training state: a restart that does not restore it draws
 *    different masks, which is exactly the bug class the harness must see.
 */
#ifndef REFTRAIN_RNG_H
#define REFTRAIN_RNG_H

#include <stdint.h>

/* Stream identifiers: the second key word of every generator. */
enum reftrain_stream {
	REFTRAIN_STREAM_DATA = 1,
	REFTRAIN_STREAM_TEACHER = 2,
	REFTRAIN_STREAM_INIT = 3,
	REFTRAIN_STREAM_SHUFFLE = 4,
	REFTRAIN_STREAM_DROPOUT = 5,   /* + virtual worker index << 8 */
};

void reftrain_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Word `index` of the stream (seed, stream): counter = (index / 4, hi, 0, 0). */
uint32_t reftrain_philox_word(uint64_t seed, uint32_t stream, uint64_t index);

/* Uniform float in [0, 1) from the top 24 bits of a word (exact). */
static inline float reftrain_u32_to_unit(uint32_t u)
{
	return (float)(u >> 8) * (1.0f / 16777216.0f);
}

/* A stateful generator. Serialized state is (seed, stream, pos): 24 bytes. */
typedef struct reftrain_gen {
	uint64_t seed;
	uint64_t stream;
	uint64_t pos;          /* number of 32-bit words drawn so far */
} reftrain_gen;

void reftrain_gen_init(reftrain_gen *g, uint64_t seed, uint64_t stream);
uint32_t reftrain_gen_next(reftrain_gen *g);
/* Uniform integer in [0, n), n >= 1, without modulo bias (Lemire's method). */
uint32_t reftrain_gen_below(reftrain_gen *g, uint32_t n);

#endif
