/* Guards against: a schedule or loss scaler whose state machine drifts. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "scaler.h"
#include "sched.h"

static const reftrain_sched_cfg sched_cfg = {
	.base_lr = 1.0f, .min_lr = 0.1f, .warmup_steps = 4, .total_steps = 14,
};

static void test_sched__warmup_is_linear(void **state)
{
	(void)state;
	assert_true(reftrain_sched_lr_at(&sched_cfg, 0) == 0.25f);
	assert_true(reftrain_sched_lr_at(&sched_cfg, 1) == 0.5f);
	assert_true(reftrain_sched_lr_at(&sched_cfg, 3) == 1.0f);
}

static void test_sched__cosine_decays_to_min(void **state)
{
	(void)state;
	/* step 9 is halfway through the decay: (base + min) / 2 */
	assert_true(fabsf(reftrain_sched_lr_at(&sched_cfg, 8) - 0.55f) < 1e-6f);
	float prev = 2.0f;
	for (uint64_t c = 3; c < 14; c++) {
		float lr = reftrain_sched_lr_at(&sched_cfg, c);
		assert_true(lr < prev);
		prev = lr;
	}
	assert_true(reftrain_sched_lr_at(&sched_cfg, 13) == 0.1f);
	assert_true(reftrain_sched_lr_at(&sched_cfg, 100) == 0.1f);
}

static void test_sched__state_advances_and_records(void **state)
{
	reftrain_sched s;
	(void)state;

	reftrain_sched_init(&s);
	for (int i = 0; i < 6; i++)
		reftrain_sched_step(&s, &sched_cfg);
	assert_int_equal(s.count, 6);
	assert_true(s.last_lr == reftrain_sched_lr_at(&sched_cfg, 5));
	/* a restored copy continues exactly where the original is */
	reftrain_sched copy = s;
	assert_true(reftrain_sched_step(&copy, &sched_cfg) == reftrain_sched_step(&s, &sched_cfg));
}

static const reftrain_scaler_cfg scaler_cfg = {
	.init_scale = 1024.0f, .growth_factor = 2.0f, .backoff_factor = 0.5f,
	.growth_interval = 3, .min_scale = 1.0f,
};

static void test_scaler__grows_after_interval(void **state)
{
	reftrain_scaler s;
	(void)state;

	reftrain_scaler_init(&s, &scaler_cfg);
	assert_false(reftrain_scaler_update(&s, &scaler_cfg, false));
	assert_false(reftrain_scaler_update(&s, &scaler_cfg, false));
	assert_true(s.scale == 1024.0f);
	assert_int_equal(s.growth_tracker, 2);
	assert_false(reftrain_scaler_update(&s, &scaler_cfg, false));
	assert_true(s.scale == 2048.0f);
	assert_int_equal(s.growth_tracker, 0);
}

static void test_scaler__overflow_skips_backs_off_and_resets(void **state)
{
	reftrain_scaler s;
	(void)state;

	reftrain_scaler_init(&s, &scaler_cfg);
	reftrain_scaler_update(&s, &scaler_cfg, false);
	reftrain_scaler_update(&s, &scaler_cfg, false);
	assert_true(reftrain_scaler_update(&s, &scaler_cfg, true));
	assert_true(s.scale == 512.0f);
	assert_int_equal(s.growth_tracker, 0);
	assert_int_equal(s.skipped, 1);
	/* the interval starts over: two clean steps do not grow it */
	reftrain_scaler_update(&s, &scaler_cfg, false);
	reftrain_scaler_update(&s, &scaler_cfg, false);
	assert_true(s.scale == 512.0f);
}

static void test_scaler__never_below_min(void **state)
{
	reftrain_scaler s;
	(void)state;

	reftrain_scaler_init(&s, &scaler_cfg);
	for (int i = 0; i < 20; i++)
		assert_true(reftrain_scaler_update(&s, &scaler_cfg, true));
	assert_true(s.scale == 1.0f);
	assert_int_equal(s.skipped, 20);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sched__warmup_is_linear),
		cmocka_unit_test(test_sched__cosine_decays_to_min),
		cmocka_unit_test(test_sched__state_advances_and_records),
		cmocka_unit_test(test_scaler__grows_after_interval),
		cmocka_unit_test(test_scaler__overflow_skips_backs_off_and_resets),
		cmocka_unit_test(test_scaler__never_below_min),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
