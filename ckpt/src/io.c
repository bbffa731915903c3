/*
 * The I/O layer. Each operation: set the fault context, evaluate the libfiu
 * point ckpt/io/<op> (before any state change), act on an injected fault or
 * perform the call, journal it, and on failure record who/what/where/errno.
 */
#include <errno.h>
#include <fcntl.h>
#include <fiu-local.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static _Thread_local ckpt_fault_ctx current = { .fd = -1 };

/* libfiu crashes on a point evaluated before fiu_init; it may be called again later. */
static pthread_once_t fiu_once = PTHREAD_ONCE_INIT;

static void init_fiu(void)
{
	fiu_init(0);
}

const ckpt_fault_ctx *ckpt_fault_current(void)
{
	return &current;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* JSON string body of s (quotes and control characters escaped). */
static void json_escape(char *dst, size_t len, const char *s)
{
	size_t o = 0;

	for (; s && *s && o + 7 < len; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			dst[o++] = '\\';
			dst[o++] = (char)ch;
		} else if (ch < 0x20) {
			o += (size_t)snprintf(dst + o, len - o, "\\u%04x", ch);
		} else {
			dst[o++] = (char)ch;
		}
	}
	dst[o] = '\0';
}

/* What an injected fault asks of this call. */
typedef struct op_state {
	const char *op;
	const char *path;
	int fd;
	size_t bytes;
	double t0;
	const ckpt_fault_action *fault;
	ckpt_fault_action fallback;
} op_state;

static void journal_op(ckpt_io *io, const op_state *st, long long result, int rc);

/*
 * Evaluate the fault point of op. Returns 0 to go on, or -errno for an
 * injected failure. KILL and DELAY are carried out here; SHORT and TORN are
 * left in st->fault for the write path.
 */
static int begin(ckpt_io *io, op_state *st, const char *op, const char *path, int fd, size_t bytes)
{
	char point[48];

	st->op = op;
	st->path = path;
	st->fd = fd;
	st->bytes = bytes;
	st->fault = NULL;
	st->t0 = now();
	current = (ckpt_fault_ctx){ .rank = io->rank, .step = io->step, .phase = io->phase,
				    .op = op, .path = path, .fd = fd, .bytes = bytes };
	snprintf(point, sizeof point, "ckpt/io/%s", op);
	(void)point;
	pthread_once(&fiu_once, init_fiu);
again:
	if (!fiu_fail(point))
		return 0;
	st->fault = fiu_failinfo();
	if (!st->fault) {
		st->fallback = (ckpt_fault_action){ .kind = CKPT_FAULT_ERRNO, .err = EIO };
		st->fault = &st->fallback;
	}
	if (st->fault->kind == CKPT_FAULT_ERRNO && st->fault->err == EINTR) {
		/* an interrupted call is retried, injected or not */
		journal_op(io, st, -1, -EINTR);
		st->fault = NULL;
		goto again;
	}
	switch (st->fault->kind) {
	case CKPT_FAULT_KILL:
		raise(SIGKILL);
		return -EIO;
	case CKPT_FAULT_DELAY: {
		struct timespec d = { st->fault->delay_ms / 1000, (long)(st->fault->delay_ms % 1000) * 1000000L };
		while (nanosleep(&d, &d) < 0 && errno == EINTR)
			;
		st->fault = NULL;
		return 0;
	}
	case CKPT_FAULT_SHORT:
	case CKPT_FAULT_TORN:
		if (strcmp(op, "write") == 0)
			return 0;
		return -EIO;      /* a short read/fsync makes no sense: plain failure */
	case CKPT_FAULT_ERRNO:
	default:
		return -(st->fault->err > 0 ? st->fault->err : EIO);
	}
}

static void describe_fault(const ckpt_fault_action *a, char *buf, size_t len)
{
	switch (a->kind) {
	case CKPT_FAULT_SHORT: snprintf(buf, len, "short:%zu", a->bytes); break;
	case CKPT_FAULT_TORN: snprintf(buf, len, "torn:%zu", a->bytes); break;
	case CKPT_FAULT_KILL: snprintf(buf, len, "kill"); break;
	case CKPT_FAULT_DELAY: snprintf(buf, len, "delay_ms:%u", a->delay_ms); break;
	default: snprintf(buf, len, "%s", ckpt_strerror(a->err > 0 ? -a->err : -EIO)); break;
	}
}

static void journal_op(ckpt_io *io, const op_state *st, long long result, int rc)
{
	char path[CKPT_PATH_MAX + 64] = "", fault[48] = "";

	if (!io->journal)
		return;
	json_escape(path, sizeof path, st->path);
	if (st->fault)
		describe_fault(st->fault, fault, sizeof fault);
	ckpt__journal_add(io->journal,
			  "\"rank\":%d,\"step\":%llu,\"phase\":\"%s\",\"op\":\"%s\",\"path\":\"%s\","
			  "\"bytes\":%zu,\"result\":%lld,\"errno\":%d,\"duration_us\":%.0f%s%s%s",
			  io->rank, (unsigned long long)io->step, io->phase ? io->phase : "", st->op, path,
			  st->bytes, result, rc < 0 ? -rc : 0, (now() - st->t0) * 1e6,
			  st->fault ? ",\"fault\":\"" : "", fault, st->fault ? "\"" : "");
}

/* What a failed call's errno means here, where libckpt's own rules give it a meaning. */
static const char *reason(int rc, const char *detail)
{
	if (detail)
		return detail;
	if (rc == -ELOOP)
		return "a symbolic link: libckpt never follows links under the root";
	if (rc == -CKPT_ECORRUPT)
		return "the file ends early or is damaged";
	return ckpt_describe(rc);
}

/* Journal the call; on failure record the error. Returns rc. */
static int end_detail(ckpt_io *io, op_state *st, long long result, int rc, const char *detail)
{
	journal_op(io, st, result, rc);
	if (rc < 0 && io->err && io->err->code == 0) {
		ckpt_error *e = io->err;
		e->rank = io->rank;
		e->step = io->step;
		e->sys_errno = rc > -CKPT_ECORRUPT ? -rc : 0;
		snprintf(e->phase, sizeof e->phase, "%s", io->phase ? io->phase : "");
		snprintf(e->op, sizeof e->op, "%s", st->op);
		snprintf(e->path, sizeof e->path, "%s", st->path ? st->path : "");
		ckpt__error_set(e, rc, "rank %d: %s %s failed during %s at step %llu: %s (%s)", io->rank,
				st->op, st->path ? st->path : "", io->phase ? io->phase : "-",
				(unsigned long long)io->step, reason(rc, detail), ckpt_strerror(rc));
	}
	return rc;
}

static int end(ckpt_io *io, op_state *st, long long result, int rc)
{
	return end_detail(io, st, result, rc, NULL);
}

int ckpt__io_fail(ckpt_io *io, int code, const char *path, const char *fmt, ...)
{
	ckpt_error *e = io->err;
	va_list ap;

	if (!e || e->code != 0)
		return code;
	e->code = code;
	e->rank = io->rank;
	e->step = io->step;
	e->sys_errno = 0;
	snprintf(e->phase, sizeof e->phase, "%s", io->phase ? io->phase : "");
	snprintf(e->op, sizeof e->op, "check");
	snprintf(e->path, sizeof e->path, "%s", path ? path : "");
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	return code;
}

int ckpt__io_phase(ckpt_io *io, const char *name)
{
	char point[48];

	io->phase = name;
	current = (ckpt_fault_ctx){ .rank = io->rank, .step = io->step, .phase = name,
				    .op = "phase", .path = NULL, .fd = -1, .bytes = 0 };
	snprintf(point, sizeof point, "ckpt/phase/%s", name);
	(void)point;
	pthread_once(&fiu_once, init_fiu);
	if (!fiu_fail(point))
		return 0;

	const ckpt_fault_action *a = fiu_failinfo();
	op_state st = { .op = "phase", .fd = -1, .t0 = now(), .fault = a };
	if (a && a->kind == CKPT_FAULT_KILL)
		raise(SIGKILL);
	if (a && a->kind == CKPT_FAULT_DELAY) {
		struct timespec d = { a->delay_ms / 1000, (long)(a->delay_ms % 1000) * 1000000L };
		while (nanosleep(&d, &d) < 0 && errno == EINTR)
			;
		return 0;
	}
	st.fallback = (ckpt_fault_action){ .kind = CKPT_FAULT_ERRNO, .err = EIO };
	if (!a)
		st.fault = &st.fallback;
	return end(io, &st, -1, -(st.fault->err > 0 ? st.fault->err : EIO));
}

int ckpt_fault_phase(int rank, uint64_t step, const char *phase)
{
	ckpt_io io = { .rootfd = -1, .rank = rank, .step = step, .phase = phase, .err = NULL, .journal = NULL };
	return ckpt__io_phase(&io, phase);
}

/* Run a simple syscall-shaped call with EINTR retry. */
#define RETRY(expr) ({ long _r; do { _r = (long)(expr); } while (_r < 0 && errno == EINTR); _r; })

const char *ckpt__io_display(const ckpt_io *io, const char *path, char *buf, size_t len)
{
	if (io->rootfd < 0 || !io->root)
		snprintf(buf, len, "%s", path);
	else if (strcmp(path, ".") == 0)
		snprintf(buf, len, "%s", io->root);
	else
		snprintf(buf, len, "%s/%s", io->root, path);
	return buf;
}

/*
 * The directory a relative path's last component lives in, reached from the
 * root one component at a time with O_NOFOLLOW: a link anywhere on the way
 * fails with ELOOP (or ENOTDIR), so nothing outside the root is reached.
 * Returns a descriptor to release with put_dir, or -errno.
 */
static int get_dir(const ckpt_io *io, const char *path, const char **leaf)
{
	char comp[CKPT_PATH_MAX];
	const char *p = path, *slash;
	int fd;

	if (io->rootfd < 0) {
		*leaf = path;
		return AT_FDCWD;
	}
	if (!*path || path[0] == '/')
		return -EINVAL;
	fd = io->rootfd;
	while ((slash = strchr(p, '/')) != NULL) {
		size_t n = (size_t)(slash - p);
		if (n == 0 || n >= sizeof comp || (n == 2 && p[0] == '.' && p[1] == '.')) {
			if (fd != io->rootfd)
				close(fd);
			return -EINVAL;
		}
		memcpy(comp, p, n);
		comp[n] = '\0';
		int nfd = (int)RETRY(openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
		int e = errno;
		struct stat lst;
		/* O_DIRECTORY | O_NOFOLLOW on a link says ENOTDIR: say what it is */
		if (nfd < 0 && e == ENOTDIR && fstatat(fd, comp, &lst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(lst.st_mode))
			e = ELOOP;
		if (fd != io->rootfd)
			close(fd);
		if (nfd < 0)
			return -e;
		fd = nfd;
		p = slash + 1;
	}
	if (strcmp(p, "..") == 0) {
		if (fd != io->rootfd)
			close(fd);
		return -EINVAL;
	}
	*leaf = p;
	return fd;
}

static void put_dir(const ckpt_io *io, int fd)
{
	if (fd >= 0 && fd != io->rootfd)
		close(fd);
}

int ckpt__io_lstat(ckpt_io *io, const char *path, struct stat *st)
{
	const char *leaf;
	int dfd = get_dir(io, path, &leaf), rc;

	if (dfd < 0 && dfd != AT_FDCWD)
		return dfd;
	rc = fstatat(dfd, leaf, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	put_dir(io, dfd);
	return rc;
}

int ckpt__io_open(ckpt_io *io, const char *path, int flags, mode_t mode)
{
	op_state st;
	char disp[CKPT_PATH_MAX];
	const char *detail = NULL;
	int rc = begin(io, &st, "open", ckpt__io_display(io, path, disp, sizeof disp), -1, 0);
	long fd = -1;

	flags |= O_NOFOLLOW | O_CLOEXEC;
	if (!(flags & O_DIRECTORY))
		flags |= O_NONBLOCK;      /* a FIFO or device never blocks us; refused below */
	if (rc == 0) {
		const char *leaf;
		int dfd = get_dir(io, path, &leaf);
		uint64_t u = ckpt__undo_open(io->rank, disp, flags);
		if (dfd < 0 && dfd != AT_FDCWD) {
			rc = dfd;
		} else {
			struct stat lst;
			fd = RETRY(openat(dfd, leaf, flags, mode));
			rc = fd < 0 ? -errno : 0;
			if (rc == -ENOTDIR && (flags & O_DIRECTORY) && fstatat(dfd, leaf, &lst, AT_SYMLINK_NOFOLLOW) == 0 &&
			    S_ISLNK(lst.st_mode))
				rc = -ELOOP;
			put_dir(io, dfd);
		}
		if (rc == -ENXIO && !(flags & O_DIRECTORY))
			detail = "not a regular file (a FIFO or device): refused";
		if (rc == 0 && !(flags & O_DIRECTORY)) {
			struct stat sb;
			if (fstat((int)fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
				close((int)fd);
				fd = -1;
				rc = -EINVAL;
				detail = "not a regular file (a FIFO, device or directory): refused";
			} else {
				/* regular files ignore O_NONBLOCK; clear it all the same */
				fcntl((int)fd, F_SETFL, fcntl((int)fd, F_GETFL) & ~O_NONBLOCK);
			}
		}
		if (rc < 0)
			ckpt__undo_failed(io->rank, u);
	}
	end_detail(io, &st, fd, rc, detail);
	return rc < 0 ? rc : (int)fd;
}

int ckpt__io_direct(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -1;
	if (!(fl & O_DIRECT) == !on)
		return 0;
	return fcntl(fd, F_SETFL, on ? fl | O_DIRECT : fl & ~O_DIRECT) == 0 ? 1 : -1;
}

int ckpt__io_write_all(ckpt_io *io, int fd, const void *buf, size_t len, const char *path)
{
	const char *p = buf;
	size_t off = 0;
	char disp[CKPT_PATH_MAX];

	ckpt__io_display(io, path, disp, sizeof disp);
	while (off < len) {
		op_state st;
		size_t want = len - off, asked = want;
		int rc = begin(io, &st, "write", disp, fd, want);
		(void)asked;
		ssize_t n = -1;

		if (rc == 0) {
			asked = want;
			if (st.fault && (st.fault->kind == CKPT_FAULT_SHORT || st.fault->kind == CKPT_FAULT_TORN)) {
				want = st.fault->bytes < want ? st.fault->bytes : want;
				ckpt__io_direct(fd, false);     /* a short write is any number of bytes */
			}
			uint64_t u = want ? ckpt__undo_write(io->rank, fd, disp, want) : 0;
			n = want ? write(fd, p + off, want) : 0;
			/* O_DIRECT (stream.c) whose alignment this device does not take: again through the cache */
			if (n < 0 && errno == EINVAL && ckpt__io_direct(fd, false) == 1)
				n = write(fd, p + off, want);
			if (n < 0)
				ckpt__undo_failed(io->rank, u);
			if (n < 0 && errno == EINTR) {
				journal_op(io, &st, -1, -EINTR);
				continue;
			}
			rc = n < 0 ? -errno : 0;
			if (st.fault && st.fault->kind == CKPT_FAULT_TORN)
				raise(SIGKILL);
		}
		if (end(io, &st, n, rc) < 0)
			return rc;
		if ((size_t)n != asked)
			ckpt_mutant_reached("ignore_short_write");
#ifdef CKPT_MUTANT_IGNORE_SHORT_WRITE
		off += asked;      /* mutant: a short write is taken for a whole one */
#else
		off += (size_t)n;
#endif
	}
	return 0;
}

int ckpt__io_read_all(ckpt_io *io, int fd, void *buf, size_t len, const char *path)
{
	char *p = buf;
	size_t off = 0;
	char disp[CKPT_PATH_MAX];

	ckpt__io_display(io, path, disp, sizeof disp);
	while (off < len) {
		op_state st;
		int rc = begin(io, &st, "read", disp, fd, len - off);
		ssize_t n = -1;

		if (rc == 0) {
			n = read(fd, p + off, len - off);
			if (n < 0 && errno == EINTR) {
				journal_op(io, &st, -1, -EINTR);
				continue;
			}
			rc = n < 0 ? -errno : n == 0 ? -CKPT_ECORRUPT : 0;
		}
		if (end(io, &st, n, rc) < 0)
			return rc;
		off += (size_t)n;
	}
	return 0;
}

int ckpt__io_read_op(ckpt_io *io, int fd, const char *path, size_t len, int (*fill)(void *arg), void *arg)
{
	char disp[CKPT_PATH_MAX];
	op_state st;
	int rc = begin(io, &st, "read", ckpt__io_display(io, path, disp, sizeof disp), fd, len);

	if (rc == 0)
		rc = fill(arg);
	return end(io, &st, rc == 0 ? (long long)len : -1, rc);
}

static int fd_call(ckpt_io *io, const char *op, int fd, const char *path, int (*fn)(int))
{
	op_state st;
	char disp[CKPT_PATH_MAX];
	int rc = begin(io, &st, op, ckpt__io_display(io, path, disp, sizeof disp), fd, 0);
	long r = -1;

	if (rc == 0) {
		r = RETRY(fn(fd));
		rc = r < 0 ? -errno : 0;
		if (rc == 0)
			ckpt__undo_fsync(io->rank, fd, disp);   /* fsync and fdatasync both make data durable */
	}
	return end(io, &st, r, rc);
}

/* The context of a fault point of op at path, as begin() will set it (for the durability probes). */
static ckpt_fault_ctx point_ctx(const ckpt_io *io, const char *op, const char *disp, int fd)
{
	return (ckpt_fault_ctx){ .rank = io->rank, .step = io->step, .phase = io->phase, .op = op, .path = disp,
				 .fd = fd };
}

int ckpt__io_fsync(ckpt_io *io, int fd, const char *path)
{
	if (ckpt_mutant_recording()) {
		char disp[CKPT_PATH_MAX];
		ckpt_fault_ctx skipped = point_ctx(io, "fsync", ckpt__io_display(io, path, disp, sizeof disp), fd);
		ckpt_mutant_reached_durability("skip_file_fsync", &skipped, 1);
	}
#ifdef CKPT_MUTANT_SKIP_FILE_FSYNC
	struct stat sb;
	if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode))
		return 0;      /* mutant: file data is never made durable */
#endif
	int rc = fd_call(io, "fsync", fd, path, fsync);
	/* the mutant changes the outcome only of a failed fsync, or after an earlier error */
	if (rc != 0 || (io->err && io->err->code != 0))
		ckpt_mutant_reached("ignore_fsync_error");
#ifdef CKPT_MUTANT_IGNORE_FSYNC_ERROR
	if (io->err && io->err->code != 0 && strcmp(io->err->op, "fsync") == 0)
		ckpt__error_clear(io->err);       /* mutant: a failed fsync is taken for a success */
	return 0;
#endif
	return rc;
}

int ckpt__io_fdatasync(ckpt_io *io, int fd, const char *path)
{
	return fd_call(io, "fdatasync", fd, path, fdatasync);
}

int ckpt__io_close(ckpt_io *io, int *fd, const char *path)
{
	op_state st;
	char disp[CKPT_PATH_MAX];
	int rc = begin(io, &st, "close", ckpt__io_display(io, path, disp, sizeof disp), *fd, 0);
	int r = -1;

	/* close is never retried: after EINTR the descriptor is already gone */
	if (rc == 0) {
		r = close(*fd);
		rc = r < 0 && errno != EINTR ? -errno : 0;
	} else {
		close(*fd);
	}
	*fd = -1;
	return end(io, &st, r, rc);
}

/* unlink or rmdir of a path under the root: unlinkat never follows the last component. */
static int remove_call(ckpt_io *io, const char *op, const char *path, int flags, uint64_t (*undo)(int, const char *))
{
	op_state st;
	char disp[CKPT_PATH_MAX];
	int rc = begin(io, &st, op, ckpt__io_display(io, path, disp, sizeof disp), -1, 0);
	long r = -1;

	if (rc == 0) {
		const char *leaf;
		int dfd = get_dir(io, path, &leaf);
		uint64_t u = undo(io->rank, disp);
		if (dfd < 0 && dfd != AT_FDCWD) {
			rc = dfd;
		} else {
			r = RETRY(unlinkat(dfd, leaf, flags));
			rc = r < 0 ? -errno : 0;
			put_dir(io, dfd);
		}
		if (rc < 0)
			ckpt__undo_failed(io->rank, u);
	}
	return end(io, &st, r, rc);
}

int ckpt__io_unlink(ckpt_io *io, const char *path)
{
	return remove_call(io, "unlink", path, 0, ckpt__undo_unlink);
}

int ckpt__io_rmdir(ckpt_io *io, const char *path)
{
	return remove_call(io, "rmdir", path, AT_REMOVEDIR, ckpt__undo_rmdir);
}

int ckpt__io_rename(ckpt_io *io, const char *from, const char *to)
{
	op_state st;
	char dfrom[CKPT_PATH_MAX], dto[CKPT_PATH_MAX];
	int rc = begin(io, &st, "rename", ckpt__io_display(io, to, dto, sizeof dto), -1, 0);
	long r = -1;

	ckpt__io_display(io, from, dfrom, sizeof dfrom);
	if (rc == 0) {
		const char *lf, *lt;
		int ff = get_dir(io, from, &lf), ft = ff < 0 && ff != AT_FDCWD ? ff : get_dir(io, to, &lt);
		uint64_t u = ckpt__undo_rename(io->rank, dfrom, dto);
		if (ff < 0 && ff != AT_FDCWD) {
			rc = ff;
		} else if (ft < 0 && ft != AT_FDCWD) {
			rc = ft;
		} else {
			r = RETRY(renameat(ff, lf, ft, lt));
			rc = r < 0 ? -errno : 0;
		}
		put_dir(io, ff);
		if (ft != ff)
			put_dir(io, ft);
		if (rc < 0)
			ckpt__undo_failed(io->rank, u);
	}
	return end(io, &st, r, rc);
}

int ckpt__io_mkdir(ckpt_io *io, const char *path, mode_t mode)
{
	op_state st;
	char disp[CKPT_PATH_MAX];
	int rc = begin(io, &st, "mkdir", ckpt__io_display(io, path, disp, sizeof disp), -1, 0);
	long r = -1;

	if (rc == 0) {
		const char *leaf;
		int dfd = get_dir(io, path, &leaf);
		uint64_t u = ckpt__undo_mkdir(io->rank, disp);
		if (dfd < 0 && dfd != AT_FDCWD) {
			rc = dfd;
		} else {
			r = RETRY(mkdirat(dfd, leaf, mode));
			rc = r < 0 ? -errno : 0;
			put_dir(io, dfd);
		}
		if (rc < 0)
			ckpt__undo_failed(io->rank, u);
	}
	return end(io, &st, r, rc);
}

int ckpt__io_ftruncate(ckpt_io *io, int fd, off_t len, const char *path)
{
	op_state st;
	char disp[CKPT_PATH_MAX];
	int rc = begin(io, &st, "ftruncate", ckpt__io_display(io, path, disp, sizeof disp), fd, (size_t)len);
	long r = -1;

	if (rc == 0) {
		uint64_t u = ckpt__undo_ftruncate(io->rank, fd, disp, len);
		r = RETRY(ftruncate(fd, len));
		rc = r < 0 ? -errno : 0;
		if (rc < 0)
			ckpt__undo_failed(io->rank, u);
	}
	return end(io, &st, r, rc);
}

int ckpt__io_opendir(ckpt_io *io, const char *path, DIR **out)
{
	op_state st;
	char disp[CKPT_PATH_MAX];
	int rc = begin(io, &st, "opendir", ckpt__io_display(io, path, disp, sizeof disp), -1, 0);

	*out = NULL;
	if (rc == 0) {
		const char *leaf;
		int dfd = get_dir(io, path, &leaf);
		if (dfd < 0 && dfd != AT_FDCWD) {
			rc = dfd;
		} else {
			int fd = (int)RETRY(openat(dfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
			struct stat lst;
			rc = fd < 0 ? -errno : 0;
			if (rc == -ENOTDIR && fstatat(dfd, leaf, &lst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(lst.st_mode))
				rc = -ELOOP;
			put_dir(io, dfd);
			if (fd >= 0 && !(*out = fdopendir(fd))) {
				rc = -errno;
				close(fd);
			}
		}
	}
	return end(io, &st, rc, rc);
}

int ckpt__io_fsync_dir(ckpt_io *io, const char *path)
{
	if (ckpt_mutant_recording()) {
		char disp[CKPT_PATH_MAX];
		ckpt__io_display(io, path, disp, sizeof disp);
		/* the mutant skips the directory's open, fsync and close */
		ckpt_fault_ctx skipped[3] = { point_ctx(io, "open", disp, -1), point_ctx(io, "fsync", disp, -1),
					      point_ctx(io, "close", disp, -1) };
		ckpt_mutant_reached_durability("skip_dir_fsync", skipped, 3);
	}
#ifdef CKPT_MUTANT_SKIP_DIR_FSYNC
	(void)io;
	(void)path;
	return 0;      /* mutant: directory entries are never made durable */
#endif
	int fd = ckpt__io_open(io, path, O_RDONLY | O_DIRECTORY, 0);
	int rc;

	if (fd < 0)
		return fd;
	rc = ckpt__io_fsync(io, fd, path);
	int rc2 = ckpt__io_close(io, &fd, path);
	return rc < 0 ? rc : rc2;
}

static void parent_of(const char *path, char *out, size_t len)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		snprintf(out, len, ".");
	else if (slash == path)
		snprintf(out, len, "/");
	else
		snprintf(out, len, "%.*s", (int)(slash - path), path);
}

static int rmtree_inner(ckpt_io *io, const char *path)
{
	DIR *d;
	struct dirent *de;
	struct stat st;
	int rc;

	/* a link or file is removed itself, never followed */
	if (ckpt__io_lstat(io, path, &st) == 0 && !S_ISDIR(st.st_mode))
		return ckpt__io_unlink(io, path);
	if ((rc = ckpt__io_opendir(io, path, &d)) < 0)
		return rc;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		char child[CKPT_PATH_MAX];
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (snprintf(child, sizeof child, "%s/%s", path, de->d_name) >= (int)sizeof child) {
			rc = -ENAMETOOLONG;
			break;
		}
		rc = rmtree_inner(io, child);
	}
	closedir(d);
	return rc < 0 ? rc : ckpt__io_rmdir(io, path);
}

int ckpt__io_rmtree(ckpt_io *io, const char *path)
{
	char parent[CKPT_PATH_MAX];
	struct stat st;
	int rc;

	if (ckpt__io_lstat(io, path, &st) == -ENOENT)
		return 0;
	if ((rc = rmtree_inner(io, path)) < 0)
		return rc;
	parent_of(path, parent, sizeof parent);
	return ckpt__io_fsync_dir(io, parent);
}

int ckpt__io_replace_file(ckpt_io *io, const char *dir, const char *name, const void *buf, size_t len, mode_t mode)
{
	char tmp[CKPT_PATH_MAX], dst[CKPT_PATH_MAX];
	struct stat st;
	int fd, rc;

	if (strcmp(dir, ".") == 0 ? snprintf(tmp, sizeof tmp, "%s.tmp", name) >= (int)sizeof tmp ||
					    snprintf(dst, sizeof dst, "%s", name) >= (int)sizeof dst
				  : snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name) >= (int)sizeof tmp ||
					    snprintf(dst, sizeof dst, "%s/%s", dir, name) >= (int)sizeof dst)
		return -ENAMETOOLONG;
	/*
	 * The temporary name is created O_EXCL: whatever is there (a leftover of a
	 * failed rename, or a link planted to make us truncate a file elsewhere)
	 * is removed first, itself, never opened.
	 */
	if (ckpt__io_lstat(io, tmp, &st) == 0 && (rc = ckpt__io_unlink(io, tmp)) < 0)
		return rc;
	fd = ckpt__io_open(io, tmp, O_WRONLY | O_CREAT | O_EXCL, mode);
	if (fd < 0)
		return fd;
	rc = ckpt__io_write_all(io, fd, buf, len, tmp);
	if (rc == 0)
		rc = ckpt__io_fsync(io, fd, tmp);
	int rc2 = ckpt__io_close(io, &fd, tmp);
	if (rc == 0)
		rc = rc2;
	if (rc == 0)
		rc = ckpt__io_rename(io, tmp, dst);
	if (rc == 0)
		rc = ckpt__io_fsync_dir(io, dir);
	return rc;
}
