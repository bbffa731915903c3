#include "rng.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void reftrain_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
	uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
	uint32_t k0 = key[0], k1 = key[1];

	for (int round = 0; round < 10; round++) {
		uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
		uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
		uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
		uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;

		c0 = n0;
		c1 = (uint32_t)p1;
		c2 = n2;
		c3 = (uint32_t)p0;
		k0 += PHILOX_W0;
		k1 += PHILOX_W1;
	}
	out[0] = c0;
	out[1] = c1;
	out[2] = c2;
	out[3] = c3;
}

/* Key = (low 32 bits of seed, stream ^ high 32 bits of seed). */
static void stream_key(uint64_t seed, uint64_t stream, uint32_t key[2])
{
	key[0] = (uint32_t)seed;
	key[1] = (uint32_t)(seed >> 32) ^ (uint32_t)stream;
}

static uint32_t word_at(const uint32_t key[2], uint64_t index)
{
	uint64_t block = index >> 2;
	uint32_t ctr[4] = { (uint32_t)block, (uint32_t)(block >> 32), 0, 0 };
	uint32_t out[4];

	reftrain_philox4x32_10(ctr, key, out);
	return out[index & 3];
}

uint32_t reftrain_philox_word(uint64_t seed, uint32_t stream, uint64_t index)
{
	uint32_t key[2];

	stream_key(seed, stream, key);
	return word_at(key, index);
}

void reftrain_gen_init(reftrain_gen *g, uint64_t seed, uint64_t stream)
{
	g->seed = seed;
	g->stream = stream;
	g->pos = 0;
}

uint32_t reftrain_gen_next(reftrain_gen *g)
{
	uint32_t key[2];

	stream_key(g->seed, g->stream, key);
	return word_at(key, g->pos++);
}

uint32_t reftrain_gen_below(reftrain_gen *g, uint32_t n)
{
	uint64_t m = (uint64_t)reftrain_gen_next(g) * n;
	uint32_t low = (uint32_t)m;

	if (low < n) {
		uint32_t threshold = (uint32_t)(-n) % n;
		while (low < threshold) {
			m = (uint64_t)reftrain_gen_next(g) * n;
			low = (uint32_t)m;
		}
	}
	return (uint32_t)(m >> 32);
}
