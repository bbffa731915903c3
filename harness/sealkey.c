/* A private key file per run directory, for reftrain --ckpt-key-file. */
#include "regfile.h"
#include "sealkey.h"
#include "damage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

#define AUDIT_MAX 4096

typedef struct sealed_file {
	unsigned char header[24];
	char name[48];
} sealed_file;

/* Read the stream header of GEN/NAME if it is a sealed regular file (not through a link). */
static int header_of(int gfd, const char *name, unsigned char *out)
{
	unsigned char pre[40];
	int fd = harness_open_regular(gfd, name, NULL), ok = 0;

	if (fd < 0)
		return 0;
	if (pread(fd, pre, sizeof pre, 0) == (ssize_t)sizeof pre &&
	    memcmp(pre, "CKPTSEAL", 8) == 0) {
		memcpy(out, pre + 16, 24);
		ok = 1;
	}
	close(fd);
	return ok;
}

int harness_seal_audit(const char *root, char *why, size_t len)
{
	sealed_file *v = calloc(AUDIT_MAX, sizeof *v);
	DIR *d = opendir(root);
	struct dirent *g;
	int n = 0, found = 0;

	while (v && d && !found && (g = readdir(d)) != NULL) {
		int gfd;
		DIR *gd;
		struct dirent *f;
		if (!harness_is_generation_name(g->d_name) ||
		    (gfd = openat(dirfd(d), g->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
			continue;
		if (!(gd = fdopendir(gfd))) {
			close(gfd);
			continue;
		}
		while (!found && n < AUDIT_MAX && (f = readdir(gd)) != NULL) {
			if (f->d_name[0] == '.' || strlen(f->d_name) > 32 || !header_of(dirfd(gd), f->d_name, v[n].header))
				continue;
			snprintf(v[n].name, sizeof v[n].name, "%s/%s", g->d_name, f->d_name);
			for (int i = 0; i < n && !found; i++)
				if (memcmp(v[i].header, v[n].header, 24) == 0) {
					snprintf(why, len, "nonce reused: %s/%s and %s/%s share a secretstream header, so one key "
						 "and nonce encrypted both (their keystreams cancel: the XOR of the two "
						 "plaintexts leaks)", root, v[i].name, root, v[n].name);
					found = 1;
				}
			n++;
		}
		closedir(gd);
	}
	if (d)
		closedir(d);
	free(v);
	return found;
}
