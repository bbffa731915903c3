/*
 * libckpt throughput against plain POSIX I/O of the same bytes, in the same
 * run, on the same ranks:
 *
 *   save:    ckpt_save (header, xxh3 of every byte, fsync of files and
 *            directories, manifest, rename, LATEST)  vs  write() + fsync()
 *   restore: ckpt_restore (manifest check, size and xxh3 of every byte)
 *            vs  read() of the same files
 *
 * Each rank holds MiB/W of state. Before every timed read the page cache is
 * emptied so both sides read the device: as root through
 * /proc/sys/vm/drop_caches (after sync), else with posix_fadvise(DONTNEED)
 * on every file about to be read (best effort). Either way each rank then
 * asks the kernel with mincore(2) how much of those files is still resident
 * and the run reports the worst fraction seen (`*_resident_max`): a read
 * ratio is only a disk figure when that is about 0. Each round times the
 * baseline and libckpt back to back; the ratio (baseline time / libckpt
 * time, 1 = free) is taken per round, and the median, minimum and maximum
 * over rounds are printed, since this machine's disk speed drifts between
 * rounds. KEEP (environment) sets
 * keep_last; the default 1 makes every save also delete the previous
 * generation, as a tight retention would. That deletion runs in the
 * background after ckpt_save returns (as it overlaps training in a real
 * job); the bench waits for it outside the timed region.
 * Prints name=value lines.
 *
 *   mpirun -np 2 build/bin/bench_ckpt DIR [MiB] [rounds] [KEYFILE]
 *
 * With KEYFILE: libckpt without a key against libckpt with one (sealed),
 * instead of against plain I/O (seal_rounds below).
 */
#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
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

/* Fraction of path's pages in the page cache (mincore), 0 for an empty or missing file. */
static double resident(const char *path)
{
	int fd = open(path, O_RDONLY);
	struct stat sb;
	double frac = 0;

	if (fd < 0)
		return 0;
	if (fstat(fd, &sb) == 0 && sb.st_size > 0) {
		void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
		long pg = sysconf(_SC_PAGESIZE);
		size_t np = ((size_t)sb.st_size + (size_t)pg - 1) / (size_t)pg, in = 0;
		unsigned char *vec = malloc(np);
		if (m != MAP_FAILED && vec && mincore(m, (size_t)sb.st_size, vec) == 0) {
			for (size_t i = 0; i < np; i++)
				in += vec[i] & 1;
			frac = (double)in / (double)np;
		}
		free(vec);
		if (m != MAP_FAILED)
			munmap(m, (size_t)sb.st_size);
	}
	close(fd);
	return frac;
}

static int dropped_all;     /* drop_caches worked: the whole page cache was emptied */

/*
 * Empty the page cache of the n files every rank is about to read (the same
 * list on every rank), then return the largest resident fraction any rank
 * still sees among them.
 */
static double make_cold(char paths[][4200], int n)
{
	int ok = 0;

	MPI_Barrier(MPI_COMM_WORLD);
	int rank;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	if (rank == 0) {
		sync();
		FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
		if (f) {
			ok = fputs("3\n", f) >= 0;
			ok = fclose(f) == 0 && ok;
		}
	}
	MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
	dropped_all = ok;
	if (!ok)
		for (int i = 0; i < n; i++)
			drop_cache(paths[i]);
	MPI_Barrier(MPI_COMM_WORLD);
	double worst = 0, all;
	for (int i = 0; i < n; i++) {
		double r = resident(paths[i]);
		worst = r > worst ? r : worst;
	}
	MPI_Allreduce(&worst, &all, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
	return all;
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

/* name_median, _min and _max of v (sorted in place). */
static void spread(const char *name, double *v, int n)
{
	double m = median(v, n);
	printf("%s_median=%.3f\n%s_min=%.3f\n%s_max=%.3f\n", name, m, name, v[0], name, v[n - 1]);
}

/* Wall time of fn across all ranks: barrier, run, barrier. */
#define TIMED(out, stmt) do { MPI_Barrier(MPI_COMM_WORLD); double _t = now(); stmt; \
	MPI_Barrier(MPI_COMM_WORLD); out = now() - _t; } while (0)

/* CPU seconds of this process so far, every thread, user and system. */
static double cpu_now(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

/* TIMED, and the CPU seconds all ranks' processes spent in stmt (the barriers' waits left out). */
#define TIMED_CPU(out, cpu, stmt) do { MPI_Barrier(MPI_COMM_WORLD); double _t = now(), _c = cpu_now(); stmt; \
	double _d = cpu_now() - _c; MPI_Barrier(MPI_COMM_WORLD); out = now() - _t; \
	MPI_Allreduce(&_d, &(cpu), 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD); } while (0)

/*
 * The cost of sealing (bench_seal.sh): a second root with the key, saved
 * and restored next to the first, in the same rounds; which of the two goes
 * first alternates from round to round. Per round the ratio sealed time /
 * unsealed time of save and of restore (from an empty page cache), and the
 * same ratio of the CPU seconds the ranks' processes spent in them: when
 * the time ratio moves and the CPU ratio does not, the device did.
 */
static void seal_rounds(ckpt *plain, ckpt *sealed, const char *root, const char *sroot, char *state, const char *back,
			size_t bytes, int world, int rounds)
{
	double *rs = calloc((size_t)rounds, sizeof *rs), *rr = calloc((size_t)rounds, sizeof *rr);
	double *cs = calloc((size_t)rounds, sizeof *cs), *cr = calloc((size_t)rounds, sizeof *cr);
	char files[world + 1][4200];
	int rank;

	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	for (int round = 0; round < rounds; round++) {
		uint64_t step = (uint64_t)round + 1;
		ckpt *order[2] = { round % 2 ? sealed : plain, round % 2 ? plain : sealed };
		double t[2], tr[2], c[2], cre[2];
		for (int k = 0; k < 2; k++) {
			int rc;
			TIMED_CPU(t[k], c[k], rc = ckpt_save(order[k], step, 0));
			if (rc < 0)
				die(ckpt_last_error(order[k])->msg, EIO);
			ckpt_wait(order[k]);
		}
		for (int k = 0; k < 2; k++) {
			const char *r = order[k] == sealed ? sroot : root;
			ckpt_restore_info info;
			int rc;
			for (int i = 0; i < world; i++)
				snprintf(files[i], sizeof files[i], "%s/step-%08llu/rank-%05d.safetensors", r,
					 (unsigned long long)step, i);
			snprintf(files[world], sizeof files[world], "%s/step-%08llu/manifest.json", r, (unsigned long long)step);
			make_cold(files, world + 1);
			memset(state, 0, bytes);
			TIMED_CPU(tr[k], cre[k], rc = ckpt_restore(order[k], &info));
			if (rc < 0 || info.step != step)
				die(ckpt_last_error(order[k])->msg, EIO);
			if (memcmp(state, back, bytes) != 0)
				die("restored state differs from what was written", EIO);
		}
		int s = order[0] == sealed ? 0 : 1;
		rs[round] = t[s] / t[1 - s];
		rr[round] = tr[s] / tr[1 - s];
		cs[round] = c[s] / c[1 - s];
		cr[round] = cre[s] / cre[1 - s];
		if (rank == 0)
			fprintf(stderr, "round %d: save %.4f s sealed, %.4f s not; restore %.4f s sealed, %.4f s not; "
				"CPU: save %.4f s sealed, %.4f s not; restore %.4f s sealed, %.4f s not\n", round + 1,
				t[s], t[1 - s], tr[s], tr[1 - s], c[s], c[1 - s], cre[s], cre[1 - s]);
	}
	if (rank == 0) {
		printf("seal_engine=%s\nseal_rounds=%d\n", ckpt_seal_engine(), rounds);
		spread("seal_save_time_ratio", rs, rounds);
		spread("seal_restore_time_ratio", rr, rounds);
		spread("seal_save_cpu_ratio", cs, rounds);
		spread("seal_restore_cpu_ratio", cr, rounds);
	}
	free(rs);
	free(rr);
	free(cs);
	free(cr);
}

int main(int argc, char **argv)
{
	MPI_Init(&argc, &argv);
	int rank, world;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &world);
	if (argc < 2) {
		if (rank == 0)
			fprintf(stderr, "usage: mpirun -np N bench_ckpt DIR [MiB] [rounds] [KEYFILE]\n");
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
	if (argc > 4) {         /* KEYFILE: the cost of sealing, not plain I/O */
		char sroot[4096];
		ckpt *sealed;
		snprintf(sroot, sizeof sroot, "%s/sealed", dir);
		ckpt_config scfg = cfg;
		scfg.root = sroot;
		scfg.key_file = argv[4];
		if (ckpt_open(&sealed, &scfg, &cc, st, &e) < 0)
			die(e.msg, EIO);
		memcpy(back, state, bytes);
		seal_rounds(c, sealed, root, sroot, state, back, bytes, world, rounds);
		ckpt_close(sealed);
		goto out;
	}

	double sum_pw = 0, sum_cw = 0, sum_pr = 0, sum_cr = 0, tp, t, res_plain = 0, res_ckpt = 0;
	char gen[4200];
	for (int round = 0; round < rounds; round++) {
		uint64_t step = (uint64_t)round + 1;
		double prev_pw = sum_pw, prev_cw = sum_cw;
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

		char files[world + 2][4200];
		for (int r = 0; r < world; r++)
			snprintf(files[r], sizeof files[r], "%s/rank-%05d.safetensors", base, r);
		double res = make_cold(files, world);
		res_plain = res > res_plain ? res : res_plain;
		TIMED(tp, plain_read(path, back, bytes));
		snprintf(gen, sizeof gen, "%s/step-%08llu", root, (unsigned long long)step);
		for (int r = 0; r < world; r++)
			snprintf(files[r], sizeof files[r], "%s/rank-%05d.safetensors", gen, r);
		snprintf(files[world], sizeof files[world], "%s/manifest.json", gen);
		res = make_cold(files, world + 1);
		res_ckpt = res > res_ckpt ? res : res_ckpt;
		ckpt_restore_info info;
		memset(state, 0, bytes);
		TIMED(t, rc = ckpt_restore(c, &info));
		if (rc < 0 || info.step != step)
			die(ckpt_last_error(c)->msg, EIO);
		rr[round] = tp / t;
		if (rank == 0)
			fprintf(stderr, "round %d: save %.1f vs %.1f MiB/s, restore %.1f vs %.1f MiB/s (libckpt vs plain)\n",
				round + 1, (double)bytes * world / 1048576.0 / (sum_cw - prev_cw),
				(double)bytes * world / 1048576.0 / (sum_pw - prev_pw), (double)bytes * world / 1048576.0 / t,
				(double)bytes * world / 1048576.0 / tp);
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
		spread("ckpt_save_ratio", rw, rounds);
		printf("plain_read_mib_per_s=%.1f\nckpt_restore_verified_mib_per_s=%.1f\n", total * rounds / sum_pr,
		       total * rounds / sum_cr);
		spread("ckpt_restore_ratio", rr, rounds);
		printf("cache_emptied_by=%s\n", dropped_all ? "drop_caches" : "fadvise_dontneed");
		printf("plain_read_resident_max=%.4f\nckpt_restore_resident_max=%.4f\n", res_plain, res_ckpt);
		if (res_plain > 0.01 || res_ckpt > 0.01)
			printf("cold_cache_warning=up to %.0f%% of a file read was in the page cache: the read figures are not disk figures\n",
			       100 * (res_plain > res_ckpt ? res_plain : res_ckpt));
	}
out:
	ckpt_close(c);
	ckpt_state_free(st);
	free(state);
	free(back);
	free(rw);
	free(rr);
	MPI_Finalize();
	return 0;
}
