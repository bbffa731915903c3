#include "powerloss.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct rec {
	uint64_t t, seq;
	int rank;
	char op[12];
	char path[1024], to[1024], saved[1024];
	uint64_t ino, parent, from_parent, to_parent;
	int64_t off, old_size, size, saved_off;
	int failed;
} rec;

static int cmp_rec(const void *a, const void *b)
{
	const rec *x = a, *y = b;
	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	return x->rank != y->rank ? x->rank - y->rank : (x->seq < y->seq ? -1 : x->seq > y->seq);
}

static void str(json_t *j, const char *k, char *out, size_t len)
{
	const char *s = json_string_value(json_object_get(j, k));
	snprintf(out, len, "%s", s ? s : "");
}

static uint64_t u64(json_t *j, const char *k)
{
	return (uint64_t)json_integer_value(json_object_get(j, k));
}

static int load(const char *prefix, int world, rec **out, int *n)
{
	int cap = 0;

	*out = NULL;
	*n = 0;
	for (int r = 0; r < world; r++) {
		char path[1200], *line = NULL;
		size_t lcap = 0;
		int first = *n;
		snprintf(path, sizeof path, "%s.rank-%d.jsonl", prefix, r);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		while (getline(&line, &lcap, f) > 0) {
			json_t *j = json_loads(line, 0, NULL);
			if (!j)
				continue;
			char op[12];
			str(j, "op", op, sizeof op);
			if (strcmp(op, "failed") == 0) {
				uint64_t ref = u64(j, "ref");
				for (int i = first; i < *n; i++)
					if ((*out)[i].seq == ref)
						(*out)[i].failed = 1;
				json_decref(j);
				continue;
			}
			if (*n == cap) {
				cap = cap ? 2 * cap : 256;
				*out = realloc(*out, sizeof **out * (size_t)cap);
			}
			rec *x = &(*out)[(*n)++];
			memset(x, 0, sizeof *x);
			x->rank = r;
			x->t = u64(j, "t");
			x->seq = u64(j, "seq");
			snprintf(x->op, sizeof x->op, "%s", op);
			str(j, strcmp(op, "rename") == 0 ? "from" : "path", x->path, sizeof x->path);
			str(j, "to", x->to, sizeof x->to);
			str(j, "saved", x->saved, sizeof x->saved);
			x->ino = u64(j, "ino");
			x->parent = u64(j, "parent");
			x->from_parent = u64(j, "from_parent");
			x->to_parent = u64(j, "to_parent");
			x->off = (int64_t)u64(j, "off");
			x->old_size = (int64_t)u64(j, "old_size");
			x->size = (int64_t)u64(j, "size");
			x->saved_off = (int64_t)u64(j, "saved_off");
			json_decref(j);
		}
		free(line);
		fclose(f);
	}
	qsort(*out, (size_t)*n, sizeof **out, cmp_rec);
	return 0;
}

static int synced_after(const rec *v, int n, int i, uint64_t ino)
{
	for (int k = i + 1; k < n; k++)
		if (!v[k].failed && strcmp(v[k].op, "fsync") == 0 && v[k].ino == ino)
			return 1;
	return 0;
}

static int durable(const rec *v, int n, int i)
{
	const rec *x = &v[i];
	if (strcmp(x->op, "write") == 0 || strcmp(x->op, "truncate") == 0)
		return synced_after(v, n, i, x->ino);
	if (strcmp(x->op, "rename") == 0)
		return synced_after(v, n, i, x->to_parent) &&
		       (x->from_parent == x->to_parent || synced_after(v, n, i, x->from_parent));
	return synced_after(v, n, i, x->parent);    /* create, mkdir, unlink, rmdir */
}

/* The current path of an inode under root (names change as renames are undone). */
static uint64_t want_ino;
static char found[1200];

static int visit(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)flag;
	(void)ftw;
	if ((uint64_t)sb->st_ino == want_ino) {
		snprintf(found, sizeof found, "%s", p);
		return 1;
	}
	return 0;
}

static int path_of(const char *root, uint64_t ino, char *out, size_t len)
{
	want_ino = ino;
	found[0] = '\0';
	nftw(root, visit, 16, FTW_PHYS);
	snprintf(out, len, "%s", found);
	return found[0] ? 0 : -ENOENT;
}

/* parent's current path + the entry's base name */
static int entry_path(const char *root, uint64_t parent, const char *recorded, char *out, size_t len)
{
	char dir[1200], tmp[1024];
	if (path_of(root, parent, dir, sizeof dir) < 0)
		return -ENOENT;
	snprintf(tmp, sizeof tmp, "%s", recorded);
	snprintf(out, len, "%s/%s", dir, basename(tmp));
	return 0;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void restore_bytes(const char *path, const char *saved, int64_t at)
{
	char buf[1 << 16];
	int src = open(saved, O_RDONLY), dst = open(path, O_WRONLY);
	ssize_t r;
	while (src >= 0 && dst >= 0 && (r = read(src, buf, sizeof buf)) > 0) {
		if (pwrite(dst, buf, (size_t)r, at) != r)
			break;
		at += r;
	}
	if (src >= 0)
		close(src);
	if (dst >= 0)
		close(dst);
}

int harness_powerloss_apply(const char *prefix, int world, const char *root, FILE *log)
{
	rec *v;
	int n, undone = 0;

	load(prefix, world, &v, &n);
	for (int i = n - 1; i >= 0; i--) {
		rec *x = &v[i];
		char p[1200], q[1200];
		struct stat st;
		if (x->failed || strcmp(x->op, "fsync") == 0 || durable(v, n, i))
			continue;
		if (strcmp(x->op, "write") == 0 || strcmp(x->op, "truncate") == 0) {
			if (path_of(root, x->ino, p, sizeof p) < 0 || stat(p, &st) < 0)
				continue;
			if (st.st_size != x->old_size && truncate(p, x->old_size) < 0)
				continue;
			if (x->saved[0])
				restore_bytes(p, x->saved, x->saved_off);
		} else if (strcmp(x->op, "create") == 0 || strcmp(x->op, "mkdir") == 0) {
			if (entry_path(root, x->parent, x->path, p, sizeof p) < 0)
				continue;
			nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		} else if (strcmp(x->op, "rename") == 0) {
			if (entry_path(root, x->to_parent, x->to, p, sizeof p) < 0 ||
			    entry_path(root, x->from_parent, x->path, q, sizeof q) < 0 || rename(p, q) < 0)
				continue;
			if (x->saved[0])
				link(x->saved, p);
		} else if (strcmp(x->op, "unlink") == 0) {
			if (!x->saved[0] || entry_path(root, x->parent, x->path, p, sizeof p) < 0 || link(x->saved, p) < 0)
				continue;
		} else if (strcmp(x->op, "rmdir") == 0) {
			if (entry_path(root, x->parent, x->path, p, sizeof p) < 0 || mkdir(p, 0755) < 0)
				continue;
		} else {
			continue;
		}
		undone++;
		if (log)
			fprintf(log, "power loss: dropped rank %d's %s of %s%s%s (never made durable)\n", x->rank, x->op,
				x->path, x->to[0] ? " -> " : "", x->to);
	}
	free(v);
	return undone;
}
