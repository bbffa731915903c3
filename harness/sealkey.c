/* A private key file per run directory, for reftrain --ckpt-key-file. */
#include "sealkey.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/random.h>
#include <unistd.h>

int harness_seal_key(const char *dir, char *path, size_t len)
{
	unsigned char k[32];
	char hex[65];
	int fd, rc = 0;

	if (snprintf(path, len, "%s/ckpt.key", dir) >= (int)len)
		return -ENAMETOOLONG;
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0)
		return errno == EEXIST ? 0 : -errno;     /* an earlier attempt's: the same key */
	/* the key never reaches anything compared bit for bit: random is fine */
	if (getrandom(k, sizeof k, 0) != (ssize_t)sizeof k)
		rc = -EIO;
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", k[i]);
	if (rc == 0 && (write(fd, hex, 64) != 64 || fsync(fd) < 0))
		rc = -EIO;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc < 0)
		unlink(path);
	return rc;
}
