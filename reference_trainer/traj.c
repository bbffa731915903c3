#include "traj.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bf16.h"

void reftrain_line_reset(reftrain_line *l)
{
	l->len = 0;
	l->overflow = 0;
	l->buf[0] = '\0';
}

void reftrain_line_add(reftrain_line *l, const char *fmt, ...)
{
	va_list ap;
	size_t room = sizeof l->buf - l->len;

	va_start(ap, fmt);
	int n = vsnprintf(l->buf + l->len, room, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= room - 1)   /* keep a byte for the newline */
		l->overflow = 1;
	else
		l->len += (size_t)n;
}

void reftrain_line_f32(reftrain_line *l, const char *key, float f)
{
	reftrain_line_add(l, ",\"%s\":\"0x%08" PRIx32 "\"", key, reftrain_f32_bits(f));
}

void reftrain_line_digest(reftrain_line *l, const char *key, uint64_t d)
{
	reftrain_line_add(l, ",\"%s\":\"%016" PRIx64 "\"", key, d);
}

int reftrain_traj_open(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	return fd < 0 ? -errno : fd;
}

int reftrain_traj_write(int fd, reftrain_line *l)
{
	if (l->overflow)
		return -EOVERFLOW;
	l->buf[l->len++] = '\n';
	for (size_t off = 0; off < l->len;) {
		ssize_t n = write(fd, l->buf + off, l->len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		off += (size_t)n;
	}
	return 0;
}

void reftrain_ack_note(uint64_t step)
{
	const char *path = getenv("CKPT_ACK_LOG");
	struct timespec ts;
	char line[96];
	int fd, n;

	if (!path || !*path)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	n = snprintf(line, sizeof line, "{\"t\":%" PRIu64 ",\"step\":%" PRIu64 "}\n",
		     (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec, step);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0)
		return;
	if (write(fd, line, (size_t)n) != n)
		(void)0;       /* best effort: a missing ack time falls back to the library's view */
	close(fd);
}
