/* Guards against: one huge line in a trajectory or fault log taking unbounded memory, or hiding the records after it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "jsonl.h"

static int count(json_t *o, void *arg)
{
	assert_true(json_is_object(o));
	++*(int *)arg;
	return 0;
}

static int first_only(json_t *o, void *arg)
{
	(void)o;
	++*(int *)arg;
	return 1;
}

static void test_jsonl__a_line_over_the_limit_is_skipped_and_reading_goes_on(void **state)
{
	size_t big = HARNESS_JSONL_LINE_MAX + 10, len = 0;
	char *b = malloc(big + 256);
	int n = 0;
	(void)state;
	assert_non_null(b);
	len += (size_t)sprintf(b + len, "{\"step\":1}\n{\"s\":\"");
	memset(b + len, 'x', big);
	len += big;
	len += (size_t)sprintf(b + len, "\"}\nnot json\n[1]\n\n{\"step\":2}\n{\"torn\":");
	FILE *f = fmemopen(b, len, "r");
	assert_non_null(f);
	assert_int_equal(harness_jsonl_each_stream(f, count, &n), 0);
	assert_int_equal(n, 2);
	fclose(f);
	free(b);
}

static void test_jsonl__a_line_at_the_limit_is_read(void **state)
{
	size_t len = 0, body = HARNESS_JSONL_LINE_MAX - 8;
	char *b = malloc(HARNESS_JSONL_LINE_MAX + 64);
	int n = 0;
	(void)state;
	assert_non_null(b);
	len += (size_t)sprintf(b + len, "{\"s\":\"");
	memset(b + len, 'y', body);
	len += body;
	len += (size_t)sprintf(b + len, "\"}\n");
	assert_int_equal(len, HARNESS_JSONL_LINE_MAX + 1);      /* the line, then its newline */
	FILE *f = fmemopen(b, len, "r");
	assert_int_equal(harness_jsonl_each_stream(f, count, &n), 0);
	assert_int_equal(n, 1);
	fclose(f);
	free(b);
}

static void test_jsonl__stop_is_obeyed_and_a_missing_file_is_an_error(void **state)
{
	char b[] = "{\"a\":1}\n{\"b\":2}\n";
	int n = 0;
	(void)state;
	FILE *f = fmemopen(b, strlen(b), "r");
	assert_int_equal(harness_jsonl_each_stream(f, first_only, &n), 0);
	assert_int_equal(n, 1);
	fclose(f);
	assert_true(harness_jsonl_each("/nonexistent/x.jsonl", count, &n) < 0);
}

static int take_step(json_t *o, void *arg)
{
	((int *)arg)[0] += (int)json_integer_value(json_object_get(o, "step"));
	((int *)arg)[1]++;
	return 0;
}

/* A needle: only the lines that contain it are parsed (a journal's events among its I/O records). */
static void test_jsonl__a_needle_skips_the_other_lines_unparsed(void **state)
{
	static const char text[] = "{\"op\":\"write\",\"step\":100}\n{\"event\":\"save\",\"step\":1}\n"
				   "{\"event\": broken\n{\"op\":\"fsync\",\"note\":\"event\"}\n"
				   "{\"event\":\"alert\",\"step\":2}\n";
	int got[2] = { 0, 0 };
	(void)state;
	FILE *f = fmemopen((void *)text, sizeof text - 1, "r");
	assert_non_null(f);
	assert_int_equal(harness_jsonl_each_stream_with(f, "\"event\"", take_step, got), 0);
	fclose(f);
	/* the two events (steps 1 and 2) and the line that has the needle as a value (a reader still checks
	 * its keys); the torn line skipped as always; the write, with its step 100, never parsed */
	assert_int_equal(got[1], 3);
	assert_int_equal(got[0], 3);
	f = fmemopen((void *)text, sizeof text - 1, "r");
	got[0] = got[1] = 0;
	assert_int_equal(harness_jsonl_each_stream_with(f, NULL, take_step, got), 0);
	fclose(f);
	assert_int_equal(got[1], 4);
	assert_int_equal(got[0], 103);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_jsonl__a_needle_skips_the_other_lines_unparsed),
		cmocka_unit_test(test_jsonl__a_line_over_the_limit_is_skipped_and_reading_goes_on),
		cmocka_unit_test(test_jsonl__a_line_at_the_limit_is_read),
		cmocka_unit_test(test_jsonl__stop_is_obeyed_and_a_missing_file_is_an_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
