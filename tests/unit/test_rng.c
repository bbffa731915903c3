/* Guards against: a Philox that is not Philox (results that only look random). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "rng.h"

/* Random123's kat_vectors, the three "philox4x32 10" lines. */
static void test_philox__known_answers(void **state)
{
	static const struct { uint32_t ctr[4], key[2], out[4]; } kat[] = {
		{ { 0, 0, 0, 0 }, { 0, 0 }, { 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 } },
		{ { 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff }, { 0xffffffff, 0xffffffff },
		  { 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd } },
		{ { 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344 }, { 0xa4093822, 0x299f31d0 },
		  { 0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1 } },
	};
	(void)state;
	for (size_t i = 0; i < sizeof kat / sizeof *kat; i++) {
		uint32_t out[4];
		reftrain_philox4x32_10(kat[i].ctr, kat[i].key, out);
		for (int j = 0; j < 4; j++)
			assert_int_equal(out[j], kat[i].out[j]);
	}
}

/* A generator's state is its position: a copy resumes the same sequence. */
static void test_gen__copy_resumes_sequence(void **state)
{
	reftrain_gen a, b;
	uint32_t first[10];
	(void)state;

	reftrain_gen_init(&a, 42, REFTRAIN_STREAM_DROPOUT);
	for (int i = 0; i < 7; i++)
		(void)reftrain_gen_next(&a);
	b = a;
	for (int i = 0; i < 10; i++)
		first[i] = reftrain_gen_next(&a);
	for (int i = 0; i < 10; i++)
		assert_int_equal(reftrain_gen_next(&b), first[i]);
	assert_int_equal(a.pos, 17);
}

static void test_gen__streams_and_seeds_differ(void **state)
{
	reftrain_gen a, b, c;
	(void)state;

	reftrain_gen_init(&a, 1, REFTRAIN_STREAM_DROPOUT);
	reftrain_gen_init(&b, 1, REFTRAIN_STREAM_DROPOUT + (1 << 8));
	reftrain_gen_init(&c, 2, REFTRAIN_STREAM_DROPOUT);
	uint32_t x = reftrain_gen_next(&a), y = reftrain_gen_next(&b), z = reftrain_gen_next(&c);
	assert_true(x != y && x != z && y != z);
}

/* The keyed form and the stateful form are the same stream. */
static void test_gen__matches_keyed_words(void **state)
{
	reftrain_gen g;
	(void)state;

	reftrain_gen_init(&g, 0x123456789abcdefull, REFTRAIN_STREAM_DATA);
	for (uint64_t i = 0; i < 9; i++)
		assert_int_equal(reftrain_gen_next(&g),
				 reftrain_philox_word(0x123456789abcdefull, REFTRAIN_STREAM_DATA, i));
}

static void test_gen_below__in_range_and_covers(void **state)
{
	reftrain_gen g;
	int seen[7] = { 0 };
	(void)state;

	reftrain_gen_init(&g, 9, REFTRAIN_STREAM_SHUFFLE);
	for (int i = 0; i < 700; i++) {
		uint32_t v = reftrain_gen_below(&g, 7);
		assert_true(v < 7);
		seen[v]++;
	}
	for (int i = 0; i < 7; i++)
		assert_true(seen[i] > 50);
}

static void test_unit__exact_bounds(void **state)
{
	(void)state;
	assert_true(reftrain_u32_to_unit(0) == 0.0f);
	assert_true(reftrain_u32_to_unit(0xffffffffu) < 1.0f);
	assert_true(reftrain_u32_to_unit(0x80000000u) == 0.5f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_philox__known_answers),
		cmocka_unit_test(test_gen__copy_resumes_sequence),
		cmocka_unit_test(test_gen__streams_and_seeds_differ),
		cmocka_unit_test(test_gen__matches_keyed_words),
		cmocka_unit_test(test_gen_below__in_range_and_covers),
		cmocka_unit_test(test_unit__exact_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
