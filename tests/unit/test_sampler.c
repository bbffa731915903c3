/* Guards against: a data cursor that skips or repeats samples, or resumes elsewhere. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "sampler.h"

/* One epoch read in steps of `count`: every sample exactly once, tail dropped. */
static void check_epoch(uint32_t n, uint32_t replicas, uint32_t count)
{
	reftrain_sampler s;
	uint32_t per, *seen = calloc(n, sizeof *seen), *out = malloc(sizeof *out * replicas * count);

	assert_int_equal(reftrain_sampler_init(&s, 5, n, replicas), 0);
	per = reftrain_sampler_per_replica(&s);
	assert_int_equal(per % count, 0);
	for (uint32_t step = 0; step < per / count; step++) {
		reftrain_sampler_next(&s, count, out);
		for (uint32_t i = 0; i < replicas * count; i++)
			seen[out[i]]++;
	}
	assert_int_equal(s.st.epoch, 0);
	uint32_t once = 0;
	for (uint32_t i = 0; i < n; i++) {
		assert_true(seen[i] <= 1);
		once += seen[i];
	}
	assert_int_equal(once, n - n % replicas);
	reftrain_sampler_free(&s);
	free(seen);
	free(out);
}

static void test_sampler__every_sample_once_per_epoch(void **state)
{
	(void)state;
	for (uint32_t replicas = 1; replicas <= 8; replicas++) {
		check_epoch(840, replicas, 1);       /* 840 = lcm(1..8): nothing dropped */
		check_epoch(1000, replicas, 1);      /* dropped tail: n mod replicas */
	}
}

static void test_sampler__epochs_reshuffle_from_carried_state(void **state)
{
	reftrain_sampler s;
	uint32_t a[64], b[64];
	(void)state;

	assert_int_equal(reftrain_sampler_init(&s, 3, 64, 1), 0);
	reftrain_sampler_next(&s, 64, a);
	reftrain_sampler_next(&s, 64, b);
	assert_int_equal(s.st.epoch, 1);
	assert_true(memcmp(a, b, sizeof a) != 0);     /* a new order each epoch */
	/* epoch 1 starts where epoch 0's shuffle left the generator */
	assert_true(s.st.epoch_gen.pos > 0);
	reftrain_sampler_free(&s);
}

/* A cursor copied mid-epoch and reloaded yields the same future batches. */
static void test_sampler__restored_cursor_continues(void **state)
{
	reftrain_sampler s, r;
	uint32_t a[8 * 3], b[8 * 3];
	(void)state;

	assert_int_equal(reftrain_sampler_init(&s, 11, 200, 8), 0);
	for (int i = 0; i < 9; i++)
		reftrain_sampler_next(&s, 3, a);     /* 27 of 25 per replica: into epoch 1 */
	assert_int_equal(reftrain_sampler_init(&r, 11, 200, 8), 0);
	r.st = s.st;
	reftrain_sampler_reload(&r);
	for (int i = 0; i < 20; i++) {
		reftrain_sampler_next(&s, 3, a);
		reftrain_sampler_next(&r, 3, b);
		assert_memory_equal(a, b, sizeof a);
	}
	reftrain_sampler_free(&s);
	reftrain_sampler_free(&r);
}

/* Without the cursor (a fresh sampler), the batches differ: the state matters. */
static void test_sampler__fresh_cursor_differs(void **state)
{
	reftrain_sampler s, fresh;
	uint32_t a[8 * 3], b[8 * 3];
	(void)state;

	assert_int_equal(reftrain_sampler_init(&s, 11, 200, 8), 0);
	assert_int_equal(reftrain_sampler_init(&fresh, 11, 200, 8), 0);
	reftrain_sampler_next(&s, 3, a);
	reftrain_sampler_next(&s, 3, a);
	reftrain_sampler_next(&fresh, 3, b);
	assert_true(memcmp(a, b, sizeof a) != 0);
	reftrain_sampler_free(&s);
	reftrain_sampler_free(&fresh);
}

static void test_sampler__rejects_bad_shapes(void **state)
{
	reftrain_sampler s;
	(void)state;
	assert_int_equal(reftrain_sampler_init(&s, 1, 4, 8), -EINVAL);
	assert_int_equal(reftrain_sampler_init(&s, 1, 4, 0), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sampler__every_sample_once_per_epoch),
		cmocka_unit_test(test_sampler__epochs_reshuffle_from_carried_state),
		cmocka_unit_test(test_sampler__restored_cursor_continues),
		cmocka_unit_test(test_sampler__fresh_cursor_differs),
		cmocka_unit_test(test_sampler__rejects_bad_shapes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
