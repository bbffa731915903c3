/*
 * Guards against: sums whose bits depend on how many ranks there are.
 * Simulates the trainer's exchange for W = 1, 2, 4, 8 ranks over V = 8
 * virtual workers: each rank owns a shard, receives every worker's slice of
 * it and sums in worker order; the norm is summed over fixed chunks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "reduce.h"
#include "rng.h"

#define V 8
#define N (300 * 1000 + 123)

static float grads[V][N];

static void fill(void)
{
	for (int v = 0; v < V; v++)
		for (size_t i = 0; i < N; i++) {
			/* wide dynamic range, so that any change of order changes bits */
			uint32_t u = reftrain_philox_word(77, 9, (uint64_t)v * N + i);
			float mag = (float)(1u << (u % 24));
			grads[v][i] = (reftrain_u32_to_unit(u) - 0.5f) * mag;
		}
}

/* The trainer's reduction, as W ranks would do it; returns sum and norm^2. */
static void simulate(int w, float *sum, double *normsq)
{
	size_t chunks = reftrain_chunk_count(N);
	double *partials = calloc(chunks, sizeof *partials);

	for (int r = 0; r < w; r++) {
		reftrain_shard s = reftrain_shard_of(N, w, r);
		size_t n = s.end - s.begin;
		float *recv = malloc(sizeof(float) * V * n + 1);
		/* what the all-to-all delivers: each worker's slice, in worker order */
		for (int v = 0; v < V; v++)
			memcpy(recv + (size_t)v * n, &grads[v][s.begin], n * sizeof(float));
		reftrain_sum_vectors(sum + s.begin, recv, V, n);
		reftrain_chunk_sumsq(sum + s.begin, n, reftrain_chunk_size(N), partials + s.chunk_begin);
		free(recv);
	}
	*normsq = reftrain_sum_f64(partials, chunks);
	free(partials);
}

static void test_shards__tile_the_vector_in_whole_chunks(void **state)
{
	(void)state;
	for (int w = 1; w <= 8; w++) {
		size_t next = 0;
		for (int r = 0; r < w; r++) {
			reftrain_shard s = reftrain_shard_of(N, w, r);
			assert_int_equal(s.begin, next);
			assert_int_equal(s.begin % reftrain_chunk_size(N), 0);
			next = s.end;
		}
		assert_int_equal(next, N);
	}
}

static void test_chunks__size_depends_on_length_only(void **state)
{
	(void)state;
	assert_int_equal(reftrain_chunk_size(3364), 64);
	assert_int_equal(reftrain_chunk_size(N), 512);
	assert_true(reftrain_chunk_count(N) <= 1024);
}

static void test_reduce__same_bits_for_every_world_size(void **state)
{
	static float ref[N], got[N];
	double ref_norm, got_norm;
	(void)state;

	fill();
	simulate(1, ref, &ref_norm);
	for (int w = 2; w <= 8; w *= 2) {
		simulate(w, got, &got_norm);
		assert_memory_equal(ref, got, sizeof ref);
		assert_memory_equal(&ref_norm, &got_norm, sizeof ref_norm);
	}
}

/* The order is the contract: summing the same vectors in another order changes bits. */
static void test_reduce__order_matters(void **state)
{
	float in[3] = { 1e8f, 1.0f, -1e8f }, swapped[3] = { 1e8f, -1e8f, 1.0f };
	float a, b;
	(void)state;

	reftrain_sum_vectors(&a, in, 3, 1);
	reftrain_sum_vectors(&b, swapped, 3, 1);
	assert_true(a == 0.0f);
	assert_true(b == 1.0f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shards__tile_the_vector_in_whole_chunks),
		cmocka_unit_test(test_chunks__size_depends_on_length_only),
		cmocka_unit_test(test_reduce__same_bits_for_every_world_size),
		cmocka_unit_test(test_reduce__order_matters),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
