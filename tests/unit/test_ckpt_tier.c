/*
 * Tiered storage (ckpt_config.fast_root): saves commit on the fast tier, the
 * drain commits them on the durable tier at the next call, retention per
 * tier, restore across tiers. Ranks are threads over the fake communicator,
 * each with its own fast root (two "nodes") unless a test shares one. Each
 * test names the seeded mutant it kills.
 */
#include <errno.h>
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
#include <fiu-control.h>
#include <fiu.h>

#include "ckpt/ckpt.h"
#include "ckpt/fault.h"
#include "ckpt_fixture.h"
#include "fake_comm.h"
#include "fake_slow_tier.h"

#define N 2048
#define WORLD 2

enum { ACT_END = 0, ACT_SAVE, ACT_WAIT, ACT_RESTORE, ACT_DRAINED };

typedef struct act {
	int what;
	uint64_t step;
} act;

typedef struct rank_ctx {
	const char *durable;
	char fast[4200];
	uint32_t keep_last, keep_every;
	const act *acts;
	/* results, per action */
	int rc[16];
	uint64_t drained[16];
	ckpt_restore_info info;
	int restored_ok;
} rank_ctx;

static void fill(float *w, int rank, uint64_t step)
{
	for (int i = 0; i < N; i++)
		w[i] = (float)(step * 1000u + (uint64_t)rank * 77u + (uint64_t)i);
}

static void run_rank(ckpt_comm *comm, void *arg)
{
	rank_ctx *x = arg;
	float w[N], want[N];
	ckpt_state *s = NULL;
	ckpt *c = NULL;
	ckpt_config cfg = { .root = x->durable, .fast_root = x->fast, .keep_last = x->keep_last,
			    .keep_every = x->keep_every, .config_hash = 7 };

	if (ckpt_state_new(&s) < 0 ||
	    ckpt_state_add_tensor(s, "w", "params", CKPT_STAGE_MODEL, CKPT_F32, w, N, (size_t)N * (size_t)comm->size,
				  (size_t)N * (size_t)comm->rank) < 0 ||
	    ckpt_open(&c, &cfg, comm, s, NULL) < 0)
		abort();      /* rank threads do not assert */
	for (int i = 0; x->acts[i].what != ACT_END; i++) {
		switch (x->acts[i].what) {
		case ACT_SAVE:
			fill(w, comm->rank, x->acts[i].step);
			x->rc[i] = ckpt_save(c, x->acts[i].step, 0);
			break;
		case ACT_WAIT:
			ckpt_wait(c);
			break;
		case ACT_RESTORE:
			memset(w, 0, sizeof w);
			x->rc[i] = ckpt_restore(c, &x->info);
			fill(want, comm->rank, x->info.step);
			x->restored_ok = x->rc[i] == 0 && memcmp(w, want, sizeof w) == 0;
			break;
		}
		x->drained[i] = ckpt_drained_step(c);
	}
	ckpt_close(c);
	ckpt_state_free(s);
}

typedef struct job {
	char *dir;
	char durable[4200];
	rank_ctx r[WORLD];
} job;

static void job_init(job *j, int shared_fast)
{
	memset(j, 0, sizeof *j);
	j->dir = fx_tmpdir();
	snprintf(j->durable, sizeof j->durable, "%s/durable", j->dir);
	for (int r = 0; r < WORLD; r++) {
		j->r[r].durable = j->durable;
		j->r[r].keep_last = 3;
		snprintf(j->r[r].fast, sizeof j->r[r].fast, "%s/node-%d/fast", j->dir, shared_fast ? 0 : r);
	}
}

static void job_run(job *j, const act *acts)
{
	void *args[WORLD];
	for (int r = 0; r < WORLD; r++) {
		j->r[r].acts = acts;
		memset(j->r[r].rc, 0, sizeof j->r[r].rc);
		args[r] = &j->r[r];
	}
	assert_int_equal(fake_comm_run(WORLD, run_rank, args), 0);
}

static void job_free(job *j)
{
	fx_rmrf(j->dir);
	free(j->dir);
}

static int has(const char *root, uint64_t step, const char *file)
{
	char p[4400];
	struct stat st;
	snprintf(p, sizeof p, "%s/step-%08llu/%s", root, (unsigned long long)step, file);
	return stat(p, &st) == 0;
}

/*
 * A save is drained at the next call, not when it returns: right after save
 * 10 nothing is drained (mutant drain_ack_early reports 10 already); after
 * ckpt_wait the durable tier has step 10 complete (both shards, the manifest,
 * no .tmp), and each node's fast root has its own copy of the generation.
 */
static void test_drained_only_after_durable_commit(void **unused)
{
	static const act acts[] = { { ACT_SAVE, 10 }, { ACT_WAIT, 0 }, { ACT_SAVE, 20 }, { ACT_END, 0 } };
	job j;
	(void)unused;
	job_init(&j, 0);
	job_run(&j, acts);
	for (int r = 0; r < WORLD; r++) {
		assert_int_equal(j.r[r].rc[0], 0);
		assert_int_equal(j.r[r].drained[0], 0);
		assert_int_equal(j.r[r].drained[1], 10);
		assert_int_equal(j.r[r].drained[2], 10);    /* 20's drain is finished by ckpt_close */
		assert_true(has(j.r[r].fast, 20, "manifest.json"));
	}
	assert_true(has(j.durable, 10, "manifest.json") && has(j.durable, 10, "rank-00000.safetensors") &&
		    has(j.durable, 10, "rank-00001.safetensors"));
	assert_true(has(j.durable, 20, "manifest.json"));
	assert_true(has(j.r[0].fast, 20, "rank-00000.safetensors") && !has(j.r[0].fast, 20, "rank-00001.safetensors"));
	job_free(&j);
}

/* One node's fast tier lost: restore falls back to the durable copy of the same step. */
static void test_fast_wiped_restores_durable(void **unused)
{
	static const act save[] = { { ACT_SAVE, 10 }, { ACT_SAVE, 20 }, { ACT_END, 0 } };
	static const act restore[] = { { ACT_RESTORE, 0 }, { ACT_END, 0 } };
	job j;
	(void)unused;
	job_init(&j, 0);
	job_run(&j, save);
	fx_rmrf(j.r[1].fast);
	job_run(&j, restore);
	for (int r = 0; r < WORLD; r++) {
		assert_int_equal(j.r[r].rc[0], 0);
		assert_int_equal(j.r[r].info.step, 20);
		assert_true(j.r[r].restored_ok);
		assert_int_equal(j.r[r].info.nfallbacks, 1);
		assert_string_equal(j.r[r].info.fallbacks[0].name, "step-00000020@fast");
	}
	job_free(&j);
}

/*
 * The newest intact generation is on the durable tier (the fast copy of 30
 * is damaged, the fast tier still has 20): restore takes 30 from the durable
 * tier (mutant restore_prefers_fast takes 20).
 */
static void test_newer_durable_beats_older_fast(void **unused)
{
	static const act save[] = { { ACT_SAVE, 10 }, { ACT_SAVE, 20 }, { ACT_SAVE, 30 }, { ACT_END, 0 } };
	static const act restore[] = { { ACT_RESTORE, 0 }, { ACT_END, 0 } };
	char p[4400];
	job j;
	(void)unused;
	job_init(&j, 0);
	job_run(&j, save);
	snprintf(p, sizeof p, "%s/step-00000030/rank-00001.safetensors", j.r[1].fast);
	assert_int_equal(truncate(p, 100), 0);
	job_run(&j, restore);
	for (int r = 0; r < WORLD; r++) {
		assert_int_equal(j.r[r].rc[0], 0);
		assert_int_equal(j.r[r].info.step, 30);
		assert_true(j.r[r].restored_ok);
	}
	job_free(&j);
}

static int fail_drain_20(const char *name, int *failnum, void **failinfo, unsigned *flags)
{
	const ckpt_fault_ctx *c = ckpt_fault_current();
	static ckpt_fault_action enospc = { .kind = CKPT_FAULT_ERRNO, .err = ENOSPC };
	(void)name, (void)failnum, (void)flags;
	if (c && c->step == 20 && c->phase && strcmp(c->phase, "drain.write") == 0 && strcmp(c->op, "phase") == 0) {
		*failinfo = &enospc;
		return 1;
	}
	return 0;
}

/*
 * The durable tier is full for the drain of 20: the save succeeds, 20 is not
 * drained, and fast retention (keep 1) keeps it until a newer generation is
 * drained (mutant fast_retention_undrained deletes it at the save of 30).
 */
static void test_fast_retention_keeps_undrained(void **unused)
{
	static const act acts[] = { { ACT_SAVE, 10 }, { ACT_SAVE, 20 }, { ACT_SAVE, 30 }, { ACT_END, 0 } };
	job j;
	(void)unused;
	job_init(&j, 1);
	j.r[0].keep_last = j.r[1].keep_last = 1;
	fiu_init(0);
	fiu_enable_external("ckpt/phase/drain.write", 1, NULL, 0, fail_drain_20);
	job_run(&j, acts);
	fiu_disable("ckpt/phase/drain.write");
	for (int r = 0; r < WORLD; r++) {
		assert_int_equal(j.r[r].rc[1], 0);           /* the save of 20 itself succeeded */
		assert_int_equal(j.r[r].drained[2], 10);     /* 20 never drained */
	}
	assert_false(has(j.durable, 20, "manifest.json"));
	assert_true(has(j.r[0].fast, 20, "manifest.json"));    /* kept: nothing newer was drained when 30 was saved */
	job_free(&j);
}

/*
 * A generation only the fast tier has (its drain failed, or the job died
 * first) is drained again once a restart restores it.
 */
static void test_restored_fast_only_generation_is_drained(void **unused)
{
	static const act save[] = { { ACT_SAVE, 10 }, { ACT_SAVE, 20 }, { ACT_END, 0 } };
	static const act restore[] = { { ACT_RESTORE, 0 }, { ACT_WAIT, 0 }, { ACT_END, 0 } };
	job j;
	(void)unused;
	job_init(&j, 0);
	fiu_init(0);
	fiu_enable_external("ckpt/phase/drain.write", 1, NULL, 0, fail_drain_20);
	job_run(&j, save);
	fiu_disable("ckpt/phase/drain.write");
	assert_false(has(j.durable, 20, "manifest.json"));
	job_run(&j, restore);
	for (int r = 0; r < WORLD; r++) {
		assert_int_equal(j.r[r].info.step, 20);
		assert_int_equal(j.r[r].drained[0], 0);
		assert_int_equal(j.r[r].drained[1], 20);
	}
	assert_true(has(j.durable, 20, "manifest.json") && has(j.durable, 20, "rank-00001.safetensors"));
	job_free(&j);
}

/*
 * The fake slow tier: the drain's writes to the durable tier are slow (20 ms
 * each), and a save returns without waiting for them: the drain is still
 * running when save 10 returns, and the next save finishes it.
 */
static void test_slow_durable_does_not_hold_the_save(void **unused)
{
	static const act acts[] = { { ACT_SAVE, 10 }, { ACT_SAVE, 20 }, { ACT_END, 0 } };
	job j;
	(void)unused;
	job_init(&j, 0);
	assert_int_equal(fake_slow_tier_enable(j.durable, 20000, 0), 0);
	job_run(&j, acts);
	fake_slow_tier_disable();
	assert_true(fake_slow_tier_ops() >= 2);
	for (int r = 0; r < WORLD; r++) {
		assert_int_equal(j.r[r].rc[0], 0);
		assert_int_equal(j.r[r].drained[0], 0);
		assert_int_equal(j.r[r].drained[1], 10);
	}
	job_free(&j);
}

static void open_only(ckpt_comm *comm, void *arg)
{
	rank_ctx *x = arg;
	float w[4];
	ckpt_state *s = NULL;
	ckpt *c = NULL;
	ckpt_config cfg = { .root = x->durable, .fast_root = x->fast, .keep_last = 1 };
	ckpt_error e;

	if (ckpt_state_new(&s) < 0 ||
	    ckpt_state_add_tensor(s, "w", "params", CKPT_STAGE_MODEL, CKPT_F32, w, 4, 4 * (size_t)comm->size,
				  4 * (size_t)comm->rank) < 0)
		abort();
	x->rc[0] = ckpt_open(&c, &cfg, comm, s, &e);
	ckpt_close(c);
	ckpt_state_free(s);
}

/* A fast root others can write to is refused on every rank (links or files could be planted there). */
static void test_shared_fast_root_refused(void **unused)
{
	void *args[WORLD];
	job j;
	(void)unused;
	job_init(&j, 0);
	for (int r = 0; r < WORLD; r++) {
		char parent[4300];
		snprintf(parent, sizeof parent, "%s/node-%d", j.dir, r);
		assert_int_equal(mkdir(parent, 0700), 0);
		assert_int_equal(mkdir(j.r[r].fast, 0700), 0);
		args[r] = &j.r[r];
	}
	assert_int_equal(chmod(j.r[1].fast, 0777), 0);
	assert_int_equal(fake_comm_run(WORLD, open_only, args), 0);
	for (int r = 0; r < WORLD; r++)
		assert_int_equal(j.r[r].rc[0], -EPERM);
	job_free(&j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_drained_only_after_durable_commit),
		cmocka_unit_test(test_fast_wiped_restores_durable),
		cmocka_unit_test(test_newer_durable_beats_older_fast),
		cmocka_unit_test(test_fast_retention_keeps_undrained),
		cmocka_unit_test(test_slow_durable_does_not_hold_the_save),
		cmocka_unit_test(test_shared_fast_root_refused),
		cmocka_unit_test(test_restored_fast_only_generation_is_drained),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
