#include "sampler.h"

#include <errno.h>
#include <stdlib.h>

/*
 * Fisher-Yates, drawing from a copy of the epoch generator; where that copy
 * ends is where the next epoch's shuffle starts.
 */
static void build_perm(reftrain_sampler *s)
{
	reftrain_gen g = s->st.epoch_gen;

	for (uint32_t i = 0; i < s->n; i++)
		s->perm[i] = i;
	for (uint32_t i = s->n - 1; i > 0; i--) {
		uint32_t j = reftrain_gen_below(&g, i + 1);
		uint32_t t = s->perm[i];
		s->perm[i] = s->perm[j];
		s->perm[j] = t;
	}
	s->next_gen = g;
}

static void next_epoch(reftrain_sampler *s)
{
	s->st.epoch_gen = s->next_gen;
	s->st.epoch++;
	s->st.pos = 0;
	build_perm(s);
}

int reftrain_sampler_init(reftrain_sampler *s, uint64_t seed, uint32_t n, uint32_t replicas)
{
	if (n < 2 || replicas == 0 || replicas > n)
		return -EINVAL;
	s->n = n;
	s->replicas = replicas;
	s->seed = seed;
	s->st.epoch = 0;
	s->st.pos = 0;
	reftrain_gen_init(&s->st.epoch_gen, seed, REFTRAIN_STREAM_SHUFFLE);
	s->perm = malloc(sizeof *s->perm * n);
	if (!s->perm)
		return -ENOMEM;
	build_perm(s);
	return 0;
}

void reftrain_sampler_reload(reftrain_sampler *s)
{
#ifdef CKPT_MUTANT_SHUFFLE_SEED_NOT_SAVED
	/*
	 * mutant: the shuffle generator is re-created from the run's seed on
	 * resume instead of taken from the checkpoint; right in the first epoch
	 * only, so it shows once a restart restores state from a later epoch
	 */
	reftrain_gen_init(&s->st.epoch_gen, s->seed, REFTRAIN_STREAM_SHUFFLE);
#endif
	build_perm(s);
}

void reftrain_sampler_free(reftrain_sampler *s)
{
	free(s->perm);
	s->perm = NULL;
}

void reftrain_sampler_next(reftrain_sampler *s, uint32_t count, uint32_t *out)
{
	uint32_t per = reftrain_sampler_per_replica(s);

	for (uint32_t k = 0; k < count; k++) {
		if (s->st.pos == per)
			next_epoch(s);
		for (uint32_t r = 0; r < s->replicas; r++)
			out[(size_t)r * count + k] = s->perm[(size_t)s->st.pos * s->replicas + r];
		s->st.pos++;
	}
}
