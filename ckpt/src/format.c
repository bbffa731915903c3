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

bool ckpt__gen_parse(const char *name, uint64_t *step)
{
	uint64_t v = 0;
	const char *p;

	if (strncmp(name, "step-", 5) != 0)
		return false;
	for (p = name + 5; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p || p - name < 13)
		return false;
	*step = v;
	return true;
}

void ckpt__shard_name(char *buf, size_t len, int rank)
{
	snprintf(buf, len, "rank-%05d.safetensors", rank);
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

int ckpt__manifest_render(const ckpt_manifest *m, char **out, size_t *len)
{
	json_t *root = json_object(), *files = json_array(), *tensors = json_array(), *tags = json_array();
	char hex[17], *text = NULL;
	int rc = -ENOMEM;

	if (!root || !files || !tensors || !tags)
		goto out;
	snprintf(hex, sizeof hex, "%016" PRIx64, m->config_hash);
	json_array_append_new(tags, json_string("latest"));
	for (unsigned i = 0; i < 2; i++)
		if (m->tags & (1u << i))
			json_array_append_new(tags, json_string(tag_names[i]));
	json_object_set_new(root, "schema_version", json_integer(m->schema_version));
	json_object_set_new(root, "step", json_integer((json_int_t)m->step));
	json_object_set_new(root, "world_size", json_integer(m->world_size));
	json_object_set_new(root, "config_hash", json_string(hex));
	json_object_set(root, "tags", tags);
	for (int i = 0; i < m->nfiles; i++) {
		const ckpt_file_entry *f = &m->files[i];
		snprintf(hex, sizeof hex, "%016" PRIx64, f->hash);
		json_array_append_new(files, json_pack("{s:s,s:i,s:I,s:s}", "name", f->name, "rank", f->rank,
						       "size", (json_int_t)f->size, "xxh3", hex));
	}
	json_object_set(root, "files", files);
	for (int i = 0; i < m->ntensors; i++) {
		const ckpt_tensor_entry *t = &m->tensors[i];
		json_array_append_new(tensors, json_pack("{s:s,s:s,s:i,s:i,s:s,s:I,s:I,s:I,s:I,s:I}",
			"name", t->name, "component", t->component, "rank", t->rank, "stage", t->stage,
			"dtype", ckpt__dtype_name(t->dtype), "local_elems", (json_int_t)t->local_elems,
			"global_elems", (json_int_t)t->global_elems, "global_offset", (json_int_t)t->global_offset,
			"file_offset", (json_int_t)t->file_offset, "nbytes", (json_int_t)t->nbytes));
	}
	json_object_set(root, "tensors", tensors);
	if (m->telemetry_json) {
		json_t *tel = json_loads(m->telemetry_json, 0, NULL);
		if (tel)
			json_object_set_new(root, "telemetry", tel);
	}
	if (!(text = dump(root)))
		goto out;

	/* text ends with '}': append ,"checksum":"<hash of everything before it>"} */
	size_t n = strlen(text) - 1;
	char *buf = malloc(n + 64);
	if (!buf)
		goto out;
	memcpy(buf, text, n);
	n += (size_t)sprintf(buf + n, ",");
	uint64_t sum = XXH3_64bits(buf, n);
	n += (size_t)sprintf(buf + n, "\"checksum\":\"%016" PRIx64 "\"}\n", sum);
	*out = buf;
	*len = n;
	rc = 0;
out:
	free(text);
	json_decref(tags);
	json_decref(files);
	json_decref(tensors);
	json_decref(root);
	return rc;
}

static int why(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int why(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	return -CKPT_ECORRUPT;
}

static int parse_hex64(json_t *v, uint64_t *out)
{
	const char *s = json_string_value(v);
	char *end;

	if (!s || strlen(s) != 16)
		return -EINVAL;
	*out = strtoull(s, &end, 16);
	return *end ? -EINVAL : 0;
}

static int get_u64(json_t *o, const char *key, uint64_t *out)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -EINVAL;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

int ckpt__manifest_parse(const char *text, size_t len, ckpt_manifest *m, char *whybuf, size_t wl)
{
	static const char key[] = "\"checksum\":\"";
	const char *p = NULL;
	json_error_t jerr;
	json_t *root = NULL, *v;
	uint64_t sum, u;
	int rc;

	memset(m, 0, sizeof *m);
	for (const char *q = text; (q = memmem(q, len - (size_t)(q - text), key, sizeof key - 1)); q++)
		p = q;
	if (!p)
		return why(whybuf, wl, "manifest has no checksum");
	if (XXH3_64bits(text, (size_t)(p - text)) != (sum = strtoull(p + sizeof key - 1, NULL, 16)) ||
	    sum == 0)
		return why(whybuf, wl, "manifest checksum mismatch (the manifest was altered or torn)");
	root = json_loadb(text, len, 0, &jerr);
	if (!root)
		return why(whybuf, wl, "manifest is not valid JSON: %s at line %d column %d", jerr.text,
			   jerr.line, jerr.column);

	rc = why(whybuf, wl, "manifest is missing or has a bad field");
	if (get_u64(root, "schema_version", &u) || get_u64(root, "step", &m->step))
		goto fail;
	m->schema_version = (int)u;
	if (m->schema_version != CKPT_SCHEMA_VERSION) {
		rc = why(whybuf, wl, "manifest schema_version %d is not %d", m->schema_version, CKPT_SCHEMA_VERSION);
		goto fail;
	}
	if (get_u64(root, "world_size", &u) || u == 0 || u > 1u << 20)
		goto fail;
	m->world_size = (int)u;
	if (parse_hex64(json_object_get(root, "config_hash"), &m->config_hash))
		goto fail;
	json_array_foreach(json_object_get(root, "tags"), u, v) {
		for (unsigned i = 0; i < 2; i++)
			if (json_string_value(v) && strcmp(json_string_value(v), tag_names[i]) == 0)
				m->tags |= 1u << i;
	}

	json_t *files = json_object_get(root, "files"), *tensors = json_object_get(root, "tensors");
	if (!json_is_array(files) || !json_is_array(tensors))
		goto fail;
	m->nfiles = (int)json_array_size(files);
	m->ntensors = (int)json_array_size(tensors);
	m->files = calloc((size_t)m->nfiles + 1, sizeof *m->files);
	m->tensors = calloc((size_t)m->ntensors + 1, sizeof *m->tensors);
	if (!m->files || !m->tensors) {
		rc = -ENOMEM;
		goto fail;
	}
	json_array_foreach(files, u, v) {
		ckpt_file_entry *f = &m->files[u];
		const char *name = json_string_value(json_object_get(v, "name"));
		uint64_t r;
		if (!name || strlen(name) >= sizeof f->name || strchr(name, '/') || get_u64(v, "rank", &r) ||
		    get_u64(v, "size", &f->size) || parse_hex64(json_object_get(v, "xxh3"), &f->hash))
			goto fail;
		strcpy(f->name, name);
		f->rank = (int)r;
	}
	json_array_foreach(tensors, u, v) {
		ckpt_tensor_entry *t = &m->tensors[u];
		const char *name = json_string_value(json_object_get(v, "name"));
		const char *comp = json_string_value(json_object_get(v, "component"));
		const char *dt = json_string_value(json_object_get(v, "dtype"));
		uint64_t r, stage;
		if (!name || !comp || !dt || strlen(name) >= sizeof t->name || strlen(comp) >= sizeof t->component ||
		    ckpt__dtype_parse(dt, &t->dtype) || get_u64(v, "rank", &r) || get_u64(v, "stage", &stage) ||
		    get_u64(v, "local_elems", &t->local_elems) || get_u64(v, "global_elems", &t->global_elems) ||
		    get_u64(v, "global_offset", &t->global_offset) || get_u64(v, "file_offset", &t->file_offset) ||
		    get_u64(v, "nbytes", &t->nbytes))
			goto fail;
		strcpy(t->name, name);
		strcpy(t->component, comp);
		t->rank = (int)r;
		t->stage = (int)stage;
	}
	json_decref(root);
	return 0;
fail:
	json_decref(root);
	ckpt__manifest_free(m);
	return rc;
}

void ckpt__manifest_free(ckpt_manifest *m)
{
	free(m->files);
	free(m->tensors);
	free(m->telemetry_json);
	m->files = NULL;
	m->tensors = NULL;
	m->telemetry_json = NULL;
}

int ckpt__read_small_file(ckpt_io *io, const char *path, char **out, size_t *len, size_t max)
{
	struct stat st;
	int fd = ckpt__io_open(io, path, O_RDONLY, 0), rc;
	char *buf = NULL;

	*out = NULL;
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if ((size_t)st.st_size > max) {
		rc = -EFBIG;
		goto out;
	}
	if (!(buf = malloc((size_t)st.st_size + 1))) {
		rc = -ENOMEM;
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
	return rc < 0 ? rc : rc2;
}

/* Bytes per read when hashing: large enough for throughput, small for cache. */
#define HASH_PIECE (4u << 20)

int ckpt__hash_file(ckpt_io *io, const char *path, uint64_t expect_size, uint64_t *hash,
		    const ckpt_tensor_entry *te, ckpt_entry *const *dst, int nte)
{
	XXH3_state_t *st = XXH3_createState();
	struct stat sb;
	char *buf = malloc(HASH_PIECE);
	uint64_t pos = 0;
	int fd = -1, rc;

	if (!st || !buf) {
		rc = -ENOMEM;
		goto out;
	}
	XXH3_64bits_reset(st);
	if ((fd = ckpt__io_open(io, path, O_RDONLY, 0)) < 0) {
		rc = fd;
		goto out;
	}
	if (fstat(fd, &sb) < 0) {
		rc = -errno;
		goto out;
	}
	if ((uint64_t)sb.st_size != expect_size) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: size %lld bytes, the manifest says %" PRIu64
				   " (truncated or overwritten)", path, (long long)sb.st_size, expect_size);
		goto out;
	}
	/* tensors go straight into the state; everything else through buf */
	for (int k = 0; k <= nte && pos < expect_size; k++) {
		uint64_t until = k < nte ? te[k].file_offset : expect_size;
		while (pos < until) {
			size_t n = until - pos < HASH_PIECE ? (size_t)(until - pos) : HASH_PIECE;
			if ((rc = ckpt__io_read_all(io, fd, buf, n, path)) < 0)
				goto out;
			XXH3_64bits_update(st, buf, n);
			pos += n;
		}
		if (k < nte && (te[k].file_offset < pos || te[k].nbytes > expect_size - te[k].file_offset)) {
			rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: tensor %s lies outside the file",
					   path, te[k].name);
			goto out;
		}
		if (k < nte) {
			char *d = dst[k]->data;
			for (uint64_t off = 0; off < te[k].nbytes;) {
				size_t n = te[k].nbytes - off < HASH_PIECE ? (size_t)(te[k].nbytes - off) : HASH_PIECE;
				if ((rc = ckpt__io_read_all(io, fd, d + off, n, path)) < 0)
					goto out;
				XXH3_64bits_update(st, d + off, n);
				off += n;
			}
			pos += te[k].nbytes;
		}
	}
	*hash = XXH3_64bits_digest(st);
	rc = 0;
out:
	if (fd >= 0) {
		int rc2 = ckpt__io_close(io, &fd, path);
		if (rc == 0)
			rc = rc2;
	}
	XXH3_freeState(st);
	free(buf);
	return rc;
}
