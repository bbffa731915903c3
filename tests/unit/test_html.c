/*
 * Guards against: an HTML report that marks the wrong step as the first
 * difference, loses or duplicates the faults of the timeline, or lets text
 * from files (names, sentences, paths, a trainer's error) into the page as
 * markup.
 *
 * `test_html --write PATH` writes the page of the synthetic run below, for
 * tests/driver/test_html_report.py to parse with Python's html.parser.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>
#include <ftw.h>
#include <unistd.h>

#include "html.h"
#include "scenario.h"
#include "story.h"

#define STEPS 20

static uint32_t bits_of(float v)
{
	uint32_t b;
	memcpy(&b, &v, sizeof b);
	return b;
}

static float golden_loss(int step)
{
	return 0.5f + 1.0f / (float)step;
}

static void golden_record(FILE *f, int step, float loss, const char *opt, const char *data)
{
	fprintf(f, "{\"step\":%d,\"loss\":\"0x%08x\",\"opt\":\"%s\",\"data\":\"%s\"}\n", step, bits_of(loss), opt, data);
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/*
 * A run of STEPS steps on 2 ranks: attempt 1 commits 5 and 10, a fault
 * kills rank 1 at step 12 (after an EIO that fired three times on rank 0);
 * attempt 2 restores step 10, but its optimizer state (opt) differs from the
 * uninterrupted run's, and from step diff_from on its step records differ
 * in `key` (the loss too if key is "loss").
 */
static void make_run(const char *dir, int restored_opt_ok, int diff_from, const char *key)
{
	char path[512], line[1024];
	FILE *g, *a1, *a2;

	snprintf(path, sizeof path, "%s/golden.jsonl", dir);
	g = fopen(path, "w");
	snprintf(path, sizeof path, "%s/attempt-1.jsonl", dir);
	a1 = fopen(path, "w");
	snprintf(path, sizeof path, "%s/attempt-2.jsonl", dir);
	a2 = fopen(path, "w");
	assert_true(g && a1 && a2);
	fprintf(g, "{\"event\":\"start\",\"attempt\":0,\"restored_from\":null}\n");
	fprintf(a1, "{\"event\":\"start\",\"attempt\":1,\"restored_from\":null,\"checkpoint\":null}\n");
	fprintf(a2, "{\"event\":\"start\",\"attempt\":2,\"world_size\":2,\"restored_from\":10,\"checkpoint\":\"step-00000010\","
		"\"restored\":{\"opt\":\"%s\",\"data\":\"d10\"},\"fallbacks\":[{\"checkpoint\":\"step-00000015\","
		"\"why\":\"manifest.json: <b>torn</b> & unreadable\"}]}\n", restored_opt_ok ? "o10" : "ffff");
	for (int s = 1; s <= STEPS; s++) {
		char opt[16], data[16];
		snprintf(opt, sizeof opt, "o%d", s);
		snprintf(data, sizeof data, "d%d", s);
		golden_record(g, s, golden_loss(s), opt, data);
		if (s <= 12) {
			golden_record(a1, s, golden_loss(s), opt, data);
			if (s == 5 || s == 10)
				fprintf(a1, "{\"event\":\"committed\",\"step\":%d,\"checkpoint\":\"step-%08d\"}\n", s, s);
		}
		if (s > 10) {
			int differ = s >= diff_from;
			float loss = differ && strcmp(key, "loss") == 0 ? golden_loss(s) + 0.25f : golden_loss(s);
			golden_record(a2, s, loss, opt, differ && strcmp(key, "data") == 0 ? "xx" : data);
			if (s % 5 == 0)
				fprintf(a2, "{\"event\":\"committed\",\"step\":%d,\"checkpoint\":\"step-%08d\"}\n", s, s);
		}
	}
	fprintf(g, "{\"event\":\"end\",\"status\":\"done\",\"steps\":%d}\n", STEPS);
	fprintf(a2, "{\"event\":\"end\",\"status\":\"done\",\"steps\":%d}\n", STEPS);
	fclose(g);
	fclose(a1);
	fclose(a2);
	write_file(dir, "faults.rank-1.jsonl", "{\"fault\":0,\"attempt\":1,\"rank\":1,\"step\":12,\"phase\":\"train.step\","
		   "\"op\":\"phase\",\"path\":\"\",\"nth\":1,\"action\":\"kill\"}\n"
		   /* the shim: a write carries the trainer's last phase, which makes no I/O */
		   "{\"fault\":2,\"attempt\":2,\"rank\":1,\"step\":15,\"phase\":\"train.reduce\",\"op\":\"write\","
		   "\"path\":\"x\",\"nth\":1,\"action\":\"errno:ENOSPC\"}\n");
	line[0] = '\0';
	for (int n = 1; n <= 3; n++) {
		size_t used = strlen(line);
		snprintf(line + used, sizeof line - used, "{\"fault\":1,\"attempt\":1,\"rank\":0,\"step\":10,\"phase\":"
			 "\"save.shard_write\",\"op\":\"write\",\"path\":\"%s/ckpt/step-00000010.tmp/rank-00000.safetensors\","
			 "\"nth\":%d,\"action\":\"errno:EIO\"}\n", dir, n);
	}
	write_file(dir, "faults.rank-0.jsonl", line);
}

static harness_scenario *scenario(void)
{
	harness_scenario *s = calloc(1, sizeof *s);
	assert_non_null(s);
	s->trainer.steps = STEPS;
	s->trainer.world_size = 2;
	s->nfaults = 3;
	s->fault_line[0] = 4;
	s->fault_line[1] = 6;
	s->ndamage = 1;
	s->damage[0].after_attempt = 1;
	s->damage[0].kind = HARNESS_BITFLIP;
	snprintf(s->damage[0].generation, sizeof s->damage[0].generation, "newest");
	snprintf(s->damage[0].file, sizeof s->damage[0].file, "rank-*.safetensors");
	return s;
}

static void collect(const char *dir, harness_story *st)
{
	char golden[512], a1[512], a2[512], faults[512];
	const char *attempts[2] = { a1, a2 };
	harness_scenario *s = scenario();

	snprintf(golden, sizeof golden, "%s/golden.jsonl", dir);
	snprintf(a1, sizeof a1, "%s/attempt-1.jsonl", dir);
	snprintf(a2, sizeof a2, "%s/attempt-2.jsonl", dir);
	snprintf(faults, sizeof faults, "%s/faults", dir);
	harness_story_collect(st, s, golden, attempts, 2, faults);
	free(s);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	return remove(p);
}

typedef struct fixture {
	char dir[64];
	harness_story *st;
} fixture;

static int setup(void **state)
{
	fixture *fx = calloc(1, sizeof *fx);
	snprintf(fx->dir, sizeof fx->dir, "/tmp/test_html.XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	fx->st = calloc(1, sizeof *fx->st);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	fixture *fx = *state;
	nftw(fx->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	free(fx->st);
	free(fx);
	return 0;
}

static void test_story__restored_state_that_differs_is_the_first_difference(void **state)
{
	fixture *fx = *state;
	harness_story *st = fx->st;

	make_run(fx->dir, 0, 12, "loss");
	collect(fx->dir, st);
	assert_true(st->collected);
	assert_int_equal(st->nattempts, 2);
	assert_int_equal(st->diff_step, 10);
	assert_int_equal(st->diff_attempt, 2);
	assert_true(st->diff_restore);
	assert_string_equal(st->diff_keys, "opt");
	/* the loss itself first differs later, at step 12 of attempt 2 */
	assert_int_equal(st->loss_diff_step, 12);
	assert_int_equal(st->loss_diff_attempt, 2);
	char want[16];
	snprintf(want, sizeof want, "0x%08x", bits_of(golden_loss(12)));
	assert_string_equal(st->loss_golden, want);
	/* the timeline: what each attempt restored, wrote, committed, how it ended */
	assert_int_equal(st->attempt[0].restored_from, -1);
	assert_int_equal(st->attempt[0].first_step, 1);
	assert_int_equal(st->attempt[0].last_step, 12);
	assert_int_equal(st->attempt[0].ncommits, 2);
	assert_int_equal(st->attempt[0].commits[1], 10);
	assert_string_equal(st->attempt[0].end, "");
	assert_int_equal(st->attempt[1].restored_from, 10);
	assert_string_equal(st->attempt[1].checkpoint, "step-00000010");
	assert_int_equal(st->attempt[0].world_size, 0);
	assert_int_equal(st->attempt[1].world_size, 2);
	assert_non_null(strstr(st->attempt[1].fallbacks, "step-00000015: manifest.json"));
	assert_int_equal(st->attempt[1].first_step, 11);
	assert_int_equal(st->attempt[1].ncommits, 2);
	assert_string_equal(st->attempt[1].end, "done");
	assert_int_equal(st->ndamage, 1);
	assert_string_equal(st->damage[0].what, "bitflip newest/rank-*.safetensors");
}

static void test_story__fires_are_folded_ordered_and_relative_to_the_run(void **state)
{
	fixture *fx = *state;
	harness_story *st = fx->st;

	make_run(fx->dir, 1, 99, "loss");
	collect(fx->dir, st);
	assert_int_equal(st->nfires, 3);
	/* attempt 1: step 10 (rank 0, three EIOs folded into one entry) before step 12 (rank 1's kill) */
	assert_int_equal(st->fire[0].step, 10);
	assert_int_equal(st->fire[0].rank, 0);
	assert_int_equal(st->fire[0].count, 3);
	assert_int_equal(st->fire[0].line, 6);
	assert_string_equal(st->fire[0].action, "errno:EIO");
	assert_string_equal(st->fire[0].path, "ckpt/step-00000010.tmp/rank-00000.safetensors");
	assert_int_equal(st->fire[1].step, 12);
	assert_int_equal(st->fire[1].rank, 1);
	assert_string_equal(st->fire[1].phase, "train.step");
	assert_string_equal(st->fire[1].action, "kill");
	assert_int_equal(st->fire[1].line, 4);
	assert_int_equal(st->fire[2].attempt, 2);
	assert_string_equal(st->fire[2].phase, "");
	assert_string_equal(st->fire[2].op, "write");
	/* nothing differs */
	assert_int_equal(st->diff_step, -1);
	assert_int_equal(st->loss_diff_step, -1);
	/* the curves: every uninterrupted step, and the resumed steps of both attempts */
	assert_int_equal(st->ngolden, STEPS);
	assert_int_equal(st->nresumed, 12 + 10);
}

static void test_story__a_step_record_that_differs_is_named_with_its_fields(void **state)
{
	fixture *fx = *state;
	harness_story *st = fx->st;

	make_run(fx->dir, 1, 15, "data");
	collect(fx->dir, st);
	assert_int_equal(st->diff_step, 15);
	assert_int_equal(st->diff_attempt, 2);
	assert_false(st->diff_restore);
	assert_string_equal(st->diff_keys, "data");
	assert_int_equal(st->loss_diff_step, -1);
}

static void test_story__loss_as_written(void **state)
{
	double v;
	(void)state;
	assert_int_equal(harness_story_loss("0x3f800000", &v), 0);
	assert_true(v == 1.0);
	assert_int_equal(harness_story_loss("0x3ff8000000000000", &v), 0);
	assert_true(v == 1.5);
	assert_int_equal(harness_story_loss("0x3f80", &v), -1);
	assert_int_equal(harness_story_loss("1.0", &v), -1);
	assert_int_equal(harness_story_loss("0xzz800000", &v), -1);
}

/* The results of a suite with the synthetic run: a FAIL with hostile text, a PASS, a SKIP that never ran. */
static harness_result *results(const char *dir, int *n)
{
	harness_result *r = calloc(3, sizeof *r);
	assert_non_null(r);
	make_run(dir, 0, 12, "loss");
	collect(dir, &r[0].story);
	snprintf(r[0].name, sizeof r[0].name, "skip-opt<script>document.title='x'</script>");
	snprintf(r[0].file, sizeof r[0].file, "/tmp/a<script>alert(1)</script>/b&c\"d'e.yaml");
	r[0].verdict = HARNESS_FAIL;
	snprintf(r[0].sentence, sizeof r[0].sentence,
		 "optimizer moments (opt) restored at step 10 differ <img src=x onerror=alert(2)> & more \x01\xff end");
	r[0].attempts = 2;
	r[0].faults_planned = r[0].faults_fired = 2;
	r[0].oracle.attempts = 2;
	r[0].oracle.restored_from[1] = 10;
	snprintf(r[0].coverage[0], sizeof r[0].coverage[0], "train.step/phase");
	snprintf(r[0].coverage[1], sizeof r[0].coverage[1], "save.shard_write/write");
	r[0].ncoverage = 2;

	snprintf(r[1].name, sizeof r[1].name, "plain-pass");
	snprintf(r[1].file, sizeof r[1].file, "scenarios/ci/plain-pass.yaml");
	r[1].verdict = HARNESS_PASS;
	snprintf(r[1].sentence, sizeof r[1].sentence, "resumed bit for bit after 2 attempts");
	r[1].attempts = 2;
	r[1].story = r[0].story;
	r[1].story.diff_step = r[1].story.loss_diff_step = -1;
	snprintf(r[1].coverage[0], sizeof r[1].coverage[0], "save.shard_write/write");
	snprintf(r[1].coverage[1], sizeof r[1].coverage[1], "/rename");   /* the shim: no phase */
	r[1].ncoverage = 2;

	snprintf(r[2].name, sizeof r[2].name, "never-ran");
	snprintf(r[2].file, sizeof r[2].file, "scenarios/ci/never-ran.yaml");
	r[2].verdict = HARNESS_SKIP;
	snprintf(r[2].sentence, sizeof r[2].sentence, "fault 1 names libckpt's phase save.commit");
	*n = 3;
	return r;
}

static char *render(const harness_result *r, int n)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	assert_int_equal(harness_report_html_stream(f, r, n, 12.5), 0);
	fclose(f);
	return buf;
}

static void test_html__text_from_files_is_escaped(void **state)
{
	fixture *fx = *state;
	int n;
	harness_result *r = results(fx->dir, &n);
	char *page = render(r, n);

	assert_null(strstr(page, "<script"));
	assert_null(strstr(page, "<img"));
	assert_null(strstr(page, "<b>torn"));
	assert_non_null(strstr(page, "skip-opt&lt;script&gt;document.title=&#39;x&#39;&lt;/script&gt;"));
	assert_non_null(strstr(page, "/tmp/a&lt;script&gt;alert(1)&lt;/script&gt;/b&amp;c&quot;d&#39;e.yaml"));
	assert_non_null(strstr(page, "&lt;img src=x onerror=alert(2)&gt; &amp; more \\x01\\xff end"));
	assert_non_null(strstr(page, "manifest.json: &lt;b&gt;torn&lt;/b&gt; &amp; unreadable"));
	assert_null(strchr(page, '\x01'));
	assert_null(strchr(page, '\xff'));
	/* nothing is fetched, nothing runs */
	assert_non_null(strstr(page, "default-src 'none'"));
	assert_null(strstr(page, "src=\"http"));
	assert_null(strstr(page, "href=\"http"));
	free(page);
	free(r);
}

static void test_html__page_shows_verdicts_first_difference_fires_and_coverage(void **state)
{
	fixture *fx = *state;
	int n;
	harness_result *r = results(fx->dir, &n);
	char *page = render(r, n);

	assert_non_null(strstr(page, "data-verdict=\"FAIL\"><td class=\"name\">"));
	assert_non_null(strstr(page, "data-scenario=\"plain-pass\" data-verdict=\"PASS\""));
	assert_non_null(strstr(page, "data-scenario=\"never-ran\" data-verdict=\"SKIP\""));
	assert_non_null(strstr(page, "<g class=\"first-diff\" data-step=\"10\" data-attempt=\"2\">"));
	assert_non_null(strstr(page, "first difference: step 10"));
	assert_non_null(strstr(page, "<circle class=\"loss-diff\" data-step=\"12\""));
	assert_non_null(strstr(page, "<li class=\"fire\" data-rank=\"1\" data-step=\"12\" data-phase=\"train.step\" "
				     "data-op=\"phase\" data-action=\"kill\">"));
	assert_non_null(strstr(page, "errno:EIO, 3 times [fault 2, line 6]"));
	assert_non_null(strstr(page, "after attempt 1: damage at rest, bitflip newest/rank-*.safetensors"));
	assert_non_null(strstr(page, "data-phase=\"save.shard_write\" data-op=\"write\" data-count=\"2\""));
	assert_non_null(strstr(page, "data-phase=\"train.step\" data-op=\"phase\" data-count=\"1\""));
	assert_non_null(strstr(page, "data-phase=\"\" data-op=\"rename\" data-count=\"1\""));
	assert_non_null(strstr(page, "data-phase=\"save.commit\" data-op=\"rename\" data-count=\"0\""));
	assert_non_null(strstr(page, "No attempt ran"));
	free(page);
	free(r);
}

/* Many runs (chaos): only those that did not pass get a section, and only they are linked. */
static int count(const char *hay, const char *needle)
{
	int k = 0;
	for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
		k++;
	return k;
}

static void test_html__many_runs_give_sections_to_failures_only(void **state)
{
	fixture *fx = *state;
	int n, many = 70;
	harness_result *r3 = results(fx->dir, &n);
	harness_result *r = calloc((size_t)many, sizeof *r);
	assert_non_null(r);
	for (int i = 0; i < many; i++) {
		r[i] = r3[1];            /* a pass */
		snprintf(r[i].name, sizeof r[i].name, "chaos-1-%d", i);
	}
	r[41] = r3[0];                   /* one failure among them */
	char *page = render(r, many);
	assert_non_null(strstr(page, "id=\"passes-brief\""));
	assert_int_equal(count(page, "<section class=\"scenario"), 1);
	assert_int_equal(count(page, "data-verdict=\"PASS\"><td class=\"name\">chaos-1-"), many - 1);
	assert_non_null(strstr(page, "<a href=\"#s-41\">"));
	assert_null(strstr(page, "<a href=\"#s-40\">"));
	free(page);
	/* a suite of a few: every scenario has its section */
	page = render(r3, n);
	assert_null(strstr(page, "passes-brief"));
	assert_int_equal(count(page, "<section class=\"scenario"), n);
	free(page);
	free(r);
	free(r3);
}

static void test_html__writes_through_a_temporary_and_reports_errors(void **state)
{
	fixture *fx = *state;
	char path[256], tmp[300];
	int n;
	harness_result *r = results(fx->dir, &n);

	snprintf(path, sizeof path, "%s/report.html", fx->dir);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	assert_int_equal(harness_report_html(path, r, n, 1.0), 0);
	assert_int_equal(access(path, R_OK), 0);
	assert_int_not_equal(access(tmp, F_OK), 0);
	snprintf(path, sizeof path, "%s/no-such-dir/report.html", fx->dir);
	assert_true(harness_report_html(path, r, n, 1.0) < 0);
	free(r);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write") == 0) {
		fixture *fx;
		int n;
		if (setup((void **)&fx) < 0)
			return 3;
		harness_result *r = results(fx->dir, &n);
		int rc = harness_report_html(argv[2], r, n, 12.5);
		free(r);
		teardown((void **)&fx);
		return rc < 0 ? 1 : 0;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_story__restored_state_that_differs_is_the_first_difference, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_story__fires_are_folded_ordered_and_relative_to_the_run, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_story__a_step_record_that_differs_is_named_with_its_fields, setup,
						teardown),
		cmocka_unit_test(test_story__loss_as_written),
		cmocka_unit_test_setup_teardown(test_html__text_from_files_is_escaped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_html__page_shows_verdicts_first_difference_fires_and_coverage, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_html__many_runs_give_sections_to_failures_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_html__writes_through_a_temporary_and_reports_errors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
