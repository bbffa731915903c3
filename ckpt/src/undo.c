/*
 * The undo record, for power-loss simulation (armed by CKPT_UNDO_LOG=PREFIX).
 *
 * Before every change under the checkpoint root, the I/O layer appends what
 * it takes to reverse it to PREFIX.rank-R.jsonl: old size and overwritten
 * bytes of a write or truncation, created names, renames (a replaced target
 * is kept by hard link in PREFIX.keep/), unlinks (the file is kept the same
 * way); and after every successful fsync of a file or directory, its inode.
 * A change that then fails is voided by a "failed" record. Times are
 * CLOCK_MONOTONIC nanoseconds, comparable across the ranks of one machine.
 * Each record names the process that wrote it ("pid"), and a "failed"
 * record refers to (pid, seq): a checkpoint writer's forked children (the
 * shim writes this record for any program) inherit the counter, so seq
 * alone does not name one change.
 *
 * What survives a power cut is then decided outside (ckpt-harness, see
 * harness/powerloss.c) under the strict POSIX model: file data only if the
 * file was fsynced afterwards, a directory entry only if its parent was.
 * Records are plain write(2)s without fsync: they outlive a killed process
 * (the page cache survives), which is all the simulation needs.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const char *prefix;
static int fd = -1;
static uint64_t seq, kept;

/* A fork while another thread holds the lock must not leave the child's copy held. */
static void fork_prepare(void)
{
	pthread_mutex_lock(&lock);
}

static void fork_release(void)
{
	pthread_mutex_unlock(&lock);
}

static void init(void)
{
#ifdef CKPT_UNDO_SHIM
	/* the shim's copy: CKPT_UNDO_LOG_SHIM when the harness hands the record to the shim
	 * in a program that also carries libckpt (reftrain under --inject shim) */
	prefix = getenv("CKPT_UNDO_LOG_SHIM");
	if (!prefix || !*prefix)
		prefix = getenv("CKPT_UNDO_LOG");
#else
	prefix = getenv("CKPT_UNDO_LOG");
#endif
	if (prefix && !*prefix)
		prefix = NULL;
	if (prefix)
		pthread_atfork(fork_prepare, fork_release, fork_release);
}

bool ckpt__undo_armed(void)
{
	pthread_once(&once, init);
	return prefix != NULL;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t ino_of(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

static uint64_t parent_ino(const char *path)
{
	char buf[CKPT_PATH_MAX];
	snprintf(buf, sizeof buf, "%s", path);
	return ino_of(dirname(buf));
}

/* Append one record; returns its sequence number (0 if not armed). */
static uint64_t emit(int rank, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static uint64_t emit(int rank, const char *fmt, ...)
{
	char line[2 * CKPT_PATH_MAX + 256];
	va_list ap;
	uint64_t s;

	pthread_mutex_lock(&lock);
	if (fd < 0) {
		char path[CKPT_PATH_MAX];
		snprintf(path, sizeof path, "%s.rank-%d.jsonl", prefix, rank);
		fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	}
	s = ++seq;
	const ckpt_fault_ctx *ctx = ckpt_fault_current();
	int n = snprintf(line, sizeof line, "{\"seq\":%" PRIu64 ",\"pid\":%d,\"t\":%" PRIu64 ",\"step\":%" PRIu64
			 ",\"phase\":\"%s\",\"call\":\"%s\",", s, (int)getpid(), now_ns(), ctx->step,
			 ctx->phase ? ctx->phase : "", ctx->op ? ctx->op : "");
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - (size_t)n - 2, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '}';
	line[n++] = '\n';
	if (fd >= 0 && write(fd, line, (size_t)n) != n)
		s = 0;
	pthread_mutex_unlock(&lock);
	return s;
}

/* Keep a copy of path's current contents (hard link) or of bytes [off, off+len). */
static int keep_link(const char *path, char *out, size_t len)
{
	pthread_mutex_lock(&lock);
	uint64_t k = ++kept;
	pthread_mutex_unlock(&lock);
	snprintf(out, len, "%s.keep/%d-%" PRIu64, prefix, (int)getpid(), k);
	return link(path, out) == 0 ? 0 : -errno;
}

static int keep_bytes(int src, off_t off, size_t n, char *out, size_t len)
{
	char buf[1 << 16];
	pthread_mutex_lock(&lock);
	uint64_t k = ++kept;
	pthread_mutex_unlock(&lock);
	snprintf(out, len, "%s.keep/%d-%" PRIu64, prefix, (int)getpid(), k);
	int dst = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (dst < 0)
		return -errno;
	while (n > 0) {
		ssize_t r = pread(src, buf, n < sizeof buf ? n : sizeof buf, off);
		if (r <= 0)
			break;
		if (write(dst, buf, (size_t)r) != r)
			break;
		off += r;
		n -= (size_t)r;
	}
	close(dst);
	return 0;
}

uint64_t ckpt__undo_open(int rank, const char *path, int flags)
{
	struct stat st;

	if (!ckpt__undo_armed() || !(flags & (O_CREAT | O_TRUNC)))
		return 0;
	if (lstat(path, &st) < 0)
		return (flags & O_CREAT) ? emit(rank, "\"op\":\"create\",\"path\":\"%s\",\"parent\":%" PRIu64, path,
						parent_ino(path)) : 0;
	if ((flags & O_TRUNC) && st.st_size > 0) {
		char keep[CKPT_PATH_MAX];
		int src = open(path, O_RDONLY | O_CLOEXEC);
		if (src < 0)
			return 0;
		keep_bytes(src, 0, (size_t)st.st_size, keep, sizeof keep);
		close(src);
		return emit(rank, "\"op\":\"truncate\",\"path\":\"%s\",\"ino\":%" PRIu64 ",\"old_size\":%lld,\"size\":0,"
			    "\"saved\":\"%s\",\"saved_off\":0", path, (uint64_t)st.st_ino, (long long)st.st_size, keep);
	}
	return 0;
}

uint64_t ckpt__undo_write(int rank, int wfd, const char *path, size_t len)
{
	struct stat st;
	char keep[CKPT_PATH_MAX] = "";

	if (!ckpt__undo_armed() || fstat(wfd, &st) < 0)
		return 0;
	off_t off = lseek(wfd, 0, SEEK_CUR);
	if (off < st.st_size)      /* overwriting: keep the old bytes */
		keep_bytes(wfd, off, (size_t)(st.st_size - off < (off_t)len ? st.st_size - off : (off_t)len), keep,
			   sizeof keep);
	return emit(rank, "\"op\":\"write\",\"path\":\"%s\",\"ino\":%" PRIu64 ",\"off\":%lld,\"len\":%zu,"
		    "\"old_size\":%lld,\"saved\":\"%s\",\"saved_off\":%lld", path, (uint64_t)st.st_ino, (long long)off,
		    len, (long long)st.st_size, keep, (long long)off);
}

uint64_t ckpt__undo_ftruncate(int rank, int tfd, const char *path, off_t size)
{
	struct stat st;
	char keep[CKPT_PATH_MAX] = "";

	if (!ckpt__undo_armed() || fstat(tfd, &st) < 0)
		return 0;
	if (size < st.st_size)
		keep_bytes(tfd, size, (size_t)(st.st_size - size), keep, sizeof keep);
	return emit(rank, "\"op\":\"truncate\",\"path\":\"%s\",\"ino\":%" PRIu64 ",\"old_size\":%lld,\"size\":%lld,"
		    "\"saved\":\"%s\",\"saved_off\":%lld", path, (uint64_t)st.st_ino, (long long)st.st_size,
		    (long long)size, keep, (long long)size);
}

uint64_t ckpt__undo_mkdir(int rank, const char *path)
{
	if (!ckpt__undo_armed())
		return 0;
	return emit(rank, "\"op\":\"mkdir\",\"path\":\"%s\",\"parent\":%" PRIu64, path, parent_ino(path));
}

uint64_t ckpt__undo_rmdir(int rank, const char *path)
{
	if (!ckpt__undo_armed())
		return 0;
	return emit(rank, "\"op\":\"rmdir\",\"path\":\"%s\",\"parent\":%" PRIu64 ",\"ino\":%" PRIu64, path,
		    parent_ino(path), ino_of(path));
}

uint64_t ckpt__undo_unlink(int rank, const char *path)
{
	char keep[CKPT_PATH_MAX] = "";

	if (!ckpt__undo_armed())
		return 0;
	keep_link(path, keep, sizeof keep);
	return emit(rank, "\"op\":\"unlink\",\"path\":\"%s\",\"parent\":%" PRIu64 ",\"ino\":%" PRIu64
		    ",\"saved\":\"%s\"", path, parent_ino(path), ino_of(path), keep);
}

uint64_t ckpt__undo_rename(int rank, const char *from, const char *to)
{
	char keep[CKPT_PATH_MAX] = "";
	struct stat st;

	if (!ckpt__undo_armed())
		return 0;
	if (lstat(to, &st) == 0 && !S_ISDIR(st.st_mode))
		keep_link(to, keep, sizeof keep);
	return emit(rank, "\"op\":\"rename\",\"from\":\"%s\",\"to\":\"%s\",\"from_parent\":%" PRIu64
		    ",\"to_parent\":%" PRIu64 ",\"ino\":%" PRIu64 ",\"saved\":\"%s\"", from, to, parent_ino(from),
		    parent_ino(to), ino_of(from), keep);
}

void ckpt__undo_fsync(int rank, int sfd, const char *path)
{
	struct stat st;

	if (ckpt__undo_armed() && fstat(sfd, &st) == 0)
		emit(rank, "\"op\":\"fsync\",\"path\":\"%s\",\"ino\":%" PRIu64, path ? path : "", (uint64_t)st.st_ino);
}

void ckpt__undo_failed(int rank, uint64_t ref)
{
	if (ref && ckpt__undo_armed())
		emit(rank, "\"op\":\"failed\",\"ref\":%" PRIu64, ref);
}
