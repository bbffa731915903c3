/*
 * Tiered storage: does the drain stay off the training path, and how much
 * faster is a restore from the fast tier than from a slow durable tier?
 *
 *   bench_tier [MIB_PER_RANK] [SAVES] [TRAIN_MS] [SLOW_MS_PER_MIB] [ROUNDS]
 *
 * Two threaded ranks (the fake communicator), MIB_PER_RANK of state each.
 * The durable tier is the fake slow tier (fakes/fake_slow_tier: every read
 * and write there costs SLOW_MS_PER_MIB per MiB). A "training step" of
 * TRAIN_MS separates the saves. ROUNDS (default 3) alternate the plain and
 * the tiered run (the restores too), and each ratio is the median of the
 * rounds' ratios. Printed, from one run:
 *   tier_save_seconds / plain_save_seconds: mean time in ckpt_save (the
 *     training path) with tiers (durable slow) and without (one root on the
 *     fast directory); tier_save_blocked_ratio = tiered / plain (1.0: the
 *     drain costs training nothing), tier_save_added_ms the difference (the
 *     drain's commit: agreement, rename, directory syncs), against
 *     tier_drain_copy_ms_per_rank, the slow copy that runs in the background;
 *   tier_restore_fast_seconds / tier_restore_durable_seconds: restore of the
 *     same generation with the fast tier intact, and with it wiped;
 *     tier_restore_durable_over_fast (target >= 2).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckpt/ckpt.h"
#include "fake_comm.h"
#include "fake_slow_tier.h"

#define WORLD 2

typedef struct ctx {
	const char *root, *fast;
	size_t elems;
	int saves, train_ms, restore;
	double save_s, restore_s;
	int rc;
} ctx;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void rank_main(ckpt_comm *comm, void *arg)
{
	ctx *x = arg;
	float *w = malloc(x->elems * sizeof *w);
	ckpt_state *s = NULL;
	ckpt *c = NULL;
	ckpt_config cfg = { .root = x->root, .fast_root = x->fast, .keep_last = 2, .config_hash = 1 };

	if (!w || ckpt_state_new(&s) < 0 ||
	    ckpt_state_add_tensor(s, "w", "params", CKPT_STAGE_MODEL, CKPT_F32, w, x->elems, x->elems * WORLD,
				  x->elems * (size_t)comm->rank) < 0 || ckpt_open(&c, &cfg, comm, s, NULL) < 0) {
		x->rc = -1;
		abort();
	}
	if (x->restore) {
		ckpt_restore_info info;
		double t0 = now();
		x->rc = ckpt_restore(c, &info);
		x->restore_s = now() - t0;
	}
	for (int i = 1; i <= x->saves; i++) {
		for (size_t k = 0; k < x->elems; k++)
			w[k] = (float)(i * 7 + (int)k);
		struct timespec ts = { x->train_ms / 1000, (long)(x->train_ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);      /* training: the drain runs meanwhile */
		double t0 = now();
		if (ckpt_save(c, (uint64_t)i * 10, 0) < 0)
			x->rc = -1;
		x->save_s += now() - t0;
	}
	ckpt_close(c);
	ckpt_state_free(s);
	free(w);
}

static double run(const char *root, const char *fast, size_t elems, int saves, int train_ms, int restore, int *rc)
{
	ctx x[WORLD];
	void *args[WORLD];
	double worst = 0;
	for (int r = 0; r < WORLD; r++) {
		x[r] = (ctx){ .root = root, .fast = fast, .elems = elems, .saves = saves, .train_ms = train_ms, .restore = restore };
		args[r] = &x[r];
	}
	fake_comm_run(WORLD, rank_main, args);
	for (int r = 0; r < WORLD; r++) {
		double v = restore ? x[r].restore_s : x[r].save_s / saves;
		worst = v > worst ? v : worst;
		*rc |= x[r].rc;
	}
	return worst;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 16;
	int saves = argc > 2 ? atoi(argv[2]) : 5, train_ms = argc > 3 ? atoi(argv[3]) : 600;
	unsigned slow = argc > 4 ? (unsigned)atoi(argv[4]) : 20;
	char dir[] = "/tmp/bench-tier-XXXXXX", dur[256], fast[256], plain[256], cmd[600];
	int rc = 0;

	if (!mkdtemp(dir))
		return 1;
	size_t elems = mib * 1048576 / sizeof(float);
	snprintf(dur, sizeof dur, "%s/durable", dir);
	snprintf(fast, sizeof fast, "%s/fast", dir);
	snprintf(plain, sizeof plain, "%s/plain", dir);
	if (fake_slow_tier_enable(dur, 1000, slow * 1000) < 0) {
		fprintf(stderr, "bench_tier: needs a FIU_ENABLE build (the fake slow tier hooks libckpt's I/O points)\n");
		return 2;
	}
	int rounds = argc > 5 ? atoi(argv[5]) : 3;
	double plain_s = 0, tier_s = 0, rfast = 0, rdur = 0, sr[16], rr[16];
	if (rounds < 1 || rounds > 16)
		rounds = 3;
	for (int k = 0; k < rounds; k++) {
		snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' '%s'", plain, fast, dur);
		if (system(cmd) != 0)
			rc = 1;
		double p = run(plain, NULL, elems, saves, train_ms, 0, &rc);
		double t = run(dur, fast, elems, saves, train_ms, 0, &rc);
		double f = run(dur, fast, elems, 0, 0, 1, &rc);
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", fast);
		if (system(cmd) != 0)
			rc = 1;
		double d = run(dur, fast, elems, 0, 0, 1, &rc);
		sr[k] = t / p;
		rr[k] = d / f;
		plain_s += p / rounds, tier_s += t / rounds, rfast += f / rounds, rdur += d / rounds;
	}
	fake_slow_tier_disable();
	qsort(sr, (size_t)rounds, sizeof *sr, cmp);
	qsort(rr, (size_t)rounds, sizeof *rr, cmp);
	printf("tier_mib_per_rank=%zu\ntier_saves=%d\ntier_train_ms=%d\ntier_durable_ms_per_mib=%u\n", mib, saves,
	       train_ms, slow);
	printf("plain_save_seconds=%.4f\ntier_save_seconds=%.4f\ntier_save_blocked_ratio=%.3f\n", plain_s, tier_s,
	       sr[rounds / 2]);
	printf("tier_save_blocked_ratio_min=%.3f\ntier_save_blocked_ratio_max=%.3f\n", sr[0], sr[rounds - 1]);
	/* what the drain leaves on the training path: its commit (metadata only), whatever the state's size */
	printf("tier_save_added_ms=%.1f\ntier_drain_copy_ms_per_rank=%.1f\n", (tier_s - plain_s) * 1e3,
	       (double)mib * slow + 2.0 * (double)(mib / 4 + 1));
	printf("tier_restore_fast_seconds=%.4f\ntier_restore_durable_seconds=%.4f\ntier_restore_durable_over_fast=%.2f\n",
	       rfast, rdur, rr[rounds / 2]);
	printf("tier_restore_durable_over_fast_min=%.2f\n", rr[0]);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0 || rc)
		return 1;
	return 0;
}
