/* Damage at rest: what a failing disk or a careless operator does to committed files. */
#include "damage.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int harness_damage_apply(const harness_damage *g, const char *root, FILE *log)
{
	char *gens[4096];
	int n = 0, hit = 0;
	DIR *d = opendir(root);
	struct dirent *de;

	while (d && (de = readdir(d)) != NULL && n < 4096) {
		size_t l = strlen(de->d_name);
		if (l == 13 && strncmp(de->d_name, "step-", 5) == 0 && strspn(de->d_name + 5, "0123456789") == 8)
			gens[n++] = strdup(de->d_name);
	}
	if (d)
		closedir(d);
	qsort(gens, (size_t)n, sizeof *gens, cmp_str);
	for (int i = 0; i < n; i++) {
		int pick = strcmp(g->generation, "all") == 0 || (strcmp(g->generation, "newest") == 0 && i == n - 1) ||
			   (strcmp(g->generation, "oldest") == 0 && i == 0) || strcmp(g->generation, gens[i]) == 0;
		char dir[1200];
		snprintf(dir, sizeof dir, "%s/%s", root, gens[i]);
		DIR *gd = pick ? opendir(dir) : NULL;
		while (gd && (de = readdir(gd)) != NULL) {
			char path[1400];
			struct stat st;
			if (de->d_name[0] == '.' || fnmatch(g->file, de->d_name, 0) != 0)
				continue;
			snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
			if (stat(path, &st) < 0)
				continue;
			if (g->kind == HARNESS_DELETE) {
				if (unlink(path) == 0)
					hit++, fprintf(log, "delete %s\n", path);
			} else if (g->kind == HARNESS_TRUNCATE) {
				if (truncate(path, g->size) == 0)
					hit++, fprintf(log, "truncate %s to %" PRId64 " bytes\n", path, g->size);
			} else if (st.st_size > 0) {
				int64_t off = g->offset;
				if (off == INT64_MIN) {   /* seeded: the same byte on every run */
					char key[256];
					snprintf(key, sizeof key, "%" PRId64 "/%s", g->seed, de->d_name);
					off = (int64_t)(XXH3_64bits(key, strlen(key)) % (uint64_t)st.st_size);
				} else if (off < 0) {
					off += st.st_size;
				}
				unsigned char b;
				int fd = open(path, O_RDWR);
				if (fd >= 0 && off >= 0 && off < st.st_size && pread(fd, &b, 1, off) == 1) {
					b ^= 0x01;
					if (pwrite(fd, &b, 1, off) == 1 && fsync(fd) == 0)
						hit++, fprintf(log, "bitflip %s at byte %" PRId64 "\n", path, off);
				}
				if (fd >= 0)
					close(fd);
			}
		}
		if (gd)
			closedir(gd);
	}
	for (int i = 0; i < n; i++)
		free(gens[i]);
	fflush(log);
	return hit;
}

