/* Regular files only, never through a link, never blocking (regfile.h). */
#include "regfile.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

int harness_open_regular(int dirfd, const char *path, struct stat *st)
{
	struct stat own;
	int fd = openat(dirfd, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);

	if (!st)
		st = &own;
	if (fd < 0)
		return -1;
	if (fstat(fd, st) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	if (!S_ISREG(st->st_mode)) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	return fd;
}

FILE *harness_fopen_regular(int dirfd, const char *path)
{
	int fd = harness_open_regular(dirfd, path, NULL);
	FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;

	if (fd >= 0 && !f) {
		int e = errno;
		close(fd);
		errno = e;
	}
	return f;
}
