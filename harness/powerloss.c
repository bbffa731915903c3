#include "powerloss.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int cmp_rec(const void *a, const void *b)
{
	const harness_undo_rec *x = a, *y = b;
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

int harness_undo_load(harness_undo *u, const char *prefix, int world)
{
	int cap = 0;

	u->v = NULL;
	u->n = 0;
	for (int r = 0; r < world; r++) {
		char path[1200], *line = NULL;
		size_t lcap = 0;
		int first = u->n;
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
				for (int i = first; i < u->n; i++)
					if (u->v[i].seq == ref)
						u->v[i].failed = 1;
				json_decref(j);
				continue;
			}
			if (u->n == cap) {
				cap = cap ? 2 * cap : 256;
				u->v = realloc(u->v, sizeof *u->v * (size_t)cap);
			}
			harness_undo_rec *x = &u->v[u->n++];
			memset(x, 0, sizeof *x);
			x->rank = r;
			x->t = u64(j, "t");
			x->seq = u64(j, "seq");
			x->step = u64(j, "step");
			snprintf(x->op, sizeof x->op, "%s", op);
			str(j, "call", x->call, sizeof x->call);
			str(j, "phase", x->phase, sizeof x->phase);
			str(j, strcmp(op, "rename") == 0 ? "from" : "path", x->path, sizeof x->path);
			str(j, "to", x->to, sizeof x->to);
			str(j, "saved", x->saved, sizeof x->saved);
			x->ino = u64(j, "ino");
			x->parent = u64(j, "parent");
			x->from_parent = u64(j, "from_parent");
			x->to_parent = u64(j, "to_parent");
			x->off = (int64_t)u64(j, "off");
			x->len = (int64_t)u64(j, "len");
			x->old_size = (int64_t)u64(j, "old_size");
			x->size = (int64_t)u64(j, "size");
			x->saved_off = (int64_t)u64(j, "saved_off");
			json_decref(j);
		}
		free(line);
		fclose(f);
	}
	qsort(u->v, (size_t)u->n, sizeof *u->v, cmp_rec);
	return 0;
}

void harness_undo_free(harness_undo *u)
{
	free(u->v);
	u->v = NULL;
	u->n = 0;
}

static int synced_between(const harness_undo *u, int i, int horizon, uint64_t ino)
{
	for (int k = i + 1; k < horizon; k++)
		if (!u->v[k].failed && strcmp(u->v[k].op, "fsync") == 0 && u->v[k].ino == ino)
			return 1;
	return 0;
}

int harness_undo_is_entry_op(const harness_undo_rec *r)
{
	return strcmp(r->op, "write") != 0 && strcmp(r->op, "truncate") != 0 && strcmp(r->op, "fsync") != 0;
}

int harness_undo_durable(const harness_undo *u, int i, int horizon)
{
	const harness_undo_rec *x = &u->v[i];
	if (x->failed || strcmp(x->op, "fsync") == 0)
		return 1;
	if (!harness_undo_is_entry_op(x))
		return synced_between(u, i, horizon, x->ino);
	if (strcmp(x->op, "rename") == 0)
		return synced_between(u, i, horizon, x->to_parent) &&
		       (x->from_parent == x->to_parent || synced_between(u, i, horizon, x->from_parent));
	return synced_between(u, i, horizon, x->parent);    /* create, mkdir, unlink, rmdir */
}

/* ---- where each inode lives now, relative to the root ------------------- */

typedef struct ent {
	uint64_t ino;
	char rel[512];
} ent;

typedef struct imap {
	ent *e;
	int n, cap;
	size_t rootlen;
} imap;

static imap *building;

static void map_set(imap *m, uint64_t ino, const char *rel)
{
	for (int i = 0; i < m->n; i++)
		if (m->e[i].ino == ino) {
			snprintf(m->e[i].rel, sizeof m->e[i].rel, "%s", rel);
			return;
		}
	if (m->n == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 64;
		m->e = realloc(m->e, sizeof *m->e * (size_t)m->cap);
	}
	m->e[m->n].ino = ino;
	snprintf(m->e[m->n].rel, sizeof m->e[0].rel, "%s", rel);
	m->n++;
}

static const char *map_get(const imap *m, uint64_t ino)
{
	for (int i = 0; i < m->n; i++)
		if (m->e[i].ino == ino)
			return m->e[i].rel;
	return NULL;
}

static int map_visit(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)flag;
	(void)ftw;
	const char *rel = p + building->rootlen;
	map_set(building, (uint64_t)sb->st_ino, *rel == '/' ? rel + 1 : rel);
	return 0;
}

/* Rename a subtree in the map: every rel under `from` moves under `to`. */
static void map_move(imap *m, const char *from, const char *to)
{
	size_t fl = strlen(from);
	for (int i = 0; i < m->n; i++) {
		const char *r = m->e[i].rel;
		if (strncmp(r, from, fl) == 0 && (r[fl] == '\0' || r[fl] == '/')) {
			char buf[512];
			snprintf(buf, sizeof buf, "%s%s", to, r + fl);
			snprintf(m->e[i].rel, sizeof m->e[i].rel, "%s", buf);
		}
	}
}

static void map_drop(imap *m, const char *rel)
{
	size_t l = strlen(rel);
	for (int i = 0; i < m->n; i++)
		if (strncmp(m->e[i].rel, rel, l) == 0 && (m->e[i].rel[l] == '\0' || m->e[i].rel[l] == '/'))
			m->e[i].ino = 0;
}

static void join(char *out, size_t len, const char *root, const char *rel)
{
	snprintf(out, len, *rel ? "%s/%s" : "%s", root, rel);
}

/* rel of the entry `recorded` (its base name) inside the directory inode parent */
static int entry_rel(const imap *m, uint64_t parent, const char *recorded, char *out, size_t len)
{
	const char *dir = map_get(m, parent);
	char tmp[1024];
	if (!dir)
		return -ENOENT;
	snprintf(tmp, sizeof tmp, "%s", recorded);
	snprintf(out, len, *dir ? "%s/%s" : "%s%s", dir, basename(tmp));
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

int harness_undo_apply(const harness_undo *u, const char *orig, const char *root, const unsigned char *sel,
		       int torn_index, int64_t torn_bytes, FILE *log)
{
	imap m = { 0 };
	int undone = 0;

	m.rootlen = strlen(orig);
	building = &m;
	nftw(orig, map_visit, 16, FTW_PHYS);
	building = NULL;
	for (int i = u->n - 1; i >= 0; i--) {
		const harness_undo_rec *x = &u->v[i];
		char rel[1024], rel2[1024], p[1600], q[1600];
		struct stat st;
		const char *r;
		if (i == torn_index && (r = map_get(&m, x->ino)) != NULL) {
			/* a torn write: only its first torn_bytes reached the disk */
			join(p, sizeof p, root, r);
			if (stat(p, &st) == 0 && st.st_size > x->off + torn_bytes && truncate(p, x->off + torn_bytes) == 0 && log)
				fprintf(log, "torn: rank %d's write of %s keeps %" PRId64 " of %" PRId64 " bytes\n", x->rank,
					x->path, torn_bytes, x->len);
		}
		if (!sel[i] || x->failed || strcmp(x->op, "fsync") == 0)
			continue;
		if (!harness_undo_is_entry_op(x)) {
			if (!(r = map_get(&m, x->ino)))
				continue;
			join(p, sizeof p, root, r);
			if (stat(p, &st) < 0 || (st.st_size != x->old_size && truncate(p, x->old_size) < 0))
				continue;
			if (x->saved[0])
				restore_bytes(p, x->saved, x->saved_off);
		} else if (strcmp(x->op, "create") == 0 || strcmp(x->op, "mkdir") == 0) {
			if (entry_rel(&m, x->parent, x->path, rel, sizeof rel) < 0)
				continue;
			join(p, sizeof p, root, rel);
			nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
			map_drop(&m, rel);
		} else if (strcmp(x->op, "rename") == 0) {
			if (entry_rel(&m, x->to_parent, x->to, rel, sizeof rel) < 0 ||
			    entry_rel(&m, x->from_parent, x->path, rel2, sizeof rel2) < 0)
				continue;
			join(p, sizeof p, root, rel);
			join(q, sizeof q, root, rel2);
			if (rename(p, q) < 0)
				continue;
			map_move(&m, rel, rel2);
			if (x->saved[0])
				link(x->saved, p);
		} else if (strcmp(x->op, "unlink") == 0) {
			if (!x->saved[0] || entry_rel(&m, x->parent, x->path, rel, sizeof rel) < 0)
				continue;
			join(p, sizeof p, root, rel);
			if (link(x->saved, p) < 0)
				continue;
			map_set(&m, x->ino, rel);
		} else if (strcmp(x->op, "rmdir") == 0) {
			if (entry_rel(&m, x->parent, x->path, rel, sizeof rel) < 0)
				continue;
			join(p, sizeof p, root, rel);
			if (mkdir(p, 0755) < 0)
				continue;
			map_set(&m, x->ino, rel);
		} else {
			continue;
		}
		undone++;
		if (log)
			fprintf(log, "dropped rank %d's %s of %s%s%s\n", x->rank, x->op, x->path, x->to[0] ? " -> " : "", x->to);
	}
	free(m.e);
	return undone;
}

/*
 * The records of several attempts as one history: a killed process's writes
 * stay in the page cache, so what an earlier attempt left unsynced is lost by
 * a power cut in a later one unless something synced it in between.
 */
static int load_history(harness_undo *u, const char *const *prefixes, int nprefix, int world)
{
	u->v = NULL;
	u->n = 0;
	for (int p = 0; p < nprefix; p++) {
		harness_undo one;
		int rc = harness_undo_load(&one, prefixes[p], world);
		if (rc < 0) {
			harness_undo_free(u);
			return rc;
		}
		if (one.n) {
			harness_undo_rec *v = realloc(u->v, sizeof *v * (size_t)(u->n + one.n));
			if (!v) {
				harness_undo_free(&one);
				harness_undo_free(u);
				return -ENOMEM;
			}
			u->v = v;
			memcpy(u->v + u->n, one.v, sizeof *v * (size_t)one.n);
			u->n += one.n;
		}
		harness_undo_free(&one);
	}
	/* CLOCK_MONOTONIC times: one order across the ranks and attempts of one machine */
	if (u->n)
		qsort(u->v, (size_t)u->n, sizeof *u->v, cmp_rec);
	return 0;
}

int harness_powerloss_apply(const char *const *prefixes, int nprefix, int world, const char *root, FILE *log)
{
	harness_undo u;
	int n, rc;

	if ((rc = load_history(&u, prefixes, nprefix, world)) < 0)
		return rc;
	unsigned char *sel = calloc((size_t)u.n + 1, 1);
	if (!sel) {
		harness_undo_free(&u);
		return -ENOMEM;
	}
	for (int i = 0; i < u.n; i++)
		sel[i] = !harness_undo_durable(&u, i, u.n);
	if (log)
		fprintf(log, "power loss: rolling back what was not durable since the last power cut (%d attempt%s)\n",
			nprefix, nprefix == 1 ? "" : "s");
	n = harness_undo_apply(&u, root, root, sel, -1, 0, log);
	free(sel);
	harness_undo_free(&u);
	return n;
}
