/*
 * Guards against: a scenario that chaos, shrinking or from-journal writes
 * reading back as a different scenario (a fault, an expectation or a
 * trainer setting lost or changed on the way), so a "replay" would test
 * something else. Every shipped scenario goes through write -> load and must
 * come back field for field; a hand-made one covers what they do not.
 */
#include <dirent.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "scenario.h"
#include "scenario_write.h"

/* Only what the text cannot carry differs: the file name and the line numbers. */
static void normalize(harness_scenario *s)
{
	memset(s->file, 0, sizeof s->file);
	memset(s->fault_line, 0, sizeof s->fault_line);
	for (int i = 0; i < s->ndamage; i++)
		s->damage[i].line = 0;
}

static void round_trip(const harness_scenario *a, const char *what)
{
	harness_scenario *b = malloc(sizeof *b), *x = malloc(sizeof *x);
	char *text = NULL, err[2048];
	size_t len = 0;

	assert_non_null(b);
	assert_non_null(x);
	*x = *a;
	assert_int_equal(harness_scenario_to_text(x, "written by\ntest_scenario_write", NULL, &text, &len), 0);
	if (harness_scenario_load_buffer(a->file, text, len, b, err, sizeof err) < 0)
		fail_msg("%s: the written text does not load: %s\n%s", what, err, text);
	normalize(x);
	normalize(b);
	if (memcmp(x, b, sizeof *x) != 0) {
		/* say which part differs */
		const char *part = memcmp(&x->trainer, &b->trainer, sizeof x->trainer) ? "trainer"
				   : memcmp(x->faults, b->faults, sizeof x->faults) ? "faults"
				   : memcmp(x->damage, b->damage, sizeof x->damage) ? "damage"
				   : memcmp(&x->expect, &b->expect, sizeof x->expect) ? "expect" : "a top-level key";
		fail_msg("%s: %s differs after the round trip\n%s", what, part, text);
	}
	free(text);
	free(b);
	free(x);
}

static void test_scenario_write__every_shipped_scenario_reads_back_identically(void **state)
{
	static const char *const dirs[] = { "scenarios/ci", "scenarios/smoke", "scenarios/shim", "scenarios/backends",
					    "scenarios/field", "scenarios/torch", "scenarios/found",
					    "examples/numpy_trainer/scenarios" };
	harness_scenario *s = malloc(sizeof *s);
	int n = 0;
	(void)state;

	for (size_t d = 0; d < sizeof dirs / sizeof *dirs; d++) {
		char dir[PATH_MAX];
		snprintf(dir, sizeof dir, "%s/%s", CKPT_SOURCE_DIR, dirs[d]);
		DIR *h = opendir(dir);
		struct dirent *de;
		while (h && (de = readdir(h)) != NULL) {
			char path[PATH_MAX + 256], err[2048];
			size_t l = strlen(de->d_name);
			if (l < 6 || strcmp(de->d_name + l - 5, ".yaml") != 0)
				continue;
			snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
			if (harness_scenario_load(path, s, err, sizeof err) < 0)
				fail_msg("%s", err);
			round_trip(s, path);
			n++;
		}
		if (h)
			closedir(h);
	}
	assert_true(n >= 48);      /* the CI gate alone has 48: the folders were found */
	free(s);
}

static void test_scenario_write__what_no_shipped_scenario_says_reads_back(void **state)
{
	static const char text[] =
		"name: every-corner\n"
		"description: \"a \\\"quoted\\\" word,\\ta tab and a back\\\\slash\"\n"
		"max_attempts: 5\n"
		"trainer: {preset: tiny, world_size: 2, steps: 40, seed: 7, accum_steps: 2,\n"
		"          checkpoint: {every: 10, keep: 2}}\n"
		"faults:\n"
		"  - when: {rank: 1, step: 20, phase: save.shard_write, op: write, nth: 3}\n"
		"    do: {torn: 17, then: kill}\n"
		"  - when: {attempt: 2, phase: restore.read, op: read, path: 'rank-*'}\n"
		"    do: {errno: EIO, times: 2}\n"
		"  - when: {attempt: 2, step: 31, phase: train.step}\n"
		"    do: {bitflip: newest/manifest.json, offset: -3, seed: 9}\n"
		"  - when: {attempt: 2, rank: 0, step: 35, phase: train.reduce}\n"
		"    do: power_loss\n"
		"  - when: {after_attempt: 1}\n"
		"    do: {truncate: oldest/rank-*.safetensors, size: 5}\n"
		"  - when: {after_attempt: 2}\n"
		"    do: {delete: step-00000010/manifest.json}\n"
		"  - when: {attempt: 3, op: fsync, nth: 2}\n"
		"    do: {delay_ms: 5}\n"
		"  - when: {attempt: 3, op: write}\n"
		"    do: {short: 9}\n"
		"expect: {outcome: resume_bitwise, restored_from: {2: 10, 3: none}, max_lost_steps: 20}\n";
	harness_scenario *s = malloc(sizeof *s);
	char err[2048];
	(void)state;

	if (harness_scenario_load_buffer("corner.yaml", text, sizeof text - 1, s, err, sizeof err) < 0)
		fail_msg("%s", err);
	assert_int_equal(s->nfaults, 6);
	assert_int_equal(s->ndamage, 2);
	round_trip(s, "corner.yaml");
	free(s);
}

static void test_scenario_write__scenario_dir_is_spelled_out(void **state)
{
	static const char text[] =
		"name: prog\n"
		"trainer: {command: [python3, \"{scenario_dir}/train.py\", --ckpt, \"{ckpt_dir}\"], launcher: single,\n"
		"          world_size: 1, steps: 10, beacon: true}\n"
		"faults:\n"
		"  - when: {op: write, path: 'ckpt-*', nth: 2}\n"
		"    do: kill\n"
		"expect: {outcome: resume_bitwise}\n";
	harness_scenario *s = malloc(sizeof *s), *b = malloc(sizeof *b);
	char err[2048], *out = NULL;
	size_t len = 0;
	(void)state;

	if (harness_scenario_load_buffer("prog.yaml", text, sizeof text - 1, s, err, sizeof err) < 0)
		fail_msg("%s", err);
	assert_int_equal(harness_scenario_to_text(s, NULL, "/some/where", &out, &len), 0);
	if (harness_scenario_load_buffer("elsewhere/prog.yaml", out, len, b, err, sizeof err) < 0)
		fail_msg("%s\n%s", err, out);
	assert_string_equal(b->trainer.command[1], "/some/where/train.py");
	assert_string_equal(b->trainer.command[3], "{ckpt_dir}");
	assert_int_equal(b->trainer.beacon, 1);
	free(out);
	free(s);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scenario_write__every_shipped_scenario_reads_back_identically),
		cmocka_unit_test(test_scenario_write__what_no_shipped_scenario_says_reads_back),
		cmocka_unit_test(test_scenario_write__scenario_dir_is_spelled_out),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
