/* Picking a chunk that generations share, for damage at rest (see chunkpick.h). */
#include "regfile.h"
#include "chunkpick.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RECIPE_MAX ((size_t)64 << 20)
#define HASH_LEN 16

/* A recipe's chunk table (malloc'd), or NULL: *n hashes. */
static unsigned char *load_table(const char *path, size_t *n)
{
	struct stat st;
	int fd = harness_open_regular(AT_FDCWD, path, &st);
	unsigned char *buf = NULL;
	uint64_t hlen = 0;

	*n = 0;
	if (fd < 0)
		return NULL;
	if (st.st_size < 8 || (size_t)st.st_size > RECIPE_MAX ||
	    !(buf = malloc((size_t)st.st_size)) || pread(fd, buf, (size_t)st.st_size, 0) != st.st_size) {
		close(fd);
		free(buf);
		return NULL;
	}
	close(fd);
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | buf[i];
	if (hlen > (uint64_t)st.st_size - 8) {
		free(buf);
		return NULL;
	}
	*n = ((size_t)st.st_size - 8 - (size_t)hlen) / HASH_LEN;
	memmove(buf, buf + 8 + hlen, *n * HASH_LEN);
	return buf;
}

static void rel_of(const unsigned char *h, char *rel, size_t len)
{
	char hex[2 * HASH_LEN + 1];
	for (int i = 0; i < HASH_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	snprintf(rel, len, "chunks/%.2s/%s", hex, hex);
}

int harness_chunk_pick_shared(const char *root, const char *gen, const char *older, char *rel, size_t len)
{
	char a[PATH_MAX], b[PATH_MAX];
	size_t na, nb;
	unsigned char *ta, *tb;
	int rc = -ENOENT;

	snprintf(a, sizeof a, "%s/%s/rank-00000.chunks", root, gen);
	snprintf(b, sizeof b, "%s/%s/rank-00000.chunks", root, older);
	ta = load_table(a, &na);
	tb = load_table(b, &nb);
	for (size_t i = 0; ta && tb && i < na && rc < 0; i++)
		for (size_t k = 0; k < nb; k++)
			if (memcmp(ta + i * HASH_LEN, tb + k * HASH_LEN, HASH_LEN) == 0) {
				rel_of(ta + i * HASH_LEN, rel, len);
				rc = 0;
				break;
			}
	free(ta);
	free(tb);
	return rc;
}

int harness_chunk_referenced(const char *root, const char *gen, const char *rel)
{
	char dir[PATH_MAX];
	DIR *d;
	struct dirent *de;
	int found = 0;

	snprintf(dir, sizeof dir, "%s/%s", root, gen);
	if (!(d = opendir(dir)))
		return 0;
	while (!found && (de = readdir(d)) != NULL) {
		char path[PATH_MAX + 300], r[80];
		size_t n;
		unsigned char *t;
		if (fnmatch("rank-*.chunks", de->d_name, 0) != 0)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		if (!(t = load_table(path, &n)))
			continue;
		for (size_t i = 0; i < n && !found; i++) {
			rel_of(t + i * HASH_LEN, r, sizeof r);
			found = strcmp(r, rel) == 0;
		}
		free(t);
	}
	closedir(d);
	return found;
}
