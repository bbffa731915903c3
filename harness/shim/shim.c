/*
 * The fault shim: an LD_PRELOAD library that brings the harness's fault plan
 * to any program (no libfiu points needed). Loaded into the trainer's ranks
 * only (mpirun -x LD_PRELOAD=...), never into mpirun/orted/prted: in those it
 * switches itself off (see launcher_process()).
 *
 * What it does per intercepted call on a path under the checkpoint root
 * ($CKPT_HARNESS_CKPT_DIR, else $CKPT_FAULT_ROOT): builds a ckpt_fault_ctx
 * (rank, the beacon's step and phase, op, canonical path, fd, bytes), asks
 * the shared matcher (harness/faultmatch.c: the same plan, counting and fault
 * log as the libfiu injector), acts (errno, short, torn + kill, kill, delay,
 * power_loss = kill, damage at rest), and, when $CKPT_UNDO_LOG is set, writes
 * libckpt's undo record (ckpt/src/undo.c, compiled in) for every change.
 *
 * Invariants that keep it safe inside MPI ranks (PLATFORM-NOTES.md):
 *   - memory functions (malloc, mmap, munmap, ...) are never wrapped: Open MPI
 *     and UCX hook them, and a preload that wraps them deadlocks MPI_Init;
 *   - every real symbol is resolved with dlsym(RTLD_NEXT) in the constructor,
 *     and lazily by any wrapper called before it (other libraries'
 *     constructors run first); until the constructor is done, every wrapper
 *     passes straight through;
 *   - the hot path of an fd call is one lookup in a byte table indexed by fd
 *     (fdtab, calloc'ed once in the constructor, before main and MPI_Init,
 *     sized by RLIMIT_NOFILE and never freed or grown: an fd above it is
 *     treated as outside the root); a path call outside the root costs a
 *     lexical normalisation on the stack (plus getcwd for a relative path);
 *     no allocation, no lock, no extra syscall for an absolute path;
 *   - a per-thread recursion guard: while the shim works (matching, logging,
 *     the undo record, damage), every wrapper it reaches passes through.
 *
 * The nth counts and the beacon's step/phase live in one small file per rank
 * and attempt, mmap'ed MAP_SHARED ($CKPT_FAULT_LOG.rank-R.attempt-A.shm, else
 * next to the plan; anonymous when neither is set), so the rank's threads,
 * forked children and exec'ed helpers all count together. The harness gives
 * each run its own work directory, so a file never outlives its attempt.
 */
#undef _FORTIFY_SOURCE
#include <dirent.h>
#include <ftw.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "ckpt/fault.h"
#include "damage.h"
#include "faultmatch.h"
#include "plan.h"

/* The undo record writer of libckpt (ckpt/src/undo.c, compiled into the shim). */
#include "undo.h"

#define EXPORT __attribute__((visibility("default")))
#define TLS __thread __attribute__((tls_model("initial-exec")))

/* ---- real symbols -------------------------------------------------------- */

#define SHIM_REALS(X) \
	X(open, int, (const char *, int, ...)) \
	X(open64, int, (const char *, int, ...)) \
	X(openat, int, (int, const char *, int, ...)) \
	X(openat64, int, (int, const char *, int, ...)) \
	X(__open_2, int, (const char *, int)) \
	X(__open64_2, int, (const char *, int)) \
	X(__openat_2, int, (int, const char *, int)) \
	X(__openat64_2, int, (int, const char *, int)) \
	X(creat, int, (const char *, mode_t)) \
	X(creat64, int, (const char *, mode_t)) \
	X(fopen, FILE *, (const char *, const char *)) \
	X(fopen64, FILE *, (const char *, const char *)) \
	X(freopen, FILE *, (const char *, const char *, FILE *)) \
	X(freopen64, FILE *, (const char *, const char *, FILE *)) \
	X(fdopen, FILE *, (int, const char *)) \
	X(fclose, int, (FILE *)) \
	X(fwrite, size_t, (const void *, size_t, size_t, FILE *)) \
	X(fwrite_unlocked, size_t, (const void *, size_t, size_t, FILE *)) \
	X(fputs, int, (const char *, FILE *)) \
	X(fputs_unlocked, int, (const char *, FILE *)) \
	X(fputc, int, (int, FILE *)) \
	X(putc, int, (int, FILE *)) \
	X(fputc_unlocked, int, (int, FILE *)) \
	X(putc_unlocked, int, (int, FILE *)) \
	X(vfprintf, int, (FILE *, const char *, va_list)) \
	X(__vfprintf_chk, int, (FILE *, int, const char *, va_list)) \
	X(write, ssize_t, (int, const void *, size_t)) \
	X(pwrite, ssize_t, (int, const void *, size_t, off_t)) \
	X(pwrite64, ssize_t, (int, const void *, size_t, off_t)) \
	X(writev, ssize_t, (int, const struct iovec *, int)) \
	X(pwritev, ssize_t, (int, const struct iovec *, int, off_t)) \
	X(pwritev64, ssize_t, (int, const struct iovec *, int, off_t)) \
	X(pwritev2, ssize_t, (int, const struct iovec *, int, off_t, int)) \
	X(pwritev64v2, ssize_t, (int, const struct iovec *, int, off_t, int)) \
	X(read, ssize_t, (int, void *, size_t)) \
	X(__read_chk, ssize_t, (int, void *, size_t, size_t)) \
	X(pread, ssize_t, (int, void *, size_t, off_t)) \
	X(pread64, ssize_t, (int, void *, size_t, off_t)) \
	X(__pread_chk, ssize_t, (int, void *, size_t, off_t, size_t)) \
	X(__pread64_chk, ssize_t, (int, void *, size_t, off_t, size_t)) \
	X(readv, ssize_t, (int, const struct iovec *, int)) \
	X(preadv, ssize_t, (int, const struct iovec *, int, off_t)) \
	X(preadv64, ssize_t, (int, const struct iovec *, int, off_t)) \
	X(preadv2, ssize_t, (int, const struct iovec *, int, off_t, int)) \
	X(preadv64v2, ssize_t, (int, const struct iovec *, int, off_t, int)) \
	X(fsync, int, (int)) \
	X(fdatasync, int, (int)) \
	X(sync_file_range, int, (int, off_t, off_t, unsigned int)) \
	X(syncfs, int, (int)) \
	X(sync, void, (void)) \
	X(rename, int, (const char *, const char *)) \
	X(renameat, int, (int, const char *, int, const char *)) \
	X(renameat2, int, (int, const char *, int, const char *, unsigned int)) \
	X(link, int, (const char *, const char *)) \
	X(linkat, int, (int, const char *, int, const char *, int)) \
	X(unlink, int, (const char *)) \
	X(unlinkat, int, (int, const char *, int)) \
	X(remove, int, (const char *)) \
	X(mkdir, int, (const char *, mode_t)) \
	X(mkdirat, int, (int, const char *, mode_t)) \
	X(rmdir, int, (const char *)) \
	X(truncate, int, (const char *, off_t)) \
	X(truncate64, int, (const char *, off_t)) \
	X(ftruncate, int, (int, off_t)) \
	X(ftruncate64, int, (int, off_t)) \
	X(fallocate, int, (int, int, off_t, off_t)) \
	X(fallocate64, int, (int, int, off_t, off_t)) \
	X(posix_fallocate, int, (int, off_t, off_t)) \
	X(posix_fallocate64, int, (int, off_t, off_t)) \
	X(copy_file_range, ssize_t, (int, off_t *, int, off_t *, size_t, unsigned int)) \
	X(sendfile, ssize_t, (int, int, off_t *, size_t)) \
	X(sendfile64, ssize_t, (int, int, off_t *, size_t)) \
	X(close, int, (int)) \
	X(close_range, int, (unsigned int, unsigned int, int)) \
	X(dup, int, (int)) \
	X(dup2, int, (int, int)) \
	X(dup3, int, (int, int, int)) \
	X(fcntl, int, (int, int, ...)) \
	X(fcntl64, int, (int, int, ...)) \
	X(opendir, DIR *, (const char *)) \
	X(fdopendir, DIR *, (int)) \
	X(closedir, int, (DIR *))

#define DECL_REAL(name, ret, args) static ret(*real_##name) args;
SHIM_REALS(DECL_REAL)

static void *resolve(const char *name)
{
	return dlsym(RTLD_NEXT, name);
}

/* The real function, resolved now if a wrapper runs before the constructor. */
#define REAL(name) \
	({ \
		if (!real_##name) \
			real_##name = (__typeof__(real_##name))resolve(#name); \
		real_##name; \
	})

/* ---- state (set once in the constructor) --------------------------------- */

struct shim_shared {
	uint64_t magic;
	_Atomic uint64_t step;
	atomic_uint phase_seq;      /* seqlock over phase: odd while written */
	atomic_int announced;       /* 1: a step was announced, 2: a phase */
	char phase[32];
	atomic_int seen[];          /* per fault: matching calls of this rank */
};
#define SHIM_MAGIC 0x316d696873746b63ULL   /* "cktshim1" */

static int ready;                   /* constructor done: wrappers may intercept */
static int undo_on;                 /* write the undo record (libckpt's own I/O layer is not in this process) */
static int rank, attempt = 1;
static char root[PATH_MAX], root_real[PATH_MAX];
static size_t root_len, root_real_len;
static harness_fault *plan;
static int nplan;
static int log_fd = -1;
static struct shim_shared *shared;
static unsigned char *fdtab;        /* per fd: 0 outside, FD_UNDER under the root, FD_ABOVE an ancestor dir */
static int fdcap;
enum { FD_UNDER = 1, FD_ABOVE = 2 };

static TLS int guard;
static TLS ckpt_fault_ctx cur = { .fd = -1 };
static TLS char cur_phase[32];

/* The context of the call being decided: read by undo.c for its records. */
const ckpt_fault_ctx *ckpt_fault_current(void)
{
	return &cur;
}

/* ---- paths --------------------------------------------------------------- */

/* Lexically normalise absolute path p into out: no "//", ".", "..". */
static int normalize(const char *p, char *out, size_t len)
{
	size_t o = 0;

	if (p[0] != '/' || len < 2)
		return -1;
	out[o++] = '/';
	while (*p) {
		while (*p == '/')
			p++;
		const char *e = p;
		while (*e && *e != '/')
			e++;
		size_t n = (size_t)(e - p);
		if (n == 0)
			break;
		if (n == 1 && p[0] == '.') {
			/* nothing */
		} else if (n == 2 && p[0] == '.' && p[1] == '.') {
			while (o > 1 && out[o - 1] != '/')
				o--;
			if (o > 1)
				o--;
		} else {
			if (o + n + 2 > len)
				return -1;
			if (o > 1)
				out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		p = e;
	}
	out[o] = '\0';
	return 0;
}

static int has_prefix(const char *p, const char *r, size_t rl)
{
	return rl && strncmp(p, r, rl) == 0 && (p[rl] == '\0' || p[rl] == '/');
}

/* p (normalised) is the root or below it. */
static int under_root(const char *p)
{
	return has_prefix(p, root, root_len) || has_prefix(p, root_real, root_real_len);
}

/* p (normalised) is a proper ancestor of the root. */
static int above_root(const char *p)
{
	size_t n = strlen(p);
	if (n == 1)
		return 1;      /* "/" */
	return (n < root_len && strncmp(root, p, n) == 0 && root[n] == '/') ||
	       (n < root_real_len && strncmp(root_real, p, n) == 0 && root_real[n] == '/');
}

static int fd_path(int fd, char *out, size_t len)
{
	char proc[64];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(proc, out, len - 1);
	if (n <= 0)
		return -1;
	out[n] = '\0';
	return 0;
}

static int fd_mark(int fd)
{
	return fd >= 0 && fd < fdcap ? fdtab[fd] : 0;
}

/*
 * The name an fd under the root was opened at, for the low fds: the slow path
 * of a call on it then costs one fstat (to see that the fd still is that
 * file) instead of a readlink of /proc/self/fd. As in libckpt's I/O layer,
 * an fd keeps the name it was opened at (a later rename does not change it).
 */
#define PCACHE_FDS 1024
struct pslot {
	_Atomic uint64_t ino;       /* 0: empty */
	uint64_t dev;
	char path[PATH_MAX];
};
static struct pslot *pcache;        /* PCACHE_FDS slots, calloc'ed in the constructor */

static void fd_forget(int fd)
{
	if (pcache && fd >= 0 && fd < PCACHE_FDS)
		atomic_store(&pcache[fd].ino, 0);
}

static void fd_remember(int fd, const char *canon)
{
	struct stat st;

	if (!pcache || fd < 0 || fd >= PCACHE_FDS)
		return;
	fd_forget(fd);
	if (fstat(fd, &st) < 0 || st.st_ino == 0)
		return;
	snprintf(pcache[fd].path, sizeof pcache[fd].path, "%s", canon);
	pcache[fd].dev = (uint64_t)st.st_dev;
	atomic_store(&pcache[fd].ino, (uint64_t)st.st_ino);
}

static void fd_copy(int from, int to)
{
	if (!pcache || from < 0 || from >= PCACHE_FDS || to < 0 || to >= PCACHE_FDS || from == to)
		return;
	fd_forget(to);
	uint64_t ino = atomic_load(&pcache[from].ino);
	if (!ino)
		return;
	memcpy(pcache[to].path, pcache[from].path, sizeof pcache[to].path);
	pcache[to].dev = pcache[from].dev;
	atomic_store(&pcache[to].ino, ino);
}

/* The cached name of fd if it still names the same file. */
static int fd_cached(int fd, char *out, size_t len)
{
	struct stat st;

	if (!pcache || fd < 0 || fd >= PCACHE_FDS)
		return -1;
	uint64_t ino = atomic_load(&pcache[fd].ino);
	if (!ino || fstat(fd, &st) < 0 || (uint64_t)st.st_ino != ino || (uint64_t)st.st_dev != pcache[fd].dev)
		return -1;
	size_t n = strnlen(pcache[fd].path, sizeof pcache[fd].path - 1);
	if (n >= len)
		return -1;
	memcpy(out, pcache[fd].path, n);
	out[n] = '\0';
	return atomic_load(&pcache[fd].ino) == ino ? 0 : -1;
}

static void fd_set_mark(int fd, int m)
{
	if (fd >= 0 && fd < fdcap)
		fdtab[fd] = (unsigned char)m;
	if (m != FD_UNDER)
		fd_forget(fd);
}

/* dup and friends: the copy is where the original is. */
static void fd_dup_mark(int from, int to)
{
	fd_set_mark(to, fd_mark(from));
	if (fd_mark(from) == FD_UNDER)
		fd_copy(from, to);
}

/* A new fd under the root, opened at canon (NULL: name unknown, e.g. O_TMPFILE). */
static void fd_set_under(int fd, const char *canon)
{
	fd_set_mark(fd, FD_UNDER);
	if (canon)
		fd_remember(fd, canon);
	else
		fd_forget(fd);
}

/* Mark a new fd by the (normalised) path it was opened at. */
static void fd_mark_path(int fd, const char *canon)
{
	fd_set_mark(fd, under_root(canon) ? FD_UNDER : above_root(canon) ? FD_ABOVE : 0);
}

/* A new fd opened outside the root: an ancestor of the root, or nothing (clears a stale mark). */
static void fd_mark_new(int fd, const char *canon)
{
	if (canon[0] == '/')
		fd_mark_path(fd, canon);
	else
		fd_set_mark(fd, 0);
}

/*
 * Resolve (dirfd, p) to a normalised absolute path in out. Returns 1 if it is
 * under the root, 0 if not (or unknown: a dirfd the shim did not see open).
 */
static int resolve_at(int dirfd, const char *p, char *out, size_t len)
{
	char tmp[2 * PATH_MAX];

	out[0] = '\0';
	if (!root_len || !p)
		return 0;
	if (p[0] == '/') {
		if (normalize(p, out, len) < 0)
			return 0;
		return under_root(out);
	}
	if (dirfd == AT_FDCWD) {
		if (!getcwd(tmp, PATH_MAX))
			return 0;
	} else {
		if (!fd_mark(dirfd) || (fd_cached(dirfd, tmp, PATH_MAX) < 0 && fd_path(dirfd, tmp, PATH_MAX) < 0))
			return 0;
	}
	size_t n = strlen(tmp);
	if (n + strlen(p) + 2 > sizeof tmp)
		return 0;
	tmp[n] = '/';
	strcpy(tmp + n + 1, p);
	if (normalize(tmp, out, len) < 0)
		return 0;
	return under_root(out);
}

/* The path of an fd marked under the root; 1 if it still is (re-checked: the fd may have been reused unseen). */
static int fd_under(int fd, char *out, size_t len)
{
	char tmp[PATH_MAX];
	if (fd_cached(fd, out, len) == 0)
		return 1;
	if (fd_path(fd, tmp, sizeof tmp) < 0 || normalize(tmp, out, len) < 0) {
		fd_set_mark(fd, 0);
		return 0;
	}
	if (!under_root(out)) {
		fd_set_mark(fd, above_root(out) ? FD_ABOVE : 0);
		return 0;
	}
	return 1;
}

/* ---- deciding and acting ------------------------------------------------- */

typedef struct verdict {
	int fail;               /* return -1 with errno = err, doing nothing */
	int err;
	int cut;                /* write at most `bytes` */
	size_t bytes;
	int kill_after;         /* SIGKILL after the (partial) write */
} verdict;

static void load_beacon(void)
{
	cur.step = 0;
	cur.phase = NULL;
	if (!shared)
		return;
	int a = atomic_load(&shared->announced);
	if (a & 1)
		cur.step = atomic_load(&shared->step);
	if (a & 2) {
		for (int tries = 0; tries < 100; tries++) {
			unsigned s = atomic_load(&shared->phase_seq);
			if (s & 1)
				continue;
			memcpy(cur_phase, shared->phase, sizeof cur_phase);
			atomic_thread_fence(memory_order_acquire);
			if (atomic_load(&shared->phase_seq) == s)
				break;
		}
		cur_phase[sizeof cur_phase - 1] = '\0';
		cur.phase = cur_phase[0] ? cur_phase : NULL;
	}
}

static void set_ctx(const char *op, const char *path, int fd, size_t bytes)
{
	load_beacon();
	cur.rank = rank;
	cur.op = op;
	cur.path = path;
	cur.fd = fd;
	cur.bytes = bytes;
}

/* $CKPT_HARNESS_GENERATIONS: the program's generation names (trainer.generations), else libckpt's. */
static const char *generations;

static void apply_damage(const harness_fault *f)
{
	harness_damage_apply_fault(f, root_real_len ? root_real : root, generations, stderr);
}

/*
 * Decide the current call (cur set). Carries out kill, delay and damage
 * here; leaves errno / short / torn in *v. `writes`: the op moves data, so
 * short and torn apply (elsewhere they are a plain EIO, as in libckpt).
 */
static void decide(verdict *v, int writes)
{
	int nth;

	*v = (verdict){ 0 };
	if (!nplan)
		return;
	int i = harness_fault_decide(plan, nplan, shared->seen, &cur, attempt, &nth);
	if (i < 0)
		return;
	const harness_fault *f = &plan[i];
	harness_fault_log(log_fd, 2, REAL(write), i, f, &cur, attempt, nth);
	switch (f->action) {
	case HARNESS_KILL:
	case HARNESS_NODE_LOSS:       /* each rank of the node dies; the harness wipes the node's directory */
	case HARNESS_POWER_LOSS:      /* the harness rolls back what was not durable afterwards */
		raise(SIGKILL);
		break;
	case HARNESS_DELAY: {
		struct timespec d = { f->arg / 1000, (f->arg % 1000) * 1000000L };
		while (nanosleep(&d, &d) < 0 && errno == EINTR)
			;
		break;
	}
	case HARNESS_DAMAGE:
		apply_damage(f);
		break;
	case HARNESS_SHORT:
	case HARNESS_TORN:
		if (writes) {
			v->cut = 1;
			v->bytes = f->arg > 0 ? (size_t)f->arg : 0;
			v->kill_after = f->action == HARNESS_TORN;
		} else {
			v->fail = 1;
			v->err = EIO;
		}
		break;
	case HARNESS_ERRNO:
	default:
		v->fail = 1;
		v->err = f->err > 0 ? f->err : EIO;
		break;
	}
}

/*
 * The undo record is written when CKPT_UNDO_LOG is set, unless libckpt is
 * loaded in this process: its own I/O layer records its changes to the same
 * file, and two writers would record each change twice. CKPT_UNDO_LOG_SHIM
 * (set instead of CKPT_UNDO_LOG, so libckpt records nothing) gives the
 * record to the shim even then: reftrain under `--inject shim`.
 */
static int undo_armed(void)
{
	return undo_on && ckpt__undo_armed();
}

/* Undo record of a write of len bytes at off (-1: the fd's own position). */
static uint64_t undo_write(int fd, const char *path, off_t off, size_t len)
{
	char proc[64];
	struct stat st;

	if (!len || !undo_armed())
		return 0;
	if (off < 0) {
		int fl = REAL(fcntl)(fd, F_GETFL);
		if (fl >= 0 && (fl & O_APPEND))
			off = fstat(fd, &st) == 0 ? st.st_size : 0;
		else
			off = lseek(fd, 0, SEEK_CUR);
	}
	/* A private, readable description of the same file, at the write's offset:
	 * the fd's own may be write-only or shared with other threads. */
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	int r = REAL(open)(proc, O_RDONLY | O_CLOEXEC);
	if (r < 0)
		return ckpt__undo_write(rank, fd, path, len);
	lseek(r, off < 0 ? 0 : off, SEEK_SET);
	uint64_t u = ckpt__undo_write(rank, r, path, len);
	REAL(close)(r);
	return u;
}

static uint64_t undo_truncate(int fd, const char *path, off_t size)
{
	char proc[64];

	if (!undo_armed())
		return 0;
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	int r = fd >= 0 ? REAL(open)(proc, O_RDONLY | O_CLOEXEC) : REAL(open)(path, O_RDONLY | O_CLOEXEC);
	if (r < 0)
		return 0;
	uint64_t u = ckpt__undo_ftruncate(rank, r, path, size);
	REAL(close)(r);
	return u;
}

static void undo_failed(uint64_t u, long r)
{
	if (r < 0 && u) {
		int e = errno;
		ckpt__undo_failed(rank, u);
		errno = e;
	}
}

static void undo_fsync(int fd, const char *path, long r)
{
	if (r == 0 && undo_armed()) {
		int e = errno;
		ckpt__undo_fsync(rank, fd, path);
		errno = e;
	}
}

/* ---- wrappers: open family ----------------------------------------------- */

static int has_mode(int flags)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

static int open_slow(int dirfd, const char *path, int flags, mode_t mode,
		     int (*call)(int, const char *, int, mode_t))
{
	char canon[PATH_MAX] = "";
	verdict v;
	long fd;

	if (guard || !ready || !resolve_at(dirfd, path, canon, sizeof canon)) {
		fd = call(dirfd, path, flags, mode);
		if (fd >= 0 && ready && !guard)
			fd_mark_new((int)fd, canon);
		return (int)fd;
	}
	guard = 1;
	set_ctx("open", canon, -1, 0);
	decide(&v, 0);
	if (v.fail) {
		guard = 0;
		errno = v.err;
		return -1;
	}
	uint64_t u = undo_armed() ? ckpt__undo_open(rank, canon, flags) : 0;
	fd = call(dirfd, path, flags, mode);
	undo_failed(u, fd);
	if (fd >= 0)
		fd_set_under((int)fd, (flags & O_TMPFILE) == O_TMPFILE ? NULL : canon);
	int e = errno;
	guard = 0;
	errno = e;
	return (int)fd;
}

static int call_openat(int d, const char *p, int f, mode_t m) { return REAL(openat)(d, p, f, m); }
static int call_openat64(int d, const char *p, int f, mode_t m) { return REAL(openat64)(d, p, f, m); }
static int call_creat(int d, const char *p, int f, mode_t m) { (void)d; (void)f; return REAL(creat)(p, m); }
static int call_creat64(int d, const char *p, int f, mode_t m) { (void)d; (void)f; return REAL(creat64)(p, m); }

#define MODE_ARG(flags, last) \
	mode_t mode = 0; \
	if (has_mode(flags)) { \
		va_list ap; \
		va_start(ap, last); \
		mode = (mode_t)va_arg(ap, int); \
		va_end(ap); \
	}

EXPORT int open(const char *path, int flags, ...)
{
	MODE_ARG(flags, flags);
	return open_slow(AT_FDCWD, path, flags, mode, call_openat);
}

EXPORT int open64(const char *path, int flags, ...)
{
	MODE_ARG(flags, flags);
	return open_slow(AT_FDCWD, path, flags, mode, call_openat64);
}

EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	MODE_ARG(flags, flags);
	return open_slow(dirfd, path, flags, mode, call_openat);
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
	MODE_ARG(flags, flags);
	return open_slow(dirfd, path, flags, mode, call_openat64);
}

EXPORT int __open_2(const char *path, int flags)
{
	return open_slow(AT_FDCWD, path, flags, 0, call_openat);
}

EXPORT int __open64_2(const char *path, int flags)
{
	return open_slow(AT_FDCWD, path, flags, 0, call_openat64);
}

EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
	return open_slow(dirfd, path, flags, 0, call_openat);
}

EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
	return open_slow(dirfd, path, flags, 0, call_openat64);
}

EXPORT int creat(const char *path, mode_t mode)
{
	return open_slow(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, call_creat);
}

EXPORT int creat64(const char *path, mode_t mode)
{
	return open_slow(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, call_creat64);
}

/* open(2) flags of an fopen mode string. */
static int fopen_flags(const char *m)
{
	int f = 0;
	switch (m ? m[0] : 'r') {
	case 'w': f = O_CREAT | O_TRUNC; break;
	case 'a': f = O_CREAT | O_APPEND; break;
	default: break;
	}
	if (m && strchr(m, 'x'))
		f |= O_EXCL;
	return f;
}

static FILE *fopen_slow(const char *path, const char *mode, FILE *re, int large)
{
	char canon[PATH_MAX] = "";
	verdict v;
	FILE *fp;

#define FOPEN_CALL() \
	(re ? (large ? REAL(freopen64)(path, mode, re) : REAL(freopen)(path, mode, re)) \
	    : (large ? REAL(fopen64)(path, mode) : REAL(fopen)(path, mode)))
	if (re && fileno(re) >= 0)
		fd_set_mark(fileno(re), 0);
	if (guard || !ready || !path || !resolve_at(AT_FDCWD, path, canon, sizeof canon)) {
		fp = FOPEN_CALL();
		if (fp && ready && !guard)
			fd_mark_new(fileno(fp), canon);
		return fp;
	}
	guard = 1;
	set_ctx("open", canon, -1, 0);
	decide(&v, 0);
	if (v.fail) {
		guard = 0;
		errno = v.err;
		return NULL;
	}
	uint64_t u = undo_armed() ? ckpt__undo_open(rank, canon, fopen_flags(mode)) : 0;
	fp = FOPEN_CALL();
	undo_failed(u, fp ? 0 : -1);
	if (fp)
		fd_set_under(fileno(fp), canon);
	int e = errno;
	guard = 0;
	errno = e;
	return fp;
#undef FOPEN_CALL
}

EXPORT FILE *fopen(const char *path, const char *mode) { return fopen_slow(path, mode, NULL, 0); }
EXPORT FILE *fopen64(const char *path, const char *mode) { return fopen_slow(path, mode, NULL, 1); }
EXPORT FILE *freopen(const char *path, const char *mode, FILE *fp) { return fopen_slow(path, mode, fp, 0); }
EXPORT FILE *freopen64(const char *path, const char *mode, FILE *fp) { return fopen_slow(path, mode, fp, 1); }

EXPORT FILE *fdopen(int fd, const char *mode)
{
	return REAL(fdopen)(fd, mode);     /* the fd keeps its mark */
}

/* ---- wrappers: fd calls -------------------------------------------------- */

/* Fast path test + context for an fd call; 1 if the shim must decide it. */
static int fd_enter(int fd, const char *op, size_t bytes, char *path, size_t len)
{
	if (fd < 0 || fd >= fdcap || fdtab[fd] != FD_UNDER || guard || !ready)
		return 0;
	guard = 1;
	if (!fd_under(fd, path, len)) {
		guard = 0;
		return 0;
	}
	set_ctx(op, path, fd, bytes);
	return 1;
}

static long fd_leave(long r)
{
	int e = errno;
	guard = 0;
	errno = e;
	return r;
}

static long fd_fail(const verdict *v)
{
	guard = 0;
	errno = v->err;
	return -1;
}

static void after_write(const verdict *v)
{
	if (v->kill_after)
		raise(SIGKILL);
}

static size_t cap_len(const verdict *v, size_t n)
{
	return v->cut && v->bytes < n ? v->bytes : n;
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	char path[PATH_MAX];
	verdict v;

	if (!fd_enter(fd, "write", n, path, sizeof path))
		return REAL(write)(fd, buf, n);
	decide(&v, 1);
	if (v.fail)
		return fd_fail(&v);
	n = cap_len(&v, n);
	uint64_t u = undo_write(fd, path, -1, n);
	ssize_t r = REAL(write)(fd, buf, n);
	undo_failed(u, r);
	after_write(&v);
	return fd_leave(r);
}

static ssize_t pwrite_any(int fd, const void *buf, size_t n, off_t off, int large)
{
	char path[PATH_MAX];
	verdict v;

	if (!fd_enter(fd, "write", n, path, sizeof path))
		return large ? REAL(pwrite64)(fd, buf, n, off) : REAL(pwrite)(fd, buf, n, off);
	decide(&v, 1);
	if (v.fail)
		return fd_fail(&v);
	n = cap_len(&v, n);
	uint64_t u = undo_write(fd, path, off, n);
	ssize_t r = large ? REAL(pwrite64)(fd, buf, n, off) : REAL(pwrite)(fd, buf, n, off);
	undo_failed(u, r);
	after_write(&v);
	return fd_leave(r);
}

EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) { return pwrite_any(fd, buf, n, off, 0); }
EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) { return pwrite_any(fd, buf, n, off, 1); }

static size_t iov_total(const struct iovec *iov, int cnt)
{
	size_t t = 0;
	for (int i = 0; i < cnt; i++)
		t += iov[i].iov_len;
	return t;
}

/* The first `limit` bytes of iov as a new vector in out (at most IOV_MAX entries). */
static int iov_cut(const struct iovec *iov, int cnt, size_t limit, struct iovec *out)
{
	int k = 0;
	for (int i = 0; i < cnt && limit > 0 && k < IOV_MAX; i++) {
		out[k] = iov[i];
		if (out[k].iov_len > limit)
			out[k].iov_len = limit;
		limit -= out[k].iov_len;
		k++;
	}
	return k;
}

enum vkind { V_WRITEV, V_PWRITEV, V_PWRITEV64, V_PWRITEV2, V_PWRITEV64V2 };

static ssize_t vcall(enum vkind k, int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	switch (k) {
	case V_WRITEV: return REAL(writev)(fd, iov, cnt);
	case V_PWRITEV: return REAL(pwritev)(fd, iov, cnt, off);
	case V_PWRITEV64: return REAL(pwritev64)(fd, iov, cnt, off);
	case V_PWRITEV2: return REAL(pwritev2)(fd, iov, cnt, off, flags);
	default: return REAL(pwritev64v2)(fd, iov, cnt, off, flags);
	}
}

static ssize_t writev_any(enum vkind k, int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	char path[PATH_MAX];
	struct iovec cut[IOV_MAX];
	verdict v;
	size_t n = iov && cnt > 0 ? iov_total(iov, cnt) : 0;

	if (!fd_enter(fd, "write", n, path, sizeof path))
		return vcall(k, fd, iov, cnt, off, flags);
	decide(&v, 1);
	if (v.fail)
		return fd_fail(&v);
	if (v.cut && v.bytes < n) {
		cnt = iov_cut(iov, cnt, v.bytes, cut);
		iov = cut;
		n = v.bytes;
	}
	/* writev and an offset of -1 (pwritev2) write at the fd's position */
	uint64_t u = undo_write(fd, path, k == V_WRITEV ? -1 : off, n);
	ssize_t r = cnt > 0 ? vcall(k, fd, iov, cnt, off, flags) : 0;
	undo_failed(u, r);
	after_write(&v);
	return fd_leave(r);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt) { return writev_any(V_WRITEV, fd, iov, cnt, -1, 0); }
EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return writev_any(V_PWRITEV, fd, iov, cnt, off, 0);
}
EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return writev_any(V_PWRITEV64, fd, iov, cnt, off, 0);
}
EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	return writev_any(V_PWRITEV2, fd, iov, cnt, off, flags);
}
EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	return writev_any(V_PWRITEV64V2, fd, iov, cnt, off, flags);
}

/*
 * stdio reaches write(2) through glibc-internal calls the shim cannot see;
 * fwrite is the data path C trainers use, so it is decided here: errno sets
 * the stream's error flag, short/torn write fewer items.
 */
EXPORT size_t fwrite(const void *buf, size_t size, size_t nmemb, FILE *fp)
{
	char path[PATH_MAX];
	verdict v;
	int fd = fileno(fp);
	size_t n = size * nmemb;

	if (!size || !fd_enter(fd, "write", n, path, sizeof path))
		return REAL(fwrite)(buf, size, nmemb, fp);
	decide(&v, 1);
	if (v.fail) {
		guard = 0;
		errno = v.err;
		return 0;
	}
	if (v.cut && v.bytes < n)
		nmemb = v.bytes / size;
	off_t pos = ftello(fp);
	uint64_t u = undo_write(fd, path, pos, size * nmemb);
	size_t r = REAL(fwrite)(buf, size, nmemb, fp);
	undo_failed(u, r < nmemb ? -1 : 0);
	if (v.kill_after) {
		fflush(fp);
		raise(SIGKILL);
	}
	fd_leave(0);
	return r;
}

/*
 * The other stdio writers (fputs, fputc/putc, fprintf/vfprintf and their
 * _unlocked and fortified forms): on a stream under the root, their bytes go
 * through fwrite above, so they are decided, logged and recorded the same
 * way (printf formats into a buffer first); elsewhere, straight through.
 */
/* glibc's optimizing macros for some of these names (bits/stdio.h) */
#undef fwrite_unlocked
#undef fputc_unlocked
#undef putc_unlocked
#undef putc
#undef fputc

static int fp_under(FILE *fp)
{
	int fd = fp && ready && !guard ? fileno(fp) : -1;
	return fd >= 0 && fd < fdcap && fdtab[fd] == FD_UNDER;
}

static int put_bytes(const char *s, size_t n, FILE *fp)
{
	return n == 0 || fwrite(s, 1, n, fp) == n ? 0 : EOF;
}

static int print_under(FILE *fp, const char *fmt, va_list ap)
{
	char *s;
	int n = vasprintf(&s, fmt, ap);
	if (n < 0)
		return n;
	int r = put_bytes(s, (size_t)n, fp) == 0 ? n : -1;
	free(s);
	return r;
}

EXPORT size_t fwrite_unlocked(const void *buf, size_t size, size_t nmemb, FILE *fp)
{
	return fp_under(fp) ? fwrite(buf, size, nmemb, fp) : REAL(fwrite_unlocked)(buf, size, nmemb, fp);
}

EXPORT int fputs(const char *s, FILE *fp)
{
	return fp_under(fp) ? (put_bytes(s, strlen(s), fp) == 0 ? 1 : EOF) : REAL(fputs)(s, fp);
}

EXPORT int fputs_unlocked(const char *s, FILE *fp)
{
	return fp_under(fp) ? (put_bytes(s, strlen(s), fp) == 0 ? 1 : EOF) : REAL(fputs_unlocked)(s, fp);
}

#define PUTC_WRAPPER(name) \
	EXPORT int name(int c, FILE *fp) \
	{ \
		char b = (char)c; \
		if (!fp_under(fp)) \
			return REAL(name)(c, fp); \
		return put_bytes(&b, 1, fp) == 0 ? (unsigned char)c : EOF; \
	}
PUTC_WRAPPER(fputc)
PUTC_WRAPPER(putc)
PUTC_WRAPPER(fputc_unlocked)
PUTC_WRAPPER(putc_unlocked)
#undef PUTC_WRAPPER

EXPORT int vfprintf(FILE *fp, const char *fmt, va_list ap)
{
	return fp_under(fp) ? print_under(fp, fmt, ap) : REAL(vfprintf)(fp, fmt, ap);
}

EXPORT int __vfprintf_chk(FILE *fp, int flag, const char *fmt, va_list ap)
{
	return fp_under(fp) ? print_under(fp, fmt, ap) : REAL(__vfprintf_chk)(fp, flag, fmt, ap);
}

EXPORT int fprintf(FILE *fp, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = fp_under(fp) ? print_under(fp, fmt, ap) : REAL(vfprintf)(fp, fmt, ap);
	va_end(ap);
	return r;
}

EXPORT int __fprintf_chk(FILE *fp, int flag, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = fp_under(fp) ? print_under(fp, fmt, ap) : REAL(__vfprintf_chk)(fp, flag, fmt, ap);
	va_end(ap);
	return r;
}

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	char path[PATH_MAX];
	verdict v;

	if (!fd_enter(fd, "read", n, path, sizeof path))
		return REAL(read)(fd, buf, n);
	decide(&v, 0);
	if (v.fail)
		return fd_fail(&v);
	return fd_leave(REAL(read)(fd, buf, n));
}

EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	char path[PATH_MAX];
	verdict v;

	if (!fd_enter(fd, "read", n, path, sizeof path))
		return REAL(__read_chk)(fd, buf, n, buflen);
	decide(&v, 0);
	if (v.fail)
		return fd_fail(&v);
	return fd_leave(REAL(__read_chk)(fd, buf, n, buflen));
}

/* The positional reads: one body, four entry points. */
enum rkind { R_PREAD, R_PREAD64, R_PREAD_CHK, R_PREAD64_CHK };

static ssize_t rcall(enum rkind k, int fd, void *buf, size_t n, off_t off, size_t buflen)
{
	switch (k) {
	case R_PREAD: return REAL(pread)(fd, buf, n, off);
	case R_PREAD64: return REAL(pread64)(fd, buf, n, off);
	case R_PREAD_CHK: return REAL(__pread_chk)(fd, buf, n, off, buflen);
	default: return REAL(__pread64_chk)(fd, buf, n, off, buflen);
	}
}

static ssize_t pread_any(enum rkind k, int fd, void *buf, size_t n, off_t off, size_t buflen)
{
	char path[PATH_MAX];
	verdict v;

	if (!fd_enter(fd, "read", n, path, sizeof path))
		return rcall(k, fd, buf, n, off, buflen);
	decide(&v, 0);
	if (v.fail)
		return fd_fail(&v);
	return fd_leave(rcall(k, fd, buf, n, off, buflen));
}

EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t off) { return pread_any(R_PREAD, fd, buf, n, off, 0); }
EXPORT ssize_t pread64(int fd, void *buf, size_t n, off_t off) { return pread_any(R_PREAD64, fd, buf, n, off, 0); }
EXPORT ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
	return pread_any(R_PREAD_CHK, fd, buf, n, off, buflen);
}
EXPORT ssize_t __pread64_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
	return pread_any(R_PREAD64_CHK, fd, buf, n, off, buflen);
}

#define READV(name, decl_tail, call_args) \
	EXPORT ssize_t name(int fd, const struct iovec *iov, int cnt decl_tail) \
	{ \
		char path[PATH_MAX]; \
		verdict v; \
		if (!fd_enter(fd, "read", iov && cnt > 0 ? iov_total(iov, cnt) : 0, path, sizeof path)) \
			return REAL(name) call_args; \
		decide(&v, 0); \
		if (v.fail) \
			return fd_fail(&v); \
		return fd_leave(REAL(name) call_args); \
	}
#define COMMA ,
READV(readv, , (fd, iov, cnt))
READV(preadv, COMMA off_t off, (fd, iov, cnt, off))
READV(preadv64, COMMA off_t off, (fd, iov, cnt, off))
READV(preadv2, COMMA off_t off COMMA int flags, (fd, iov, cnt, off, flags))
READV(preadv64v2, COMMA off_t off COMMA int flags, (fd, iov, cnt, off, flags))

/* fsync-like: decide as op; `durable`: success makes the file durable (undo record). */
/*
 * An ancestor of the root made durable (the parent of a root the trainer
 * created): not a fault target, but the undo record must know, or a power
 * cut would take the root's own directory entry away.
 */
static void sync_above(int fd, int r)
{
	char path[PATH_MAX], canon[PATH_MAX];

	if (r != 0 || fd < 0 || fd >= fdcap || fdtab[fd] != FD_ABOVE || guard || !ready || !undo_armed())
		return;
	int e = errno;
	guard = 1;
	if (fd_path(fd, path, sizeof path) == 0 && normalize(path, canon, sizeof canon) == 0) {
		set_ctx("fsync", canon, fd, 0);
		ckpt__undo_fsync(rank, fd, canon);
	}
	guard = 0;
	errno = e;
}

/* syncfs and sync make everything durable: an fsync record for every file and directory under the root. */
static int sync_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag != FTW_F && flag != FTW_D && flag != FTW_DP)
		return 0;
	int fd = REAL(open)(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		set_ctx("fsync", p, fd, 0);
		ckpt__undo_fsync(rank, fd, p);
		REAL(close)(fd);
	}
	return 0;
}

static void sync_tree(void)
{
	const char *r = root_real_len ? root_real : root;
	if (undo_armed())
		nftw(r, sync_one, 16, FTW_PHYS | FTW_MOUNT);
}

/* fsync-like: decide as op; `durable`: success makes the file durable (undo record), 2: the whole tree. */
static int sync_like(int fd, const char *op, int durable, int (*call)(int, void *), void *arg)
{
	char path[PATH_MAX];
	verdict v;

	if (!fd_enter(fd, op, 0, path, sizeof path)) {
		int r = call(fd, arg);
		if (durable)
			sync_above(fd, r);
		return r;
	}
	decide(&v, 0);
	if (v.fail)
		return (int)fd_fail(&v);
	int r = call(fd, arg);
	if (durable == 2 && r == 0)
		sync_tree();
	else if (durable)
		undo_fsync(fd, path, r);
	return (int)fd_leave(r);
}

static int call_fsync(int fd, void *a) { (void)a; return REAL(fsync)(fd); }
static int call_fdatasync(int fd, void *a) { (void)a; return REAL(fdatasync)(fd); }
static int call_syncfs(int fd, void *a) { (void)a; return REAL(syncfs)(fd); }
struct sfr { off_t off, n; unsigned flags; };
static int call_sfr(int fd, void *a)
{
	struct sfr *s = a;
	return REAL(sync_file_range)(fd, s->off, s->n, s->flags);
}

EXPORT int fsync(int fd) { return sync_like(fd, "fsync", 1, call_fsync, NULL); }
EXPORT int fdatasync(int fd) { return sync_like(fd, "fdatasync", 1, call_fdatasync, NULL); }
/* sync_file_range writes data back but promises no durability (no metadata, no cache flush): no undo fsync record. */
EXPORT int sync_file_range(int fd, off_t off, off_t n, unsigned int flags)
{
	struct sfr s = { off, n, flags };
	return sync_like(fd, "fdatasync", 0, call_sfr, &s);
}
/* syncfs makes the whole file system durable: so says the undo record, for everything under the root. */
EXPORT int syncfs(int fd) { return sync_like(fd, "fsync", 2, call_syncfs, NULL); }

/* sync: decided as an fsync of the root itself. */
EXPORT void sync(void)
{
	verdict v;

	if (guard || !ready || !root_len) {
		REAL(sync)();
		return;
	}
	guard = 1;
	set_ctx("fsync", root_real_len ? root_real : root, -1, 0);
	decide(&v, 0);
	if (!v.fail) {          /* sync cannot fail: an errno fault just skips it */
		REAL(sync)();
		sync_tree();
	}
	fd_leave(0);
}

static int trunc_fd(int fd, off_t size, int large)
{
	char path[PATH_MAX];
	verdict v;

	if (!fd_enter(fd, "ftruncate", 0, path, sizeof path))
		return large ? REAL(ftruncate64)(fd, size) : REAL(ftruncate)(fd, size);
	decide(&v, 0);
	if (v.fail)
		return (int)fd_fail(&v);
	uint64_t u = undo_truncate(fd, path, size);
	int r = large ? REAL(ftruncate64)(fd, size) : REAL(ftruncate)(fd, size);
	undo_failed(u, r);
	return (int)fd_leave(r);
}

EXPORT int ftruncate(int fd, off_t size) { return trunc_fd(fd, size, 0); }
EXPORT int ftruncate64(int fd, off_t size) { return trunc_fd(fd, size, 1); }

static int trunc_path(const char *p, off_t size, int large)
{
	char canon[PATH_MAX] = "";
	verdict v;

	if (guard || !ready || !resolve_at(AT_FDCWD, p, canon, sizeof canon))
		return large ? REAL(truncate64)(p, size) : REAL(truncate)(p, size);
	guard = 1;
	set_ctx("ftruncate", canon, -1, 0);
	decide(&v, 0);
	if (v.fail)
		return (int)fd_fail(&v);
	uint64_t u = undo_truncate(-1, canon, size);
	int r = large ? REAL(truncate64)(p, size) : REAL(truncate)(p, size);
	undo_failed(u, r);
	return (int)fd_leave(r);
}

EXPORT int truncate(const char *p, off_t size) { return trunc_path(p, size, 0); }
EXPORT int truncate64(const char *p, off_t size) { return trunc_path(p, size, 1); }

/* fallocate family as "ftruncate": it changes a file's size or contents without write(2). */
static int falloc_any(int fd, int mode, off_t off, off_t len, int posix, int large)
{
	char path[PATH_MAX];
	verdict v;
	struct stat st;

#define FALLOC_CALL() \
	(posix ? (large ? REAL(posix_fallocate64)(fd, off, len) : REAL(posix_fallocate)(fd, off, len)) \
	       : (large ? REAL(fallocate64)(fd, mode, off, len) : REAL(fallocate)(fd, mode, off, len)))
	if (!fd_enter(fd, "ftruncate", (size_t)len, path, sizeof path))
		return FALLOC_CALL();
	decide(&v, 0);
	if (v.fail) {
		if (posix) {         /* posix_fallocate returns the error, errno untouched */
			guard = 0;
			return v.err;
		}
		return (int)fd_fail(&v);
	}
	uint64_t u = 0;
	if (undo_armed() && fstat(fd, &st) == 0) {
		if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE | FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE))
			u = undo_write(fd, path, off, (size_t)(st.st_size > off ? st.st_size - off : 0));
		else if (!(mode & FALLOC_FL_KEEP_SIZE) && off + len > st.st_size)
			u = undo_truncate(fd, path, off + len);
	}
	int r = FALLOC_CALL();
	undo_failed(u, posix ? (r ? -1 : 0) : r);
	return (int)fd_leave(r);
#undef FALLOC_CALL
}

EXPORT int fallocate(int fd, int mode, off_t off, off_t len) { return falloc_any(fd, mode, off, len, 0, 0); }
EXPORT int fallocate64(int fd, int mode, off_t off, off_t len) { return falloc_any(fd, mode, off, len, 0, 1); }
EXPORT int posix_fallocate(int fd, off_t off, off_t len) { return falloc_any(fd, 0, off, len, 1, 0); }
EXPORT int posix_fallocate64(int fd, off_t off, off_t len) { return falloc_any(fd, 0, off, len, 1, 1); }

/* copy_file_range / sendfile: a write to the output fd (and a read of the input one). */
EXPORT ssize_t copy_file_range(int in, off_t *in_off, int out, off_t *out_off, size_t n, unsigned int flags)
{
	char path[PATH_MAX];
	verdict v;

	if (fd_enter(in, "read", n, path, sizeof path)) {
		decide(&v, 0);
		if (v.fail)
			return fd_fail(&v);
		fd_leave(0);
	}
	if (!fd_enter(out, "write", n, path, sizeof path))
		return REAL(copy_file_range)(in, in_off, out, out_off, n, flags);
	decide(&v, 1);
	if (v.fail)
		return fd_fail(&v);
	n = cap_len(&v, n);
	uint64_t u = undo_write(out, path, out_off ? *out_off : -1, n);
	ssize_t r = REAL(copy_file_range)(in, in_off, out, out_off, n, flags);
	undo_failed(u, r);
	after_write(&v);
	return fd_leave(r);
}

static ssize_t sendfile_any(int out, int in, off_t *off, size_t n, int large)
{
	char path[PATH_MAX];
	verdict v;

#define SENDFILE_CALL() (large ? REAL(sendfile64)(out, in, off, n) : REAL(sendfile)(out, in, off, n))
	if (fd_enter(in, "read", n, path, sizeof path)) {
		decide(&v, 0);
		if (v.fail)
			return fd_fail(&v);
		fd_leave(0);
	}
	if (!fd_enter(out, "write", n, path, sizeof path))
		return SENDFILE_CALL();
	decide(&v, 1);
	if (v.fail)
		return fd_fail(&v);
	n = cap_len(&v, n);
	uint64_t u = undo_write(out, path, -1, n);
	ssize_t r = SENDFILE_CALL();
	undo_failed(u, r);
	after_write(&v);
	return fd_leave(r);
#undef SENDFILE_CALL
}

EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t n) { return sendfile_any(out, in, off, n, 0); }
EXPORT ssize_t sendfile64(int out, int in, off_t *off, size_t n) { return sendfile_any(out, in, off, n, 1); }

/* ---- wrappers: descriptor bookkeeping ------------------------------------ */

/* close: an injected error still closes the descriptor, as Linux does. */
EXPORT int close(int fd)
{
	char path[PATH_MAX];
	verdict v;

	if (!fd_enter(fd, "close", 0, path, sizeof path)) {
		fd_set_mark(fd, 0);
		return REAL(close)(fd);
	}
	decide(&v, 0);
	fd_set_mark(fd, 0);
	int r = REAL(close)(fd);
	if (v.fail)
		return (int)fd_fail(&v);
	return (int)fd_leave(r);
}

EXPORT int fclose(FILE *fp)
{
	char path[PATH_MAX];
	verdict v;
	int fd = fileno(fp);

	if (!fd_enter(fd, "close", 0, path, sizeof path)) {
		fd_set_mark(fd, 0);
		return REAL(fclose)(fp);
	}
	decide(&v, 0);
	fd_set_mark(fd, 0);
	int r = REAL(fclose)(fp);
	if (v.fail)
		return (int)fd_fail(&v);
	return (int)fd_leave(r);
}

EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
	int r = REAL(close_range)(first, last, flags);
	if (r == 0 && !(flags & CLOSE_RANGE_CLOEXEC))
		for (unsigned int fd = first; fd <= last && fd < (unsigned)fdcap; fd++)
			fd_set_mark((int)fd, 0);
	return r;
}

EXPORT int dup(int fd)
{
	int r = REAL(dup)(fd);
	if (r >= 0)
		fd_dup_mark(fd, r);
	return r;
}

EXPORT int dup2(int fd, int to)
{
	int r = REAL(dup2)(fd, to);
	if (r >= 0)
		fd_dup_mark(fd, r);
	return r;
}

EXPORT int dup3(int fd, int to, int flags)
{
	int r = REAL(dup3)(fd, to, flags);
	if (r >= 0)
		fd_dup_mark(fd, r);
	return r;
}

static int fcntl_any(int fd, int cmd, void *arg, int large)
{
	int r = large ? REAL(fcntl64)(fd, cmd, arg) : REAL(fcntl)(fd, cmd, arg);
	if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
		fd_dup_mark(fd, r);
	return r;
}

/* Every fcntl argument is an int or a pointer: passed on as a pointer-sized word (the x86-64 and aarch64 ABIs agree). */
EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	return fcntl_any(fd, cmd, arg, 0);
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	return fcntl_any(fd, cmd, arg, 1);
}

EXPORT DIR *opendir(const char *p)
{
	char canon[PATH_MAX] = "";
	verdict v;
	DIR *d;

	if (guard || !ready || !resolve_at(AT_FDCWD, p, canon, sizeof canon)) {
		d = REAL(opendir)(p);
		if (d && ready && !guard)
			fd_mark_new(dirfd(d), canon);
		return d;
	}
	guard = 1;
	set_ctx("opendir", canon, -1, 0);
	decide(&v, 0);
	if (v.fail) {
		fd_fail(&v);
		return NULL;
	}
	d = REAL(opendir)(p);
	if (d)
		fd_set_under(dirfd(d), canon);
	fd_leave(0);
	return d;
}

EXPORT DIR *fdopendir(int fd)
{
	return REAL(fdopendir)(fd);      /* the fd keeps its mark */
}

EXPORT int closedir(DIR *d)
{
	fd_set_mark(dirfd(d), 0);
	return REAL(closedir)(d);
}

/* ---- wrappers: names ------------------------------------------------------ */

/* A one-path namespace call: decide, undo record, call. */
static int name_call(int dirfd, const char *p, const char *op, uint64_t (*undo)(int, const char *),
		     int (*call)(int, const char *, int, mode_t), int flags, mode_t mode)
{
	char canon[PATH_MAX] = "";
	verdict v;

	if (guard || !ready || !resolve_at(dirfd, p, canon, sizeof canon))
		return call(dirfd, p, flags, mode);
	guard = 1;
	set_ctx(op, canon, -1, 0);
	decide(&v, 0);
	if (v.fail)
		return (int)fd_fail(&v);
	uint64_t u = undo_armed() ? undo(rank, canon) : 0;
	int r = call(dirfd, p, flags, mode);
	undo_failed(u, r);
	return (int)fd_leave(r);
}

static int c_unlinkat(int d, const char *p, int f, mode_t m) { (void)m; return REAL(unlinkat)(d, p, f); }
static int c_unlink(int d, const char *p, int f, mode_t m) { (void)d; (void)f; (void)m; return REAL(unlink)(p); }
static int c_rmdir(int d, const char *p, int f, mode_t m) { (void)d; (void)f; (void)m; return REAL(rmdir)(p); }
static int c_remove(int d, const char *p, int f, mode_t m) { (void)d; (void)f; (void)m; return REAL(remove)(p); }
static int c_mkdirat(int d, const char *p, int f, mode_t m) { (void)f; return REAL(mkdirat)(d, p, m); }
static int c_mkdir(int d, const char *p, int f, mode_t m) { (void)d; (void)f; return REAL(mkdir)(p, m); }

EXPORT int unlink(const char *p) { return name_call(AT_FDCWD, p, "unlink", ckpt__undo_unlink, c_unlink, 0, 0); }
EXPORT int rmdir(const char *p) { return name_call(AT_FDCWD, p, "rmdir", ckpt__undo_rmdir, c_rmdir, 0, 0); }
EXPORT int unlinkat(int d, const char *p, int flags)
{
	int dir = flags & AT_REMOVEDIR;
	return name_call(d, p, dir ? "rmdir" : "unlink", dir ? ckpt__undo_rmdir : ckpt__undo_unlink, c_unlinkat, flags, 0);
}

/* remove: rmdir for a directory, unlink for anything else (as glibc decides). */
EXPORT int remove(const char *p)
{
	struct stat st;
	int dir = p && lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
	return name_call(AT_FDCWD, p, dir ? "rmdir" : "unlink", dir ? ckpt__undo_rmdir : ckpt__undo_unlink, c_remove, 0,
			 0);
}

EXPORT int mkdir(const char *p, mode_t m) { return name_call(AT_FDCWD, p, "mkdir", ckpt__undo_mkdir, c_mkdir, 0, m); }
EXPORT int mkdirat(int d, const char *p, mode_t m) { return name_call(d, p, "mkdir", ckpt__undo_mkdir, c_mkdirat, 0, m); }

/* A two-path call (rename, link): the context's path is the target, as in libckpt. */
static int two_call(int fd1, const char *a, int fd2, const char *b, const char *op,
		    int (*call)(int, const char *, int, const char *, unsigned), unsigned flags)
{
	char ca[PATH_MAX], cb[PATH_MAX];
	verdict v;

	if (guard || !ready)
		return call(fd1, a, fd2, b, flags);
	/* linkat(fd, "", ..., AT_EMPTY_PATH): the source is the fd itself (O_TMPFILE) */
	int in_a = a && a[0] ? resolve_at(fd1, a, ca, sizeof ca) : fd_mark(fd1) == FD_UNDER;
	int in_b = resolve_at(fd2, b, cb, sizeof cb);
	if (!in_a && !in_b)
		return call(fd1, a, fd2, b, flags);
	if (!(a && a[0]) || ca[0] != '/')
		snprintf(ca, sizeof ca, "%s", "");
	guard = 1;
	set_ctx(op, cb, -1, 0);
	decide(&v, 0);
	if (v.fail)
		return (int)fd_fail(&v);
	uint64_t u = 0;
	/*
	 * The undo record speaks of names under the root only (the harness
	 * refuses any other): a rename in from outside is a new name here, a
	 * rename out is a name leaving, and a link out changes nothing here.
	 */
	if (undo_armed()) {
		if (strcmp(op, "rename") == 0 && in_a && in_b)
			u = ckpt__undo_rename(rank, ca, cb);
		else if (strcmp(op, "rename") == 0 && in_a)
			u = ckpt__undo_unlink(rank, ca);
		else if (in_b)
			u = ckpt__undo_open(rank, cb, O_CREAT);   /* a new name: the "create" record */
	}
	int r = call(fd1, a, fd2, b, flags);
	undo_failed(u, r);
	return (int)fd_leave(r);
}

static int c_renameat2(int f1, const char *a, int f2, const char *b, unsigned fl) { return REAL(renameat2)(f1, a, f2, b, fl); }
static int c_renameat(int f1, const char *a, int f2, const char *b, unsigned fl) { (void)fl; return REAL(renameat)(f1, a, f2, b); }
static int c_rename(int f1, const char *a, int f2, const char *b, unsigned fl)
{
	(void)f1; (void)f2; (void)fl;
	return REAL(rename)(a, b);
}
static int c_linkat(int f1, const char *a, int f2, const char *b, unsigned fl) { return REAL(linkat)(f1, a, f2, b, (int)fl); }
static int c_link(int f1, const char *a, int f2, const char *b, unsigned fl)
{
	(void)f1; (void)f2; (void)fl;
	return REAL(link)(a, b);
}

EXPORT int rename(const char *a, const char *b) { return two_call(AT_FDCWD, a, AT_FDCWD, b, "rename", c_rename, 0); }
EXPORT int renameat(int f1, const char *a, int f2, const char *b) { return two_call(f1, a, f2, b, "rename", c_renameat, 0); }
EXPORT int renameat2(int f1, const char *a, int f2, const char *b, unsigned int flags)
{
	return two_call(f1, a, f2, b, "rename", c_renameat2, flags);
}
EXPORT int link(const char *a, const char *b) { return two_call(AT_FDCWD, a, AT_FDCWD, b, "link", c_link, 0); }
EXPORT int linkat(int f1, const char *a, int f2, const char *b, int flags)
{
	return two_call(f1, a, f2, b, "link", c_linkat, (unsigned)flags);
}

/* ---- the beacon: where a foreign trainer says it is ---------------------- */

EXPORT void ckpt_shim_beacon_step(uint64_t step)
{
	if (!shared)
		return;
	atomic_store(&shared->step, step);
	atomic_fetch_or(&shared->announced, 1);
}

/*
 * Enter a phase: later calls carry it, and it is a phase point (op "phase")
 * as libckpt's are: kill, delay and damage act here; an errno fault is
 * returned as -errno for the trainer to act on. 0 otherwise.
 */
EXPORT int ckpt_shim_beacon_phase(const char *phase)
{
	verdict v;

	if (!shared || !phase)
		return 0;
	unsigned s = atomic_load(&shared->phase_seq);
	while ((s & 1) || !atomic_compare_exchange_weak(&shared->phase_seq, &s, s + 1))
		s = atomic_load(&shared->phase_seq) & ~1u;
	snprintf(shared->phase, sizeof shared->phase, "%s", phase);
	atomic_store(&shared->phase_seq, s + 2);
	atomic_fetch_or(&shared->announced, 2);
	if (!ready || guard)
		return 0;
	guard = 1;
	set_ctx("phase", NULL, -1, 0);
	decide(&v, 0);
	guard = 0;
	return v.fail ? -v.err : 0;
}

/* ---- the constructor ----------------------------------------------------- */

static const char *env(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

/* Launchers and daemons never get faults (should LD_PRELOAD reach them). */
static int launcher_process(void)
{
	static const char *const names[] = { "mpirun", "mpiexec", "orterun", "orted", "prte", "prted", "prterun",
					     "srun", "slurmstepd", "torchrun", "ckpt-node-exec" };
	for (size_t i = 0; i < sizeof names / sizeof *names; i++)
		if (strcmp(program_invocation_short_name, names[i]) == 0)
			return 1;
	return 0;
}

/* root_real: the root with symlinks resolved, as far as it exists yet. */
static void resolve_root(void)
{
	char head[PATH_MAX], real[PATH_MAX];
	size_t n = root_len;

	snprintf(head, sizeof head, "%s", root);
	for (;;) {
		if (realpath(head, real)) {
			int w = snprintf(root_real, sizeof root_real, "%s%s", strcmp(real, "/") == 0 && root[n] ? "" : real,
					 root + n);
			if (w >= (int)sizeof root_real)
				root_real[0] = '\0';
			break;
		}
		char *slash = strrchr(head, '/');
		if (!slash || slash == head)
			break;
		*slash = '\0';
		n = (size_t)(slash - head);
	}
	root_real_len = strlen(root_real);
	if (root_real_len == root_len && strcmp(root_real, root) == 0)
		root_real_len = 0, root_real[0] = '\0';
}

/*
 * Map the rank's shared counters and beacon; file-backed so exec'ed children
 * join. The first process of the rank (its environment does not name the
 * file yet) starts it afresh and names it in CKPT_SHIM_COUNTERS for its
 * descendants: a second run with the same plan and log counts from zero.
 */
static void map_shared(const char *plan_path, const char *log_prefix)
{
	size_t size = sizeof(struct shim_shared) + sizeof(atomic_int) * (size_t)(nplan + 1);
	long page = sysconf(_SC_PAGESIZE);
	char path[PATH_MAX];
	int fd = -1;

	size = (size + (size_t)page - 1) / (size_t)page * (size_t)page;
	const char *stem = log_prefix ? log_prefix : plan_path;
	if (stem) {
		snprintf(path, sizeof path, "%s.rank-%d.attempt-%d.shm", stem, rank, attempt);
		const char *joined = getenv("CKPT_SHIM_COUNTERS");
		int fresh = !joined || strcmp(joined, path) != 0;
		fd = REAL(open)(path, O_RDWR | O_CREAT | O_CLOEXEC | (fresh ? O_TRUNC : 0), 0644);
		if (fd >= 0 && fresh)
			setenv("CKPT_SHIM_COUNTERS", path, 1);
	}
	struct stat st;
	if (fd >= 0 && fstat(fd, &st) == 0 && (size_t)st.st_size < size && REAL(ftruncate)(fd, (off_t)size) < 0) {
		REAL(close)(fd);
		fd = -1;
	}
	void *p = fd >= 0 ? mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
			  : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (fd >= 0)
		REAL(close)(fd);
	if (p == MAP_FAILED)
		return;
	shared = p;
	uint64_t zero = 0;
	atomic_compare_exchange_strong((_Atomic uint64_t *)&shared->magic, &zero, SHIM_MAGIC);
}

/* fds inherited across exec (or opened before the constructor) under the root. */
static void scan_fds(void)
{
	DIR *d = REAL(opendir)("/proc/self/fd");
	struct dirent *e;
	char p[PATH_MAX], canon[PATH_MAX];

	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] == '.' || fd == dirfd(d))
			continue;
		if (fd_path(fd, p, sizeof p) == 0 && p[0] == '/' && normalize(p, canon, sizeof canon) == 0)
			fd_mark_path(fd, canon);
	}
	REAL(closedir)(d);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof buf - 1)
		n = (int)sizeof buf - 1;
	if (n > 0 && REAL(write)(2, buf, (size_t)n) < 0)
		(void)0;
}

__attribute__((constructor)) static void shim_init(void)
{
#define RESOLVE(name, ret, args) REAL(name);
	SHIM_REALS(RESOLVE)
#undef RESOLVE
	/* CKPT_FAULT_PLAN_SHIM: the shim's own plan, for a program that also carries
	 * the libfiu injector (which arms from CKPT_FAULT_PLAN). */
	const char *r = env("CKPT_HARNESS_CKPT_DIR"), *plan_path = env("CKPT_FAULT_PLAN_SHIM");
	const char *log = env("CKPT_FAULT_LOG"), *a = env("CKPT_HARNESS_ATTEMPT");
	static const char *const rank_vars[] = { "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID", "RANK" };

	if (launcher_process())
		return;
	if (!plan_path)
		plan_path = env("CKPT_FAULT_PLAN");
	undo_on = env("CKPT_UNDO_LOG_SHIM") || dlsym(RTLD_DEFAULT, "ckpt__undo_armed") == NULL;
	if (!r)
		r = env("CKPT_FAULT_ROOT");
	for (size_t i = 0; i < sizeof rank_vars / sizeof *rank_vars; i++)
		if (env(rank_vars[i])) {
			rank = atoi(env(rank_vars[i]));
			break;
		}
	if (a)
		attempt = atoi(a);
	generations = env("CKPT_HARNESS_GENERATIONS");
	if (r) {
		char abs[2 * PATH_MAX], cwd[PATH_MAX];
		if (r[0] == '/')
			snprintf(abs, sizeof abs, "%s", r);
		else
			snprintf(abs, sizeof abs, "%s/%s", getcwd(cwd, sizeof cwd) ? cwd : "", r);
		if (normalize(abs, root, sizeof root) == 0 && strcmp(root, "/") != 0) {
			root_len = strlen(root);
			resolve_root();
		} else {
			say("ckpt-fault-shim: checkpoint root %s is not usable; no faults\n", r);
			root[0] = '\0';
		}
	}
	if (plan_path && root_len) {
		int rc = harness_plan_read(plan_path, &plan, &nplan);
		if (rc < 0) {
			say("ckpt-fault-shim: rank %d: cannot read the fault plan %s: %s; no faults\n", rank, plan_path,
			    strerror(-rc));
			plan = NULL;
			nplan = 0;
		}
		if (nplan && env("CKPT_HARNESS_NODE"))
			harness_fault_resolve_node(plan, nplan, atoi(env("CKPT_HARNESS_NODE")));
	}
	map_shared(nplan ? plan_path : NULL, nplan ? log : NULL);
	if (nplan && !shared) {
		say("ckpt-fault-shim: rank %d: cannot map the shared counters; no faults\n", rank);
		nplan = 0;
	}
	if (nplan && log) {
		char path[PATH_MAX];
		harness_fault_log_path(path, sizeof path, log, rank);
		log_fd = REAL(open)(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	}
	if (root_len) {
		struct rlimit rl;
		rlim_t cap = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
		if (cap == RLIM_INFINITY || cap > (1u << 22))
			cap = 1u << 22;
		fdtab = calloc((size_t)cap, 1);
		if (fdtab)
			fdcap = (int)cap;
		pcache = calloc(PCACHE_FDS, sizeof *pcache);     /* 4 MiB of address space, touched per fd under the root */
		scan_fds();
	}
	ready = 1;
}
