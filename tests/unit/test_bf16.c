/* Guards against: working weights that round differently from bf16 hardware. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "bf16.h"

static reftrain_bf16 from_bits(uint32_t u)
{
	return reftrain_f32_to_bf16(reftrain_bits_f32(u));
}

static void test_bf16__exact_values_pass_through(void **state)
{
	(void)state;
	assert_int_equal(from_bits(0x3f800000), 0x3f80);     /* 1.0 */
	assert_int_equal(from_bits(0xc0490000), 0xc049);
	assert_int_equal(from_bits(0x00000000), 0x0000);
	assert_int_equal(from_bits(0x80000000), 0x8000);     /* -0 keeps its sign */
}

static void test_bf16__ties_round_to_even(void **state)
{
	(void)state;
	assert_int_equal(from_bits(0x3f808000), 0x3f80);     /* tie, lsb 0: down */
	assert_int_equal(from_bits(0x3f818000), 0x3f82);     /* tie, lsb 1: up */
	assert_int_equal(from_bits(0x3f808001), 0x3f81);     /* above the tie: up */
	assert_int_equal(from_bits(0x3f807fff), 0x3f80);     /* below the tie: down */
	assert_int_equal(from_bits(0xbf818000), 0xbf82);     /* sign does not matter */
}

static void test_bf16__infinities_and_overflow(void **state)
{
	(void)state;
	assert_int_equal(from_bits(0x7f800000), 0x7f80);
	assert_int_equal(from_bits(0xff800000), 0xff80);
	assert_int_equal(from_bits(0x7f7fffff), 0x7f80);     /* FLT_MAX rounds up to inf */
	assert_int_equal(from_bits(0x7f7f7fff), 0x7f7f);     /* largest that stays finite */
}

static void test_bf16__nan_stays_nan(void **state)
{
	(void)state;
	/* a NaN whose payload lives in the low bits must not become infinity */
	reftrain_bf16 h = from_bits(0x7f800001);
	assert_true(isnan(reftrain_bf16_to_f32(h)));
	assert_int_equal(h & 0x8000, 0);
	h = from_bits(0xffc00000);
	assert_true(isnan(reftrain_bf16_to_f32(h)));
	assert_int_equal(h & 0x8000, 0x8000);
	assert_true(isnan(reftrain_bf16_to_f32(from_bits(0x7fffffff))));
}

static void test_bf16__subnormals(void **state)
{
	(void)state;
	assert_int_equal(from_bits(0x00010000), 0x0001);     /* smallest bf16 subnormal */
	assert_int_equal(from_bits(0x00008000), 0x0000);     /* tie to even: zero */
	assert_int_equal(from_bits(0x00018000), 0x0002);     /* tie to even: up */
	assert_int_equal(from_bits(0x007fffff), 0x0080);     /* rounds up to the smallest normal */
	assert_true(reftrain_bf16_to_f32(0x0001) > 0.0f);
}

static void test_bf16__round_trip_of_every_bf16(void **state)
{
	(void)state;
	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = reftrain_bf16_to_f32((reftrain_bf16)h);
		if (isnan(f))
			continue;
		assert_int_equal(reftrain_f32_to_bf16(f), h);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bf16__exact_values_pass_through),
		cmocka_unit_test(test_bf16__ties_round_to_even),
		cmocka_unit_test(test_bf16__infinities_and_overflow),
		cmocka_unit_test(test_bf16__nan_stays_nan),
		cmocka_unit_test(test_bf16__subnormals),
		cmocka_unit_test(test_bf16__round_trip_of_every_bf16),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
