/*
 * The suite's running order (harness/order.c). Guards against: a long
 * scenario started last while the other workers idle, a record that
 * reorders the report, and a damaged or hostile record (a link, a FIFO,
 * garbage, lines past the bound) that blocks the suite or breaks it.
 */
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "order.h"

#define N 4

static char dir[] = "/tmp/test-order.XXXXXX";

static int setup(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/test-order.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];
	(void)state;
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void scenarios(harness_scenario *s)
{
	static const char *const names[N] = { "alpha", "bravo", "charlie", "delta" };
	memset(s, 0, N * sizeof *s);
	for (int i = 0; i < N; i++)
		snprintf(s[i].name, sizeof s[i].name, "%s", names[i]);
}

static void record(const char *const *names, const double *secs, int n)
{
	harness_result r[N];
	memset(r, 0, sizeof r);
	for (int i = 0; i < n; i++) {
		snprintf(r[i].name, sizeof r[i].name, "%s", names[i]);
		r[i].seconds = secs[i];
	}
	harness_order_record(dir, r, n);
}

static void write_record(const char *text)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/suite-seconds", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static void expect(const int *want)
{
	harness_scenario s[N];
	int order[N];
	scenarios(s);
	harness_order_plan(dir, s, N, order);
	for (int i = 0; i < N; i++)
		assert_int_equal(order[i], want[i]);
}

static void test_order__no_record_is_file_order(void **state)
{
	(void)state;
	expect((int[]){ 0, 1, 2, 3 });
}

static void test_order__longest_first_unknown_before_known(void **state)
{
	(void)state;
	record((const char *[]){ "alpha", "bravo", "delta" }, (double[]){ 0.5, 6.3, 1.0 }, 3);
	/* charlie has no time: first; then bravo 6.3, delta 1.0, alpha 0.5 */
	expect((int[]){ 2, 1, 3, 0 });
}

static void test_order__a_later_run_updates_and_keeps_the_others(void **state)
{
	(void)state;
	record((const char *[]){ "alpha", "bravo", "charlie", "delta" }, (double[]){ 0.5, 6.3, 2.0, 1.0 }, 4);
	/* a suite that ran alpha alone, slowly this time: the others' times stay */
	record((const char *[]){ "alpha" }, (double[]){ 9.0 }, 1);
	expect((int[]){ 0, 1, 2, 3 });
	record((const char *[]){ "alpha" }, (double[]){ 0.1 }, 1);
	expect((int[]){ 1, 2, 3, 0 });
}

static void test_order__garbage_lines_are_skipped(void **state)
{
	(void)state;
	write_record("nonsense\n-3 alpha\nnan bravo\n2.0\n1.5 delta\ninf charlie\n4.0 bravo\n");
	/* only "1.5 delta" and "4.0 bravo" stand: alpha and charlie unknown, first in file order */
	expect((int[]){ 0, 2, 1, 3 });
}

static void test_order__an_overlong_line_ends_the_reading(void **state)
{
	(void)state;
	char big[1200];
	memset(big, 'x', sizeof big);
	big[sizeof big - 1] = '\0';
	char text[1400];
	snprintf(text, sizeof text, "1.0 delta\n%s\n9.0 alpha\n", big);
	write_record(text);
	/* what came before the long line stands, nothing after it: delta known, the rest unknown */
	expect((int[]){ 0, 1, 2, 3 });
}

static void test_order__a_link_or_a_fifo_is_not_read(void **state)
{
	(void)state;
	char path[PATH_MAX], target[PATH_MAX];
	snprintf(target, sizeof target, "%s/elsewhere", dir);
	FILE *f = fopen(target, "w");
	assert_non_null(f);
	fputs("9.0 delta\n", f);
	assert_int_equal(fclose(f), 0);
	snprintf(path, sizeof path, "%s/suite-seconds", dir);
	assert_int_equal(symlink(target, path), 0);
	expect((int[]){ 0, 1, 2, 3 });
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkfifo(path, 0600), 0);
	expect((int[]){ 0, 1, 2, 3 });      /* returns: no open(2) that waits for a writer */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_order__no_record_is_file_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_order__longest_first_unknown_before_known, setup, teardown),
		cmocka_unit_test_setup_teardown(test_order__a_later_run_updates_and_keeps_the_others, setup, teardown),
		cmocka_unit_test_setup_teardown(test_order__garbage_lines_are_skipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_order__an_overlong_line_ends_the_reading, setup, teardown),
		cmocka_unit_test_setup_teardown(test_order__a_link_or_a_fifo_is_not_read, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
