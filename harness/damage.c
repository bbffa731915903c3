/* Damage at rest: what a failing disk or a careless operator does to committed files. */
#include "damage.h"

#include <dirent.h>
#include <errno.h>
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

int harness_is_generation_name(const char *name)
{
	return strlen(name) == 13 && strncmp(name, "step-", 5) == 0 && strspn(name + 5, "0123456789") == 8;
}

/* Every committed generation's name under root, sorted (oldest first); no cap on how many. */
static int list_generations(const char *root, char ***out)
{
	DIR *d = opendir(root);
	struct dirent *de;
	char **v = NULL;
	int n = 0, cap = 0;

	*out = NULL;
	while (d && (de = readdir(d)) != NULL) {
		struct stat st;
		if (!harness_is_generation_name(de->d_name) || fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		if (n == cap) {
			char **w = realloc(v, sizeof *v * (size_t)(cap = cap ? 2 * cap : 64));
			if (!w)
				break;
			v = w;
		}
		if (!(v[n] = strdup(de->d_name)))
			break;
		n++;
	}
	if (d)
		closedir(d);
	if (n)
		qsort(v, (size_t)n, sizeof *v, cmp_str);
	*out = v;
	return n;
}

/* Damage one regular file (never through a link); 1 if it was damaged. */
static int damage_file(const harness_damage *g, int dfd, const char *name, const char *shown, FILE *log)
{
	struct stat st;
	int fd, hit = 0;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
		return 0;
	if (g->kind == HARNESS_DELETE) {
		if (unlinkat(dfd, name, 0) == 0)
			hit = 1, fprintf(log, "delete %s\n", shown);
		return hit;
	}
	if ((fd = openat(dfd, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0)
		return 0;
	if (g->kind == HARNESS_TRUNCATE) {
		if (ftruncate(fd, g->size) == 0 && fsync(fd) == 0)
			hit = 1, fprintf(log, "truncate %s to %" PRId64 " bytes\n", shown, g->size);
	} else if (st.st_size > 0) {
		int64_t off = g->offset;
		if (off == INT64_MIN) {   /* seeded: the same byte on every run */
			char key[256];
			snprintf(key, sizeof key, "%" PRId64 "/%s", g->seed, name);
			off = (int64_t)(XXH3_64bits(key, strlen(key)) % (uint64_t)st.st_size);
		} else if (off < 0) {
			off += st.st_size;
		}
		unsigned char b;
		if (off >= 0 && off < st.st_size && pread(fd, &b, 1, off) == 1) {
			b ^= 0x01;
			if (pwrite(fd, &b, 1, off) == 1 && fsync(fd) == 0)
				hit = 1, fprintf(log, "bitflip %s at byte %" PRId64 "\n", shown, off);
		}
	}
	close(fd);
	return hit;
}

int harness_damage_apply(const harness_damage *g, const char *root, FILE *log)
{
	char **gens;
	int n = list_generations(root, &gens), hit = 0;

	for (int i = 0; i < n; i++) {
		int pick = strcmp(g->generation, "all") == 0 || (strcmp(g->generation, "newest") == 0 && i == n - 1) ||
			   (strcmp(g->generation, "oldest") == 0 && i == 0) || strcmp(g->generation, gens[i]) == 0;
		char dir[PATH_MAX];
		int dfd;
		DIR *gd;
		struct dirent *de;
		if (!pick || snprintf(dir, sizeof dir, "%s/%s", root, gens[i]) >= (int)sizeof dir)
			continue;
		if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
			continue;
		if (!(gd = fdopendir(dfd))) {
			close(dfd);
			continue;
		}
		while ((de = readdir(gd)) != NULL) {
			char shown[PATH_MAX + 256];
			if (de->d_name[0] == '.' || fnmatch(g->file, de->d_name, 0) != 0)
				continue;
			snprintf(shown, sizeof shown, "%s/%s", dir, de->d_name);
			hit += damage_file(g, dirfd(gd), de->d_name, shown, log);
		}
		closedir(gd);
	}
	for (int i = 0; i < n; i++)
		free(gens[i]);
	free(gens);
	fflush(log);
	return hit;
}

int harness_damage_scan_log(const char *log_path, const char *root, int64_t *steps, int max)
{
	FILE *f = fopen(log_path, "r");
	char *line = NULL;
	size_t cap = 0, rl = strlen(root);
	int n = 0;

	if (!f)
		return errno == ENOENT ? 0 : -errno;
	while (getline(&line, &cap, f) > 0) {
		static const char *const verbs[] = { "bitflip ", "truncate ", "delete " };
		for (int v = 0; v < 3; v++) {
			size_t vl = strlen(verbs[v]);
			const char *p = line + vl;
			char name[14];
			if (strncmp(line, verbs[v], vl) != 0 || strncmp(p, root, rl) != 0 || p[rl] != '/')
				continue;
			snprintf(name, sizeof name, "%.13s", p + rl + 1);
			if (!harness_is_generation_name(name) || p[rl + 14] != '/')
				continue;
			int64_t step = strtoll(name + 5, NULL, 10);
			int dup = 0;
			for (int k = 0; k < n; k++)
				dup |= steps[k] == step;
			if (!dup && n < max)
				steps[n++] = step;
		}
	}
	free(line);
	fclose(f);
	return n;
}
