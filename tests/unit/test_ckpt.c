/*
 * libckpt's commit protocol on 4 threaded ranks.
 * Guards against: torn or partial generations becoming visible, ranks that
 * disagree about a save, damaged generations being restored, retention that
 * loses the newest generation, leftovers of interrupted saves.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "ckpt_fixture.h"

#define W 4

typedef struct fx {
	char *root;
	fx_job job;
} fx;

static int setup(void **state)
{
	fx *f = calloc(1, sizeof *f);
	f->root = fx_tmpdir();
	fx_job_init(&f->job, f->root, W);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	fx_disarm();
	fx_rmrf(f->root);
	free(f->root);
	free(f);
	return 0;
}

/* the fixture's helpers, on this test's root and job */
#define save_ok(f, step) fx_save_ok(&(f)->job, (step))
#define path(f, ...) fx_path((f)->root, __VA_ARGS__)

static void expect_restore(fx *f, uint64_t step, int fallbacks)
{
	assert_int_equal(fx_restore(&f->job), 0);
	assert_int_equal(f->job.r[0].info.step, step);
	assert_int_equal(f->job.r[0].info.nfallbacks, fallbacks);
}

static void test_save__round_trip(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	assert_true(fx_exists(path(f, "step-00000020/manifest.json")));
	for (int r = 0; r < W; r++)
		assert_true(fx_exists(path(f, "step-00000020/rank-%05d.safetensors", r)));
	assert_false(fx_exists(path(f, "step-00000020.tmp")));
	expect_restore(f, 20, 0);

	FILE *l = fopen(path(f, "LATEST"), "r");
	char line[64] = "";
	assert_non_null(l);
	assert_non_null(fgets(line, sizeof line, l));
	fclose(l);
	assert_string_equal(line, "step-00000020\n");
}

static void test_restore__nothing_to_restore(void **state)
{
	fx *f = *state;
	assert_int_equal(fx_restore(&f->job), -CKPT_ENOGEN);
}

/*
 * Every operation failing on every rank: the save fails on all ranks with the
 * failing rank's error and leaves no new generation, or (for operations after
 * the commit point) succeeds; either way the newest generation restores.
 */
static void test_save__each_op_failing_on_each_rank(void **state)
{
	static const char *const ops[] = { "open", "write", "fsync", "close", "rename", "mkdir", "opendir",
					   "unlink", "rmdir" };
	fx *f = *state;

	for (size_t o = 0; o < sizeof ops / sizeof *ops; o++)
		for (int rank = 0; rank < W; rank++) {
			fx_rmrf(f->root);
			mkdir(f->root, 0755);
			f->job.keep_last = 1;          /* retention removes step 10: unlink and rmdir run */
			save_ok(f, 10);
			fx_fault fault = { .rank = rank, .op = ops[o],
					   .action = { .kind = CKPT_FAULT_ERRNO, .err = ENOSPC } };
			fx_arm(&fault);
			f->job.step = 20;
			int rc = fx_save(&f->job);
			int fired = fx_fired();
			fx_disarm();

			assert_int_not_equal(rc, 9999);       /* ranks agreed */
			if (rc != 0) {
				assert_true(fired > 0);
				assert_int_equal(rc, -ENOSPC);
				for (int r = 0; r < W; r++) {
					assert_int_equal(f->job.r[r].err.rank, rank);
					assert_string_equal(f->job.r[r].err.op, ops[o]);
					assert_non_null(strstr(f->job.r[r].err.msg, "No space left"));
				}
				assert_false(fx_exists(path(f, "step-00000020")));
				expect_restore(f, 10, 0);
			} else {
				expect_restore(f, 20, 0);
			}
			/* the core operations of a save must really have been exercised */
			if (strcmp(ops[o], "write") == 0 || strcmp(ops[o], "fsync") == 0 ||
			    strcmp(ops[o], "close") == 0 || strcmp(ops[o], "open") == 0 ||
			    (rank == 0 && (strcmp(ops[o], "rename") == 0 || strcmp(ops[o], "mkdir") == 0)))
				assert_int_not_equal(rc, 0);
		}
}

/* A phase failing on one rank fails the save everywhere. */
static void test_save__phase_failure_agrees(void **state)
{
	static const char *const phases[] = { "save.prepare", "save.shard_write", "save.shard_sync",
					      "save.barrier", "save.manifest_write", "save.manifest_sync",
					      "save.commit", "save.dir_sync" };
	fx *f = *state;

	save_ok(f, 10);
	for (size_t p = 0; p < sizeof phases / sizeof *phases; p++) {
		fx_fault fault = { .rank = -1, .op = "phase", .phase = phases[p],
				   .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } };
		fx_arm(&fault);
		f->job.step = 20;
		int rc = fx_save(&f->job);
		fx_disarm();
		assert_int_equal(rc, -EIO);
		assert_string_equal(f->job.r[W - 1].err.phase, phases[p]);
		assert_false(fx_exists(path(f, "step-00000020")));
	}
	expect_restore(f, 10, 0);
}

static void damage_and_expect_fallback(fx *f, void (*damage)(fx *f), const char *why)
{
	save_ok(f, 10);
	save_ok(f, 20);
	damage(f);
	expect_restore(f, 10, 1);
	assert_string_equal(f->job.r[0].info.fallbacks[0].name, "step-00000020");
	assert_non_null(strstr(f->job.r[0].info.fallbacks[0].why, why));
}

static void flip_shard(fx *f) { fx_flip(path(f, "step-00000020/rank-00002.safetensors"), -5); }
static void flip_header(fx *f) { fx_flip(path(f, "step-00000020/rank-00001.safetensors"), 20); }
static void truncate_shard(fx *f) { fx_truncate(path(f, "step-00000020/rank-00003.safetensors"), 100); }
static void delete_shard(fx *f) { remove(path(f, "step-00000020/rank-00000.safetensors")); }
static void flip_manifest(fx *f) { fx_flip(path(f, "step-00000020/manifest.json"), 40); }
static void truncate_manifest(fx *f) { fx_truncate(path(f, "step-00000020/manifest.json"), 30); }
static void delete_manifest(fx *f) { remove(path(f, "step-00000020/manifest.json")); }

static void test_restore__falls_back_past_bit_flip(void **s) { damage_and_expect_fallback(*s, flip_shard, "contents damaged"); }
static void test_restore__falls_back_past_header_flip(void **s) { damage_and_expect_fallback(*s, flip_header, "rank-00001"); }
static void test_restore__falls_back_past_truncated_shard(void **s) { damage_and_expect_fallback(*s, truncate_shard, "truncated"); }
static void test_restore__falls_back_past_missing_shard(void **s) { damage_and_expect_fallback(*s, delete_shard, "rank-00000.safetensors"); }
static void test_restore__falls_back_past_flipped_manifest(void **s) { damage_and_expect_fallback(*s, flip_manifest, "checksum"); }
static void test_restore__falls_back_past_torn_manifest(void **s) { damage_and_expect_fallback(*s, truncate_manifest, "manifest"); }
static void test_restore__falls_back_past_missing_manifest(void **s) { damage_and_expect_fallback(*s, delete_manifest, "manifest.json"); }

static void test_restore__all_damaged_is_no_valid(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	flip_shard(f);
	fx_flip(path(f, "step-00000010/rank-00001.safetensors"), -1);
	assert_int_equal(fx_restore(&f->job), -CKPT_ENOVALID);
	assert_int_equal(f->job.r[0].info.nfallbacks, 2);
	assert_non_null(strstr(f->job.r[2].err.msg, "none of the 2 generations"));
}

/* This fixture's tensors grow with the world size: no reshard can bridge that (test_reshard: one that can). */
static void test_restore__other_world_size_and_layout_is_a_clear_error(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	f->job.world = 2;
	assert_int_equal(fx_restore(&f->job), -CKPT_ECONFIG);
	assert_non_null(strstr(f->job.r[1].err.msg, "resharding cannot bridge"));
}

static void test_restore__other_config_is_a_clear_error(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	f->job.config_hash ^= 1;
	assert_int_equal(fx_restore(&f->job), -CKPT_ECONFIG);
	assert_non_null(strstr(f->job.r[0].err.msg, "config hash"));
}

static void test_retention__keeps_last_k(void **state)
{
	fx *f = *state;

	f->job.keep_last = 2;
	for (uint64_t s = 10; s <= 50; s += 10)
		save_ok(f, s);
	assert_false(fx_exists(path(f, "step-00000010")));
	assert_false(fx_exists(path(f, "step-00000030")));
	assert_true(fx_exists(path(f, "step-00000040")));
	assert_true(fx_exists(path(f, "step-00000050")));
	expect_restore(f, 50, 0);
}

static void test_retention__keeps_every_mth_and_best(void **state)
{
	fx *f = *state;

	f->job.keep_last = 1;
	f->job.keep_every = 40;
	f->job.keep_best = 1;
	for (uint64_t s = 10; s <= 70; s += 10) {
		f->job.tags = s == 30 ? CKPT_TAG_BEST : 0;
		save_ok(f, s);
	}
	const uint64_t kept[] = { 30, 40, 70 }, gone[] = { 10, 20, 50, 60 };
	for (size_t i = 0; i < 3; i++)
		assert_true(fx_exists(path(f, "step-%08llu", (unsigned long long)kept[i])));
	for (size_t i = 0; i < 4; i++)
		assert_false(fx_exists(path(f, "step-%08llu", (unsigned long long)gone[i])));
}

/* The generation just saved survives retention even if older ones are "newer" by count. */
static void test_retention__never_deletes_the_one_just_saved(void **state)
{
	fx *f = *state;

	f->job.keep_last = 1;
	save_ok(f, 30);
	save_ok(f, 20);      /* e.g. a re-save after falling back */
	assert_true(fx_exists(path(f, "step-00000020")));
}

static void test_open__removes_abandoned_directories(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	mkdir(path(f, "step-00000020.tmp"), 0755);
	FILE *junk = fopen(path(f, "step-00000020.tmp/rank-00000.safetensors"), "w");
	fputs("half a shard", junk);
	fclose(junk);
	mkdir(path(f, "step-00000005.trash"), 0755);
	fclose(fopen(path(f, "LATEST.tmp"), "w"));
	expect_restore(f, 10, 0);     /* opening is enough */
	assert_false(fx_exists(path(f, "step-00000020.tmp")));
	assert_false(fx_exists(path(f, "step-00000005.trash")));
	assert_false(fx_exists(path(f, "LATEST.tmp")));
	assert_true(fx_exists(path(f, "step-00000010/manifest.json")));
}

static void test_save__retry_of_the_same_step_is_idempotent(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	fx_fault fault = { .rank = 0, .op = "rename", .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } };
	fx_arm(&fault);
	f->job.step = 20;
	assert_int_equal(fx_save(&f->job), -EIO);
	fx_disarm();
	save_ok(f, 20);
	expect_restore(f, 20, 0);
}

static void test_save__replaces_a_damaged_generation_of_the_same_step(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	flip_shard(f);
	expect_restore(f, 10, 1);
	save_ok(f, 20);
	expect_restore(f, 20, 0);
	assert_false(fx_exists(path(f, "step-00000020.replaced")));
}

/* The I/O layer loops over real short writes and retries EINTR. */
static void test_io__short_writes_and_eintr_still_commit(void **state)
{
	fx *f = *state;
	fx_fault shorts = { .rank = -1, .op = "write", .nth = 1, .times = 20,
			    .action = { .kind = CKPT_FAULT_SHORT, .bytes = 100 } };
	fx_fault eintr = { .rank = 2, .op = "fsync", .nth = 1, .times = 3,
			   .action = { .kind = CKPT_FAULT_ERRNO, .err = EINTR } };

	fx_arm(&shorts);
	save_ok(f, 10);
	assert_int_equal(fx_fired(), 20);
	fx_disarm();
	fx_arm(&eintr);
	save_ok(f, 20);
	assert_int_equal(fx_fired(), 3);
	fx_disarm();
	expect_restore(f, 20, 0);

	/* the journals saw the faults */
	int shorts_seen = 0, eintr_seen = 0;
	for (int r = 0; r < W; r++) {
		FILE *j = fopen(path(f, "journal/rank-%05d.jsonl", r), "r");
		char line[2048];
		assert_non_null(j);
		while (fgets(line, sizeof line, j)) {
			shorts_seen += strstr(line, "\"fault\":\"short:100\"") != NULL;
			eintr_seen += strstr(line, "\"fault\":\"EINTR\"") != NULL;
		}
		fclose(j);
	}
	assert_int_equal(shorts_seen, 20);
	assert_int_equal(eintr_seen, 3);
}

/*
 * The Nth-operation sweep (as SQLite tests I/O errors): for every rank, fail
 * its Nth I/O operation of a save, once (transient) and from then on
 * (persistent), for N = 1, 2, ... until a save fires no fault. Every outcome
 * must be one of: the save failed on every rank and step 10 restores, or it
 * succeeded on every rank and step 20 restores; never a disagreement, never
 * a damaged or missing generation.
 */
static void test_save__nth_operation_sweep(void **state)
{
	fx *f = *state;
	int cases = 0;

	for (int rank = 0; rank < W; rank++)
		for (int persistent = 0; persistent <= 1; persistent++)
			for (int n = 1;; n++) {
				fx_rmrf(f->root);
				mkdir(f->root, 0755);
				f->job.keep_last = 1;       /* retention's deletions are swept too */
				save_ok(f, 10);
				fx_fault fault = { .rank = rank, .op = NULL, .nth = n, .times = persistent ? 0 : 1,
						   .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } };
				fx_arm(&fault);
				f->job.step = 20;
				int rc = fx_save(&f->job);
				int fired = fx_fired();
				fx_disarm();
				if (!fired)
					break;
				cases++;
				assert_int_not_equal(rc, 9999);         /* every rank agreed */
				assert_true(rc == 0 || rc == -EIO);
				if (rc == 0) {
					expect_restore(f, 20, 0);
				} else if (fx_exists(path(f, "step-00000020"))) {
					/*
					 * Only past the rename into place: the root's fsync failed and, the
					 * error being persistent, so did taking the generation back out of
					 * sight. It is complete (every file and the manifest were synced),
					 * so it must restore exactly.
					 */
					assert_string_equal(f->job.r[0].err.phase, "save.dir_sync");
					assert_true(persistent);
					expect_restore(f, 20, 0);
				} else {
					assert_int_equal(f->job.r[0].err.rank, rank);
					expect_restore(f, 10, 0);
				}
			}
	/* ranks 1-3 make ~10 operations per save, rank 0 many more, in two modes */
	assert_true(cases > 80);
}

/* A read error makes restore fall back, not crash. */
static void test_restore__read_error_falls_back(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	fx_fault fault = { .rank = 3, .op = "read", .nth = 2, .times = 1,
			   .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } };
	fx_arm(&fault);
	expect_restore(f, 10, 1);
	fx_disarm();
	assert_non_null(strstr(f->job.r[0].info.fallbacks[0].why, "rank 3"));
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_save__round_trip),
		T(test_restore__nothing_to_restore),
		T(test_save__each_op_failing_on_each_rank),
		T(test_save__phase_failure_agrees),
		T(test_restore__falls_back_past_bit_flip),
		T(test_restore__falls_back_past_header_flip),
		T(test_restore__falls_back_past_truncated_shard),
		T(test_restore__falls_back_past_missing_shard),
		T(test_restore__falls_back_past_flipped_manifest),
		T(test_restore__falls_back_past_torn_manifest),
		T(test_restore__falls_back_past_missing_manifest),
		T(test_restore__all_damaged_is_no_valid),
		T(test_restore__other_world_size_and_layout_is_a_clear_error),
		T(test_restore__other_config_is_a_clear_error),
		T(test_retention__keeps_last_k),
		T(test_retention__keeps_every_mth_and_best),
		T(test_retention__never_deletes_the_one_just_saved),
		T(test_open__removes_abandoned_directories),
		T(test_save__retry_of_the_same_step_is_idempotent),
		T(test_save__replaces_a_damaged_generation_of_the_same_step),
		T(test_io__short_writes_and_eintr_still_commit),
		T(test_restore__read_error_falls_back),
		T(test_save__nth_operation_sweep),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
