/*
 * Sealed checkpoints (issue 14): xxh3 detects accidents, not attackers. With
 * a key, every file is an authenticated secretstream bound to its step, rank
 * and name, and the sealed manifest binds each shard's stream: a tampered,
 * swapped, replayed or truncated file must be refused with its reason and
 * restore must fall back. On 4 threaded ranks, and on the seal layer itself.
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

#include "ckpt_fixture.h"
#include "seal.h"

#define W 4

typedef struct fx {
	char *root;
	char *dir;             /* beside the root: key files, copies */
	char key[1024];
	fx_job job;
} fx;

static void write_key(const char *path, const char *bytes, size_t n, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, bytes, n), (ssize_t)n);
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
}

static int setup(void **state)
{
	fx *f = calloc(1, sizeof *f);
	f->root = fx_tmpdir();
	f->dir = fx_tmpdir();
	snprintf(f->key, sizeof f->key, "%s/key", f->dir);
	write_key(f->key, "0123456789abcdef0123456789abcdef", 32, 0600);
	fx_job_init(&f->job, f->root, W);
	f->job.key_file = f->key;
	f->job.seal_chunk_bytes = 4096;     /* several chunks per shard */
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	fx_rmrf(f->root);
	fx_rmrf(f->dir);
	free(f->root);
	free(f->dir);
	free(f);
	return 0;
}

#define save_ok(f, step) fx_save_ok(&(f)->job, (step))
#define path(f, ...) fx_path((f)->root, __VA_ARGS__)

static void expect_fallback_to_10(fx *f, const char *why)
{
	assert_int_equal(fx_restore(&f->job), 0);
	assert_int_equal(f->job.r[0].info.step, 10);
	assert_true(f->job.r[0].content_ok);
	assert_int_equal(f->job.r[0].info.nfallbacks, 1);
	assert_string_equal(f->job.r[0].info.fallbacks[0].name, "step-00000020");
	if (!strstr(f->job.r[0].info.fallbacks[0].why, why))
		fail_msg("fallback reason \"%s\" does not say \"%s\"", f->job.r[0].info.fallbacks[0].why, why);
}

static size_t slurp(const char *p, unsigned char *buf, size_t cap)
{
	FILE *fp = fopen(p, "rb");
	assert_non_null(fp);
	size_t n = fread(buf, 1, cap, fp);
	fclose(fp);
	return n;
}

static bool contains(const unsigned char *hay, size_t n, const char *needle)
{
	size_t k = strlen(needle);
	for (size_t i = 0; i + k <= n; i++)
		if (memcmp(hay + i, needle, k) == 0)
			return true;
	return false;
}

/* Saved sealed, restored bit for bit; nothing of the plaintext format shows on disk. */
static void test_seal__save_and_restore_round_trip_nothing_readable(void **state)
{
	fx *f = *state;
	static unsigned char buf[1 << 20];

	save_ok(f, 10);
	save_ok(f, 20);
	assert_int_equal(fx_restore(&f->job), 0);
	assert_int_equal(f->job.r[2].info.step, 20);
	for (int r = 0; r < W; r++)
		assert_true(f->job.r[r].content_ok);
	size_t n = slurp(path(f, "step-00000020/rank-00001.safetensors"), buf, sizeof buf);
	assert_true(ckpt__seal_is_sealed(buf, n));
	assert_false(contains(buf, n, "dtype") || contains(buf, n, "__metadata__"));
	n = slurp(path(f, "step-00000020/manifest.json"), buf, sizeof buf);
	assert_true(ckpt__seal_is_sealed(buf, n));
	assert_false(contains(buf, n, "schema_version") || contains(buf, n, "rank-0000"));
	struct stat st;
	assert_int_equal(stat(path(f, "step-00000020/rank-00001.safetensors"), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(path(f, "step-00000020"), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
}

/* A bit flipped in a middle chunk of a shard: authentication fails, restore falls back. */
static void test_seal__bitflip_in_a_shard_is_refused(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	fx_flip(path(f, "step-00000020/rank-00002.safetensors"), 6000);
	expect_fallback_to_10(f, "authentication failed at chunk 1");
}

/* The limitation sealing removes: without a key, a flip with recomputed hashes restores as valid. */
static void test_seal__plain_bitflip_with_recomputed_hashes_restores_as_valid(void **state)
{
	fx *f = *state;

	f->job.key_file = NULL;
	save_ok(f, 10);
	save_ok(f, 20);
	fx_flip(path(f, "step-00000020/rank-00002.safetensors"), -100);
	fx_reseal(path(f, "step-00000020"));
	assert_int_equal(fx_restore(&f->job), 9998);       /* accepted, with the attacker's bytes (the fixture's code) */
	assert_int_equal(f->job.r[2].rc, 0);
	assert_int_equal(f->job.r[2].info.step, 20);
	assert_false(f->job.r[2].content_ok);
}

/* Rank 1's shard in rank 0's place: the associated data (rank, name) does not match. */
static void test_seal__shard_swapped_between_ranks_is_refused(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	fx_copy(path(f, "step-00000020/rank-00001.safetensors"), path(f, "step-00000020/rank-00000.safetensors"));
	expect_fallback_to_10(f, "authentication failed at chunk 0");
}

/* Generation 10's shard in generation 20: the step is bound. */
static void test_seal__shard_swapped_between_generations_is_refused(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	fx_copy(path(f, "step-00000010/rank-00003.safetensors"), path(f, "step-00000020/rank-00003.safetensors"));
	expect_fallback_to_10(f, "authentication failed at chunk 0");
}

/* Generation 10's manifest in generation 20. */
static void test_seal__manifest_replaced_by_an_older_one_is_refused(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	save_ok(f, 20);
	fx_copy(path(f, "step-00000010/manifest.json"), path(f, "step-00000020/manifest.json"));
	expect_fallback_to_10(f, "manifest.json: authentication failed");
}

/*
 * A save of step 20 made again (a retry): every file gets a new stream
 * header (no nonce reused), and the first save's shard or manifest put back
 * is refused by the second's manifest.
 */
static void test_seal__retry_makes_new_streams_and_an_earlier_try_is_refused(void **state)
{
	fx *f = *state;
	char old_shard[1100], old_manifest[1100];
	unsigned char a[64], b[64];

	snprintf(old_shard, sizeof old_shard, "%s/old-shard", f->dir);
	snprintf(old_manifest, sizeof old_manifest, "%s/old-manifest", f->dir);
	save_ok(f, 10);
	save_ok(f, 20);
	fx_copy(path(f, "step-00000020/rank-00000.safetensors"), old_shard);
	fx_copy(path(f, "step-00000020/manifest.json"), old_manifest);
	save_ok(f, 20);
	slurp(old_shard, a, sizeof a);
	slurp(path(f, "step-00000020/rank-00000.safetensors"), b, sizeof b);
	assert_memory_not_equal(a + 16, b + 16, 24);
	slurp(old_manifest, a, sizeof a);
	slurp(path(f, "step-00000020/manifest.json"), b, sizeof b);
	assert_memory_not_equal(a + 16, b + 16, 24);
	/* every file of one save its own stream, too */
	slurp(path(f, "step-00000020/rank-00000.safetensors"), a, sizeof a);
	assert_memory_not_equal(a + 16, b + 16, 24);

	fx_copy(old_shard, path(f, "step-00000020/rank-00000.safetensors"));
	expect_fallback_to_10(f, "a sealed file of another save");
	save_ok(f, 20);
	fx_copy(old_manifest, path(f, "step-00000020/manifest.json"));
	expect_fallback_to_10(f, "a sealed file of another save");
}

/* A reader without the key says why it cannot read; one with the key refuses plain generations unless told. */
static void test_seal__key_policy_both_ways(void **state)
{
	fx *f = *state;

	save_ok(f, 10);
	f->job.key_file = NULL;
	assert_int_equal(fx_restore(&f->job), -CKPT_ENOVALID);
	assert_non_null(strstr(f->job.r[1].err.msg, "needs its key"));
	fx_rmrf(f->root);
	assert_int_equal(mkdir(f->root, 0700), 0);
	save_ok(f, 10);                                    /* plain */
	f->job.key_file = f->key;
	assert_int_equal(fx_restore(&f->job), -CKPT_ENOVALID);
	assert_non_null(strstr(f->job.r[0].err.msg, "is not sealed, and a key is configured"));
	f->job.allow_unsealed = 1;
	assert_int_equal(fx_restore(&f->job), 0);
	assert_true(f->job.r[3].content_ok);
}

/* A generation written before sealing existed (schema_version 1) still reads: without a key, or with allow_unsealed. */
static void test_seal__old_plain_fixture_reads_with_allow_unsealed(void **state)
{
	fx *f = *state;
	char cmd[4096];

	snprintf(cmd, sizeof cmd, "cp -r '%s/.' '%s/'", CKPT_FIXTURES_DIR "/v1-fixture-2ranks", f->root);
	assert_int_equal(system(cmd), 0);
	f->job.world = 2;
	assert_int_equal(fx_restore(&f->job), -CKPT_ENOVALID);          /* a key, and no word about plain ones */
	f->job.allow_unsealed = 1;
	assert_int_equal(fx_restore(&f->job), 0);
	assert_int_equal(f->job.r[1].info.step, 10);
	f->job.key_file = NULL;
	f->job.allow_unsealed = 0;
	assert_int_equal(fx_restore(&f->job), 0);
}

/*
 * A generation sealed before libcrypto did the sealing (by libsodium's own
 * secretstream) restores as it did: tests/fixtures/sealed-v1-2ranks, two
 * ranks, step 10, chunks of 4096 bytes, this file's key. A byte flipped in
 * it is refused, so the key and the format are really in use. With
 * CKPT_WRITE_SEALED_FIXTURE=DIR set, (re)writes that fixture into DIR first
 * (with CKPT_SEAL_ENGINE=libsodium) and checks what it wrote.
 */
static void test_seal__generation_sealed_by_libsodium_still_restores(void **state)
{
	fx *f = *state;
	const char *out = getenv("CKPT_WRITE_SEALED_FIXTURE"), *src = CKPT_FIXTURES_DIR "/sealed-v1-2ranks";
	char cmd[4096];

	f->job.world = 2;
	if (out) {
		fx_job j;
		fx_job_init(&j, out, 2);
		j.key_file = f->key;
		j.seal_chunk_bytes = f->job.seal_chunk_bytes;
		fx_save_ok(&j, 10);
		src = out;
	}
	snprintf(cmd, sizeof cmd, "cp -r '%s/.' '%s/'", src, f->root);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(fx_restore(&f->job), 0);
	for (int r = 0; r < 2; r++) {
		assert_int_equal(f->job.r[r].info.step, 10);
		assert_true(f->job.r[r].content_ok);
	}
	fx_flip(path(f, "step-00000010/rank-00001.safetensors"), 3000);
	assert_int_equal(fx_restore(&f->job), -CKPT_ENOVALID);
}

/* The key file must be private, of a key's size; a hex key is the same key. */
static void test_seal__key_file_permissions_and_format(void **state)
{
	fx *f = *state;
	static const mode_t bad[] = { 0644, 0640, 0604, 0620, 0602 };

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(chmod(f->key, bad[i]), 0);
		f->job.step = 10;
		assert_int_equal(fx_save(&f->job), -EPERM);
		assert_non_null(strstr(f->job.r[2].err.msg, "chmod 600"));
		assert_false(fx_exists(path(f, "step-00000010")));
	}
	write_key(f->key, "0123456789abcdef0123456789abcde", 31, 0600);
	assert_int_equal(fx_save(&f->job), -EINVAL);
	assert_non_null(strstr(f->job.r[0].err.msg, "32 raw bytes or 64 hex digits"));
	write_key(f->key, "0123456789abcdef0123456789abcdef", 32, 0600);
	save_ok(f, 10);
	/* the same 32 bytes in hex read the raw key's generation */
	write_key(f->key, "30313233343536373839616263646566" "30313233343536373839616263646566\n", 65, 0400);
	assert_int_equal(fx_restore(&f->job), 0);
	assert_int_equal(f->job.r[0].info.step, 10);
}

/*
 * A root owned by another user is refused with its reason: as root, the
 * test's root given to nobody; as anyone else (who cannot give a directory
 * away), "/", which root owns and nobody else may write.
 */
static void test_open__root_owned_by_another_user_is_refused(void **state)
{
	fx *f = *state;

	if (geteuid() != 0) {
		f->job.root = "/";
		f->job.step = 10;
		assert_int_equal(fx_save(&f->job), -EPERM);
		assert_non_null(strstr(f->job.r[0].err.msg, "owned by uid 0"));
		f->job.root = f->root;
		save_ok(f, 10);
		return;
	}
	assert_int_equal(chown(f->root, 65534, 65534), 0);
	f->job.step = 10;
	assert_int_equal(fx_save(&f->job), -EPERM);
	assert_non_null(strstr(f->job.r[0].err.msg, "owned by uid 65534"));
	assert_false(fx_exists(path(f, "step-00000010")));
	assert_int_equal(chown(f->root, 0, 0), 0);
	save_ok(f, 10);
}

/* ---- the seal layer on its own ------------------------------------------ */

static ckpt_seal_key test_key = { .k = "0123456789abcdef0123456789abcdef", .chunk = 4096 };

/* Byte i of what seal_file seals. */
static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 7 + 1);
}

/* out holds the len bytes seal_file sealed, or the test fails naming what and the first byte that differs. */
static void expect_pattern(const unsigned char *out, size_t len, const char *what)
{
	for (size_t i = 0; i < len; i++)
		if (out[i] != pattern(i))
			fail_msg("%s: byte %zu differs", what, i);
}

/* Seal len bytes (pattern) as (step, rank, name) into path; returns the file's size. */
static uint64_t seal_file(const char *p, size_t len, uint64_t step, int rank, const char *name)
{
	ckpt_error e;
	ckpt_io io = { .rootfd = -1, .rank = 0, .phase = "test", .err = &e };
	ckpt_sealw *w;
	ckpt_wstream *ws;
	uint64_t size, ident;
	unsigned char *buf = malloc(len);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	for (size_t i = 0; i < len; i++)
		buf[i] = pattern(i);
	assert_true(fd >= 0);
	assert_int_equal(ckpt__wstream_open(&ws, &io, fd, p, len), 0);
	assert_int_equal(ckpt__sealw_begin(&w, &test_key, &io, ws, p, step, rank, name, len), 0);
	assert_int_equal(ckpt__sealw_write(w, buf, len / 2), 0);
	assert_int_equal(ckpt__sealw_write(w, buf + len / 2, len - len / 2), 0);
	assert_int_equal(ckpt__sealw_end(w, &size, &ident), 0);
	assert_int_equal(ckpt__wstream_finish(ws), 0);
	ckpt__wstream_close(ws);
	close(fd);
	free(buf);
	return size;
}

/*
 * Open and read it all as (step, rank, name) into out (len bytes), in pieces
 * of `piece` bytes, chunks two at a time (pairs 1), one at a time (0), or as
 * the environment decides (-1): 0 or the error.
 */
static int unseal_pieces(const char *p, unsigned char *out, size_t len, size_t piece, int pairs, uint64_t step,
			 int rank, const char *name, ckpt_error *e)
{
	ckpt_io io = { .rootfd = -1, .rank = 0, .phase = "test", .err = e };
	ckpt_sealr *r = NULL;
	ckpt_stream *in = NULL;
	struct stat st;
	uint64_t plain, ident;
	int fd = open(p, O_RDONLY), rc;

	memset(e, 0, sizeof *e);
	assert_true(fd >= 0);
	fstat(fd, &st);
	if (pairs >= 0)
		setenv("CKPT_SEAL_PAIRS", pairs ? "1" : "0", 1);
	assert_int_equal(ckpt__stream_open(&in, &io, fd, p, (uint64_t)st.st_size, true, NULL, 0), 0);
	rc = ckpt__sealr_begin(&r, &test_key, &io, in, NULL, p, (uint64_t)st.st_size, step, rank, name, &plain, &ident);
	if (pairs >= 0)
		unsetenv("CKPT_SEAL_PAIRS");
	if (rc == 0 && plain != len)
		rc = -EINVAL;
	for (size_t off = 0; rc == 0 && off < len; off += piece)
		rc = ckpt__sealr_read(r, out + off, len - off < piece ? len - off : piece);
	if (rc == 0)
		rc = ckpt__sealr_end(r);
	ckpt__sealr_free(r);
	ckpt__stream_close(in);
	close(fd);
	return rc;
}

static int unseal_file(const char *p, unsigned char *out, size_t len, uint64_t step, int rank, const char *name,
		       ckpt_error *e)
{
	return unseal_pieces(p, out, len, len ? len : 1, -1, step, rank, name, e);
}

/* Step, rank and name are bound: each one changed is refused at the first chunk. */
static void test_seal__associated_data_binds_step_rank_and_name(void **state)
{
	fx *f = *state;
	char p[1100];
	unsigned char out[10000];
	ckpt_error e;

	snprintf(p, sizeof p, "%s/f", f->dir);
	seal_file(p, sizeof out, 40, 1, "rank-00001.safetensors");
	assert_int_equal(unseal_file(p, out, sizeof out, 40, 1, "rank-00001.safetensors", &e), 0);
	expect_pattern(out, sizeof out, "unsealed");
	assert_int_equal(unseal_file(p, out, sizeof out, 50, 1, "rank-00001.safetensors", &e), -CKPT_ECORRUPT);
	assert_non_null(strstr(e.msg, "authentication failed at chunk 0"));
	assert_int_equal(unseal_file(p, out, sizeof out, 40, 2, "rank-00001.safetensors", &e), -CKPT_ECORRUPT);
	assert_int_equal(unseal_file(p, out, sizeof out, 40, 1, "rank-00002.safetensors", &e), -CKPT_ECORRUPT);
}

/* Cut at a chunk boundary (no final chunk left): truncation, named. */
static void test_seal__truncation_at_a_chunk_boundary_is_detected(void **state)
{
	fx *f = *state;
	char p[1100];
	unsigned char out[10000];
	ckpt_error e;

	snprintf(p, sizeof p, "%s/f", f->dir);
	uint64_t size = seal_file(p, sizeof out, 40, 1, "x");
	assert_int_equal(truncate(p, (off_t)(CKPT_SEAL_PREAMBLE + 2 * (4096 + 17))), 0);
	assert_true(size > CKPT_SEAL_PREAMBLE + 2 * (4096 + 17));
	assert_int_equal(unseal_file(p, out, 2 * 4096, 40, 1, "x", &e), -CKPT_ECORRUPT);
	assert_non_null(strstr(e.msg, "(truncated or extended)"));
	/* and an exact multiple of the chunk size ends with an empty final chunk */
	seal_file(p, 2 * 4096, 40, 1, "x");
	assert_int_equal(unseal_file(p, out, 2 * 4096, 40, 1, "x", &e), 0);
}

/*
 * A file past CKPT_STREAM_MIN_BYTES takes the sealer thread and the readers
 * (a ring that wraps many times, two preads in flight, O_DIRECT where the
 * file system has it): every byte comes back, a flip far into the file is
 * found at its chunk, and a file cut mid-way ends in an error, not a hang.
 */
static void test_seal__large_file_through_the_streams(void **state)
{
	fx *f = *state;
	char p[1100];
	size_t len = (size_t)20 << 20;
	unsigned char *out = malloc(len);
	ckpt_error e;

	assert_non_null(out);
	snprintf(p, sizeof p, "%s/big", f->dir);
	uint64_t size = seal_file(p, len, 40, 1, "big");
	assert_int_equal(size, CKPT_SEAL_PREAMBLE + (len / 4096) * (4096 + 17) + 17);
	assert_int_equal(unseal_file(p, out, len, 40, 1, "big", &e), 0);
	expect_pattern(out, len, "unsealed");
	fx_flip(p, CKPT_SEAL_PREAMBLE + 4000 * (4096 + 17) + 5);
	assert_int_equal(unseal_file(p, out, len, 40, 1, "big", &e), -CKPT_ECORRUPT);
	assert_non_null(strstr(e.msg, "authentication failed at chunk 4000"));
	/* cut 100 bytes into chunk 2000: read to its end through the streams, refused there */
	seal_file(p, len, 40, 1, "big");
	assert_int_equal(truncate(p, (off_t)(CKPT_SEAL_PREAMBLE + 2000 * (4096 + 17) + 100)), 0);
	assert_int_equal(unseal_file(p, out, 2000 * 4096 + 100 - 17, 40, 1, "big", &e), -CKPT_ECORRUPT);
	assert_non_null(strstr(e.msg, "chunk 2000"));
	free(out);
}

/*
 * A key made for a state big enough for the sealer thread maps its writer's
 * ring at once (ckpt__seal_prepare, from ckpt_open), a small one does not;
 * a large sealed file then writes from that ring and gives it back, and the
 * key's end unmaps it. (ckpt__iobufs_live counts the buffers for O_DIRECT:
 * the key's ring, a write stream's stage, a reader's own ring.)
 */
static void test_seal__ring_mapped_ahead_for_a_large_state_only(void **state)
{
	fx *f = *state;
	ckpt_seal_key *k;
	char why[400], p[1100];
	ckpt_error e;
	ckpt_io io = { .rootfd = -1, .rank = 0, .phase = "test", .err = &e };
	ckpt_wstream *ws;
	ckpt_sealw *w;
	uint64_t size, ident, len = (uint64_t)CKPT_STREAM_MIN_BYTES + 4096;
	unsigned char *buf = calloc(1, len);

	assert_non_null(buf);
	assert_int_equal(ckpt__iobufs_live(), 0);
	assert_int_equal(ckpt__seal_key_load(&k, f->key, why, sizeof why), 0);
	ckpt__seal_prepare(k, 1 << 20);
	assert_int_equal(ckpt__iobufs_live(), 0);
	ckpt__seal_prepare(k, len);
	assert_int_equal(ckpt__iobufs_live(), 1);
	ckpt__seal_prepare(k, len);            /* one is enough */
	assert_int_equal(ckpt__iobufs_live(), 1);
	snprintf(p, sizeof p, "%s/big", f->dir);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ckpt__wstream_open(&ws, &io, fd, p, len), 0);
	assert_int_equal(ckpt__sealw_begin(&w, k, &io, ws, p, 40, 1, "big", len), 0);
	assert_int_equal(ckpt__iobufs_live(), 2);  /* the same ring, not a second one; and the stream's stage */
	assert_int_equal(ckpt__sealw_write(w, buf, len), 0);
	assert_int_equal(ckpt__sealw_end(w, &size, &ident), 0);
	assert_int_equal(ckpt__wstream_finish(ws), 0);
	ckpt__wstream_close(ws);
	close(fd);
	assert_int_equal(ckpt__iobufs_live(), 1);
	ckpt__seal_key_free(k);
	assert_int_equal(ckpt__iobufs_live(), 0);
	free(buf);
}

/*
 * A reader of a large sealed file borrows the ring the key keeps for its
 * writers instead of mapping one of its own: every byte comes back through
 * it, a second reader meanwhile maps its own, and the key has its ring again
 * after the first reader is done with it.
 */
static void test_seal__reader_borrows_the_keys_ring(void **state)
{
	fx *f = *state;
	ckpt_seal_key *k;
	char why[400], p[1100];
	ckpt_error e;
	ckpt_io io = { .rootfd = -1, .rank = 0, .phase = "test", .err = &e };
	ckpt_stream *in, *in2;
	ckpt_sealr *r;
	size_t len = ((size_t)40 << 20) + 4096 * 5 + 123, ring_len, len2;
	uint64_t plain, ident;
	unsigned char *out = malloc(len);
	struct stat st;

	assert_non_null(out);
	snprintf(p, sizeof p, "%s/big", f->dir);
	seal_file(p, len, 40, 1, "big");
	assert_int_equal(ckpt__seal_key_load(&k, f->key, why, sizeof why), 0);
	assert_null(ckpt__seal_ring_lend(k, &ring_len));        /* none kept yet */
	assert_int_equal(ring_len, 0);
	ckpt__seal_prepare(k, len);
	unsigned char *ring = ckpt__seal_ring_lend(k, &ring_len);
	assert_non_null(ring);
	assert_true(ring_len < len);
	assert_null(ckpt__seal_ring_lend(k, &len2));            /* lent: not twice */

	int fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(ckpt__stream_open(&in, &io, fd, p, (uint64_t)st.st_size, true, ring, ring_len), 0);
	assert_int_equal(ckpt__iobufs_live(), 1);                   /* the key's, no other */
	int fd2 = open(p, O_RDONLY);                            /* a reader with nothing to borrow */
	assert_true(fd2 >= 0);
	assert_int_equal(ckpt__stream_open(&in2, &io, fd2, p, (uint64_t)st.st_size, true, NULL, 0), 0);
	assert_int_equal(ckpt__iobufs_live(), 2);
	ckpt__stream_close(in2);
	close(fd2);
	assert_int_equal(ckpt__iobufs_live(), 1);

	assert_int_equal(ckpt__sealr_begin(&r, k, &io, in, NULL, p, (uint64_t)st.st_size, 40, 1, "big", &plain, &ident),
			 0);
	assert_int_equal(plain, len);
	assert_int_equal(ckpt__sealr_read(r, out, 1000), 0);            /* a piece, then whole chunks, then the rest */
	assert_int_equal(ckpt__sealr_read(r, out + 1000, len - 1000), 0);
	assert_int_equal(ckpt__sealr_end(r), 0);
	ckpt__sealr_free(r);
	ckpt__stream_close(in);
	close(fd);
	expect_pattern(out, len, "read through the key's ring");
	assert_int_equal(ckpt__iobufs_live(), 1);    /* not unmapped by the stream */
	ckpt__seal_ring_return(k, ring, ring_len);
	assert_ptr_equal(ckpt__seal_ring_lend(k, &len2), ring);        /* the key's again */
	assert_int_equal(len2, ring_len);
	ckpt__seal_ring_return(k, ring, ring_len);
	ckpt__seal_key_free(k);
	assert_int_equal(ckpt__iobufs_live(), 0);
	free(out);
}

/*
 * Chunks two at a time (a helper decrypts the second from the state derived
 * for it) read what one at a time reads: every byte, in pieces of any
 * shape; and for a flip in any chunk or a cut at any chunk boundary, the
 * same refusal naming the same chunk.
 */
static void test_seal__pairs_read_as_one_at_a_time_does(void **state)
{
	fx *f = *state;
	char p[1100];
	const size_t len = 9 * 4096 + 1000, unit = 4096 + 17, nchunks = 10;
	const size_t pieces[] = { len, 4096, 3000, 2 * 4096 + 5, 1 };
	unsigned char *a = malloc(len), *b = malloc(len);
	ckpt_error ea, eb;

	assert_non_null(a);
	assert_non_null(b);
	snprintf(p, sizeof p, "%s/pairs", f->dir);
	seal_file(p, len, 40, 1, "x");
	for (size_t k = 0; k < sizeof pieces / sizeof *pieces; k++) {
		memset(a, 0, len);
		assert_int_equal(unseal_pieces(p, a, len, pieces[k], 1, 40, 1, "x", &ea), 0);
		assert_int_equal(unseal_pieces(p, b, len, pieces[k], 0, 40, 1, "x", &eb), 0);
		assert_memory_equal(a, b, len);
		char what[64];
		snprintf(what, sizeof what, "piece %zu", pieces[k]);
		expect_pattern(a, len, what);
	}
	for (size_t c = 0; c < nchunks; c++) {
		seal_file(p, len, 40, 1, "x");
		fx_flip(p, CKPT_SEAL_PREAMBLE + c * unit + 9);
		assert_int_equal(unseal_pieces(p, a, len, 4096, 1, 40, 1, "x", &ea), -CKPT_ECORRUPT);
		assert_int_equal(unseal_pieces(p, b, len, 4096, 0, 40, 1, "x", &eb), -CKPT_ECORRUPT);
		assert_string_equal(ea.msg, eb.msg);
		char want[64];
		snprintf(want, sizeof want, "authentication failed at chunk %zu of", c);
		assert_non_null(strstr(ea.msg, want));
	}
	for (size_t c = 1; c < nchunks; c++) {
		seal_file(p, len, 40, 1, "x");
		assert_int_equal(truncate(p, (off_t)(CKPT_SEAL_PREAMBLE + c * unit)), 0);
		int ra = unseal_pieces(p, a, len, 4096, 1, 40, 1, "x", &ea);
		int rb = unseal_pieces(p, b, len, 4096, 0, 40, 1, "x", &eb);
		assert_int_equal(ra, rb);
		assert_true(ra < 0);
		assert_string_equal(ea.msg, eb.msg);
	}
	free(a);
	free(b);
}

/* A tampered chunk hands out nothing: the caller's buffer keeps what it had there. */
static void test_seal__nothing_handed_out_before_its_tag_is_verified(void **state)
{
	fx *f = *state;
	char p[1100];
	unsigned char out[3 * 4096 + 100];
	ckpt_error e;

	snprintf(p, sizeof p, "%s/f", f->dir);
	seal_file(p, sizeof out, 40, 1, "x");
	fx_flip(p, CKPT_SEAL_PREAMBLE + (4096 + 17) + 100);        /* chunk 1 */
	memset(out, 0xee, sizeof out);
	assert_int_equal(unseal_file(p, out, sizeof out, 40, 1, "x", &e), -CKPT_ECORRUPT);
	assert_non_null(strstr(e.msg, "authentication failed at chunk 1"));
	for (size_t i = 4096; i < sizeof out; i++)
		assert_int_equal(out[i], 0xee);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_seal__save_and_restore_round_trip_nothing_readable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__bitflip_in_a_shard_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__plain_bitflip_with_recomputed_hashes_restores_as_valid, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_seal__shard_swapped_between_ranks_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__shard_swapped_between_generations_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__manifest_replaced_by_an_older_one_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__retry_makes_new_streams_and_an_earlier_try_is_refused, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_seal__key_policy_both_ways, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__old_plain_fixture_reads_with_allow_unsealed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__generation_sealed_by_libsodium_still_restores, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__key_file_permissions_and_format, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open__root_owned_by_another_user_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__associated_data_binds_step_rank_and_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__pairs_read_as_one_at_a_time_does, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__truncation_at_a_chunk_boundary_is_detected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__nothing_handed_out_before_its_tag_is_verified, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__large_file_through_the_streams, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__ring_mapped_ahead_for_a_large_state_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal__reader_borrows_the_keys_ring, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
