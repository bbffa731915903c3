/* Guards against: bad command lines that run anyway, or fail without saying why. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "config.h"

static int parse(reftrain_config *c, char *err, int argc, ...)
{
	char *argv[32] = { "reftrain" };
	va_list ap;

	va_start(ap, argc);
	for (int i = 1; i <= argc; i++)
		argv[i] = va_arg(ap, char *);
	va_end(ap);
	return reftrain_config_parse(c, argc + 1, argv, err, 256);
}

static void test_config__tiny_defaults(void **state)
{
	reftrain_config c;
	char err[256];
	(void)state;

	assert_int_equal(parse(&c, err, 6, "--preset", "tiny", "--steps", "120", "--trajectory", "t"), 0);
	assert_int_equal(c.steps, 120);
	assert_int_equal(c.sched.total_steps, 120);
	assert_int_equal(c.virtual_workers, 8);
	size_t p = reftrain_model_param_count(&c.model);
	assert_true(p >= 2000 && p < 10000);
	assert_true(c.n_overflow > 0);
}

static void test_config__small_is_about_a_million(void **state)
{
	reftrain_config c;
	char err[256];
	(void)state;

	assert_int_equal(parse(&c, err, 4, "--preset", "small", "--trajectory", "t"), 0);
	size_t p = reftrain_model_param_count(&c.model);
	assert_true(p > 900000 && p < 1100000);
}

static void test_config__large_is_sized_by_flag(void **state)
{
	reftrain_config c;
	char err[256];
	(void)state;

	assert_int_equal(parse(&c, err, 6, "--preset", "large", "--params", "64M", "--trajectory", "t"), 0);
	size_t p = reftrain_model_param_count(&c.model);
	assert_true(p <= (64u << 20) && p > (63u << 20));
}

static void test_config__unknown_flag_suggests(void **state)
{
	reftrain_config c;
	char err[256];
	(void)state;

	assert_int_equal(parse(&c, err, 4, "--stpes", "3", "--trajectory", "t"), -EINVAL);
	assert_non_null(strstr(err, "did you mean '--steps'"));
}

static void test_config__bad_values_say_what_is_valid(void **state)
{
	reftrain_config c;
	char err[256];
	(void)state;

	assert_int_equal(parse(&c, err, 4, "--steps", "0", "--trajectory", "t"), -EINVAL);
	assert_non_null(strstr(err, "--steps"));
	assert_non_null(strstr(err, "from 1"));
	assert_int_equal(parse(&c, err, 4, "--preset", "huge", "--trajectory", "t"), -EINVAL);
	assert_non_null(strstr(err, "tiny, small, large"));
	assert_int_equal(parse(&c, err, 4, "--resume", "maybe", "--trajectory", "t"), -EINVAL);
	assert_non_null(strstr(err, "auto or never"));
	assert_int_equal(parse(&c, err, 2, "--steps", "5"), -EINVAL);
	assert_non_null(strstr(err, "--trajectory"));
	assert_int_equal(parse(&c, err, 3, "--trajectory", "t", "--seed"), -EINVAL);
	assert_non_null(strstr(err, "needs a value"));
	assert_int_equal(parse(&c, err, 4, "--overflow-steps", "3,x", "--trajectory", "t"), -EINVAL);
}

static void test_config__hash_ignores_world_and_paths_not_seed(void **state)
{
	reftrain_config a, b, c;
	char err[256];
	(void)state;

	parse(&a, err, 4, "--seed", "7", "--trajectory", "a");
	parse(&b, err, 6, "--seed", "7", "--trajectory", "b", "--digest-every", "5");
	parse(&c, err, 4, "--seed", "8", "--trajectory", "a");
	assert_true(reftrain_config_hash(&a) == reftrain_config_hash(&b));
	assert_true(reftrain_config_hash(&a) != reftrain_config_hash(&c));
}

/* The backend is how checkpoints are written, not what is trained: same hash, and it needs a root. */
static void test_config__ckpt_backend_needs_a_root_and_keeps_the_hash(void **state)
{
	reftrain_config a, b;
	char err[256];
	(void)state;

	assert_int_equal(parse(&a, err, 4, "--trajectory", "t", "--ckpt-dir", "ck"), 0);
	assert_null(a.ckpt_backend);
	assert_int_equal(parse(&b, err, 6, "--trajectory", "t", "--ckpt-dir", "ck", "--ckpt-backend", "naive"), 0);
	assert_string_equal(b.ckpt_backend, "naive");
	assert_true(reftrain_config_hash(&a) == reftrain_config_hash(&b));
	assert_int_equal(parse(&b, err, 4, "--trajectory", "t", "--ckpt-backend", "naive"), -EINVAL);
	assert_non_null(strstr(err, "--ckpt-backend needs --ckpt-dir"));
	assert_int_equal(parse(&b, err, 6, "--trajectory", "t", "--ckpt-dir", "ck", "--ckpt-backend", ""), -EINVAL);
	assert_non_null(strstr(err, "--ckpt-backend: empty"));
}

/* The protocol's uninterrupted runs are attempt 0 (CKPT_HARNESS_ATTEMPT), so reftrain as a command takes it. */
static void test_config__attempt_zero_is_an_uninterrupted_run(void **state)
{
	reftrain_config c;
	char err[256];
	(void)state;

	assert_int_equal(parse(&c, err, 4, "--trajectory", "t", "--attempt", "0"), 0);
	assert_int_equal(c.attempt, 0);
	assert_int_equal(parse(&c, err, 2, "--trajectory", "t"), 0);
	assert_int_equal(c.attempt, 1);
}

/* Tiered storage: the fast tier needs a durable one and the built-in synchronous backend; it never changes the hash. */
static void test_config__ckpt_fast_dir(void **state)
{
	reftrain_config a, b;
	char err[256];
	(void)state;

	assert_int_equal(parse(&a, err, 4, "--trajectory", "t", "--ckpt-dir", "ck"), 0);
	assert_int_equal(parse(&b, err, 8, "--trajectory", "t", "--ckpt-dir", "ck", "--ckpt-fast-dir", "fast",
			       "--ckpt-durable-every", "50"), 0);
	assert_string_equal(b.ckpt_fast_dir, "fast");
	assert_int_equal(b.ckpt_durable_every, 50);
	assert_true(reftrain_config_hash(&a) == reftrain_config_hash(&b));
	assert_int_equal(parse(&b, err, 4, "--trajectory", "t", "--ckpt-fast-dir", "fast"), -EINVAL);
	assert_non_null(strstr(err, "--ckpt-fast-dir needs --ckpt-dir"));
	assert_int_equal(parse(&b, err, 7, "--trajectory", "t", "--ckpt-dir", "ck", "--ckpt-fast-dir", "fast",
			       "--ckpt-async"), -EINVAL);
	assert_non_null(strstr(err, "does not go with --ckpt-async"));
	assert_int_equal(parse(&b, err, 6, "--trajectory", "t", "--ckpt-dir", "ck", "--ckpt-durable-every", "5"), -EINVAL);
	assert_non_null(strstr(err, "it needs --ckpt-fast-dir"));
	assert_int_equal(parse(&b, err, 6, "--trajectory", "t", "--ckpt-dir", "ck", "--ckpt-fast-dir", ""), -EINVAL);
	assert_non_null(strstr(err, "--ckpt-fast-dir: empty"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config__tiny_defaults),
		cmocka_unit_test(test_config__small_is_about_a_million),
		cmocka_unit_test(test_config__large_is_sized_by_flag),
		cmocka_unit_test(test_config__unknown_flag_suggests),
		cmocka_unit_test(test_config__bad_values_say_what_is_valid),
		cmocka_unit_test(test_config__hash_ignores_world_and_paths_not_seed),
		cmocka_unit_test(test_config__ckpt_backend_needs_a_root_and_keeps_the_hash),
		cmocka_unit_test(test_config__attempt_zero_is_an_uninterrupted_run),
		cmocka_unit_test(test_config__ckpt_fast_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
