/*
 * Incremental checkpoints: libckpt's chunk store on one rank.
 * Guards against: deltas that write unchanged chunks or miss changed ones,
 * restores that trust a chunk's name instead of its bytes, chains that share
 * chunks across full generations, garbage collection (retention's sweep or
 * start-up's) that deletes a chunk a kept generation needs, at whatever
 * point it is interrupted, and manifests of version 3 that read unbounded
 * or wrong values.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>
#include <xxhash.h>

#include "ckpt/ckpt.h"
#include "ckpt/inspect.h"
#include "ckpt_fixture.h"
#include "internal.h"

#define N (64 * 1024)           /* floats: 256 KiB, 64 chunks of 4 KiB */
#define CHUNK 4096u
#define CHANGING (N / 10)       /* the last 10% change at every step */

static int c_barrier(void *ctx)
{
	(void)ctx;
	return 0;
}

static int c_gather(void *ctx, const void *send, size_t n, void *recv, int root)
{
	(void)ctx, (void)root;
	memcpy(recv, send, n);
	return 0;
}

static int c_bcast(void *ctx, void *buf, size_t n, int root)
{
	(void)ctx, (void)buf, (void)n, (void)root;
	return 0;
}

typedef struct fx {
	char *root;
	ckpt_comm comm;
	ckpt_state *state;
	float *w;
	uint64_t counter;
	ckpt_config cfg;
	ckpt *c;
} fx;

/* The state at a step: the first 90% frozen (a function of nothing), the rest of the step. */
static void fill(float *w, uint64_t *counter, uint64_t step)
{
	for (size_t i = 0; i < N; i++)
		w[i] = i < N - CHANGING ? (float)i * 0.5f : (float)(step * 7919u + i) * 0.25f;
	*counter = step;
}

static int setup(void **state)
{
	fx *f = calloc(1, sizeof *f);
	f->root = fx_tmpdir();
	f->comm = (ckpt_comm){ .rank = 0, .size = 1, .barrier = c_barrier, .gather = c_gather, .bcast = c_bcast };
	f->w = calloc(N, sizeof *f->w);
	assert_int_equal(ckpt_state_new(&f->state), 0);
	assert_int_equal(ckpt_state_add_tensor(f->state, "w", "params", CKPT_STAGE_MODEL, CKPT_F32, f->w, N, N, 0), 0);
	assert_int_equal(ckpt_state_add_tensor(f->state, "counter", "sched", CKPT_STAGE_TRAINING, CKPT_U64, &f->counter,
					       1, 1, 0), 0);
	f->cfg = (ckpt_config){ .root = f->root, .keep_last = 100, .incremental = 1, .full_every = 100,
				.chunk_bytes = CHUNK };
	*state = f;
	return 0;
}

static void reopen(fx *f)
{
	ckpt_error e;
	ckpt_close(f->c);
	f->c = NULL;
	assert_int_equal(ckpt_open(&f->c, &f->cfg, &f->comm, f->state, &e), 0);
}

static int teardown(void **state)
{
	fx *f = *state;
	fx_disarm();
	ckpt_close(f->c);
	ckpt_state_free(f->state);
	fx_rmrf(f->root);
	free(f->root);
	free(f->w);
	free(f);
	return 0;
}

static void save_ok(fx *f, uint64_t step)
{
	if (!f->c)
		reopen(f);
	fill(f->w, &f->counter, step);
	int rc = ckpt_save(f->c, step, 0);
	if (rc)
		fprintf(stderr, "save %" PRIu64 ": %s\n", step, ckpt_last_error(f->c)->msg);
	assert_int_equal(rc, 0);
	ckpt_wait(f->c);
}

/* Restore in a fresh handle (nothing cached) and check the contents are step's. */
static void expect_restore(fx *f, uint64_t step, int fallbacks)
{
	ckpt_restore_info info;
	float *want = calloc(N, sizeof *want);
	uint64_t wc;

	reopen(f);
	memset(f->w, 0, N * sizeof *f->w);
	f->counter = 0;
	int rc = ckpt_restore(f->c, &info);
	if (rc)
		fprintf(stderr, "restore: %s\n", ckpt_last_error(f->c)->msg);
	for (int i = 0; rc && i < info.nfallbacks; i++)
		fprintf(stderr, "  passed over %s: %s\n", info.fallbacks[i].name, info.fallbacks[i].why);
	assert_int_equal(rc, 0);
	assert_int_equal(info.step, step);
	assert_int_equal(info.nfallbacks, fallbacks);
	fill(want, &wc, step);
	assert_memory_equal(f->w, want, N * sizeof *want);
	assert_int_equal(f->counter, wc);
	free(want);
}

static char *manifest_of(fx *f, uint64_t step)
{
	static char buf[1 << 16];
	FILE *m = fopen(fx_path(f->root, "step-%08" PRIu64 "/manifest.json", step), "r");
	assert_non_null(m);
	size_t n = fread(buf, 1, sizeof buf - 1, m);
	buf[n] = '\0';
	fclose(m);
	return buf;
}

/* Every chunk file under ROOT/chunks (temporaries included). */
static int count_chunks(fx *f)
{
	int n = 0;
	DIR *d = opendir(fx_path(f->root, "chunks"));
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		DIR *s = opendir(fx_path(f->root, "chunks/%s", de->d_name));
		struct dirent *e;
		while (s && (e = readdir(s)))
			n += e->d_name[0] != '.';
		if (s)
			closedir(s);
	}
	if (d)
		closedir(d);
	return n;
}

/* The path of the k-th chunk (file order) of generation step's recipe. */
static char *chunk_of(fx *f, uint64_t step, int k)
{
	static char rel[128];
	unsigned char buf[1 << 15];
	FILE *r = fopen(fx_path(f->root, "step-%08" PRIu64 "/rank-00000.chunks", step), "r");
	assert_non_null(r);
	size_t n = fread(buf, 1, sizeof buf, r);
	fclose(r);
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | buf[i];
	assert_true(8 + hlen + 16 * (size_t)(k + 1) <= n);
	const unsigned char *h = buf + 8 + hlen + 16 * (size_t)k;
	char hex[33];
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	snprintf(rel, sizeof rel, "chunks/%.2s/%s", hex, hex);
	return fx_path(f->root, "%s", rel);
}

static void test_chunks__delta_writes_only_the_changed_chunks(void **state)
{
	fx *f = *state;
	const ckpt_save_stats *st;

	save_ok(f, 10);
	st = ckpt_last_save_stats(f->c);
	assert_int_equal(st->chunk_bytes_written, N * sizeof(float) + 8);    /* full: every chunk */
	assert_int_equal(st->chunk_bytes_shared, 0);
	save_ok(f, 20);
	st = ckpt_last_save_stats(f->c);
	/* the changing 10% (rounded out to whole chunks) and the counter, nothing else */
	uint64_t changed = ((CHANGING * sizeof(float) + CHUNK - 1) / CHUNK + 1) * CHUNK + 8;
	assert_true(st->chunk_bytes_written <= changed);
	assert_true(st->chunk_bytes_written >= CHANGING * sizeof(float));
	assert_int_equal(st->chunk_bytes_written + st->chunk_bytes_shared, N * sizeof(float) + 8);
	assert_non_null(strstr(manifest_of(f, 20), "\"schema_version\":3,"));
	assert_non_null(strstr(manifest_of(f, 20), "\"chunk_size\":4096,\"chain_depth\":1,\"chain_base\":10,"));
	assert_true(fx_exists(fx_path(f->root, "step-00000020/rank-00000.chunks")));
	assert_false(fx_exists(fx_path(f->root, "step-00000020/rank-00000.safetensors")));
	expect_restore(f, 20, 0);
}

static void test_chunks__restored_generation_is_the_next_base(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	expect_restore(f, 20, 0);         /* a new handle: its base comes from the restore */
	save_ok(f, 30);
	assert_true(ckpt_last_save_stats(f->c)->chunk_bytes_shared > 0);
	assert_non_null(strstr(manifest_of(f, 30), "\"chain_depth\":2,\"chain_base\":10,"));
	expect_restore(f, 30, 0);
}

static void test_chunks__failed_save_is_no_base(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	/* 20's chunks are all written, then its manifest cannot be: the save fails everywhere */
	fx_fault x = { .rank = -1, .op = "write", .phase = "save.manifest_write", .nth = 1, .times = 0,
		       .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } };
	fx_arm(&x);
	fill(f->w, &f->counter, 20);
	assert_int_equal(ckpt_save(f->c, 20, 0), -EIO);
	fx_disarm();
	/* the next delta descends from 10, the last committed generation, not from the failed 20 */
	save_ok(f, 30);
	assert_non_null(strstr(manifest_of(f, 30), "\"chain_depth\":1,\"chain_base\":10,"));
	expect_restore(f, 30, 0);
}

static void test_chunks__full_every_starts_a_chain_that_shares_nothing(void **state)
{
	fx *f = *state;
	ckpt_gen_report *reps;
	int n;

	f->cfg.full_every = 2;
	save_ok(f, 10);
	save_ok(f, 20);
	save_ok(f, 30);
	assert_non_null(strstr(manifest_of(f, 30), "\"chain_depth\":0,\"chain_base\":30,"));
	assert_int_equal(ckpt_last_save_stats(f->c)->chunk_bytes_shared, 0);
	/* ls: 30 shares nothing with the chain of 10 and 20, which share the frozen chunks */
	assert_int_equal(ckpt_inspect_list(f->root, &reps, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(reps[0].step, 30);
	assert_int_equal(reps[0].shared_bytes, 0);
	assert_true(reps[1].shared_bytes >= (N - CHANGING) * sizeof(float) - CHUNK);
	assert_int_equal(reps[1].shared_bytes, reps[2].shared_bytes);
	free(reps);
}

static void test_chunks__damaged_chunk_falls_back_past_every_user(void **state)
{
	fx *f = *state;

	f->cfg.full_every = 2;
	save_ok(f, 10);
	save_ok(f, 20);
	save_ok(f, 30);
	save_ok(f, 40);
	/* chunk 0 is frozen: 30 and 40 share it (their chain), 10 and 20 have their own copy */
	fx_flip(chunk_of(f, 40, 0), 100);
	expect_restore(f, 20, 2);
}

static void test_chunks__missing_or_swapped_chunk_is_caught_by_hash(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	/* the newest chunk of 20 replaced by another chunk's bytes of the same size: the name lies */
	char a[4096], *last = chunk_of(f, 20, (int)(N * sizeof(float) / CHUNK) - 1);
	snprintf(a, sizeof a, "%s", last);
	fx_copy(chunk_of(f, 20, 0), a);
	expect_restore(f, 10, 1);
	save_ok(f, 30);
	remove(chunk_of(f, 30, (int)(N * sizeof(float) / CHUNK) - 1));
	expect_restore(f, 10, 2);
}

static void test_gc__retention_keeps_every_chunk_a_kept_generation_needs(void **state)
{
	fx *f = *state;

	f->cfg.keep_last = 2;
	for (uint64_t s = 10; s <= 60; s += 10)
		save_ok(f, s);
	/* 50 and 60 are kept and share the frozen chunks written at 10 (deleted long ago) */
	assert_false(fx_exists(fx_path(f->root, "step-00000010")));
	int live = count_chunks(f);
	/* frozen chunks once, and the changing ones of 50 and 60 */
	assert_true(live <= (int)(N * sizeof(float) / CHUNK + 2 * ((CHANGING * 4 + CHUNK - 1) / CHUNK + 1) + 2));
	expect_restore(f, 60, 0);
	fx_flip(fx_path(f->root, "step-00000060/manifest.json"), 20);
	expect_restore(f, 50, 1);
}

static void test_gc__interrupted_sweep_leaves_kept_generations_restorable(void **state)
{
	fx *f = *state;

	f->cfg.keep_last = 2;
	f->cfg.full_every = 2;
	save_ok(f, 10);
	save_ok(f, 20);
	save_ok(f, 30);
	/* the sweep after 40 stops at its nth unlink (a crash there), for every n until none is left */
	int n = 1, fired = 1, prev_live = count_chunks(f);
	for (uint64_t step = 40; fired; n++, step += 10) {
		fx_fault x = { .rank = -1, .op = "unlink", .phase = "save.gc", .nth = n, .times = 1,
			       .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } };
		fx_arm(&x);
		save_ok(f, step);
		fired = fx_fired();
		fx_disarm();
		expect_restore(f, step, 0);
		fx_flip(fx_path(f->root, "step-%08" PRIu64 "/manifest.json", step), 20);
		expect_restore(f, step - 10, 1);
		fx_flip(fx_path(f->root, "step-%08" PRIu64 "/manifest.json", step), 20);   /* back */
		assert_true(n < 400);
	}
	assert_true(count_chunks(f) < prev_live + 40 * 8);
	assert_true(n > 3);     /* the sweeps did unlink */
}

static void test_gc__startup_removes_orphans_of_a_failed_save(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	int before = count_chunks(f);
	/* the save of 20 fails after writing a few chunks (EIO at the 3rd chunk fsync) */
	fx_fault x = { .rank = -1, .op = "fsync", .phase = "save.chunk_sync", .nth = 3, .times = 1,
		       .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } };
	fx_arm(&x);
	fill(f->w, &f->counter, 20);
	assert_int_equal(ckpt_save(f->c, 20, 0), -EIO);
	fx_disarm();
	assert_true(count_chunks(f) > before);       /* two chunks and a temporary left behind */
	reopen(f);                                   /* start-up: open.gc */
	assert_int_equal(count_chunks(f), before);
	expect_restore(f, 10, 0);
	/* the failed save is no base: the next save is a delta of 10, and restores */
	save_ok(f, 30);
	assert_non_null(strstr(manifest_of(f, 30), "\"chain_depth\":1,\"chain_base\":10,"));
	expect_restore(f, 30, 0);
}

static void test_gc__unreadable_generation_stops_the_sweep(void **state)
{
	fx *f = *state;

	f->cfg.keep_last = 1;
	save_ok(f, 10);
	save_ok(f, 20);
	fill(f->w, &f->counter, 30);
	/* the sweep cannot read 30's manifest (EIO): it must delete nothing rather than guess */
	fx_fault x = { .rank = -1, .op = "read", .phase = "save.gc", .nth = 1, .times = 0,
		       .action = { .kind = CKPT_FAULT_ERRNO, .err = EIO } };
	fx_arm(&x);
	assert_int_equal(ckpt_save(f->c, 30, 0), 0);
	ckpt_wait(f->c);
	assert_true(fx_fired() > 0);
	fx_disarm();
	expect_restore(f, 30, 0);
}

/* ---- a version 3 generation written by an earlier build (tests/fixtures/v3-incremental-1rank) ---- */

#define FIX_N 3000

static void fix_fill(float *w, uint64_t *ctr, uint64_t step)
{
	for (size_t i = 0; i < FIX_N; i++)
		w[i] = i < FIX_N - FIX_N / 10 ? (float)i * 0.5f : (float)(step * 7919u + i) * 0.25f;
	*ctr = step;
}

static ckpt *fix_open(fx *f, const char *root, ckpt_state **st, float *w, uint64_t *ctr)
{
	ckpt_config cfg = { .root = root, .keep_last = 3, .incremental = 1, .full_every = 10, .chunk_bytes = CHUNK };
	ckpt_error e;
	ckpt *c;
	assert_int_equal(ckpt_state_new(st), 0);
	assert_int_equal(ckpt_state_add_tensor(*st, "w", "params", CKPT_STAGE_MODEL, CKPT_F32, w, FIX_N, FIX_N, 0), 0);
	assert_int_equal(ckpt_state_add_tensor(*st, "counter", "sched", CKPT_STAGE_TRAINING, CKPT_U64, ctr, 1, 1, 0), 0);
	assert_int_equal(ckpt_open(&c, &cfg, &f->comm, *st, &e), 0);
	return c;
}

/*
 * Every earlier on-disk version keeps being read: a full generation (10) and
 * a delta of it (20), written when version 3 was introduced. With
 * CKPT_WRITE_V3_FIXTURE=DIR set, (re)writes that fixture into DIR first and
 * checks what it wrote instead of the shipped one.
 */
static void test_fixture__v3_generations_still_restore(void **state)
{
	fx *f = *state;
	float w[FIX_N], want[FIX_N];
	uint64_t ctr, wc;
	ckpt_state *st;
	ckpt_restore_info info;
	const char *out = getenv("CKPT_WRITE_V3_FIXTURE"), *src = CKPT_FIXTURES_DIR "/v3-incremental-1rank";

	if (out) {
		ckpt *c = fix_open(f, out, &st, w, &ctr);
		for (uint64_t step = 10; step <= 20; step += 10) {
			fix_fill(w, &ctr, step);
			assert_int_equal(ckpt_save(c, step, 0), 0);
		}
		ckpt_close(c);
		ckpt_state_free(st);
		src = out;
	}
	char cmd[4096];
	snprintf(cmd, sizeof cmd, "cp -r '%s/.' '%s/'", src, f->root);
	assert_int_equal(system(cmd), 0);
	ckpt *c = fix_open(f, f->root, &st, w, &ctr);
	memset(w, 0, sizeof w);
	assert_int_equal(ckpt_restore(c, &info), 0);
	assert_int_equal(info.step, 20);
	fix_fill(want, &wc, 20);
	assert_memory_equal(w, want, sizeof w);
	assert_int_equal(ctr, wc);
	/* a delta of it, by today's code, next to it; then the fixture's full generation alone */
	fix_fill(w, &ctr, 30);
	assert_int_equal(ckpt_save(c, 30, 0), 0);
	assert_non_null(strstr(manifest_of(f, 30), "\"chain_depth\":2,\"chain_base\":10,"));
	ckpt_close(c);
	ckpt_state_free(st);
	fx_flip(fx_path(f->root, "step-00000030/manifest.json"), 20);
	fx_flip(fx_path(f->root, "step-00000020/manifest.json"), 20);
	c = fix_open(f, f->root, &st, w, &ctr);
	assert_int_equal(ckpt_restore(c, &info), 0);
	assert_int_equal(info.step, 10);
	fix_fill(want, &wc, 10);
	assert_memory_equal(w, want, sizeof w);
	ckpt_close(c);
	ckpt_state_free(st);
}

/* ---- version 3 manifests ---- */

static void test_format__v3_round_trip_and_bounds(void **state)
{
	(void)state;
	ckpt_tensor_entry te = { .name = "w", .component = "params", .stage = 0, .dtype = CKPT_F32, .local_elems = 10,
				 .global_elems = 10, .nbytes = 40 };
	ckpt_file_entry fe = { .name = "rank-00000.chunks", .rank = 0, .size = 100, .hash = 1 };
	ckpt_manifest m = { .step = 7, .world_size = 1, .nfiles = 1, .files = &fe, .ntensors = 1, .all = &te,
			    .chunk_size = 8192, .chain_depth = 3, .chain_base = 4 }, p;
	char *text, why[300];
	size_t len;

	assert_int_equal(ckpt__manifest_render(&m, &text, &len), 0);
	assert_int_equal(ckpt__manifest_parse(text, len, &p, why, sizeof why), 0);
	assert_int_equal(p.schema_version, 3);
	assert_int_equal(p.chunk_size, 8192);
	assert_int_equal(p.chain_depth, 3);
	assert_int_equal(p.chain_base, 4);
	ckpt__manifest_free(&p);
	free(text);

	/* a plain save keeps version 2, and its shard names */
	m.chunk_size = 0;
	snprintf(fe.name, sizeof fe.name, "rank-00000.safetensors");
	assert_int_equal(ckpt__manifest_render(&m, &text, &len), 0);
	assert_non_null(strstr(text, "\"schema_version\":2,"));
	assert_null(strstr(text, "chunk_size"));
	free(text);

	/* a chunk size below the minimum is refused before anything is sized by it */
	m.chunk_size = 8192;
	snprintf(fe.name, sizeof fe.name, "rank-00000.chunks");
	assert_int_equal(ckpt__manifest_render(&m, &text, &len), 0);
	char *at = strstr(text, "\"chunk_size\":8192");
	assert_non_null(at);
	memcpy(at, "\"chunk_size\":  16", 17);
	/* reseal: the checksum covers everything before "checksum" */
	char *ck = strstr(text, "\"checksum\":\"");
	char hex[17];
	snprintf(hex, sizeof hex, "%016" PRIx64, (uint64_t)XXH3_64bits(text, (size_t)(ck - text)));
	memcpy(ck + 12, hex, 16);
	assert_int_equal(ckpt__manifest_parse(text, len, &p, why, sizeof why), -CKPT_ECORRUPT);
	assert_non_null(strstr(why, "chunk_size"));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_chunks__delta_writes_only_the_changed_chunks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chunks__restored_generation_is_the_next_base, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chunks__failed_save_is_no_base, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chunks__full_every_starts_a_chain_that_shares_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chunks__damaged_chunk_falls_back_past_every_user, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chunks__missing_or_swapped_chunk_is_caught_by_hash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc__retention_keeps_every_chunk_a_kept_generation_needs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc__interrupted_sweep_leaves_kept_generations_restorable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc__startup_removes_orphans_of_a_failed_save, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc__unreadable_generation_stops_the_sweep, setup, teardown),
		cmocka_unit_test(test_format__v3_round_trip_and_bounds),
		cmocka_unit_test_setup_teardown(test_fixture__v3_generations_still_restore, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
