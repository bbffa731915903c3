/*
 * libckpt throughput against plain POSIX I/O of the same bytes, in the same
 * run, on the same ranks:
 *
 *   save:    ckpt_save (header, xxh3 of every byte, fsync of files and
 *            directories, manifest, rename, LATEST)  vs  write() + fsync()
 *   restore: ckpt_restore (manifest check, size and xxh3 of every byte)
 *            vs  read() of the same files
 *
 * Each rank holds MiB/W of state. Before every read the files are dropped
 * from the page cache (posix_fadvise DONTNEED), so both sides read the
 * device. Each round times the baseline and libckpt back to back; the
 * ratio (baseline time / libckpt time, 1 = free) is taken per round and the
 * median over rounds is printed, since this machine's disk speed drifts more
 * between rounds than the two sides differ. KEEP (environment) sets
 * keep_last; the default 1 makes every save also delete the previous
 * generation, as a tight retention would. That deletion runs in the
 * background after ckpt_save returns (as it overlaps training in a real
 * job); the bench waits for it outside the timed region.
 * Prints name=value lines.
 *
 *   mpirun -np 2 build/bin/bench_ckpt DIR [MiB] [rounds]
 */
#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt/ckpt.h"

#define PIECE (8u << 20)

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_ckpt: %s: %s\n", what, strerror(err));
	MPI_Abort(MPI_COMM_WORLD, 1);
}

static int mpi_barrier(void *ctx) { return MPI_Barrier(*(MPI_Comm *)ctx) ? -EIO : 0; }
static int mpi_gather(void *ctx, const void *s, size_t n, void *r, int root)
{
	return MPI_Gather(s, (int)n, MPI_BYTE, r, (int)n, MPI_BYTE, root, *(MPI_Comm *)ctx) ? -EIO : 0;
}
static int mpi_bcast(void *ctx, void *b, size_t n, int root)
{
	return MPI_Bcast(b, (int)n, MPI_BYTE, root, *(MPI_Comm *)ctx) ? -EIO : 0;
}

static void drop_cache(const char *path)
{
	int fd = open(path, O_RDONLY);
	if (fd >= 0) {
		fdatasync(fd);
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
	}
}

static void drop_dir(const char *dir, int world)
{
	char p[4096];
	for (int r = 0; r < world; r++) {
		snprintf(p, sizeof p, "%s/rank-%05d.safetensors", dir, r);
		drop_cache(p);
	}
}

/* The baseline: what a checkpoint costs with no checkpoint library at all. */
static void plain_write(const char *path, const char *buf, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die(path, errno);
	for (size_t off = 0; off < n;) {
		size_t k = n - off < PIECE ? n - off : PIECE;
		ssize_t w = write(fd, buf + off, k);
		if (w < 0)
			die("write", errno);
		off += (size_t)w;
	}
	if (fsync(fd) < 0 || close(fd) < 0)
		die("fsync", errno);
}

static void plain_read(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die(path, errno);
	for (size_t off = 0; off < n;) {
		ssize_t r = read(fd, buf + off, n - off < PIECE ? n - off : PIECE);
		if (r <= 0)
			die("read", r < 0 ? errno : EIO);
		off += (size_t)r;
	}
	close(fd);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Wall time of fn across all ranks: barrier, run, barrier. */
#define TIMED(out, stmt) do { MPI_Barrier(MPI_COMM_WORLD); double _t = now(); stmt; \
	MPI_Barrier(MPI_COMM_WORLD); out = now() - _t; } while (0)

int main(int argc, char **argv)
{
	MPI_Init(&argc, &argv);
	int rank, world;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &world);
	if (argc < 2) {
		if (rank == 0)
			fprintf(stderr, "usage: mpirun -np N bench_ckpt DIR [MiB] [rounds]\n");
		MPI_Finalize();
		return 2;
	}
	const char *dir = argv[1];
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 256;
	int rounds = argc > 3 ? atoi(argv[3]) : 7;
	size_t bytes = (mib << 20) / (size_t)world / 4 * 4;
	char *state = malloc(bytes), *back = malloc(bytes);
	char base[4096], root[4096], path[4200];
	MPI_Comm comm = MPI_COMM_WORLD;

	if (!state || !back)
		die("malloc", ENOMEM);
	for (size_t i = 0; i < bytes; i++)       /* not compressible, not zero */
		state[i] = (char)((i * 2654435761u + (size_t)rank * 40503u) >> 13);
	snprintf(base, sizeof base, "%s/plain", dir);
	snprintf(root, sizeof root, "%s/ckpt", dir);
	if (rank == 0) {
		mkdir(dir, 0755);
		mkdir(base, 0755);
	}
	MPI_Barrier(comm);
	snprintf(path, sizeof path, "%s/rank-%05d.safetensors", base, rank);

	ckpt_state *st;
	ckpt *c;
	ckpt_error e;
	ckpt_comm cc = { .ctx = &comm, .rank = rank, .size = world, .barrier = mpi_barrier,
			 .gather = mpi_gather, .bcast = mpi_bcast };
	ckpt_config cfg = { .root = root, .keep_last = getenv("KEEP") ? (uint32_t)atoi(getenv("KEEP")) : 1, .config_hash = 1 };
	ckpt_state_new(&st);
	ckpt_state_add_tensor(st, "state", "master", CKPT_STAGE_MODEL, CKPT_F32, state, bytes / 4,
			      bytes / 4 * (size_t)world, bytes / 4 * (size_t)rank);
	if (ckpt_open(&c, &cfg, &cc, st, &e) < 0)
		die(e.msg, EIO);

	double *rw = calloc((size_t)rounds, sizeof *rw), *rr = calloc((size_t)rounds, sizeof *rr);
	double sum_pw = 0, sum_cw = 0, sum_pr = 0, sum_cr = 0, tp, t;
	char gen[4200];
	for (int round = 0; round < rounds; round++) {
		uint64_t step = (uint64_t)round + 1;
		TIMED(tp, plain_write(path, state, bytes));
		int rc;
		TIMED(t, rc = ckpt_save(c, step, 0));
		if (rc < 0)
			die(ckpt_last_error(c)->msg, EIO);
		/* retention (deleting the previous generation) runs in the background
		 * while a trainer computes; it must not overlap the next measurement */
		ckpt_wait(c);
		rw[round] = tp / t;
		sum_pw += tp;
		sum_cw += t;

		drop_cache(path);
		TIMED(tp, plain_read(path, back, bytes));
		snprintf(gen, sizeof gen, "%s/step-%08llu", root, (unsigned long long)step);
		drop_dir(gen, world);
		ckpt_restore_info info;
		memset(state, 0, bytes);
		TIMED(t, rc = ckpt_restore(c, &info));
		if (rc < 0 || info.step != step)
			die(ckpt_last_error(c)->msg, EIO);
		rr[round] = tp / t;
		sum_pr += tp;
		sum_cr += t;
		if (memcmp(state, back, bytes) != 0)
			die("restored state differs from what was written", EIO);
	}
	if (rank == 0) {
		double total = (double)bytes * world / 1048576.0;
		printf("ckpt_state_mib=%.0f\nckpt_ranks=%d\n", total, world);
		printf("ckpt_rounds=%d\nckpt_keep_last=%u\n", rounds, cfg.keep_last);
		printf("plain_write_fsync_mib_per_s=%.1f\nckpt_save_mib_per_s=%.1f\n", total * rounds / sum_pw,
		       total * rounds / sum_cw);
		printf("ckpt_save_ratio_median=%.3f\n", median(rw, rounds));
		printf("plain_read_mib_per_s=%.1f\nckpt_restore_verified_mib_per_s=%.1f\n", total * rounds / sum_pr,
		       total * rounds / sum_cr);
		printf("ckpt_restore_ratio_median=%.3f\n", median(rr, rounds));
	}
	ckpt_close(c);
	ckpt_state_free(st);
	free(state);
	free(back);
	free(rw);
	free(rr);
	MPI_Finalize();
	return 0;
}
