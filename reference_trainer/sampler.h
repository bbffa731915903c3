/*
 * The data cursor: a distributed sampler over a synthetic dataset of n
 * samples. Each epoch draws a permutation from the shuffle generator, whose
 * state carries over from epoch to epoch (it is never reseeded by epoch
 * number), and deals it out to `replicas` readers like a distributed sampler:
 * reader r reads perm[r], perm[r + replicas], ... The tail of n mod replicas
 * samples is dropped each epoch so that every reader reads the same count.
 *
 * State: epoch, position (samples each reader has read this epoch) and the
 * shuffle generator as it was at the start of the epoch, from which the
 * permutation is rebuilt on restore.
 */
#ifndef REFTRAIN_SAMPLER_H
#define REFTRAIN_SAMPLER_H

#include <stdint.h>

#include "rng.h"

typedef struct reftrain_sampler_state {
	uint64_t epoch;
	uint64_t pos;
	reftrain_gen epoch_gen;   /* shuffle generator at the start of `epoch` */
} reftrain_sampler_state;

typedef struct reftrain_sampler {
	reftrain_sampler_state st;
	uint32_t n;
	uint32_t replicas;
	uint64_t seed;            /* the run's seed (configuration, not state) */
	uint32_t *perm;           /* derived from st.epoch_gen */
	reftrain_gen next_gen;    /* derived: the generator after this shuffle */
} reftrain_sampler;

int reftrain_sampler_init(reftrain_sampler *s, uint64_t seed, uint32_t n, uint32_t replicas);
/* Rebuild the permutation after st was replaced (restore). */
void reftrain_sampler_reload(reftrain_sampler *s);
void reftrain_sampler_free(reftrain_sampler *s);
static inline uint32_t reftrain_sampler_per_replica(const reftrain_sampler *s)
{
	return s->n / s->replicas;
}
/*
 * The next `count` samples of every reader: out[r * count + k] is reader r's
 * k-th sample. Crosses epoch boundaries as needed; advances the cursor.
 */
void reftrain_sampler_next(reftrain_sampler *s, uint32_t count, uint32_t *out);

#endif
