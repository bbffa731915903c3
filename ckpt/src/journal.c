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

int ckpt__journal_open(ckpt_journal *j, const char *root, int rank, size_t max_bytes)
{
	char dir[CKPT_PATH_MAX];
	struct stat st;

	j->fd = -1;
	j->seq = 0;
	j->max_bytes = max_bytes ? max_bytes : 4u << 20;
	if (snprintf(dir, sizeof dir, "%s/journal", root) >= (int)sizeof dir ||
	    snprintf(j->path, sizeof j->path, "%s/rank-%05d.jsonl", dir, rank) >= (int)sizeof j->path)
		return -ENAMETOOLONG;
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	j->fd = open(j->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (j->fd < 0)
		return -errno;
	j->bytes = fstat(j->fd, &st) == 0 ? (size_t)st.st_size : 0;
	return 0;
}

void ckpt__journal_close(ckpt_journal *j)
{
	if (j->fd >= 0)
		close(j->fd);
	j->fd = -1;
}

static void rotate(ckpt_journal *j)
{
	char old[CKPT_PATH_MAX + 2];

	snprintf(old, sizeof old, "%s.1", j->path);
	if (rename(j->path, old) < 0)
		return;
	close(j->fd);
	j->fd = open(j->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
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
