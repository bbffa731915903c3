/* Damage at rest: what a failing disk or a careless operator does to committed files. */
#include "regfile.h"
#include "damage.h"

#include <ctype.h>
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

#include "chunkpick.h"
#include "plan.h"

int harness_is_generation_name(const char *name)
{
	return strlen(name) == 13 && strncmp(name, "step-", 5) == 0 && strspn(name + 5, "0123456789") == 8;
}

int harness_generation_step(const char *pattern, const char *name, int64_t *step)
{
	if (!pattern) {
		if (!harness_is_generation_name(name))
			return 0;
		*step = strtoll(name + 5, NULL, 10);
		return 1;
	}
	if (name[0] == '.' || fnmatch(pattern, name, FNM_PERIOD) != 0)
		return 0;
	const char *last = NULL;
	for (const char *p = name; *p; p++)
		if (isdigit((unsigned char)*p))
			last = p;
	if (!last)
		return 0;
	const char *first = last;
	while (first > name && isdigit((unsigned char)first[-1]))
		first--;
	if (last - first + 1 > 18)      /* more digits than a step can have */
		return 0;
	*step = strtoll(first, NULL, 10);
	return 1;
}

typedef struct generation {
	char *name;
	int64_t step;
	int dir;
} generation;

static int cmp_gen(const void *a, const void *b)
{
	const generation *x = a, *y = b;
	return x->step != y->step ? (x->step < y->step ? -1 : 1) : strcmp(x->name, y->name);
}

/* Every committed generation under root, oldest (lowest step) first; no cap on how many. */
static int list_generations(const char *root, const char *pattern, generation **out)
{
	DIR *d = opendir(root);
	struct dirent *de;
	generation *v = NULL;
	int n = 0, cap = 0;

	*out = NULL;
	while (d && (de = readdir(d)) != NULL) {
		struct stat st;
		int64_t step;
		if (!harness_generation_step(pattern, de->d_name, &step) ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !(S_ISDIR(st.st_mode) || (pattern && S_ISREG(st.st_mode))))
			continue;
		if (n == cap) {
			generation *w = realloc(v, sizeof *v * (size_t)(cap = cap ? 2 * cap : 64));
			if (!w)
				break;
			v = w;
		}
		if (!(v[n].name = strdup(de->d_name)))
			break;
		v[n].step = step;
		v[n].dir = S_ISDIR(st.st_mode);
		n++;
	}
	if (d)
		closedir(d);
	if (n)
		qsort(v, (size_t)n, sizeof *v, cmp_gen);
	*out = v;
	return n;
}

/* A regular file's bytes (never through a link), at most 1 GiB. Caller frees. */
static char *slurp_at(int dfd, const char *name, size_t *len)
{
	struct stat st;
	int fd = harness_open_regular(dfd, name, &st);
	char *buf = NULL;

	if (fd >= 0 && st.st_size <= (1 << 30) &&
	    (buf = malloc((size_t)st.st_size + 1)) && pread(fd, buf, (size_t)st.st_size, 0) != st.st_size) {
		free(buf);
		buf = NULL;
	}
	if (buf)
		*len = (size_t)st.st_size;
	if (fd >= 0)
		close(fd);
	return buf;
}

static int spill_at(int dfd, const char *name, const char *buf, size_t len)
{
	int fd = openat(dfd, name, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC), ok;

	if (fd < 0)
		return 0;
	ok = write(fd, buf, len) == (ssize_t)len && fsync(fd) == 0;
	return close(fd) == 0 && ok;
}

/* Overwrite the 16 hex digits after key (searched from at) with v; 0 if there are none. */
static int put_hex(char *text, size_t len, const char *from, const char *key, uint64_t v)
{
	char hex[17], *p = from ? memmem(from, len - (size_t)(from - text), key, strlen(key)) : NULL;

	if (!p || (size_t)(p - text) + strlen(key) + 16 > len)
		return 0;
	snprintf(hex, sizeof hex, "%016" PRIx64, v);
	memcpy(p + strlen(key), hex, 16);
	return 1;
}

/*
 * What an attacker who can write the root does after flipping a bit in a
 * plain generation's file: its xxh3 in the manifest, then the manifest's
 * checksum (the xxh3 of every byte before "checksum":), recomputed in place
 * (same widths, the size unchanged). A sealed manifest has no such text: 0.
 */
static int recompute_hashes(int dfd, const char *name)
{
	size_t len, flen;
	char *text = slurp_at(dfd, "manifest.json", &len), *data = slurp_at(dfd, name, &flen), key[160];
	int ok = 0;

	snprintf(key, sizeof key, "\"name\":\"%s\"", name);
	if (text && data && put_hex(text, len, memmem(text, len, key, strlen(key)), "\"xxh3\":\"", XXH3_64bits(data, flen))) {
		char *c = memmem(text, len, "\"checksum\":\"", 12);
		ok = c && put_hex(text, len, c, "\"checksum\":\"", XXH3_64bits(text, (size_t)(c - text))) &&
		     spill_at(dfd, "manifest.json", text, len);
	}
	free(text);
	free(data);
	return ok;
}

/* Damage one regular file (never through a link); 1 if it was damaged. */
static int damage_file(const harness_damage *g, const char *src, int dfd, const char *name, const char *shown, FILE *log)
{
	struct stat st;
	int fd, hit = 0;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
		return 0;
	if (g->kind == HARNESS_OVERWRITE) {     /* src: the path of g->from, resolved */
		size_t n;
		char *buf = src ? slurp_at(AT_FDCWD, src, &n) : NULL;
		if (buf && strcmp(src, shown) != 0 && spill_at(dfd, name, buf, n))
			hit = 1, fprintf(log, "overwrite %s with the bytes of %s\n", shown, src);
		free(buf);
		return hit;
	}
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
				hit = 1, fprintf(log, "bitflip %s at byte %" PRId64 "%s\n", shown, off, !g->recompute ? "" :
						 recompute_hashes(dfd, name) ? ", hashes recomputed" : ", hashes not recomputed (a sealed "
						 "or unreadable manifest)");
		}
	}
	close(fd);
	return hit;
}

/* The files of one directory generation that FILE matches. */
static int damage_dir(const harness_damage *g, const char *src, const char *dir, FILE *log)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), hit = 0;
	DIR *gd;
	struct dirent *de;

	if (dfd < 0)
		return 0;
	if (!(gd = fdopendir(dfd))) {
		close(dfd);
		return 0;
	}
	while ((de = readdir(gd)) != NULL) {
		char shown[PATH_MAX + 256];
		if (de->d_name[0] == '.' || fnmatch(g->file, de->d_name, 0) != 0)
			continue;
		snprintf(shown, sizeof shown, "%s/%s", dir, de->d_name);
		hit += damage_file(g, src, dirfd(gd), de->d_name, shown, log);
	}
	closedir(gd);
	return hit;
}

/*
 * The chunk generation i shares with generation i - 1: damaged once, and
 * logged against every generation that references it (so the oracle knows
 * each of them is damaged: restore must pass over all of them).
 */
static int damage_shared_chunk(const harness_damage *g, const char *root, generation *gens, int n, int i, FILE *log)
{
	char rel[96], dir[PATH_MAX + 100], shown[PATH_MAX + 200];
	static const char *const verbs[] = { "bitflip", "truncate", "delete" };
	int hit = 0;

	if (harness_chunk_pick_shared(root, gens[i].name, gens[i - 1].name, rel, sizeof rel) < 0)
		return 0;
	snprintf(dir, sizeof dir, "%s/%.9s", root, rel);        /* ROOT/chunks/HH */
	snprintf(shown, sizeof shown, "%s/%s", root, rel);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return 0;
	hit = damage_file(g, NULL, dfd, rel + 10, shown, log);
	close(dfd);
	/* the recipes still name it, deleted or not */
	for (int k = 0; hit && k < n; k++)
		if (gens[k].dir && harness_chunk_referenced(root, gens[k].name, rel))
			fprintf(log, "%s %s/%s/%s (a chunk it references)\n", verbs[g->kind], root, gens[k].name, rel);
	return hit;
}

static int picks(const char *sel, const generation *gens, int n, int i)
{
	int64_t want = strncmp(sel, "step-", 5) == 0 ? strtoll(sel + 5, NULL, 10) : -1;
	return strcmp(sel, "all") == 0 || (strcmp(sel, "newest") == 0 && i == n - 1) ||
	       (strcmp(sel, "oldest") == 0 && i == 0) || gens[i].step == want;
}

int harness_damage_apply(const harness_damage *g, const char *root, const char *pattern, FILE *log)
{
	generation *gens;
	int n = list_generations(root, pattern, &gens), hit = 0, rfd = -1, upto = n;
	char src[PATH_MAX + 256] = "";

	if (g->kind == HARNESS_OVERWRITE) {     /* the source: FILE in the oldest generation its selector picks */
		const char *slash = strchr(g->from, '/');
		char sel[32];
		int from = -1;
		snprintf(sel, sizeof sel, "%.*s", slash ? (int)(slash - g->from) : 0, g->from);
		for (int i = 0; slash && i < n && from < 0; i++)
			if (gens[i].dir && picks(sel, gens, n, i))
				from = i;
		if (from < 0 || snprintf(src, sizeof src, "%s/%s/%s", root, gens[from].name, slash + 1) >= (int)sizeof src)
			upto = 0;      /* no source: the damage does not fire */
	}
	for (int i = 0; i < upto; i++) {
		int pick = picks(g->generation, gens, n, i);
		char path[PATH_MAX];
		if (!pick || snprintf(path, sizeof path, "%s/%s", root, gens[i].name) >= (int)sizeof path)
			continue;
		if (strcmp(g->file, HARNESS_SHARED_CHUNK) == 0) {     /* libckpt's chunk store (chunkpick.h) */
			if (gens[i].dir && i > 0)
				hit += damage_shared_chunk(g, root, gens, n, i, log);
			continue;
		}
		if (gens[i].dir) {
			hit += damage_dir(g, src, path, log);
		} else if (fnmatch(g->file, gens[i].name, 0) == 0) {
			if (rfd < 0)
				rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (rfd >= 0)
				hit += damage_file(g, src, rfd, gens[i].name, path, log);
		}
	}
	if (rfd >= 0)
		close(rfd);
	for (int i = 0; i < n; i++)
		free(gens[i].name);
	free(gens);
	fflush(log);
	return hit;
}

int harness_damage_apply_fault(const harness_fault *f, const char *root, const char *pattern, FILE *log)
{
	harness_damage g = { .kind = (enum harness_damage_kind)f->dkind, .offset = f->doff, .seed = f->dseed,
			     .size = f->dsize };
	const char *slash = strchr(f->target, '/');

	if (!slash || !root)
		return 0;
	snprintf(g.generation, sizeof g.generation, "%.*s", (int)(slash - f->target), f->target);
	snprintf(g.file, sizeof g.file, "%s", slash + 1);
	return harness_damage_apply(&g, root, pattern, log);
}

int harness_damage_scan_log(const char *log_path, const char *root, const char *pattern, int64_t *steps, int max)
{
	FILE *f = fopen(log_path, "r");
	char *line = NULL;
	size_t cap = 0, rl = strlen(root);
	int n = 0;

	if (!f)
		return errno == ENOENT ? 0 : -errno;
	while (getline(&line, &cap, f) > 0) {
		static const char *const verbs[] = { "bitflip ", "truncate ", "delete ", "overwrite " };
		for (int v = 0; v < 4; v++) {
			size_t vl = strlen(verbs[v]);
			const char *p = line + vl;
			char name[NAME_MAX + 1];
			int64_t step;
			if (strncmp(line, verbs[v], vl) != 0 || strncmp(p, root, rl) != 0 || p[rl] != '/')
				continue;
			/* ROOT/GENERATION, then '/' (a file in it) or the end of the path (the generation is the file) */
			size_t nl = strcspn(p + rl + 1, "/ \n");
			if (nl == 0 || nl > NAME_MAX)
				continue;
			memcpy(name, p + rl + 1, nl);
			name[nl] = '\0';
			if (!harness_generation_step(pattern, name, &step) || (!pattern && p[rl + 1 + nl] != '/'))
				continue;
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
