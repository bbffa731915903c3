/*
 * On-disk formats: generation names, the safetensors-layout shard header and
 * the manifest.
 *
 * Shard: 8-byte little-endian header length N, N bytes of JSON (padded with
 * spaces to a multiple of 8), then the tensors' raw little-endian bytes in
 * file order; each tensor's data_offsets are relative to the end of the
 * header, as in safetensors.
 *
 * Manifest: one JSON object whose last member is "checksum": the xxh3-64 of
 * every byte before the text `"checksum":`, so any change to the rest of the
 * manifest is caught without a canonical re-serialization.
 *
 * schema_version 1 listed every tensor of every rank (world x tensors entries
 * with names, offsets and sizes: ~70 MB for 64 ranks x 4,500 long names).
 * schema_version 2 lists the layout once, in file order, with each tensor's
 * local size and global offset as one integer when every rank has the same
 * value and as an array of world_size integers otherwise; file offsets are
 * not stored, they are the shard's own safetensors header, which restore
 * parses and checks against the manifest. Both versions are read.
 *
 * schema_version 3 (incremental checkpoints, chunks.c) is version 2 plus
 * "chunk_size", "chain_depth" and "chain_base" (before "files"); each rank's file is
 * rank-R.chunks, a recipe: the shard's safetensors header, then the xxh3-128
 * of every chunk of its tensors, whose bytes live in ROOT/chunks/. A plain
 * save still writes version 2.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "internal.h"

static const char *const dtype_names[] = { "F32", "BF16", "U64", "U8" };

size_t ckpt__dtype_size(ckpt_dtype t)
{
	static const size_t sizes[] = { 4, 2, 8, 1 };
	return sizes[t];
}

const char *ckpt__dtype_name(ckpt_dtype t)
{
	return dtype_names[t];
}

int ckpt__dtype_parse(const char *s, ckpt_dtype *out)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, dtype_names[i]) == 0) {
			*out = (ckpt_dtype)i;
			return 0;
		}
	return -EINVAL;
}

void ckpt__gen_name(char *buf, size_t len, uint64_t step)
{
	snprintf(buf, len, "step-%08" PRIu64, step);
}

/* Canonical names only: exactly what ckpt__gen_name writes for the step. */
bool ckpt__gen_parse(const char *name, uint64_t *step)
{
	uint64_t v = 0;
	const char *p;
	char canon[32];

	if (strncmp(name, "step-", 5) != 0)
		return false;
	for (p = name + 5; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p || p - name < 13)
		return false;
	ckpt__gen_name(canon, sizeof canon, v);
	if (strcmp(canon, name) != 0)
		return false;
	*step = v;
	return true;
}

void ckpt__shard_name(char *buf, size_t len, int rank)
{
	snprintf(buf, len, "rank-%05d.safetensors", rank);
}

void ckpt__recipe_name(char *buf, size_t len, int rank)
{
	snprintf(buf, len, "rank-%05d.chunks", rank);
}

int ckpt__state_order(const ckpt_state *s, int **order)
{
	int k = 0;

	*order = malloc(sizeof **order * (size_t)(s->n ? s->n : 1));
	if (!*order)
		return -ENOMEM;
	for (int stage = 0; stage < CKPT_STAGE_COUNT; stage++)
		for (int i = 0; i < s->n; i++)
			if ((int)s->e[i].stage == stage)
				(*order)[k++] = i;
	return 0;
}

static char *dump(json_t *j)
{
	return json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
}

int ckpt__shard_header(const ckpt_state *s, const int *order, int rank, int world, uint64_t step,
		       ckpt_tensor_entry *te, char **out, size_t *len)
{
	json_t *root = json_object(), *meta = json_object();
	char buf[32];
	uint64_t off = 0;
	char *text = NULL;
	int rc = -ENOMEM;

	if (!root || !meta)
		goto out;
	snprintf(buf, sizeof buf, "%d", rank);
	json_object_set_new(meta, "rank", json_string(buf));
	snprintf(buf, sizeof buf, "%d", world);
	json_object_set_new(meta, "world_size", json_string(buf));
	snprintf(buf, sizeof buf, "%" PRIu64, step);
	json_object_set_new(meta, "step", json_string(buf));
	json_object_set_new(meta, "format", json_string("libckpt/1"));
	json_object_set(root, "__metadata__", meta);
	for (int k = 0; k < s->n; k++) {
		const ckpt_entry *e = &s->e[order[k]];
		uint64_t nbytes = e->local_elems * ckpt__dtype_size(e->dtype);
		json_t *t = json_pack("{s:s,s:[I],s:[I,I]}", "dtype", ckpt__dtype_name(e->dtype), "shape",
				      (json_int_t)e->local_elems, "data_offsets", (json_int_t)off,
				      (json_int_t)(off + nbytes));
		if (!t || json_object_set_new(root, e->name, t) < 0)
			goto out;
		te[k] = (ckpt_tensor_entry){ .rank = rank, .stage = (int)e->stage, .dtype = e->dtype,
					     .local_elems = e->local_elems, .global_elems = e->global_elems,
					     .global_offset = e->global_offset, .file_offset = off,
					     .nbytes = nbytes };
		snprintf(te[k].name, sizeof te[k].name, "%s", e->name);
		snprintf(te[k].component, sizeof te[k].component, "%s", e->component);
		off += nbytes;
	}
	if (!(text = dump(root)))
		goto out;
	size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
	char *hdr = malloc(8 + padded);
	if (!hdr)
		goto out;
	for (int i = 0; i < 8; i++)
		hdr[i] = (char)((uint64_t)padded >> (8 * i));
	memcpy(hdr + 8, text, n);
	memset(hdr + 8 + n, ' ', padded - n);
	for (int k = 0; k < s->n; k++)
		te[k].file_offset += 8 + padded;
	*out = hdr;
	*len = 8 + padded;
	rc = 0;
out:
	free(text);
	json_decref(meta);
	json_decref(root);
	return rc;
}

static const char *const tag_names[] = { "best", "interim" };

/* ---- a growable text buffer for rendering ---- */

typedef struct sbuf {
	char *p;
	size_t n, cap;
	int oom;
} sbuf;

static void sb_reserve(sbuf *b, size_t more)
{
	if (b->oom || b->n + more + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->n + more + 1)
		cap *= 2;
	char *q = realloc(b->p, cap);
	if (!q) {
		b->oom = 1;
		return;
	}
	b->p = q;
	b->cap = cap;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	sb_reserve(b, (size_t)n);
	if (b->oom)
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
	va_end(ap);
	b->n += (size_t)n;
}

/* A JSON string (quotes included); bytes >= 0x80 pass through. */
static void sb_jstr(sbuf *b, const char *s)
{
	sb_reserve(b, strlen(s) * 6 + 2);
	if (b->oom)
		return;
	b->p[b->n++] = '"';
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			b->p[b->n++] = '\\';
			b->p[b->n++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			b->n += (size_t)snprintf(b->p + b->n, 7, "\\u%04x", c);
		} else {
			b->p[b->n++] = (char)c;
		}
	}
	b->p[b->n++] = '"';
	b->p[b->n] = '\0';
}

/* One integer if every rank has the same value, else an array in rank order. */
static void sb_per_rank(sbuf *b, const ckpt_manifest *m, int k, int offset_field)
{
	const ckpt_tensor_entry *a = m->all;
	int T = m->ntensors, W = m->world_size, uniform = 1;
#define FIELD(r) (offset_field ? a[(size_t)(r) * T + k].global_offset : a[(size_t)(r) * T + k].local_elems)
	for (int r = 1; r < W; r++)
		uniform &= FIELD(r) == FIELD(0);
	if (uniform) {
		sb_printf(b, "%" PRIu64, FIELD(0));
		return;
	}
	sb_printf(b, "[");
	for (int r = 0; r < W; r++)
		sb_printf(b, "%s%" PRIu64, r ? "," : "", FIELD(r));
	sb_printf(b, "]");
#undef FIELD
}

int ckpt__manifest_render(const ckpt_manifest *m, char **out, size_t *len)
{
	sbuf b = { 0 };
	int T = m->ntensors, W = m->world_size;

	*out = NULL;
	/* version 2 describes one layout for every rank: check that it is one */
	for (int r = 1; r < W; r++)
		for (int k = 0; k < T; k++) {
			const ckpt_tensor_entry *x = &m->all[k], *y = &m->all[(size_t)r * T + k];
			if (strcmp(x->name, y->name) || strcmp(x->component, y->component) || x->stage != y->stage ||
			    x->dtype != y->dtype || x->global_elems != y->global_elems)
				return -CKPT_ECONFIG;
		}
	sb_printf(&b, "{\"schema_version\":%d,\"step\":%" PRIu64 ",\"world_size\":%d,\"config_hash\":\"%016" PRIx64
		  "\",\"tags\":[\"latest\"", m->chunk_size ? CKPT_SCHEMA_VERSION_CHUNKED : CKPT_SCHEMA_VERSION, m->step,
		  W, m->config_hash);
	for (unsigned i = 0; i < 2; i++)
		if (m->tags & (1u << i))
			sb_printf(&b, ",\"%s\"", tag_names[i]);
	sb_printf(&b, "]");
	if (*m->experiment || *m->code_version) {      /* catalog labels (catalog.c) */
		sb_printf(&b, ",\"labels\":{\"experiment\":");
		sb_jstr(&b, m->experiment);
		sb_printf(&b, ",\"code_version\":");
		sb_jstr(&b, m->code_version);
		sb_printf(&b, "}");
	}
	if (m->chunk_size)
		sb_printf(&b, ",\"chunk_size\":%" PRIu32 ",\"chain_depth\":%" PRIu32 ",\"chain_base\":%" PRIu64,
			  m->chunk_size, m->chain_depth, m->chain_base);
	sb_printf(&b, ",\"files\":[");
	for (int i = 0; i < m->nfiles; i++) {
		const ckpt_file_entry *f = &m->files[i];
		sb_printf(&b, "%s{\"name\":", i ? "," : "");
		sb_jstr(&b, f->name);
		sb_printf(&b, ",\"rank\":%d,\"size\":%" PRIu64 ",\"xxh3\":\"%016" PRIx64 "\"}", f->rank, f->size, f->hash);
	}
	sb_printf(&b, "],\"tensors\":[");
	for (int k = 0; k < T; k++) {
		const ckpt_tensor_entry *t = &m->all[k];
		sb_printf(&b, "%s{\"name\":", k ? "," : "");
		sb_jstr(&b, t->name);
		sb_printf(&b, ",\"component\":");
		sb_jstr(&b, t->component);
		sb_printf(&b, ",\"stage\":%d,\"dtype\":\"%s\",\"global_elems\":%" PRIu64 ",\"local_elems\":", t->stage,
			  ckpt__dtype_name(t->dtype), t->global_elems);
		sb_per_rank(&b, m, k, 0);
		sb_printf(&b, ",\"global_offset\":");
		sb_per_rank(&b, m, k, 1);
		sb_printf(&b, "}");
	}
	sb_printf(&b, "]");
	if (m->telemetry_json)
		sb_printf(&b, ",\"telemetry\":%s", m->telemetry_json);
	sb_printf(&b, ",");
	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	uint64_t sum = XXH3_64bits(b.p, b.n);
	sb_printf(&b, "\"checksum\":\"%016" PRIx64 "\"}\n", sum);
	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	*out = b.p;
	*len = b.n;
	return 0;
}

/* ---- parsing ------------------------------------------------------------ */

static int why(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int why(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	return -CKPT_ECORRUPT;
}

uint64_t ckpt__layout_local(const ckpt_manifest *m, int k, int rank)
{
	const ckpt_layout_entry *t = &m->layout[k];
	return t->local_at == SIZE_MAX ? t->local_elems : m->pool[t->local_at + (size_t)rank * t->stride];
}

uint64_t ckpt__layout_goff(const ckpt_manifest *m, int k, int rank)
{
	const ckpt_layout_entry *t = &m->layout[k];
	return t->goff_at == SIZE_MAX ? t->global_offset : m->pool[t->goff_at + (size_t)rank * t->stride];
}

static int pool_push(ckpt_manifest *m, uint64_t v)
{
	if (m->npool == m->cappool) {
		size_t cap = m->cappool ? 2 * m->cappool : 256;
		uint64_t *p = realloc(m->pool, cap * sizeof *p);
		if (!p)
			return -ENOMEM;
		m->pool = p;
		m->cappool = cap;
	}
	m->pool[m->npool++] = v;
	return 0;
}

static int hex64(ckpt_jr *j, uint64_t *out)
{
	char s[24], *end;

	if (ckpt__jr_string(j, s, sizeof s) < 0)
		return -1;
	if (strlen(s) != 16 || strspn(s, "0123456789abcdefABCDEF") != 16)
		return ckpt__jr_fail(j, "expected 16 hex digits");
	*out = strtoull(s, &end, 16);
	return 0;
}

static int int_in(ckpt_jr *j, uint64_t *v, uint64_t max, const char *what)
{
	if (ckpt__jr_u64(j, v) < 0)
		return -1;
	if (*v > max)
		return ckpt__jr_fail(j, "%s %" PRIu64 " out of range (at most %" PRIu64 ")", what, *v, max);
	return 0;
}

static int parse_files(ckpt_jr *j, ckpt_manifest *m)
{
	int first = 1, rc, cap = 0;

	while ((rc = ckpt__jr_element(j, &first)) == 1) {
		int ff = 1, have = 0;
		char key[16];
		ckpt_file_entry f = { .rank = -1 };
		uint64_t r = 0;

		while ((rc = ckpt__jr_member(j, &ff, key, sizeof key)) == 1) {
			if (strcmp(key, "name") == 0 && ckpt__jr_string(j, f.name, sizeof f.name) == 0)
				have |= 1;
			else if (strcmp(key, "rank") == 0 && int_in(j, &r, 1u << 20, "rank") == 0)
				have |= 2;
			else if (strcmp(key, "size") == 0 && ckpt__jr_u64(j, &f.size) == 0)
				have |= 4;
			else if (strcmp(key, "xxh3") == 0 && hex64(j, &f.hash) == 0)
				have |= 8;
			else if (!j->failed && ckpt__jr_skip(j) < 0)
				return -1;
			if (j->failed)
				return -1;
		}
		if (rc < 0)
			return -1;
		if (have != 15)
			return ckpt__jr_fail(j, "a file entry lacks name, rank, size or xxh3");
		f.rank = (int)r;
		if (m->nfiles == cap) {
			cap = cap ? 2 * cap : 16;
			ckpt_file_entry *p = realloc(m->files, (size_t)cap * sizeof *p);
			if (!p)
				return ckpt__jr_fail(j, "out of memory");
			m->files = p;
		}
		m->files[m->nfiles++] = f;
	}
	return rc;
}

typedef struct tensor_fields {
	char name[CKPT_NAME_MAX], component[CKPT_COMPONENT_MAX], dtype[8];
	uint64_t rank, stage, local, global, goff, file_offset, nbytes;
	int have;
	size_t local_at, goff_at;      /* version 2 arrays in the pool */
} tensor_fields;

enum { F_NAME = 1, F_COMP = 2, F_DTYPE = 4, F_RANK = 8, F_STAGE = 16, F_LOCAL = 32, F_GLOBAL = 64, F_GOFF = 128,
       F_FOFF = 256, F_NBYTES = 512 };

/* An integer, or (version 2) an array of world_size integers stored in the pool. */
static int per_rank(ckpt_jr *j, ckpt_manifest *m, uint64_t *v, size_t *at)
{
	int first = 1, rc, n = 0;

	*at = SIZE_MAX;
	if (m->schema_version < 2 || ckpt__jr_peek(j) != '[')
		return ckpt__jr_u64(j, v);
	*at = m->npool;
	while ((rc = ckpt__jr_element(j, &first)) == 1) {
		uint64_t x;
		if (n == m->world_size)
			return ckpt__jr_fail(j, "more per-rank values than world_size %d", m->world_size);
		if (ckpt__jr_u64(j, &x) < 0)
			return -1;
		if (pool_push(m, x) < 0)
			return ckpt__jr_fail(j, "out of memory");
		n++;
	}
	if (rc == 0 && n != m->world_size)
		return ckpt__jr_fail(j, "%d per-rank values, world_size is %d", n, m->world_size);
	return rc;
}

static int tensor_fields_read(ckpt_jr *j, ckpt_manifest *m, tensor_fields *t)
{
	int first = 1, rc;
	char key[24];

	memset(t, 0, sizeof *t);
	t->local_at = t->goff_at = SIZE_MAX;
	while ((rc = ckpt__jr_member(j, &first, key, sizeof key)) == 1) {
		if (strcmp(key, "name") == 0 && ckpt__jr_string(j, t->name, sizeof t->name) == 0)
			t->have |= F_NAME;
		else if (strcmp(key, "component") == 0 && ckpt__jr_string(j, t->component, sizeof t->component) == 0)
			t->have |= F_COMP;
		else if (strcmp(key, "dtype") == 0 && ckpt__jr_string(j, t->dtype, sizeof t->dtype) == 0)
			t->have |= F_DTYPE;
		else if (strcmp(key, "rank") == 0 && int_in(j, &t->rank, 1u << 20, "rank") == 0)
			t->have |= F_RANK;
		else if (strcmp(key, "stage") == 0 && int_in(j, &t->stage, CKPT_STAGE_COUNT - 1, "stage") == 0)
			t->have |= F_STAGE;
		else if (strcmp(key, "local_elems") == 0 && per_rank(j, m, &t->local, &t->local_at) == 0)
			t->have |= F_LOCAL;
		else if (strcmp(key, "global_elems") == 0 && ckpt__jr_u64(j, &t->global) == 0)
			t->have |= F_GLOBAL;
		else if (strcmp(key, "global_offset") == 0 && per_rank(j, m, &t->goff, &t->goff_at) == 0)
			t->have |= F_GOFF;
		else if (strcmp(key, "file_offset") == 0 && ckpt__jr_u64(j, &t->file_offset) == 0)
			t->have |= F_FOFF;
		else if (strcmp(key, "nbytes") == 0 && ckpt__jr_u64(j, &t->nbytes) == 0)
			t->have |= F_NBYTES;
		else if (!j->failed && ckpt__jr_skip(j) < 0)
			return -1;
		if (j->failed)
			return -1;
	}
	return rc;
}

static int layout_push(ckpt_jr *j, ckpt_manifest *m, const tensor_fields *t, int *cap)
{
	ckpt_layout_entry *e;
	ckpt_dtype dt;

	if (ckpt__dtype_parse(t->dtype, &dt) < 0)
		return ckpt__jr_fail(j, "tensor %s: unknown dtype", t->name);
	if (m->ntensors == *cap) {
		*cap = *cap ? 2 * *cap : 64;
		ckpt_layout_entry *p = realloc(m->layout, (size_t)*cap * sizeof *p);
		if (!p)
			return ckpt__jr_fail(j, "out of memory");
		m->layout = p;
	}
	e = &m->layout[m->ntensors++];
	memset(e, 0, sizeof *e);
	memcpy(e->name, t->name, sizeof e->name);
	memcpy(e->component, t->component, sizeof e->component);
	e->stage = (int)t->stage;
	e->dtype = dt;
	e->global_elems = t->global;
	e->local_elems = t->local;
	e->global_offset = t->goff;
	e->local_at = t->local_at;
	e->goff_at = t->goff_at;
	e->stride = 1;
	return 0;
}

/* Version 2: the layout, once. */
static int parse_tensors_v2(ckpt_jr *j, ckpt_manifest *m)
{
	int first = 1, rc, cap = 0;
	const int need = F_NAME | F_COMP | F_DTYPE | F_STAGE | F_LOCAL | F_GLOBAL | F_GOFF;

	while ((rc = ckpt__jr_element(j, &first)) == 1) {
		tensor_fields t;
		if (tensor_fields_read(j, m, &t) < 0)
			return -1;
		if ((t.have & need) != need)
			return ckpt__jr_fail(j, "a tensor entry lacks name, component, stage, dtype, global_elems, "
					     "local_elems or global_offset");
		if (layout_push(j, m, &t, &cap) < 0)
			return -1;
	}
	return rc;
}

/*
 * Version 1: every rank's entries, rank-major, as the writer gathered them.
 * Rank 0's entries make the layout; every later entry must repeat the layout
 * entry at its position, and its local size and global offset go to the pool
 * (rank-major, so a tensor's values are at k, k + T, k + 2T, ...).
 */
static int parse_tensors_v1(ckpt_jr *j, ckpt_manifest *m)
{
	int first = 1, rc, cap = 0, T = -1;
	size_t i = 0;
	uint64_t next_off = 0;
	const int need = F_NAME | F_COMP | F_DTYPE | F_RANK | F_STAGE | F_LOCAL | F_GLOBAL | F_GOFF | F_FOFF | F_NBYTES;

	while ((rc = ckpt__jr_element(j, &first)) == 1) {
		tensor_fields t;
		if (tensor_fields_read(j, m, &t) < 0)
			return -1;
		if ((t.have & need) != need)
			return ckpt__jr_fail(j, "a version 1 tensor entry lacks a field");
		if (T < 0 && t.rank != 0) {
			if (i == 0)
				return ckpt__jr_fail(j, "the first tensor entry is for rank %" PRIu64 ", not rank 0", t.rank);
			T = (int)i;
		}
		int k = T < 0 ? (int)i : (int)(i % (size_t)T);
		uint64_t r = T < 0 ? 0 : i / (size_t)T;
		if (t.rank != r)
			return ckpt__jr_fail(j, "tensor entry %zu is for rank %" PRIu64 ", expected rank %" PRIu64
					     " (entries go rank by rank, the same tensors for every rank)", i, t.rank, r);
		if (k == 0)
			next_off = t.file_offset;
		if (t.file_offset != next_off)
			return ckpt__jr_fail(j, "tensor %s of rank %" PRIu64 ": file_offset %" PRIu64 ", expected %" PRIu64
					     " (entries must be contiguous)", t.name, r, t.file_offset, next_off);
		if (t.nbytes > UINT64_MAX - next_off)
			return ckpt__jr_fail(j, "tensor %s: nbytes overflows", t.name);
		next_off += t.nbytes;
		if (T < 0) {
			if (layout_push(j, m, &t, &cap) < 0)
				return -1;
		} else {
			const ckpt_layout_entry *e = &m->layout[k];
			ckpt_dtype dt;
			if (strcmp(e->name, t.name) || strcmp(e->component, t.component) || e->stage != (int)t.stage ||
			    ckpt__dtype_parse(t.dtype, &dt) < 0 || dt != e->dtype || e->global_elems != t.global)
				return ckpt__jr_fail(j, "rank %" PRIu64 " lists tensor %s where rank 0 lists %s "
						     "(every rank must have the same layout)", r, t.name, e->name);
		}
		if (pool_push(m, t.local) < 0 || pool_push(m, t.goff) < 0)
			return ckpt__jr_fail(j, "out of memory");
		/* nbytes must agree with the size of the elements */
		ckpt_dtype dt;
		ckpt__dtype_parse(t.dtype, &dt);
		if (t.local > UINT64_MAX / ckpt__dtype_size(dt) || t.nbytes != t.local * ckpt__dtype_size(dt))
			return ckpt__jr_fail(j, "tensor %s of rank %" PRIu64 ": nbytes %" PRIu64 " is not %" PRIu64
					     " elements of %s", t.name, r, t.nbytes, t.local, t.dtype);
		i++;
	}
	if (rc < 0)
		return -1;
	if (T < 0)
		T = (int)i;
	if (T > 0 && i != (size_t)T * (size_t)m->world_size)
		return ckpt__jr_fail(j, "%zu tensor entries are not %d ranks x %d tensors", i, m->world_size, T);
	/* the pool holds (local, goff) pairs at 2 * (r * T + k) */
	for (int k = 0; k < m->ntensors; k++) {
		m->layout[k].local_at = 2 * (size_t)k;
		m->layout[k].goff_at = 2 * (size_t)k + 1;
		m->layout[k].stride = 2 * (size_t)T;
	}
	return 0;
}

static int cmp_file_rank(const void *a, const void *b)
{
	const ckpt_file_entry *x = a, *y = b;
	return x->rank - y->rank;
}

static int cmp_layout_name(const void *a, const void *b)
{
	const ckpt_layout_entry *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

/* Checks of a parsed manifest that do not depend on its version. */
static int check_manifest(ckpt_manifest *m, char *wb, size_t wl)
{
	int W = m->world_size, T = m->ntensors;
	char *seen;

	if (m->nfiles != W)
		return why(wb, wl, "manifest lists %d files for %d ranks", m->nfiles, W);
	if (!(seen = calloc((size_t)W, 1)))
		return -ENOMEM;
	for (int i = 0; i < m->nfiles; i++) {
		char want[CKPT_NAME_MAX];
		const ckpt_file_entry *f = &m->files[i];
		if (f->rank < 0 || f->rank >= W || seen[f->rank]++) {
			free(seen);
			return why(wb, wl, "manifest lists rank %d twice or out of range", f->rank);
		}
		if (m->chunk_size)
			ckpt__recipe_name(want, sizeof want, f->rank);
		else
			ckpt__shard_name(want, sizeof want, f->rank);
		if (strcmp(want, f->name) != 0) {
			char esc[CKPT_NAME_MAX * 4];
			ckpt__escape(esc, sizeof esc, f->name);
			free(seen);
			return why(wb, wl, "manifest names rank %d's shard \"%s\", not %s", f->rank, esc, want);
		}
	}
	free(seen);
	/* files[r] is rank r's: one lookup, not a search per rank */
	qsort(m->files, (size_t)m->nfiles, sizeof *m->files, cmp_file_rank);
	for (int k = 0; k < T; k++) {
		const ckpt_layout_entry *e = &m->layout[k];
		size_t sz = ckpt__dtype_size(e->dtype);
		if (!e->name[0] || strcmp(e->name, "__metadata__") == 0)
			return why(wb, wl, "manifest has a tensor with an invalid name");
		/* uniform values once; arrays per rank (their text bounds the work) */
		int ranks = e->local_at == SIZE_MAX && e->goff_at == SIZE_MAX ? 1 : W;
		for (int r = 0; r < ranks; r++) {
			uint64_t l = ckpt__layout_local(m, k, r), g = ckpt__layout_goff(m, k, r);
			if (l > UINT64_MAX / sz || g > e->global_elems || l > e->global_elems - g) {
				char esc[CKPT_NAME_MAX * 4];
				ckpt__escape(esc, sizeof esc, e->name);
				return why(wb, wl, "tensor %s on rank %d: %" PRIu64 " elements at %" PRIu64
					   " do not fit its %" PRIu64 " (or overflow)", esc, r, l, g, e->global_elems);
			}
		}
	}
	/* names are unique: sort indices by name */
	if (T > 1) {
		const ckpt_layout_entry **v = malloc((size_t)T * sizeof *v);
		int dup = -1;
		if (!v)
			return -ENOMEM;
		for (int k = 0; k < T; k++)
			v[k] = &m->layout[k];
		qsort(v, (size_t)T, sizeof *v, cmp_layout_name);
		for (int k = 1; k < T && dup < 0; k++)
			if (strcmp(v[k - 1]->name, v[k]->name) == 0)
				dup = k;
		if (dup >= 0) {
			char esc[CKPT_NAME_MAX * 4];
			ckpt__escape(esc, sizeof esc, v[dup]->name);
			free(v);
			return why(wb, wl, "manifest lists tensor %s twice", esc);
		}
		free(v);
	}
	return 0;
}

#define TELEMETRY_MAX 4096

int ckpt__manifest_parse(const char *text, size_t len, ckpt_manifest *m, char *wb, size_t wl)
{
	static const char key[] = "\"checksum\":\"";
	const char *p = NULL;
	ckpt_jr j;
	int first = 1, rc, have = 0;
	char k[32];
	uint64_t u, sum;

	memset(m, 0, sizeof *m);
	for (const char *q = text; (q = memmem(q, len - (size_t)(q - text), key, sizeof key - 1)); q++)
		p = q;
	if (!p)
		return why(wb, wl, "manifest has no checksum");
	ckpt__jr_init(&j, p + sizeof key - 2, len - (size_t)(p + sizeof key - 2 - text));
	{
		char hex[24];
		char *end;
		if (ckpt__jr_string(&j, hex, sizeof hex) < 0 || strlen(hex) != 16 ||
		    strspn(hex, "0123456789abcdef") != 16)
			return why(wb, wl, "manifest checksum is not 16 hex digits (the manifest was torn)");
		sum = strtoull(hex, &end, 16);
	}
	if (XXH3_64bits(text, (size_t)(p - text)) != sum)
		return why(wb, wl, "manifest checksum mismatch (the manifest was altered or torn)");

	static const char *const members[] = { "schema_version", "step", "world_size", "config_hash", "tags", "files",
					       "tensors", "telemetry", "checksum", "chunk_size", "chain_depth",
					       "chain_base", "labels" };
	unsigned seen = 0;

	ckpt__jr_init(&j, text, len);
	while ((rc = ckpt__jr_member(&j, &first, k, sizeof k)) == 1) {
		int dup = 0;
		for (unsigned i = 0; i < sizeof members / sizeof *members; i++)
			if (strcmp(k, members[i]) == 0) {
				dup = (seen >> i) & 1;
				seen |= 1u << i;
			}
		if (dup) {
			ckpt__jr_fail(&j, "member %s twice", k);
			break;
		}
		if (!(have & 1) && strcmp(k, "schema_version") != 0) {
			ckpt__jr_fail(&j, "schema_version must be the first member");
			break;
		}
		if (strcmp(k, "schema_version") == 0) {
			if (ckpt__jr_u64(&j, &u) < 0)
				break;
			if (u < 1 || u > CKPT_SCHEMA_VERSION_CHUNKED) {
				ckpt__manifest_free(m);
				return why(wb, wl, "manifest schema_version %" PRIu64 " is not one this library reads "
					   "(1 to %d): written by a newer libckpt?", u, CKPT_SCHEMA_VERSION_CHUNKED);
			}
			m->schema_version = (int)u;
			have |= 1;
		} else if (strcmp(k, "step") == 0) {
			if (ckpt__jr_u64(&j, &m->step) < 0)
				break;
			have |= 2;
		} else if (strcmp(k, "world_size") == 0) {
			if (int_in(&j, &u, 1u << 20, "world_size") < 0)
				break;
			if (u == 0) {
				ckpt__jr_fail(&j, "world_size 0");
				break;
			}
			m->world_size = (int)u;
			have |= 4;
		} else if (strcmp(k, "config_hash") == 0) {
			if (hex64(&j, &m->config_hash) < 0)
				break;
			have |= 8;
		} else if (strcmp(k, "tags") == 0) {
			int f2 = 1;
			char tag[64];
			while ((rc = ckpt__jr_element(&j, &f2)) == 1) {
				if (ckpt__jr_string(&j, tag, sizeof tag) < 0)
					break;
				for (unsigned i = 0; i < 2; i++)
					if (strcmp(tag, tag_names[i]) == 0)
						m->tags |= 1u << i;
			}
			if (j.failed)
				break;
		} else if (strcmp(k, "chain_base") == 0) {
			if (m->schema_version < 3) {
				ckpt__jr_fail(&j, "chain_base in a version %d manifest (version 3 has it)", m->schema_version);
				break;
			}
			if (ckpt__jr_u64(&j, &m->chain_base) < 0)
				break;
		} else if (strcmp(k, "chunk_size") == 0 || strcmp(k, "chain_depth") == 0) {
			/* version 3 only; a chunk size is bounded before anything is sized by it */
			int cs = strcmp(k, "chunk_size") == 0;
			if (m->schema_version < 3) {
				ckpt__jr_fail(&j, "%s in a version %d manifest (version 3 has it)", k, m->schema_version);
				break;
			}
			if (int_in(&j, &u, cs ? CKPT_CHUNK_MAX : UINT32_MAX, k) < 0)
				break;
			if (cs && u < CKPT_CHUNK_MIN) {
				ckpt__jr_fail(&j, "chunk_size %" PRIu64 " below the minimum %u", u, CKPT_CHUNK_MIN);
				break;
			}
			if (cs)
				m->chunk_size = (uint32_t)u;
			else
				m->chain_depth = (uint32_t)u;
		} else if (strcmp(k, "files") == 0) {
			if (!(have & 1) || (m->schema_version >= 3 && !m->chunk_size)) {
				ckpt__jr_fail(&j, "a version 3 manifest needs chunk_size before files");
				break;
			}
			if (parse_files(&j, m) < 0)
				break;
			have |= 16;
		} else if (strcmp(k, "tensors") == 0) {
			if (!(have & 4)) {
				ckpt__jr_fail(&j, "world_size must come before tensors");
				break;
			}
			if ((m->schema_version == 1 ? parse_tensors_v1(&j, m) : parse_tensors_v2(&j, m)) < 0)
				break;
			have |= 32;
		} else if (strcmp(k, "labels") == 0) {
			if (ckpt__labels_parse(&j, m) < 0)
				break;
		} else if (strcmp(k, "telemetry") == 0) {
			const char *start = j.p;
			if (ckpt__jr_skip(&j) < 0)
				break;
			while (start < j.p && (*start == ' ' || *start == '\n'))
				start++;
			size_t n = (size_t)(j.p - start);
			if (n <= TELEMETRY_MAX && (m->telemetry_json = malloc(n + 1))) {
				memcpy(m->telemetry_json, start, n);
				m->telemetry_json[n] = '\0';
			}
		} else if (strcmp(k, "checksum") == 0) {
			/* the member whose text the checksum starts at, and the last one */
			if (j.p - (sizeof key - 2) != p) {
				ckpt__jr_fail(&j, "checksum is not where the checksum was computed");
				break;
			}
			if (ckpt__jr_skip(&j) < 0)
				break;
			have |= 64;
			if (ckpt__jr_peek(&j) != '}') {
				ckpt__jr_fail(&j, "checksum must be the last member");
				break;
			}
		} else if (ckpt__jr_skip(&j) < 0) {
			break;
		}
	}
	if (j.failed || ckpt__jr_end(&j) < 0) {
		rc = why(wb, wl, "manifest is not valid: %s", j.err);
		ckpt__manifest_free(m);
		return rc;
	}
	if ((have & 127) != 127) {
		ckpt__manifest_free(m);
		return why(wb, wl, "manifest lacks a member (schema_version, step, world_size, config_hash, files, "
			   "tensors, checksum)");
	}
	if ((rc = check_manifest(m, wb, wl)) < 0) {
		ckpt__manifest_free(m);
		return rc;
	}
	return 0;
}

void ckpt__manifest_free(ckpt_manifest *m)
{
	free(m->files);
	free(m->layout);
	free(m->pool);
	free(m->telemetry_json);
	m->files = NULL;
	m->layout = NULL;
	m->pool = NULL;
	m->telemetry_json = NULL;
	m->nfiles = m->ntensors = 0;
	m->npool = m->cappool = 0;
}

/* ---- the safetensors header of a shard ---------------------------------- */

static int cmp_st(const void *a, const void *b)
{
	const ckpt_st_tensor *x = a, *y = b;
	return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

static int st_tensor(ckpt_jr *j, ckpt_st_tensor *t)
{
	int first = 1, rc, have = 0;
	char key[16], dt[16];

	while ((rc = ckpt__jr_member(j, &first, key, sizeof key)) == 1) {
		if (strcmp(key, "dtype") == 0) {
			if (ckpt__jr_string(j, dt, sizeof dt) < 0)
				return -1;
			if (ckpt__dtype_parse(dt, &t->dtype) < 0)
				return ckpt__jr_fail(j, "tensor %s: dtype %s is not one libckpt writes (F32, BF16, U64, U8)",
						     t->name, dt);
			have |= 1;
		} else if (strcmp(key, "shape") == 0) {
			int f2 = 1, dims = 0;
			t->elems = 1;
			while ((rc = ckpt__jr_element(j, &f2)) == 1) {
				uint64_t d;
				if (++dims > 8)
					return ckpt__jr_fail(j, "tensor %s has more than 8 dimensions", t->name);
				if (ckpt__jr_u64(j, &d) < 0)
					return -1;
				if (d && t->elems > UINT64_MAX / d)
					return ckpt__jr_fail(j, "tensor %s: shape overflows 64 bits", t->name);
				t->elems *= d;
			}
			if (rc < 0)
				return -1;
			have |= 2;
		} else if (strcmp(key, "data_offsets") == 0) {
			int f2 = 1, n = 0;
			uint64_t v[2];
			while ((rc = ckpt__jr_element(j, &f2)) == 1) {
				if (n == 2)
					return ckpt__jr_fail(j, "tensor %s: data_offsets has more than 2 values", t->name);
				if (ckpt__jr_u64(j, &v[n++]) < 0)
					return -1;
			}
			if (rc < 0)
				return -1;
			if (n != 2 || v[1] < v[0])
				return ckpt__jr_fail(j, "tensor %s: data_offsets must be [begin, end] with begin <= end", t->name);
			t->begin = v[0];
			t->end = v[1];
			have |= 4;
		} else if (ckpt__jr_skip(j) < 0) {
			return -1;
		}
	}
	if (rc < 0)
		return -1;
	if (have != 7)
		return ckpt__jr_fail(j, "tensor %s lacks dtype, shape or data_offsets", t->name);
	size_t sz = ckpt__dtype_size(t->dtype);
	if (t->elems > UINT64_MAX / sz || t->end - t->begin != t->elems * sz)
		return ckpt__jr_fail(j, "tensor %s: data_offsets span %" PRIu64 " bytes, dtype x shape is %" PRIu64
				     " elements of %zu bytes", t->name, t->end - t->begin, t->elems, sz);
	return 0;
}

static int st_meta(ckpt_jr *j, ckpt_st_header *h)
{
	int first = 1, rc;
	char key[32], val[32];

	while ((rc = ckpt__jr_member(j, &first, key, sizeof key)) == 1) {
		char *dst = strcmp(key, "rank") == 0 ? h->meta_rank : strcmp(key, "world_size") == 0 ? h->meta_world :
			    strcmp(key, "step") == 0 ? h->meta_step : strcmp(key, "format") == 0 ? h->meta_format : NULL;
		size_t cap = dst == h->meta_rank ? sizeof h->meta_rank : dst == h->meta_world ? sizeof h->meta_world :
			     dst == h->meta_step ? sizeof h->meta_step : sizeof h->meta_format;
		if (!dst) {
			if (ckpt__jr_string(j, NULL, 0) < 0)   /* safetensors: metadata values are strings */
				return -1;
			continue;
		}
		if (ckpt__jr_string(j, val, cap < sizeof val ? cap : sizeof val) < 0)
			return -1;
		memcpy(dst, val, strlen(val) + 1);
	}
	return rc;
}

int ckpt__st_parse(const char *json, size_t len, uint64_t data_len, ckpt_st_header *h, char *wb, size_t wl)
{
	ckpt_jr j;
	int first = 1, rc, cap = 0, meta = 0;
	char key[CKPT_NAME_MAX];

	memset(h, 0, sizeof *h);
	ckpt__jr_init(&j, json, len);
	while ((rc = ckpt__jr_member(&j, &first, key, sizeof key)) == 1) {
		if (strcmp(key, "__metadata__") == 0) {
			if (meta++) {
				ckpt__jr_fail(&j, "__metadata__ twice");
				break;
			}
			if (st_meta(&j, h) < 0)
				break;
			continue;
		}
		if (h->n == cap) {
			cap = cap ? 2 * cap : 64;
			ckpt_st_tensor *p = realloc(h->t, (size_t)cap * sizeof *p);
			if (!p) {
				ckpt__jr_fail(&j, "out of memory");
				break;
			}
			h->t = p;
		}
		ckpt_st_tensor *t = &h->t[h->n++];
		memset(t, 0, sizeof *t);
		memcpy(t->name, key, sizeof t->name);
		if (st_tensor(&j, t) < 0)
			break;
	}
	if (j.failed || ckpt__jr_end(&j) < 0) {
		char esc[200];
		ckpt__escape(esc, sizeof esc, j.err);
		rc = why(wb, wl, "safetensors header is not valid: %s", esc);
		ckpt__st_free(h);
		return rc;
	}
	/* the data buffer is exactly covered: no overlap, no hole, nothing past the end */
	if (h->n > 1)
		qsort(h->t, (size_t)h->n, sizeof *h->t, cmp_st);
	uint64_t at = 0;
	for (int i = 0; i < h->n; i++) {
		char esc[CKPT_NAME_MAX * 4];
		ckpt__escape(esc, sizeof esc, h->t[i].name);
		if (h->t[i].begin != at) {
			rc = why(wb, wl, "safetensors header: tensor %s starts at %" PRIu64 ", expected %" PRIu64 " (%s)",
				 esc, h->t[i].begin, at, h->t[i].begin < at ? "overlaps the previous one" : "leaves a hole");
			ckpt__st_free(h);
			return rc;
		}
		if (h->t[i].end > data_len) {
			rc = why(wb, wl, "safetensors header: tensor %s ends at %" PRIu64 ", past the %" PRIu64
				 " data bytes of the file", esc, h->t[i].end, data_len);
			ckpt__st_free(h);
			return rc;
		}
		at = h->t[i].end;
	}
	if (at != data_len) {
		rc = why(wb, wl, "safetensors header describes %" PRIu64 " data bytes, the file has %" PRIu64, at, data_len);
		ckpt__st_free(h);
		return rc;
	}
	return 0;
}

void ckpt__st_free(ckpt_st_header *h)
{
	free(h->t);
	h->t = NULL;
	h->n = 0;
}

/* ---- small files and text ------------------------------------------------ */

int ckpt__read_small_file(ckpt_io *io, const char *path, char **out, size_t *len, size_t max)
{
	struct stat st;
	int fd = ckpt__io_open(io, path, O_RDONLY, 0), rc;
	char *buf = NULL, disp[CKPT_PATH_MAX];

	*out = NULL;
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0) {
		rc = ckpt__io_fail(io, -errno, path, "%s: fstat: %s", ckpt__io_display(io, path, disp, sizeof disp),
				   strerror(errno));
		goto out;
	}
	if ((uint64_t)st.st_size > max) {
		rc = ckpt__io_fail(io, -EFBIG, path, "%s is %lld bytes, over libckpt's limit of %zu bytes for this file "
				   "(CKPT_MANIFEST_MAX; see README, libckpt)", ckpt__io_display(io, path, disp, sizeof disp),
				   (long long)st.st_size, max);
		goto out;
	}
	if (!(buf = malloc((size_t)st.st_size + 1))) {
		rc = ckpt__io_fail(io, -ENOMEM, path, "out of memory reading %s", ckpt__io_display(io, path, disp, sizeof disp));
		goto out;
	}
	rc = ckpt__io_read_all(io, fd, buf, (size_t)st.st_size, path);
	if (rc == 0) {
		buf[st.st_size] = '\0';
		*out = buf;
		*len = (size_t)st.st_size;
		buf = NULL;
	}
out:
	free(buf);
	int rc2 = ckpt__io_close(io, &fd, path);
	if (rc == 0 && rc2 < 0) {
		free(*out);
		*out = NULL;
	}
	return rc < 0 ? rc : rc2;
}

void ckpt__escape(char *dst, size_t cap, const char *src)
{
	size_t o = 0;

	if (!cap)
		return;
	for (; src && *src && o + 5 < cap; src++) {
		unsigned char c = (unsigned char)*src;
		if (c < 0x20 || c >= 0x7f || c == '\\')
			o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", c);
		else
			dst[o++] = (char)c;
	}
	dst[o] = '\0';
}
