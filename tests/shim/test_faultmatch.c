/*
 * The shared plan matcher and fault logger (harness/faultmatch.c): the one
 * implementation both injector front ends use. Guards against the shim and
 * the libfiu injector drifting apart (a fault that fires on a different call,
 * or a log line the harness cannot read).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "faultmatch.h"

static harness_fault any_fault(void)
{
	harness_fault f;
	memset(&f, 0, sizeof f);
	f.attempt = -1;
	f.rank = -1;
	f.step = -1;
	f.nth = 1;
	f.action = HARNESS_ERRNO;
	f.err = EIO;
	return f;
}

static ckpt_fault_ctx write_ctx(const char *path)
{
	return (ckpt_fault_ctx){ .rank = 1, .step = 30, .phase = "save.shard_write", .op = "write", .path = path,
				 .fd = 5, .bytes = 100 };
}

/* The reach record's question (ckpt_mutant_reached_points): could this rule still act on such a point? */
static void test_may_act__wildcards_and_a_rule_past_its_last_firing(void **state)
{
	(void)state;
	harness_fault f = any_fault();
	ckpt_fault_ctx c = write_ctx("/r/x");

	snprintf(f.phase, sizeof f.phase, "save.shard_sync");
	snprintf(f.op, sizeof f.op, "fsync");
	f.rank = 1;
	f.step = 30;
	f.times = 1;
	/* a write in another phase: no */
	assert_false(harness_fault_may_act(&f, 0, &c, 1));
	/* any op in that phase, or an fsync in any phase: yes */
	c.phase = "save.shard_sync";
	c.op = NULL;
	assert_true(harness_fault_may_act(&f, 0, &c, 1));
	c.phase = NULL;
	c.op = "fsync";
	assert_true(harness_fault_may_act(&f, 0, &c, 1));
	/* but never for another rank, step or attempt */
	c.rank = 0;
	assert_false(harness_fault_may_act(&f, 0, &c, 1));
	c.rank = 1;
	c.step = 40;
	assert_false(harness_fault_may_act(&f, 0, &c, 1));
	c.step = 30;
	f.attempt = 1;
	assert_false(harness_fault_may_act(&f, 0, &c, 2));
	f.attempt = -1;
	/* once it has fired its last time (nth 1, once: after one match), further matches change nothing */
	assert_false(harness_fault_may_act(&f, 1, &c, 1));
	f.nth = 3;
	assert_true(harness_fault_may_act(&f, 2, &c, 1));
	assert_false(harness_fault_may_act(&f, 3, &c, 1));
	/* times 0 (every call from nth on, an errno's default) never runs out */
	f.times = 0;
	assert_true(harness_fault_may_act(&f, 1000, &c, 1));
	/* "any" I/O call: a phase point is not one, but any op of a phase may be */
	snprintf(f.op, sizeof f.op, "any");
	c.op = "phase";
	assert_false(harness_fault_may_act(&f, 0, &c, 1));
	c.op = NULL;
	assert_true(harness_fault_may_act(&f, 0, &c, 1));
	/* a path glob: a point of any path may match it */
	snprintf(f.path, sizeof f.path, "LATEST*");
	assert_false(harness_fault_may_act(&f, 0, &c, 1));      /* "/r/x" */
	c.path = NULL;
	assert_true(harness_fault_may_act(&f, 0, &c, 1));
	c.path = "/r/step-00000030/manifest.json";
	assert_false(harness_fault_may_act(&f, 0, &c, 1));
}

static void test_match__every_field_narrows(void **state)
{
	(void)state;
	harness_fault f = any_fault();
	ckpt_fault_ctx c = write_ctx("/r/step-00000030.tmp/rank-00001.safetensors");

	assert_true(harness_fault_matches(&f, &c, 1));
	f.rank = 0;
	assert_false(harness_fault_matches(&f, &c, 1));
	f.rank = 1;
	f.attempt = 2;
	assert_false(harness_fault_matches(&f, &c, 1));
	assert_true(harness_fault_matches(&f, &c, 2));
	f.attempt = -1;
	f.step = 40;
	assert_false(harness_fault_matches(&f, &c, 1));
	f.step = 30;
	snprintf(f.phase, sizeof f.phase, "save.commit");
	assert_false(harness_fault_matches(&f, &c, 1));
	snprintf(f.phase, sizeof f.phase, "save.shard_write");
	assert_true(harness_fault_matches(&f, &c, 1));
	snprintf(f.op, sizeof f.op, "fsync");
	assert_false(harness_fault_matches(&f, &c, 1));
	snprintf(f.op, sizeof f.op, "write");
	assert_true(harness_fault_matches(&f, &c, 1));
}

/* when: {node: N}: block mapping (rank / rpn) until the process knows its node, then that node only. */
static void test_match__node_filter_and_resolved_node(void **state)
{
	(void)state;
	harness_fault plan[2] = { any_fault(), any_fault() };
	ckpt_fault_ctx c = write_ctx("/r/x");       /* rank 1 */

	plan[0].node = 1, plan[0].rpn = 2;          /* ranks 2 and 3 */
	plan[1].node = 0, plan[1].rpn = 2;          /* ranks 0 and 1 */
	assert_false(harness_fault_matches(&plan[0], &c, 1));
	assert_true(harness_fault_matches(&plan[1], &c, 1));
	c.rank = 3;
	assert_true(harness_fault_matches(&plan[0], &c, 1));
	assert_false(harness_fault_matches(&plan[1], &c, 1));
	/* node 1 was lost without a replacement: rank 3 now runs on node 2, and node 1's fault is not its own */
	harness_fault_resolve_node(plan, 2, 2);
	assert_false(harness_fault_matches(&plan[0], &c, 1));
	assert_false(harness_fault_matches(&plan[1], &c, 1));
	/* a rank that knows it is on node 1 takes node 1's fault whatever its rank */
	harness_fault again[1] = { any_fault() };
	again[0].node = 1, again[0].rpn = 2;
	c.rank = 0;
	harness_fault_resolve_node(again, 1, 1);
	assert_true(harness_fault_matches(&again[0], &c, 1));
}

/* The plan file carries the node filter and node_loss (with its replacement flag). */
static void test_plan__node_fields_round_trip(void **state)
{
	(void)state;
	char path[] = "/tmp/test_faultmatch_plan.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	harness_fault f = any_fault(), *back = NULL;
	int n = 0;
	f.action = HARNESS_NODE_LOSS;
	f.arg = 1;
	f.node = 3, f.rpn = 4;
	assert_int_equal(harness_plan_write(path, &f, 1), 0);
	assert_int_equal(harness_plan_read(path, &back, &n), 0);
	unlink(path);
	assert_int_equal(n, 1);
	assert_int_equal(back[0].action, HARNESS_NODE_LOSS);
	assert_int_equal(back[0].node, 3);
	assert_int_equal(back[0].rpn, 4);
	assert_int_equal(back[0].arg, 1);
	char desc[64];
	harness_fault_describe(&back[0], desc, sizeof desc);
	assert_string_equal(desc, "node_loss:3+replace");
	free(back);
}

static void test_match__path_globs_the_last_component(void **state)
{
	(void)state;
	harness_fault f = any_fault();
	ckpt_fault_ctx c = write_ctx("/r/step-00000030.tmp/rank-00001.safetensors");

	snprintf(f.path, sizeof f.path, "rank-*.safetensors");
	assert_true(harness_fault_matches(&f, &c, 1));
	snprintf(f.path, sizeof f.path, "step-*");      /* a directory component is not the name */
	assert_false(harness_fault_matches(&f, &c, 1));
	c.path = NULL;
	assert_false(harness_fault_matches(&f, &c, 1));
}

static void test_match__phase_needs_an_announced_phase(void **state)
{
	(void)state;
	harness_fault f = any_fault();
	ckpt_fault_ctx c = write_ctx("/r/x");

	snprintf(f.phase, sizeof f.phase, "save.commit");
	c.phase = NULL;       /* a program that never announced one */
	assert_false(harness_fault_matches(&f, &c, 1));
}

static void test_match__any_op_skips_phase_points(void **state)
{
	(void)state;
	harness_fault f = any_fault();
	ckpt_fault_ctx c = write_ctx("/r/x");

	snprintf(f.op, sizeof f.op, "any");
	assert_true(harness_fault_matches(&f, &c, 1));
	c.op = "phase";
	assert_false(harness_fault_matches(&f, &c, 1));
	f.op[0] = '\0';
	assert_true(harness_fault_matches(&f, &c, 1));
}

static void test_decide__fires_exactly_on_nth_for_times(void **state)
{
	(void)state;
	harness_fault f = any_fault();
	atomic_int seen[1] = { 0 };
	ckpt_fault_ctx c = write_ctx("/r/x");
	int nth = 0, fired[10] = { 0 };

	f.nth = 3;
	f.times = 2;
	for (int k = 1; k <= 9; k++)
		fired[k] = harness_fault_decide(&f, 1, seen, &c, 1, &nth) == 0 ? nth : 0;
	int want[10] = { 0, 0, 0, 3, 4, 0, 0, 0, 0, 0 };
	assert_memory_equal(fired, want, sizeof want);
	assert_int_equal(atomic_load(&seen[0]), 9);
}

static void test_decide__errno_without_times_persists_other_actions_fire_once(void **state)
{
	(void)state;
	harness_fault f = any_fault();
	atomic_int seen[1] = { 0 };
	ckpt_fault_ctx c = write_ctx("/r/x");
	int nth, fires = 0;

	f.nth = 2;
	for (int k = 0; k < 6; k++)
		fires += harness_fault_decide(&f, 1, seen, &c, 1, &nth) == 0;
	assert_int_equal(fires, 5);
	f.action = HARNESS_KILL;
	atomic_store(&seen[0], 0);
	fires = 0;
	for (int k = 0; k < 6; k++)
		fires += harness_fault_decide(&f, 1, seen, &c, 1, &nth) == 0;
	assert_int_equal(fires, 1);
}

static void test_decide__first_firing_fault_wins_later_ones_uncounted(void **state)
{
	(void)state;
	harness_fault p[2] = { any_fault(), any_fault() };
	atomic_int seen[2] = { 0, 0 };
	ckpt_fault_ctx c = write_ctx("/r/x");
	int nth;

	p[0].action = HARNESS_KILL;     /* fires on call 1 only */
	p[1].action = HARNESS_KILL;
	assert_int_equal(harness_fault_decide(p, 2, seen, &c, 1, &nth), 0);
	assert_int_equal(atomic_load(&seen[1]), 0);
	assert_int_equal(harness_fault_decide(p, 2, seen, &c, 1, &nth), 1);
	assert_int_equal(nth, 1);
	assert_int_equal(harness_fault_decide(p, 2, seen, &c, 1, &nth), -1);
}

struct race { harness_fault *f; atomic_int *seen; atomic_int fires; };

static void *racer(void *arg)
{
	struct race *r = arg;
	ckpt_fault_ctx c = write_ctx("/r/x");
	int nth;
	for (int k = 0; k < 10000; k++)
		if (harness_fault_decide(r->f, 1, r->seen, &c, 1, &nth) == 0)
			atomic_fetch_add(&r->fires, 1);
	return NULL;
}

static void test_decide__threads_share_one_count(void **state)
{
	(void)state;
	harness_fault f = any_fault();
	atomic_int seen[1] = { 0 };
	struct race r = { &f, seen, 0 };
	pthread_t t[4];

	f.nth = 20000;
	f.times = 7;
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, racer, &r);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(atomic_load(&seen[0]), 40000);
	assert_int_equal(atomic_load(&r.fires), 7);
}

static void test_log__line_is_the_injector_format(void **state)
{
	(void)state;
	harness_fault f = any_fault();
	ckpt_fault_ctx c = write_ctx("/r/step-00000030.tmp/rank-00001.safetensors");
	char buf[1024];

	f.action = HARNESS_TORN;
	f.arg = 4096;
	int n = harness_fault_log_line(buf, sizeof buf, 2, &f, &c, 1, 2);
	assert_string_equal(buf, "{\"fault\":2,\"attempt\":1,\"rank\":1,\"step\":30,\"phase\":\"save.shard_write\","
				 "\"op\":\"write\",\"path\":\"/r/step-00000030.tmp/rank-00001.safetensors\",\"nth\":2,"
				 "\"action\":\"torn:4096+kill\"}\n");
	assert_int_equal(n, (int)strlen(buf));
	harness_fault_echo_line(buf, sizeof buf, &f, &c, 2);
	assert_string_equal(buf, "FAULT io rank=1 step=30 phase=save.shard_write op=write nth=2 -> torn:4096+kill\n");
}

static void test_log__path_is_escaped_and_line_bounded(void **state)
{
	(void)state;
	harness_fault f = any_fault();
	ckpt_fault_ctx c = write_ctx("/r/a\"b\\c\n");
	char buf[1024], small[40];

	c.phase = NULL;
	harness_fault_log_line(buf, sizeof buf, 0, &f, &c, 1, 1);
	assert_non_null(strstr(buf, "\"path\":\"/r/a\\\"b\\\\c\\u000a\""));
	assert_non_null(strstr(buf, "\"phase\":\"\""));
	int n = harness_fault_log_line(small, sizeof small, 0, &f, &c, 1, 1);
	assert_int_equal(n, (int)strlen(small));
	assert_int_equal(small[n - 1], '\n');
}

static void test_log__writes_one_line_to_the_rank_log(void **state)
{
	(void)state;
	harness_fault f = any_fault();
	ckpt_fault_ctx c = write_ctx("/r/x");
	char tmpl[] = "/tmp/faultmatch-XXXXXX", path[64], buf[512];
	int fd = mkstemp(tmpl);

	assert_true(fd >= 0);
	harness_fault_log(fd, -1, NULL, 0, &f, &c, 3, 1);
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "\"attempt\":3"));
	assert_non_null(strstr(buf, "\"action\":\"errno:EIO\"}\n"));
	close(fd);
	unlink(tmpl);
	harness_fault_log_path(path, sizeof path, "/w/faults", 3);
	assert_string_equal(path, "/w/faults.rank-3.jsonl");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match__every_field_narrows),
		cmocka_unit_test(test_match__path_globs_the_last_component),
		cmocka_unit_test(test_match__node_filter_and_resolved_node),
		cmocka_unit_test(test_plan__node_fields_round_trip),
		cmocka_unit_test(test_match__phase_needs_an_announced_phase),
		cmocka_unit_test(test_match__any_op_skips_phase_points),
		cmocka_unit_test(test_decide__fires_exactly_on_nth_for_times),
		cmocka_unit_test(test_decide__errno_without_times_persists_other_actions_fire_once),
		cmocka_unit_test(test_decide__first_firing_fault_wins_later_ones_uncounted),
		cmocka_unit_test(test_decide__threads_share_one_count),
		cmocka_unit_test(test_may_act__wildcards_and_a_rule_past_its_last_firing),
		cmocka_unit_test(test_log__line_is_the_injector_format),
		cmocka_unit_test(test_log__path_is_escaped_and_line_bounded),
		cmocka_unit_test(test_log__writes_one_line_to_the_rank_log),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
