#include "naive_format.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

size_t reftrain_naive_dtype_size(reftrain_backend_dtype t)
{
	return t == REFTRAIN_BACKEND_F32 ? 4 : t == REFTRAIN_BACKEND_BF16 ? 2 : t == REFTRAIN_BACKEND_U64 ? 8 : 1;
}

size_t reftrain_naive_index_size(const reftrain_backend_tensor *t, size_t n)
{
	size_t size = REFTRAIN_NAIVE_HEADER;

	if (n > REFTRAIN_NAIVE_MAX_TENSORS)
		return 0;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(t[i].name);
		if (l == 0 || l > REFTRAIN_NAIVE_MAX_NAME)
			return 0;
		size += REFTRAIN_NAIVE_ENTRY + l;
	}
	return size;
}

size_t reftrain_naive_file_size(const reftrain_backend_tensor *t, size_t n)
{
	size_t size = reftrain_naive_index_size(t, n);

	for (size_t i = 0; size && i < n; i++) {
		size_t es = reftrain_naive_dtype_size(t[i].dtype);
		if (t[i].local_elems > (SIZE_MAX - size) / es)
			return 0;
		size += t[i].local_elems * es;
	}
	return size;
}

void reftrain_naive_write_index(unsigned char *buf, uint64_t step, int rank, int world,
				const reftrain_backend_tensor *t, size_t n)
{
	unsigned char *p = buf + REFTRAIN_NAIVE_HEADER;

	memset(buf, 0, REFTRAIN_NAIVE_HEADER);
	memcpy(buf, REFTRAIN_NAIVE_MAGIC, 8);
	put64(buf + 8, step);
	put32(buf + 16, (uint32_t)rank);
	put32(buf + 20, (uint32_t)world);
	put32(buf + 24, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(t[i].name);
		memset(p, 0, REFTRAIN_NAIVE_ENTRY);
		put16(p, (uint16_t)l);
		p[2] = (unsigned char)t[i].dtype;
		put64(p + 8, (uint64_t)t[i].local_elems);
		memcpy(p + REFTRAIN_NAIVE_ENTRY, t[i].name, l);
		p += REFTRAIN_NAIVE_ENTRY + l;
	}
}

#define BAD(...) do { snprintf(why, why_len, __VA_ARGS__); return -EBADMSG; } while (0)

int reftrain_naive_parse(const unsigned char *buf, size_t len, int rank, int world,
			 const reftrain_backend_tensor *t, size_t n, uint64_t *step,
			 const unsigned char **data, char *why, size_t why_len)
{
	size_t off = REFTRAIN_NAIVE_HEADER, need;

	if (len == 0)
		BAD("empty file");
	if (len < REFTRAIN_NAIVE_HEADER)
		BAD("truncated: %zu bytes, shorter than the %d-byte header", len, REFTRAIN_NAIVE_HEADER);
	if (memcmp(buf, REFTRAIN_NAIVE_MAGIC, 8) != 0)
		BAD("not a naive checkpoint (no " REFTRAIN_NAIVE_MAGIC " magic at offset 0)");
	if (get32(buf + 16) != (uint32_t)rank || get32(buf + 20) != (uint32_t)world)
		BAD("written by rank %" PRIu32 " of %" PRIu32 "; this is rank %d of %d", get32(buf + 16),
		    get32(buf + 20), rank, world);
	if (get32(buf + 24) != n || get32(buf + 28) != 0)
		BAD("holds %" PRIu32 " tensors; this trainer has %zu", get32(buf + 24), n);
	for (size_t i = 0; i < n; i++) {
		if (len - off < REFTRAIN_NAIVE_ENTRY)
			BAD("truncated: %zu bytes, inside the index entry of tensor %zu at offset %zu", len, i, off);
		const unsigned char *e = buf + off;
		size_t l = get16(e), want = strlen(t[i].name);
		if (l == 0 || l > REFTRAIN_NAIVE_MAX_NAME)
			BAD("tensor %zu at offset %zu: name length %zu is not in 1..%d", i, off, l, REFTRAIN_NAIVE_MAX_NAME);
		if (len - off - REFTRAIN_NAIVE_ENTRY < l)
			BAD("truncated: %zu bytes, inside the name of tensor %zu at offset %zu", len, i, off);
		if (l != want || memcmp(e + REFTRAIN_NAIVE_ENTRY, t[i].name, l) != 0)
			BAD("tensor %zu at offset %zu is not %s", i, off, t[i].name);
		if (e[2] != (unsigned char)t[i].dtype || e[3] || get32(e + 4))
			BAD("%s: dtype %u, expected %u", t[i].name, e[2], (unsigned)t[i].dtype);
		if (get64(e + 8) != (uint64_t)t[i].local_elems)
			BAD("%s: %" PRIu64 " elements, this rank has %zu", t[i].name, get64(e + 8), t[i].local_elems);
		off += REFTRAIN_NAIVE_ENTRY + l;
	}
	/* the table matched, so the data size is the table's, not the file's word */
	need = reftrain_naive_file_size(t, n);
	if (need == 0)
		BAD("this rank's tensor table cannot be stored in a naive checkpoint");
	if (len < need)
		BAD("truncated: %zu bytes, the tensors need %zu", len, need);
	if (len > need)
		BAD("%zu bytes, %zu more than the tensors need", len, len - need);
	*step = get64(buf + 8);
	*data = buf + off;
	return 0;
}
