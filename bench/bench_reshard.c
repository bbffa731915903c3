/*
 * Elastic restore against a same-world-size restore, in the same run:
 * a generation saved by 4 ranks (threads over the fake communicator) of
 * MiB megabytes of fp32, cut into whole chunks as reftrain does, plus a
 * per-worker tensor; each round restores it on 4 ranks (the baseline: each
 * rank reads its own shard), then on 2, 8 and 1 (resharded), back to back,
 * with the page cache warm for all of them (the data fits in memory; a
 * reshard reads more shards, which a cold cache would make dearer still).
 * Prints name=value lines: the median over rounds of each restore's time
 * over the baseline's, and the baseline's MiB/s.
 *
 *   build/bin/bench_reshard DIR [MiB] [rounds]
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt/ckpt.h"
#include "fake_comm.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define WORKERS 8
#define CHUNK 4096

typedef struct arg {
	const char *root;
	uint64_t n;
	int restore;
	int rc;
} arg;

static void rank_main(ckpt_comm *comm, void *p)
{
	arg *a = p;
	uint64_t chunks = (a->n + CHUNK - 1) / CHUNK;
	uint64_t b = chunks * (uint64_t)comm->rank / (uint64_t)comm->size * CHUNK;
	uint64_t e = chunks * (uint64_t)(comm->rank + 1) / (uint64_t)comm->size * CHUNK;
	b = b > a->n ? a->n : b;
	e = e > a->n ? a->n : e;
	uint64_t wpr = WORKERS / (uint64_t)comm->size;
	float *w = malloc((e - b + 1) * sizeof *w);
	uint64_t *k = calloc(wpr * 4, sizeof *k);
	ckpt_state *st = NULL;
	ckpt *c = NULL;
	ckpt_config cfg = { .root = a->root, .keep_last = 3, .config_hash = 7 };
	ckpt_restore_info info;

	for (uint64_t i = b; i < e; i++)
		w[i - b] = (float)i;
	a->rc = ckpt_state_new(&st);
	if (!a->rc)
		a->rc = ckpt_state_add_tensor(st, "w", "master", CKPT_STAGE_MODEL, CKPT_F32, w, e - b, a->n, b);
	if (!a->rc)
		a->rc = ckpt_state_add_tensor(st, "k", "rng", CKPT_STAGE_TRAINING, CKPT_U64, k, wpr * 4, WORKERS * 4,
					      wpr * 4 * (uint64_t)comm->rank);
	if (!a->rc)
		a->rc = ckpt_open(&c, &cfg, comm, st, NULL);
	if (!a->rc)
		a->rc = a->restore ? ckpt_restore(c, &info) : ckpt_save(c, 10, 0);
	ckpt_close(c);
	ckpt_state_free(st);
	free(w);
	free(k);
}

static double job(const char *root, uint64_t n, int world, int restore)
{
	arg a[8];
	void *ptrs[8];
	double t0 = now();

	for (int r = 0; r < world; r++) {
		a[r] = (arg){ .root = root, .n = n, .restore = restore };
		ptrs[r] = &a[r];
	}
	fake_comm_run(world, rank_main, ptrs);
	for (int r = 0; r < world; r++)
		if (a[r].rc) {
			fprintf(stderr, "bench_reshard: %s on %d ranks failed: %d\n", restore ? "restore" : "save", world,
				a[r].rc);
			exit(1);
		}
	return now() - t0;
}

static int cmp(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return a < b ? -1 : a > b;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb, (void)flag, (void)f;
	return remove(p);
}

int main(int argc, char **argv)
{
	static const int worlds[] = { 2, 8, 1 };
	if (argc < 2) {
		fprintf(stderr, "usage: bench_reshard DIR [MiB] [rounds]\n");
		return 2;
	}
	uint64_t mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 64;
	int rounds = argc > 3 ? atoi(argv[3]) : 5;
	char root[4096];
	snprintf(root, sizeof root, "%s/bench-reshard", argv[1]);
	nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	mkdir(root, 0700);
	uint64_t n = mib << 18;       /* fp32 elements */
	job(root, n, 4, 0);
	job(root, n, 4, 1);           /* warm the cache */
	double *base = calloc((size_t)rounds, sizeof *base), ratio[3][64];
	rounds = rounds > 64 ? 64 : rounds < 1 ? 1 : rounds;
	for (int i = 0; i < rounds; i++) {
		base[i] = job(root, n, 4, 1);
		for (int j = 0; j < 3; j++)
			ratio[j][i] = job(root, n, worlds[j], 1) / base[i];
	}
	qsort(base, (size_t)rounds, sizeof *base, cmp);
	printf("reshard_mib=%llu\nrounds=%d\nrestore_same_world_mib_per_s=%.1f\n", (unsigned long long)mib, rounds,
	       (double)mib / base[rounds / 2]);
	for (int j = 0; j < 3; j++) {
		qsort(ratio[j], (size_t)rounds, sizeof **ratio, cmp);
		printf("reshard_4_to_%d_over_same_world=%.2f\n", worlds[j], ratio[j][rounds / 2]);
	}
	nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(base);
	return 0;
}
