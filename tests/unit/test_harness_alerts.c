/*
 * The oracle's judgement of libckpt's save alerts (harness/alerts.c) and the
 * scenario key expect.alerts. Guards against: a false alarm in a run without
 * faults passing unnoticed, an alert naming the wrong rank accepted, an
 * expected alert never raised accepted, and the default ("none" without
 * delay or errno faults) lost when chaos or shrinking writes a scenario back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "alerts.h"
#include "scenario.h"
#include "scenario_write.h"
#include "telemetry.h"

#include <sys/stat.h>
#include <unistd.h>

static int judge(const harness_expect *e, const char *const *lines, int n, char *why, size_t len)
{
	json_t *recs[8];
	for (int i = 0; i < n; i++)
		assert_non_null(recs[i] = json_loads(lines[i], 0, NULL));
	int rc = harness_alerts_judge(e, recs, n, why, len);
	for (int i = 0; i < n; i++)
		json_decref(recs[i]);
	return rc;
}

static const char *const slow_rank1[] = {
	"{\"step\":40,\"loss\":\"0x3f000000\"}",
	"{\"event\":\"alert\",\"step\":40,\"rank\":1,\"metric\":\"duration\",\"value\":3.0,\"median\":0.001}",
	"{\"event\":\"committed\",\"step\":40,\"checkpoint\":\"step-00000040\"}",
};

static void test_alerts__a_false_alarm_fails_a_run_that_must_raise_none(void **state)
{
	(void)state;
	harness_expect e;
	char why[512];
	harness_expect_init(&e);
	assert_int_equal(judge(&e, slow_rank1, 3, why, sizeof why), 0);         /* unchecked */
	e.alerts_mode = HARNESS_ALERTS_NONE;
	assert_int_equal(judge(&e, slow_rank1, 1, why, sizeof why), 0);
	assert_int_equal(judge(&e, slow_rank1, 3, why, sizeof why), 1);
	assert_non_null(strstr(why, "rank 1, duration, step 40"));
	assert_non_null(strstr(why, "false alarm"));
}

static void test_alerts__listed_alerts_must_name_the_right_rank(void **state)
{
	(void)state;
	harness_expect e;
	char why[512];
	harness_expect_init(&e);
	e.alerts_mode = HARNESS_ALERTS_LISTED;
	e.nalerts = 1;
	e.alerts[0].rank = 1;
	e.alerts[0].metric = 0;       /* duration */
	assert_int_equal(judge(&e, slow_rank1, 3, why, sizeof why), 0);
	e.alerts[0].metric = 2;       /* failures: not raised */
	assert_int_equal(judge(&e, slow_rank1, 3, why, sizeof why), 1);
	assert_non_null(strstr(why, "rank 1 on failures, but none was raised"));
	e.alerts[0].rank = 2;
	e.alerts[0].metric = -1;
	assert_int_equal(judge(&e, slow_rank1, 3, why, sizeof why), 1);
	assert_non_null(strstr(why, "naming a rank the scenario does not expect"));
}

static harness_scenario *load(const char *text)
{
	harness_scenario *s = malloc(sizeof *s);
	char err[1024];
	assert_non_null(s);
	if (harness_scenario_load_buffer("t.yaml", text, strlen(text), s, err, sizeof err) < 0)
		fail_msg("%s", err);
	return s;
}

static void test_alerts__none_by_default_only_without_delay_or_errno(void **state)
{
	(void)state;
	static const char head[] = "name: t\ntrainer: {preset: tiny, world_size: 2, steps: 20}\n";
	char text[1024];
	harness_scenario *s = load("name: t\nexpect: {outcome: resume_bitwise}\n");
	assert_int_equal(s->expect.alerts_mode, HARNESS_ALERTS_NONE);
	free(s);
	snprintf(text, sizeof text, "%sfaults:\n  - when: {rank: 1, step: 10, phase: save.shard_sync, op: phase}\n"
		 "    do: {delay_ms: 10}\nexpect: {outcome: resume_bitwise%%s}\n", head);
	char t2[1200];
	snprintf(t2, sizeof t2, text, "");
	s = load(t2);
	assert_int_equal(s->expect.alerts_mode, HARNESS_ALERTS_UNCHECKED);
	free(s);
	/* stated: [] for none, also with a delay; a written scenario keeps it */
	snprintf(t2, sizeof t2, text, ", alerts: []");
	s = load(t2);
	assert_int_equal(s->expect.alerts_mode, HARNESS_ALERTS_NONE);
	char *out = NULL;
	size_t len = 0;
	assert_int_equal(harness_scenario_to_text(s, "x", NULL, &out, &len), 0);
	assert_non_null(strstr(out, "alerts: []"));
	free(out);
	free(s);
	snprintf(t2, sizeof t2, text, ", alerts: [{rank: 1, metric: throughput}, {rank: 0}]");
	s = load(t2);
	assert_int_equal(s->expect.alerts_mode, HARNESS_ALERTS_LISTED);
	assert_int_equal(s->expect.nalerts, 2);
	assert_int_equal(s->expect.alerts[0].metric, 1);
	assert_int_equal(s->expect.alerts[1].metric, -1);
	free(s);
}

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* The report's plot: each rank's saves from the journal, alerts ringed; a link in journal/ is never followed. */
static void test_telemetry__journal_to_svg(void **state)
{
	(void)state;
	char root[] = "/tmp/test_harness_alerts.XXXXXX", path[256];
	assert_non_null(mkdtemp(root));
	snprintf(path, sizeof path, "%s/journal", root);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof path, "%s/journal/rank-00000.jsonl", root);
	put(path, "{\"event\":\"save\",\"step\":10,\"result\":0,\"seconds\":0.5,\"own_seconds\":0.002}\n"
		  "{\"op\":\"write\"}\n{\"event\":\"alert\",\"step\":10,\"rank\":1,\"metric\":\"dura<b>\",\"value\":3}\n");
	snprintf(path, sizeof path, "%s/journal/rank-00001.jsonl", root);
	put(path, "{\"event\":\"save\",\"step\":10,\"result\":0,\"seconds\":3.1,\"own_seconds\":3.0}\n");
	char outside[300];
	snprintf(outside, sizeof outside, "%s/elsewhere.jsonl", root);
	put(outside, "{\"event\":\"save\",\"step\":20,\"result\":0,\"seconds\":9}\n");
	snprintf(path, sizeof path, "%s/journal/rank-00002.jsonl", root);
	assert_int_equal(symlink(outside, path), 0);

	harness_telemetry *t = malloc(sizeof *t);
	assert_non_null(t);
	harness_telemetry_collect(t, root);
	assert_int_equal(t->npoints, 2);          /* not the linked file's */
	assert_int_equal(t->nranks, 2);
	assert_true(t->seconds[0] == 0.002f && t->seconds[1] == 3.0f);
	assert_int_equal(t->nalerts, 1);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	harness_telemetry_svg(f, t);
	fclose(f);
	assert_non_null(strstr(buf, "<circle class=\"alert\" data-rank=\"1\""));
	assert_non_null(strstr(buf, "dura&lt;b&gt;"));
	assert_null(strstr(buf, "<script"));
	free(buf);
	free(t);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alerts__a_false_alarm_fails_a_run_that_must_raise_none),
		cmocka_unit_test(test_alerts__listed_alerts_must_name_the_right_rank),
		cmocka_unit_test(test_alerts__none_by_default_only_without_delay_or_errno),
		cmocka_unit_test(test_telemetry__journal_to_svg),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
