/*
 * Incremental checkpoints against full ones, in the same run, one process:
 *
 *   bytes:   with 10% of the parameters changing between saves (the same
 *            contiguous 10%, as when fine-tuning the top layers), the bytes
 *            a delta save writes (new chunks and its recipe) over the bytes
 *            a plain full save writes (its shard).  Target <= 1/6.
 *   restore: ckpt_restore of a generation 10 deltas deep (one full save,
 *            then 10 deltas, full_every large) over ckpt_restore of a full
 *            chunked generation of the same state, and over a plain
 *            (version 2) generation.  Target <= 1.3.
 *
 * Before every restore the files are dropped from the page cache
 * (posix_fadvise DONTNEED, after a sync), so each restore reads the device.
 * Each round times the three restores back to back; the median ratio over
 * rounds is printed. Prints name=value lines.
 *
 *   build/bin/bench_incr DIR [MiB] [rounds] [chunk KiB]
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt/ckpt.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const char *msg)
{
	fprintf(stderr, "bench_incr: %s: %s\n", what, msg);
	exit(1);
}

static int solo_barrier(void *ctx) { (void)ctx; return 0; }
static int solo_gather(void *ctx, const void *s, size_t n, void *r, int root)
{
	(void)ctx, (void)root;
	memcpy(r, s, n);
	return 0;
}
static int solo_bcast(void *ctx, void *b, size_t n, int root) { (void)ctx, (void)b, (void)n, (void)root; return 0; }

static ckpt_comm comm = { .rank = 0, .size = 1, .barrier = solo_barrier, .gather = solo_gather, .bcast = solo_bcast };

static int drop_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)ftw;
	if (flag == FTW_F) {
		int fd = open(path, O_RDONLY);
		if (fd >= 0) {
			posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
			close(fd);
		}
	}
	return 0;
}

static void drop_cache(const char *root)
{
	sync();
	nftw(root, drop_one, 32, FTW_PHYS);
}

/* The state after save k: the first 90% never changes, the last 10% is k's. */
static void fill(float *w, size_t n, unsigned k)
{
	size_t from = n - n / 10;
	for (size_t i = 0; i < n; i++)
		w[i] = i < from ? (float)(i % 1000003) * 0.5f : (float)((k * 7919u + i) % 1000003) * 0.25f;
}

static ckpt *open_root(const char *root, ckpt_state *st, int incremental, uint32_t chunk)
{
	ckpt_config cfg = { .root = root, .keep_last = 100, .incremental = incremental, .full_every = 1000,
			    .chunk_bytes = chunk };
	ckpt_error e;
	ckpt *c;
	if (ckpt_open(&c, &cfg, &comm, st, &e) < 0)
		die(root, e.msg);
	return c;
}

static void save(ckpt *c, uint64_t step)
{
	if (ckpt_save(c, step, 0) < 0)
		die("save", ckpt_last_error(c)->msg);
	ckpt_wait(c);
}

static double timed_restore(const char *root, ckpt_state *st, uint32_t chunk, uint64_t want)
{
	ckpt *c = open_root(root, st, 1, chunk);
	ckpt_restore_info info;
	drop_cache(root);
	double t0 = now();
	if (ckpt_restore(c, &info) < 0)
		die("restore", ckpt_last_error(c)->msg);
	double t = now() - t0;
	if (info.step != want)
		die("restore", "not the generation expected");
	ckpt_close(c);
	return t;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench_incr DIR [MiB] [rounds] [chunk KiB]\n");
		return 2;
	}
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 256;
	int rounds = argc > 3 ? atoi(argv[3]) : 5;
	uint32_t chunk = (argc > 4 ? (uint32_t)strtoul(argv[4], NULL, 10) : 1024) << 10;
	size_t n = mib * 1024 * 1024 / sizeof(float);
	float *w = malloc(n * sizeof *w);
	char plain[4096], full[4096], deep[4096];
	ckpt_state *st;

	if (!w || ckpt_state_new(&st) < 0 ||
	    ckpt_state_add_tensor(st, "w", "params", CKPT_STAGE_MODEL, CKPT_F32, w, n, n, 0) < 0)
		die("state", "out of memory");
	mkdir(argv[1], 0700);
	snprintf(plain, sizeof plain, "%s/plain", argv[1]);
	snprintf(full, sizeof full, "%s/full", argv[1]);
	snprintf(deep, sizeof deep, "%s/deep", argv[1]);

	/* a plain full save, and a full chunked one, of the state after 10 saves */
	fill(w, n, 10);
	ckpt *c = open_root(plain, st, 0, chunk);
	save(c, 110);
	uint64_t plain_bytes = ckpt_last_save_stats(c)->bytes;
	ckpt_close(c);
	c = open_root(full, st, 1, chunk);
	save(c, 110);
	ckpt_close(c);

	/* one full save, then 10 deltas: the last is 10 deep */
	c = open_root(deep, st, 1, chunk);
	uint64_t delta_bytes = 0;
	for (unsigned k = 0; k <= 10; k++) {
		fill(w, n, k);
		save(c, 100 + k);
		const ckpt_save_stats *s = ckpt_last_save_stats(c);
		if (k > 0)
			delta_bytes += s->chunk_bytes_written + s->bytes;
	}
	ckpt_close(c);
	delta_bytes /= 10;

	double *r_full = calloc((size_t)rounds, sizeof(double)), *r_plain = calloc((size_t)rounds, sizeof(double));
	for (int i = 0; i < rounds; i++) {
		double td = timed_restore(deep, st, chunk, 110);
		double tf = timed_restore(full, st, chunk, 110);
		double tp = timed_restore(plain, st, chunk, 110);
		r_full[i] = td / tf;
		r_plain[i] = td / tp;
	}
	qsort(r_full, (size_t)rounds, sizeof(double), cmp_d);
	qsort(r_plain, (size_t)rounds, sizeof(double), cmp_d);
	printf("state_mib=%zu\nchunk_kib=%u\nchanging_fraction=0.10\n", mib, chunk >> 10);
	printf("full_save_bytes=%llu\ndelta_save_bytes=%llu\n", (unsigned long long)plain_bytes,
	       (unsigned long long)delta_bytes);
	printf("delta_bytes_ratio=%.4f\n", (double)delta_bytes / (double)plain_bytes);
	printf("restore_10_deep_vs_full_chunked_ratio=%.3f\n", r_full[rounds / 2]);
	printf("restore_10_deep_vs_plain_ratio=%.3f\n", r_plain[rounds / 2]);
	ckpt_state_free(st);
	free(w);
	free(r_full);
	free(r_plain);
	return 0;
}
