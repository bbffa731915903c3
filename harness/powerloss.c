#include "powerloss.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
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

/* ---- the undo record's reader ------------------------------------------ */

#define UNDO_LINE_MAX 16384     /* libckpt's records are at most 2 * CKPT_PATH_MAX + 256 bytes */

typedef struct undo_in {
	const char *file;
	long line;
	char *err;
	size_t errlen;
} undo_in;

static int refuse(const undo_in *in, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(const undo_in *in, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (in->err && in->errlen)
		snprintf(in->err, in->errlen, "%s:%ld: undo record refused: %s", in->file, in->line, msg);
	return -EINVAL;
}

/* A string field that fits out whole (required unless optional). */
static int rec_str(const undo_in *in, json_t *j, const char *k, char *out, size_t len, int required)
{
	json_t *v = json_object_get(j, k);
	out[0] = '\0';
	if (!v)
		return required ? refuse(in, "no \"%s\"", k) : 0;
	if (!json_is_string(v))
		return refuse(in, "\"%s\" is not a string", k);
	if (json_string_length(v) >= len || strlen(json_string_value(v)) != json_string_length(v))
		return refuse(in, "\"%s\" is longer than %zu bytes or holds a NUL", k, len - 1);
	memcpy(out, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

/* A whole number >= 0. */
static int rec_int(const undo_in *in, json_t *j, const char *k, int64_t *out, int required)
{
	json_t *v = json_object_get(j, k);
	*out = 0;
	if (!v)
		return required ? refuse(in, "no \"%s\"", k) : 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return refuse(in, "\"%s\" is not a whole number >= 0", k);
	*out = (int64_t)json_integer_value(v);
	return 0;
}

/*
 * p names something strictly inside root (or root itself if may_be_root): root,
 * then '/', then components that are neither empty, "." nor "..". Lexical: the
 * records name paths as libckpt built them, root + "/" + name.
 */
static int inside(const char *p, const char *root, size_t rootlen, int may_be_root)
{
	if (strncmp(p, root, rootlen) != 0)
		return 0;
	p += rootlen;
	if (!*p)
		return may_be_root;
	if (rootlen && root[rootlen - 1] != '/' && *p++ != '/')
		return 0;
	for (;;) {
		size_t n = strcspn(p, "/");
		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return 0;
		if (!p[n])
			return 1;
		p += n + 1;
	}
}

/* Inside the root, or inside the node-local directories beside it (ROOT.nodes/: a tiered trainer's fast tier). */
static int in_storage(const char *p, const char *root, size_t rootlen, int may_be_root)
{
	if (inside(p, root, rootlen, may_be_root))
		return 1;
	return strncmp(p, root, rootlen) == 0 && strncmp(p + rootlen, ".nodes/", 7) == 0 && inside(p + rootlen + 7, "", 0, 0);
}

/* A kept copy: PREFIX.keep/NAME, one component. */
static int kept(const char *p, const char *prefix)
{
	size_t n = strlen(prefix);
	if (!*p)
		return 1;
	if (strncmp(p, prefix, n) != 0 || strncmp(p + n, ".keep/", 6) != 0)
		return 0;
	p += n + 6;
	return *p && !strchr(p, '/') && strcmp(p, ".") != 0 && strcmp(p, "..") != 0;
}

static const char *const undo_ops[] = { "write", "truncate", "create", "mkdir", "rename", "unlink", "rmdir", "fsync",
					 "failed", NULL };

/* One record into x; 1 if it is a "failed" record (x->seq is then its ref, x->pid its writer). */
static int parse_rec(const undo_in *in, const char *line, size_t len, const char *prefix, const char *root,
		     size_t rootlen, harness_undo_rec *x)
{
	json_error_t je;
	json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
	int64_t v;
	int rc = 0, k;

	if (!j)
		return refuse(in, "not JSON: %s", je.text);
	memset(x, 0, sizeof *x);
	if (!json_is_object(j)) {
		rc = refuse(in, "not a JSON object");
		goto out;
	}
	if ((rc = rec_str(in, j, "op", x->op, sizeof x->op, 1)) < 0)
		goto out;
	for (k = 0; undo_ops[k] && strcmp(undo_ops[k], x->op) != 0; k++)
		;
	if (!undo_ops[k]) {
		rc = refuse(in, "unknown op '%s'; valid: write, truncate, create, mkdir, rename, unlink, rmdir, fsync, "
			    "failed", x->op);
		goto out;
	}
	if ((rc = rec_int(in, j, "pid", &v, 0)) < 0)
		goto out;
	if (v > INT32_MAX) {
		rc = refuse(in, "\"pid\" %" PRId64 " is not a process id", v);
		goto out;
	}
	x->pid = (int)v;
	if (strcmp(x->op, "failed") == 0) {
		if ((rc = rec_int(in, j, "ref", &v, 1)) < 0)
			goto out;
		x->seq = (uint64_t)v;
		rc = 1;
		goto out;
	}
	const char *op = x->op;
	int rename_op = strcmp(op, "rename") == 0, data = strcmp(op, "write") == 0 || strcmp(op, "truncate") == 0;
	int entry = !data && strcmp(op, "fsync") != 0;
	if ((rc = rec_int(in, j, "seq", &v, 1)) < 0)
		goto out;
	x->seq = (uint64_t)v;
	if ((rc = rec_int(in, j, "t", &v, 1)) < 0)
		goto out;
	x->t = (uint64_t)v;
	if ((rc = rec_int(in, j, "step", &v, 1)) < 0)
		goto out;
	x->step = (uint64_t)v;
	if ((rc = rec_str(in, j, "call", x->call, sizeof x->call, 0)) < 0 ||
	    (rc = rec_str(in, j, "phase", x->phase, sizeof x->phase, 0)) < 0 ||
	    (rc = rec_str(in, j, rename_op ? "from" : "path", x->path, sizeof x->path, 1)) < 0 ||
	    (rc = rec_str(in, j, "to", x->to, sizeof x->to, rename_op)) < 0 ||
	    (rc = rec_str(in, j, "saved", x->saved, sizeof x->saved, 0)) < 0)
		goto out;
	int64_t ino, parent, fp, tp;
	if ((rc = rec_int(in, j, "ino", &ino, data || rename_op || strcmp(op, "fsync") == 0)) < 0 ||
	    (rc = rec_int(in, j, "parent", &parent, entry && !rename_op)) < 0 ||
	    (rc = rec_int(in, j, "from_parent", &fp, rename_op)) < 0 ||
	    (rc = rec_int(in, j, "to_parent", &tp, rename_op)) < 0 ||
	    (rc = rec_int(in, j, "off", &x->off, strcmp(op, "write") == 0)) < 0 ||
	    (rc = rec_int(in, j, "len", &x->len, strcmp(op, "write") == 0)) < 0 ||
	    (rc = rec_int(in, j, "old_size", &x->old_size, data)) < 0 ||
	    (rc = rec_int(in, j, "size", &x->size, strcmp(op, "truncate") == 0)) < 0 ||
	    (rc = rec_int(in, j, "saved_off", &x->saved_off, data)) < 0)
		goto out;
	x->ino = (uint64_t)ino;
	x->parent = (uint64_t)parent;
	x->from_parent = (uint64_t)fp;
	x->to_parent = (uint64_t)tp;
	/*
	 * What the rollback will touch must be inside the root (or the root
	 * itself: libckpt creates it), and what it copies back from must be a
	 * file in PREFIX.keep/. An fsync touches nothing (only its inode counts:
	 * libckpt also syncs ROOT/.. after creating the root).
	 */
	if (strcmp(op, "fsync") != 0 && !in_storage(x->path, root, rootlen, !rename_op)) {
		rc = refuse(in, "%s %s '%s' is not inside the checkpoint root %s (no '..', '.' or empty components)", op,
			    rename_op ? "from" : "path", x->path, root);
		goto out;
	}
	if (rename_op && !in_storage(x->to, root, rootlen, 0)) {
		rc = refuse(in, "rename to '%s' is not inside the checkpoint root %s", x->to, root);
		goto out;
	}
	if (!kept(x->saved, prefix)) {
		rc = refuse(in, "saved '%s' is not a file in %s.keep/", x->saved, prefix);
		goto out;
	}
out:
	json_decref(j);
	return rc;
}

int harness_undo_load_stream(harness_undo *u, FILE *f, const char *name, int rank, const char *prefix,
			     const char *root, char *err, size_t errlen)
{
	undo_in in = { .file = name, .err = err, .errlen = errlen };
	char *line = NULL;
	size_t lcap = 0, rootlen = strlen(root);
	ssize_t len;
	int first = u->n, rc = 0;

	while (rootlen > 1 && root[rootlen - 1] == '/')
		rootlen--;
	char *r = strndup(root, rootlen);
	if (!r)
		return -ENOMEM;
	while ((len = getline(&line, &lcap, f)) > 0) {
		harness_undo_rec x;
		in.line++;
		if (len > UNDO_LINE_MAX) {
			rc = refuse(&in, "the line is longer than %d bytes", UNDO_LINE_MAX);
			break;
		}
		if (line[len - 1] != '\n') {
			rc = refuse(&in, "the last line is cut short (no newline)");
			break;
		}
		int k = parse_rec(&in, line, (size_t)len, prefix, r, rootlen, &x);
		if (k < 0) {
			rc = k;
			break;
		}
		if (k == 1) {      /* "failed": voids the newest earlier change of this rank's process */
			int i = u->n - 1;
			while (i >= first && (u->v[i].seq != x.seq || u->v[i].pid != x.pid))
				i--;
			if (i < first) {
				rc = refuse(&in, "\"failed\" refers to seq %" PRIu64 " of pid %d, which no earlier record "
					    "of this rank has", x.seq, x.pid);
				break;
			}
			u->v[i].failed = 1;
			continue;
		}
		if (u->n == u->cap) {
			int cap = u->cap ? 2 * u->cap : 16;
			harness_undo_rec *v = cap > u->cap ? realloc(u->v, sizeof *v * (size_t)cap) : NULL;
			if (!v) {
				rc = -ENOMEM;
				snprintf(err, errlen, "%s:%ld: out of memory", name, in.line);
				break;
			}
			u->v = v;
			u->cap = cap;
		}
		x.rank = rank;
		u->v[u->n++] = x;
	}
	if (!rc && ferror(f)) {
		rc = -EIO;
		snprintf(err, errlen, "%s: cannot read: %s", name, strerror(EIO));
	}
	free(line);
	free(r);
	return rc;
}

int harness_undo_load(harness_undo *u, const char *prefix, int world, const char *root, char *err, size_t errlen)
{
	int rc = 0;

	u->v = NULL;
	u->n = u->cap = 0;
	if (errlen)
		err[0] = '\0';
	for (int r = 0; r < world && !rc; r++) {
		char path[1200];
		snprintf(path, sizeof path, "%s.rank-%d.jsonl", prefix, r);
		FILE *f = fopen(path, "re");
		if (!f) {
			if (errno == ENOENT)
				continue;     /* that rank changed nothing */
			rc = -errno;
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
			break;
		}
		rc = harness_undo_load_stream(u, f, path, r, prefix, root, err, errlen);
		fclose(f);
	}
	if (rc < 0) {
		harness_undo_free(u);
		return rc;
	}
	if (u->n)
		qsort(u->v, (size_t)u->n, sizeof *u->v, cmp_rec);
	return 0;
}

void harness_undo_free(harness_undo *u)
{
	free(u->v);
	u->v = NULL;
	u->n = u->cap = 0;
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
static int load_history(harness_undo *u, const char *const *prefixes, int nprefix, int world, const char *root,
			FILE *log)
{
	char err[1600];

	u->v = NULL;
	u->n = u->cap = 0;
	for (int p = 0; p < nprefix; p++) {
		harness_undo one;
		int rc = harness_undo_load(&one, prefixes[p], world, root, err, sizeof err);
		if (rc < 0) {
			if (log)
				fprintf(log, "power loss: nothing rolled back: %s\n", err);
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
			u->cap = u->n;
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

	if ((rc = load_history(&u, prefixes, nprefix, world, root, log)) < 0)
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
