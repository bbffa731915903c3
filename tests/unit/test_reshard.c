/*
 * Elastic restore: the reshard arithmetic and libckpt restoring a generation
 * on another world size.
 * Guards against: pieces cut at the wrong offsets (a saved rank's part read
 * from where another rank's began), elements left out or read twice when a
 * tensor's size is not a multiple of the world size, a replicated tensor read
 * from a non-canonical copy, a gap accepted, and a resharded restore that
 * skips verification (a damaged saved shard must fail the generation and
 * restore must fall back, as on the same world size).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ckpt/ckpt.h"
#include "ckpt/reshard.h"
#include "ckpt_fixture.h"
#include "fake_comm.h"

static const int divisors[] = { 1, 2, 4, 8 };
#define NDIV 4

/* Two ways a job cuts n elements among w ranks: evenly, and in whole chunks of c as reftrain does. */
static void cut(uint64_t n, int w, int r, uint64_t chunk, uint64_t *off, uint64_t *len)
{
	uint64_t b, e;
	if (chunk == 0) {
		b = n * (uint64_t)r / (uint64_t)w;
		e = n * (uint64_t)(r + 1) / (uint64_t)w;
	} else {
		uint64_t chunks = (n + chunk - 1) / chunk;
		b = chunks * (uint64_t)r / (uint64_t)w * chunk;
		e = chunks * (uint64_t)(r + 1) / (uint64_t)w * chunk;
		b = b > n ? n : b;
		e = e > n ? n : e;
	}
	*off = b;
	*len = e - b;
}

static uint32_t value_at(uint64_t i)
{
	return (uint32_t)(i * 2654435761u) ^ 0x5bd1e995u;
}

/* Rebuild rank r2's slice of W2 from the parts of W1 through the plan: it must equal the global tensor's. */
static void check_pair(uint64_t n, int w1, int w2, uint64_t chunk)
{
	uint64_t off[8], len[8];
	uint32_t *parts[8];

	for (int s = 0; s < w1; s++) {
		cut(n, w1, s, chunk, &off[s], &len[s]);
		parts[s] = malloc((len[s] + 1) * sizeof *parts[s]);
		for (uint64_t i = 0; i < len[s]; i++)
			parts[s][i] = value_at(off[s] + i);
	}
	for (int r = 0; r < w2; r++) {
		uint64_t goff, local;
		cut(n, w2, r, chunk, &goff, &local);
		int count = ckpt_reshard_plan(off, len, w1, goff, local, NULL, 0);
		assert_true(count >= 0);
		assert_true(count <= w1);             /* disjoint slices: at most one piece per saved rank */
		ckpt_reshard_piece p[8];
		assert_int_equal(ckpt_reshard_plan(off, len, w1, goff, local, p, 8), count);
		uint32_t *got = calloc(local + 1, sizeof *got);
		uint64_t covered = 0;
		for (int i = 0; i < count; i++) {
			assert_true(p[i].src_elem + p[i].elems <= len[p[i].src_rank]);
			assert_true(p[i].dst_elem + p[i].elems <= local);
			assert_int_equal(p[i].dst_elem, covered);     /* in order, no hole, no overlap */
			memcpy(got + p[i].dst_elem, parts[p[i].src_rank] + p[i].src_elem, p[i].elems * sizeof *got);
			covered += p[i].elems;
		}
		assert_int_equal(covered, local);
		for (uint64_t i = 0; i < local; i++)
			if (got[i] != value_at(goff + i))
				fail_msg("n=%llu %d->%d rank %d element %llu is wrong", (unsigned long long)n, w1, w2, r,
					 (unsigned long long)i);
		free(got);
	}
	for (int s = 0; s < w1; s++)
		free(parts[s]);
}

static void test_plan__every_pair_of_divisors_of_8_random_sizes(void **state)
{
	uint64_t seed = 12345;
	(void)state;
	for (int trial = 0; trial < 60; trial++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t n = trial < 4 ? (uint64_t)trial : 1 + (seed >> 33) % 5000;   /* 0 to 3 too: fewer elements than ranks */
		for (int a = 0; a < NDIV; a++)
			for (int b = 0; b < NDIV; b++) {
				check_pair(n, divisors[a], divisors[b], 0);
				check_pair(n, divisors[a], divisors[b], 64);
			}
	}
}

static void test_plan__replicated_comes_from_rank_0(void **state)
{
	uint64_t off[4] = { 0, 0, 0, 0 }, len[4] = { 10, 10, 10, 10 };
	ckpt_reshard_piece p[4];
	(void)state;
	assert_int_equal(ckpt_reshard_plan(off, len, 4, 0, 10, p, 4), 1);
	assert_int_equal(p[0].src_rank, 0);
	assert_int_equal(p[0].elems, 10);
}

static void test_plan__gap_is_corrupt(void **state)
{
	uint64_t off[2] = { 0, 6 }, len[2] = { 5, 4 };       /* element 5 is held by nobody */
	(void)state;
	assert_int_equal(ckpt_reshard_plan(off, len, 2, 0, 10, NULL, 0), -CKPT_ECORRUPT);
	assert_int_equal(ckpt_reshard_plan(off, len, 2, 6, 4, NULL, 0), 1);
}

static void test_plan__overlap_takes_the_lowest_rank(void **state)
{
	uint64_t off[2] = { 5, 0 }, len[2] = { 5, 20 };
	ckpt_reshard_piece p[4];
	(void)state;
	assert_int_equal(ckpt_reshard_plan(off, len, 2, 0, 20, p, 4), 3);
	assert_int_equal(p[0].src_rank, 1);
	assert_int_equal(p[1].src_rank, 0);
	assert_int_equal(p[1].dst_elem, 5);
	assert_int_equal(p[2].src_rank, 1);
	assert_int_equal(p[2].src_elem, 10);
}

/* ---- libckpt on threaded ranks: save on W1, restore on W2 ------------------ */

#define G 1003          /* sharded elements: not a multiple of any world size above 1 */
#define WORKERS 8
#define WORDS 3         /* per-worker state */

typedef struct job {
	const char *root;
	uint64_t step;
	int restore;
	int rc;
	ckpt_restore_info info;
	ckpt_error err;
	int ok;              /* restore: contents are what step info.step saved */
} job;

static float wval(uint64_t step, uint64_t i) { return (float)(step * 7919u + i) * 0.5f; }
static uint64_t kval(uint64_t step, uint64_t i) { return step << 32 | i; }

static void rank_main(ckpt_comm *comm, void *p)
{
	job *j = (job *)p + comm->rank;
	uint64_t off, len;
	cut(G, comm->size, comm->rank, 64, &off, &len);      /* whole chunks, as reftrain: not equal parts */
	uint64_t wpr = WORKERS / (uint64_t)comm->size, w0 = wpr * (uint64_t)comm->rank;
	float *w = calloc(len + 1, sizeof *w);
	uint64_t *k = calloc(wpr * WORDS, sizeof *k), counter = 0;
	ckpt_state *st = NULL;
	ckpt *c = NULL;
	ckpt_config cfg = { .root = j->root, .keep_last = 3, .config_hash = 42 };

	for (uint64_t i = 0; !j->restore && i < len; i++)
		w[i] = wval(j->step, off + i);
	for (uint64_t i = 0; !j->restore && i < wpr * WORDS; i++)
		k[i] = kval(j->step, w0 * WORDS + i);
	counter = j->restore ? 0 : j->step;
	j->rc = ckpt_state_new(&st);
	if (!j->rc)
		j->rc = ckpt_state_add_tensor(st, "w", "master", CKPT_STAGE_MODEL, CKPT_F32, w, len, G, off);
	if (!j->rc)      /* per worker, at worker id: wherever the worker lives */
		j->rc = ckpt_state_add_tensor(st, "k", "rng", CKPT_STAGE_TRAINING, CKPT_U64, k, wpr * WORDS,
					      WORKERS * WORDS, w0 * WORDS);
	if (!j->rc)
		j->rc = ckpt_state_add_tensor(st, "n", "opt", CKPT_STAGE_OPTIMIZER, CKPT_U64, &counter, 1, 1, 0);
	if (!j->rc)
		j->rc = ckpt_open(&c, &cfg, comm, st, &j->err);
	if (!j->rc) {
		j->rc = j->restore ? ckpt_restore(c, &j->info) : ckpt_save(c, j->step, 0);
		j->err = *ckpt_last_error(c);
	}
	if (j->restore && j->rc == 0) {
		j->ok = counter == j->info.step;
		for (uint64_t i = 0; i < len; i++)
			j->ok &= w[i] == wval(j->info.step, off + i);
		for (uint64_t i = 0; i < wpr * WORDS; i++)
			j->ok &= k[i] == kval(j->info.step, w0 * WORDS + i);
	}
	ckpt_close(c);
	ckpt_state_free(st);
	free(w);
	free(k);
}

static int run(const char *root, int world, uint64_t step, int restore, job *out)
{
	void *ptrs[8];
	for (int r = 0; r < world; r++) {
		out[r] = (job){ .root = root, .step = step, .restore = restore };
		ptrs[r] = out;
	}
	fake_comm_run(world, rank_main, ptrs);
	for (int r = 1; r < world; r++)
		assert_int_equal(out[r].rc, out[0].rc);
	return out[0].rc;
}

static bool journal_has(const char *root, const char *what)
{
	FILE *f = fopen(fx_path(root, "journal/rank-00000.jsonl"), "r");
	char line[1024];
	bool found = false;
	while (f && !found && fgets(line, sizeof line, f))
		found = strstr(line, what) != NULL;
	if (f)
		fclose(f);
	return found;
}

static void test_restore__every_pair_of_divisors_of_8(void **state)
{
	job j[8];
	(void)state;
	for (int a = 0; a < NDIV; a++)
		for (int b = 0; b < NDIV; b++) {
			char *root = fx_tmpdir(), want[96];
			assert_int_equal(run(root, divisors[a], 10, 0, j), 0);
			assert_int_equal(run(root, divisors[b], 0, 1, j), 0);
			for (int r = 0; r < divisors[b]; r++) {
				assert_int_equal(j[r].info.step, 10);
				if (!j[r].ok)
					fail_msg("%d -> %d ranks: rank %d restored wrong contents", divisors[a], divisors[b], r);
			}
			snprintf(want, sizeof want, "\"event\":\"reshard\",\"checkpoint\":\"step-00000010\",\"from\":%d,\"to\":%d",
				 divisors[a], divisors[b]);
			assert_true(journal_has(root, want) == (a != b));
			fx_rmrf(root);
			free(root);
		}
}

static void test_restore__damaged_saved_shard_falls_back(void **state)
{
	char *root = fx_tmpdir();
	job j[8];
	(void)state;
	assert_int_equal(run(root, 4, 10, 0, j), 0);
	assert_int_equal(run(root, 4, 20, 0, j), 0);
	fx_flip(fx_path(root, "step-00000020/rank-00003.safetensors"), -5);
	assert_int_equal(run(root, 2, 0, 1, j), 0);
	for (int r = 0; r < 2; r++) {
		assert_int_equal(j[r].info.step, 10);
		assert_true(j[r].ok);
		assert_int_equal(j[r].info.nfallbacks, 1);
		assert_non_null(strstr(j[r].info.fallbacks[0].why, "rank-00003.safetensors"));
	}
	fx_rmrf(root);
	free(root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plan__every_pair_of_divisors_of_8_random_sizes),
		cmocka_unit_test(test_plan__replicated_comes_from_rank_0),
		cmocka_unit_test(test_plan__gap_is_corrupt),
		cmocka_unit_test(test_plan__overlap_takes_the_lowest_rank),
		cmocka_unit_test(test_restore__every_pair_of_divisors_of_8),
		cmocka_unit_test(test_restore__damaged_saved_shard_falls_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
