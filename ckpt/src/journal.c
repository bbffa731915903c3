/*
 * The operation journal: one JSONL file per rank in ROOT/journal/, outside the
 * generations. Diagnostic only, so it uses plain system calls (its own writes
 * are neither injected nor journaled) and is never fsynced. Bounded: past
 * max_bytes the file is rotated to .1, keeping one older file.
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* A regular file under the journal directory, never through a link, never blocking. */
static int open_file(ckpt_journal *j)
{
	struct stat st;
	const char *leaf = strrchr(j->path, '/') + 1;
	int fd = openat(j->dirfd, leaf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK,
			j->file_mode);

	if (fd < 0)
		return errno == ENXIO ? -EINVAL : -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	j->fd = fd;
	j->bytes = (size_t)st.st_size;
	return 0;
}

int ckpt__journal_open(ckpt_journal *j, int rootfd, const char *root, int rank, size_t max_bytes,
		       mode_t file_mode, mode_t dir_mode)
{
	j->fd = -1;
	j->dirfd = -1;
	j->seq = 0;
	j->file_mode = file_mode;
	j->max_bytes = max_bytes ? max_bytes : 4u << 20;
	if (snprintf(j->path, sizeof j->path, "%s/journal/rank-%05d.jsonl", root, rank) >= (int)sizeof j->path)
		return -ENAMETOOLONG;
	if (mkdirat(rootfd, "journal", dir_mode) < 0 && errno != EEXIST)
		return -errno;
	/* a journal/ that is a link (to a directory outside the root) is refused */
	j->dirfd = openat(rootfd, "journal", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (j->dirfd < 0) {
		int e = errno;
		struct stat lst;
		if (e == ENOTDIR && fstatat(rootfd, "journal", &lst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(lst.st_mode))
			e = ELOOP;
		return -e;
	}
	int rc = open_file(j);
	if (rc < 0) {
		close(j->dirfd);
		j->dirfd = -1;
	}
	return rc;
}

void ckpt__journal_close(ckpt_journal *j)
{
	if (j->fd >= 0)
		close(j->fd);
	if (j->dirfd >= 0)
		close(j->dirfd);
	j->fd = -1;
	j->dirfd = -1;
}

static void rotate(ckpt_journal *j)
{
	char old[CKPT_NAME_MAX];
	const char *leaf = strrchr(j->path, '/') + 1;

	snprintf(old, sizeof old, "%s.1", leaf);
	if (renameat(j->dirfd, leaf, j->dirfd, old) < 0)
		return;
	close(j->fd);
	j->fd = -1;
	open_file(j);
	j->bytes = 0;
}

/* Background retention journals too: one line at a time. */
static pthread_mutex_t journal_lock = PTHREAD_MUTEX_INITIALIZER;

void ckpt__journal_add(ckpt_journal *j, const char *fmt, ...)
{
	char line[2048];
	struct timespec ts;
	va_list ap;
	int n;

	if (!j || j->fd < 0)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	pthread_mutex_lock(&journal_lock);
	n = snprintf(line, sizeof line, "{\"seq\":%llu,\"time\":%lld.%06ld,", (unsigned long long)j->seq++,
		     (long long)ts.tv_sec, ts.tv_nsec / 1000);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - (size_t)n - 2, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 3)
		n = (int)sizeof line - 3;
	line[n++] = '}';
	line[n++] = '\n';
	if (j->bytes + (size_t)n > j->max_bytes)
		rotate(j);
	if (j->fd >= 0 && write(j->fd, line, (size_t)n) == n)
		j->bytes += (size_t)n;
	pthread_mutex_unlock(&journal_lock);
}
