/*
 * Restore must never accept what it did not verify (issue 9), on 4 threaded
 * ranks. Each test names the hole it guards against; each failed on the code
 * before the fix (a restore that "succeeded" with the state left as
 * initialized, a block on a FIFO, a write outside the root, ...).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "ckpt/inspect.h"
#include "ckpt_fixture.h"

#define W 4

typedef struct fx {
	char *root;
	char *outside;         /* a directory next to the root, to catch escapes */
	fx_job job;
} fx;

static int setup(void **state)
{
	fx *f = calloc(1, sizeof *f);
	f->root = fx_tmpdir();
	f->outside = fx_tmpdir();
	fx_job_init(&f->job, f->root, W);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	fx_disarm();
	fx_rmrf(f->root);
	fx_rmrf(f->outside);
	free(f->root);
	free(f->outside);
	free(f);
	return 0;
}

/* the fixture's helpers, on this test's root and job */
#define save_ok(f, step) fx_save_ok(&(f)->job, (step))
#define path(f, ...) fx_path((f)->root, __VA_ARGS__)

static void expect_fallback_to_10(fx *f, const char *why)
{
	assert_int_equal(fx_restore(&f->job), 0);
	assert_int_equal(f->job.r[0].info.step, 10);
	assert_int_equal(f->job.r[0].info.nfallbacks, 1);
	assert_string_equal(f->job.r[0].info.fallbacks[0].name, "step-00000020");
	if (!strstr(f->job.r[0].info.fallbacks[0].why, why))
		fail_msg("fallback reason \"%s\" does not say \"%s\"", f->job.r[0].info.fallbacks[0].why, why);
}

static off_t file_size(const char *p)
{
	struct stat st;
	assert_int_equal(lstat(p, &st), 0);
	return st.st_size;
}

/* A manifest over the read limit: restore used to "succeed" with nothing read. */
static void test_restore__manifest_over_the_limit_falls_back_with_reason(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	fx_truncate(path(f, "step-00000020/manifest.json"), 300l << 20);    /* sparse */
	expect_fallback_to_10(f, "over libckpt's limit");
}

/* A shard whose last tensor lies past its end, hashes recomputed: the tensor was never read. */
static void test_restore__shard_missing_its_last_tensor_falls_back(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	char *shard = path(f, "step-00000020/rank-00001.safetensors");
	fx_truncate(shard, (long)file_size(shard) - 37);     /* user.blob, the last tensor, is gone */
	fx_reseal(path(f, "step-00000020"));
	expect_fallback_to_10(f, "past the");
}

static void test_restore__empty_shard_falls_back(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	fx_truncate(path(f, "step-00000020/rank-00002.safetensors"), 0);
	fx_reseal(path(f, "step-00000020"));
	expect_fallback_to_10(f, "shorter than a safetensors header");
}

/* ckpt-tool's verification is restore's: the crafted shard is invalid there too. */
static void test_inspect__verify_checks_the_tensor_table(void **state)
{
	fx *f = *state;
	ckpt_gen_report rep;

	save_ok(f, 20);
	char *shard = path(f, "step-00000020/rank-00003.safetensors");
	fx_truncate(shard, (long)file_size(shard) - 37);
	fx_reseal(path(f, "step-00000020"));
	assert_int_equal(ckpt_inspect_verify(path(f, "step-00000020"), &rep), 1);
	assert_int_equal(rep.nproblems, 1);
	assert_string_equal(rep.problems[0].file, "rank-00003.safetensors");
	assert_non_null(strstr(rep.problems[0].why, "safetensors header"));
}

static int refuse_20(void *arg, uint64_t step, char *why, size_t len)
{
	if (step != 20)
		return 0;
	snprintf(why, len, "rank %d: data cursor out of range", *(int *)arg);
	return -1;
}

/* The caller's range checks refuse a generation, which is passed over with the reason. */
static void test_restore__validation_refusal_falls_back_with_reason(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	f->job.validate = refuse_20;
	expect_fallback_to_10(f, "data cursor out of range");
	assert_non_null(strstr(f->job.r[0].info.fallbacks[0].why, "refused"));
}

/*
 * More generations than the old fixed cap (4096): the newest valid one is
 * still found. tmpfs lists the newest entries first, so with the invalid
 * older generations created after it, the old scan kept only those.
 */
static void test_scan__thousands_of_generations_newest_still_wins(void **state)
{
	fx *f = *state;
	char root[64] = "/dev/shm/ckpt-unit-XXXXXX";
	struct stat st;

	if (stat("/dev/shm", &st) < 0 || !mkdtemp(root)) {
		print_message("skipped: no writable /dev/shm (tmpfs, which lists the newest entries first)\n");
		skip();
	}
	f->job.root = root;
	f->job.keep_last = 100000;
	save_ok(f, 5000);
	for (int s = 1; s <= 4200; s++) {
		char p[128];
		snprintf(p, sizeof p, "%s/step-%08d", root, s);
		assert_int_equal(mkdir(p, 0700), 0);      /* no manifest: invalid */
	}
	assert_int_equal(fx_restore(&f->job), 0);
	assert_int_equal(f->job.r[0].info.step, 5000);
	assert_int_equal(f->job.r[0].info.nfallbacks, 0);
	fx_rmrf(root);
}

/* A FIFO where a file should be: restore used to block forever on it. */
static void test_restore__fifo_manifest_and_shard_do_not_block(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	save_ok(f, 30);
	remove(path(f, "step-00000030/manifest.json"));
	assert_int_equal(mkfifo(path(f, "step-00000030/manifest.json"), 0600), 0);
	remove(path(f, "step-00000020/rank-00001.safetensors"));
	assert_int_equal(mkfifo(path(f, "step-00000020/rank-00001.safetensors"), 0600), 0);
	assert_int_equal(fx_restore(&f->job), 0);
	assert_int_equal(f->job.r[0].info.step, 10);
	assert_int_equal(f->job.r[0].info.nfallbacks, 2);
	assert_non_null(strstr(f->job.r[0].info.fallbacks[0].why, "not a regular file"));
	assert_non_null(strstr(f->job.r[0].info.fallbacks[1].why, "not a regular file"));
}

/* A shard that is a link to a (valid) file outside the root is not followed. */
static void test_restore__symlinked_shard_is_not_followed(void **state)
{
	fx *f = *state;
	char out[1024];

	save_ok(f, 10);
	save_ok(f, 20);
	snprintf(out, sizeof out, "%s/rank-00002.safetensors", f->outside);
	fx_copy(path(f, "step-00000020/rank-00002.safetensors"), out);
	remove(path(f, "step-00000020/rank-00002.safetensors"));
	assert_int_equal(symlink(out, path(f, "step-00000020/rank-00002.safetensors")), 0);
	expect_fallback_to_10(f, "symbolic link");
}

/* A generation directory that is a link (to a valid copy outside the root) is not a generation. */
static void test_restore__symlinked_generation_is_not_followed(void **state)
{
	fx *f = *state;
	char out[1024];

	save_ok(f, 10);
	save_ok(f, 20);
	snprintf(out, sizeof out, "%s/gen", f->outside);
	assert_int_equal(rename(path(f, "step-00000020"), out), 0);
	assert_int_equal(symlink(out, path(f, "step-00000020")), 0);
	expect_fallback_to_10(f, "symbolic link");
}

/*
 * A LATEST.tmp link planted in the root (after ckpt_open's cleanup, right
 * before LATEST is replaced): the save used to truncate and overwrite the
 * link's target outside the root.
 */
static int plant_at_latest(const char *name, int *failnum, void **failinfo, unsigned *flags);
static char plant_target[1024], plant_link[1024];

#include <fiu-control.h>
#include <fiu.h>

static int plant_at_latest(const char *name, int *failnum, void **failinfo, unsigned *flags)
{
	(void)name;
	(void)failnum;
	(void)failinfo;
	(void)flags;
	const ckpt_fault_ctx *c = ckpt_fault_current();
	if (strcmp(c->phase, "save.latest") == 0 && strcmp(c->op, "phase") == 0)
		if (symlink(plant_target, plant_link) < 0)
			abort();
	return 0;
}

static void test_save__latest_tmp_link_planted_mid_save_is_not_followed(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	snprintf(plant_target, sizeof plant_target, "%s/victim", f->outside);
	snprintf(plant_link, sizeof plant_link, "%s/LATEST.tmp", f->root);
	FILE *v = fopen(plant_target, "w");
	fputs("precious\n", v);
	fclose(v);
	fiu_init(0);
	fiu_enable_external("ckpt/phase/*", 1, NULL, 0, plant_at_latest);
	save_ok(f, 20);
	fiu_disable("ckpt/phase/*");
	assert_int_equal(file_size(plant_target), 9);
	FILE *l = fopen(path(f, "LATEST"), "r");
	char line[64] = "";
	assert_non_null(fgets(line, sizeof line, l));
	fclose(l);
	assert_string_equal(line, "step-00000020\n");
}

/* journal/ a link to a directory outside: nothing is appended there. */
static void test_open__symlinked_journal_is_refused(void **state)
{
	fx *f = *state;

	assert_int_equal(symlink(f->outside, path(f, "journal")), 0);
	f->job.step = 10;
	assert_int_not_equal(fx_save(&f->job), 0);
	assert_non_null(strstr(f->job.r[0].err.msg, "symbolic link"));
	char p[1024];
	snprintf(p, sizeof p, "%s/rank-00000.jsonl", f->outside);
	assert_false(fx_exists(p));
}

static unsigned mode_of(const char *p)
{
	struct stat st;
	assert_int_equal(lstat(p, &st), 0);
	return st.st_mode & 07777;
}

/* Checkpoints are private by default (0600 files, 0700 directories), whatever the umask allows. */
static void test_save__files_0600_and_directories_0700_by_default(void **state)
{
	fx *f = *state;
	mode_t old = umask(022);

	save_ok(f, 10);
	umask(old);
	assert_int_equal(mode_of(path(f, "step-00000010")), 0700);
	assert_int_equal(mode_of(path(f, "step-00000010/manifest.json")), 0600);
	assert_int_equal(mode_of(path(f, "step-00000010/rank-00001.safetensors")), 0600);
	assert_int_equal(mode_of(path(f, "LATEST")), 0600);
	assert_int_equal(mode_of(path(f, "journal")), 0700);
	assert_int_equal(mode_of(path(f, "journal/rank-00000.jsonl")), 0600);
}

static void test_save__modes_are_configurable(void **state)
{
	fx *f = *state;
	mode_t old = umask(022);

	f->job.file_mode = 0640;
	f->job.dir_mode = 0750;
	save_ok(f, 10);
	umask(old);
	assert_int_equal(mode_of(path(f, "step-00000010")), 0750);
	assert_int_equal(mode_of(path(f, "step-00000010/rank-00000.safetensors")), 0640);
}

/* A root others can write to is refused, with how to allow it; allowed when told. */
static void test_open__world_writable_root_is_refused_unless_allowed(void **state)
{
	fx *f = *state;

	assert_int_equal(chmod(f->root, 0777), 0);
	f->job.step = 10;
	assert_int_equal(fx_save(&f->job), -EPERM);
	assert_non_null(strstr(f->job.r[0].err.msg, "writable by others"));
	assert_non_null(strstr(f->job.r[3].err.msg, "allow_shared_root"));
	assert_false(fx_exists(path(f, "step-00000010")));
	f->job.allow_shared_root = 1;
	save_ok(f, 10);
	assert_int_equal(chmod(f->root, 0700), 0);
}

/*
 * LATEST's rename failing from one save on: LATEST stays at step 10 while
 * retention moves on. Retention must not delete the generation LATEST names.
 */
static void test_retention__never_deletes_what_a_stale_latest_names(void **state)
{
	fx *f = *state;

	f->job.keep_last = 1;
	save_ok(f, 10);
	fx_fault fault = { .rank = 0, .op = "rename", .phase = "save.latest",
			   .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } };
	fx_arm(&fault);
	save_ok(f, 20);
	save_ok(f, 30);
	assert_true(fx_fired() >= 2);
	fx_disarm();
	FILE *l = fopen(path(f, "LATEST"), "r");
	char line[64] = "";
	assert_non_null(fgets(line, sizeof line, l));
	fclose(l);
	assert_string_equal(line, "step-00000010\n");
	assert_true(fx_exists(path(f, "step-00000010/manifest.json")));    /* what LATEST names */
	assert_false(fx_exists(path(f, "step-00000020")));                 /* retention still works */
	assert_true(fx_exists(path(f, "step-00000030")));
	/* once LATEST can be replaced again, the old one goes */
	save_ok(f, 40);
	assert_false(fx_exists(path(f, "step-00000010")));
}

/* Start-up cleanup is a phase of its own (open.cleanup), evaluated before its I/O. */
static void test_open__cleanup_is_the_phase_open_cleanup(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	assert_int_equal(mkdir(path(f, "step-00000020.tmp"), 0700), 0);
	fx_fault fault = { .rank = 0, .op = "phase", .phase = "open.cleanup",
			   .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } };
	fx_arm(&fault);
	assert_int_equal(fx_restore(&f->job), -EIO);
	assert_int_equal(fx_fired(), 1);
	fx_disarm();
	assert_string_equal(f->job.r[1].err.phase, "open.cleanup");
	assert_true(fx_exists(path(f, "step-00000020.tmp")));     /* nothing was cleaned before the point */
	assert_int_equal(fx_restore(&f->job), 0);
	assert_false(fx_exists(path(f, "step-00000020.tmp")));
}

static void copy_tree(const char *from, const char *to)
{
	char cmd[4096];
	snprintf(cmd, sizeof cmd, "cp -r '%s/.' '%s/'", from, to);
	assert_int_equal(system(cmd), 0);
}

/* Every earlier on-disk version is still read: a schema_version 1 generation written by the old code. */
static void test_restore__schema_version_1_generation_still_restores(void **state)
{
	fx *f = *state;
	ckpt_gen_report rep;

	copy_tree(CKPT_FIXTURES_DIR "/v1-fixture-2ranks", f->root);
	assert_int_equal(ckpt_inspect_verify(path(f, "step-00000010"), &rep), 0);
	assert_int_equal(rep.world_size, 2);
	f->job.world = 2;
	assert_int_equal(fx_restore(&f->job), 0);      /* content checked against fill(rank, 10) */
	assert_int_equal(f->job.r[0].info.step, 10);
	assert_int_equal(f->job.r[1].info.nfallbacks, 0);
	/* and a new save next to it is version 2, and both restore */
	save_ok(f, 20);
	FILE *m = fopen(path(f, "step-00000020/manifest.json"), "r");
	char head[32] = "";
	assert_non_null(fgets(head, sizeof head, m));
	fclose(m);
	assert_non_null(strstr(head, "\"schema_version\":2"));
	assert_int_equal(fx_restore(&f->job), 0);
	assert_int_equal(f->job.r[0].info.step, 20);
}

/* A read error on the restore path is never dropped: it is the fallback's reason. */
static void test_restore__manifest_read_error_is_the_fallback_reason(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	fx_fault fault = { .rank = 2, .op = "read", .phase = "restore.read", .nth = 1, .times = 1,
			   .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } };
	fx_arm(&fault);
	expect_fallback_to_10(f, "rank 2");
	fx_disarm();
	assert_non_null(strstr(f->job.r[0].info.fallbacks[0].why, "manifest.json"));
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_restore__manifest_over_the_limit_falls_back_with_reason),
		T(test_restore__shard_missing_its_last_tensor_falls_back),
		T(test_restore__empty_shard_falls_back),
		T(test_inspect__verify_checks_the_tensor_table),
		T(test_restore__validation_refusal_falls_back_with_reason),
		T(test_scan__thousands_of_generations_newest_still_wins),
		T(test_restore__fifo_manifest_and_shard_do_not_block),
		T(test_restore__symlinked_shard_is_not_followed),
		T(test_restore__symlinked_generation_is_not_followed),
		T(test_save__latest_tmp_link_planted_mid_save_is_not_followed),
		T(test_open__symlinked_journal_is_refused),
		T(test_save__files_0600_and_directories_0700_by_default),
		T(test_save__modes_are_configurable),
		T(test_open__world_writable_root_is_refused_unless_allowed),
		T(test_retention__never_deletes_what_a_stale_latest_names),
		T(test_open__cleanup_is_the_phase_open_cleanup),
		T(test_restore__schema_version_1_generation_still_restores),
		T(test_restore__manifest_read_error_is_the_fallback_reason),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
