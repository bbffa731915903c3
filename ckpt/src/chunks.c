/*
 * The chunk store of incremental checkpoints (see chunks.h for the layout).
 *
 * Writing a chunk: ROOT/chunks/HH/<hex>.tmp-R (created O_EXCL, any leftover
 * removed first), write, fsync, close, rename to its address; once a rank's
 * chunks are all in place it fsyncs every directory it touched (and the ones
 * it created, up to the root). All of it happens before the save's barrier,
 * so when rank 0 commits the manifest every chunk it references is durable.
 * Two ranks writing the same chunk write the same bytes under different
 * temporary names; either rename leaves the right content.
 *
 * Reuse: a save reuses (does not write) a chunk only if its base has it: the
 * generation this job last committed or restored, whose chunks were written
 * and synced by a save that succeeded everywhere or read and verified by a
 * restore. Every full_every-th save is full: it rewrites every chunk, so a
 * chunk damaged at rest is replaced for every generation that shares it.
 *
 * Why no reference count is kept: the set of live chunks is derived, each
 * time it is needed, from the committed manifests (and their recipes), which
 * are the only durable truth. A chunk is deleted only when no committed
 * generation references it, and only while no save is in progress (rank 0's
 * retention runs after a commit and is joined before the next save starts;
 * start-up cleanup runs before any save). A generation is referenced by the
 * directory scan only once committed (after its chunks are durable), and
 * leaves it atomically (renamed to .trash, the root fsynced) before the sweep
 * that may delete its chunks. So a crash at any point, in a save, in
 * retention or in the sweep, leaves every committed generation's chunks in
 * place: there is no count to get wrong, and no count to make durable.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "chunks.h"

#define HASH_LEN 16
#ifdef CKPT_MUTANT_CHUNK_HASH_WRONG_BYTES
/* mutant: a chunk's address covers only its first half (writer and reader agree, so nothing looks damaged) */
#define ADDRESSED(len) ((len) > 1 ? (len) / 2 : (len))
#else
#define ADDRESSED(len) (len)
#endif
#define READ_PIECE (4u << 20)

struct ckpt_chunks {
	uint32_t cs, full_every;
	mode_t file_mode, dir_mode;
	unsigned char *base;        /* sorted hashes */
	size_t nbase;
	int have_base;
	uint32_t base_depth;
	uint64_t base_chain;        /* the step of the base's full generation: the seed of its chunk addresses */
	unsigned char *pend;        /* the recipe table of the pending save or restore */
	size_t npend, cappend;
	int have_pend;
	uint32_t pend_depth;
	uint64_t pend_chain;
	uint64_t written, shared;
};

static int cmp_hash(const void *a, const void *b)
{
	return memcmp(a, b, HASH_LEN);
}

static void hash_bytes(const void *p, size_t n, uint64_t seed, unsigned char out[HASH_LEN])
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits_withSeed(p, n, seed));
	memcpy(out, c.digest, HASH_LEN);
}

static void hex_of(const unsigned char h[HASH_LEN], char out[2 * HASH_LEN + 1])
{
	for (int i = 0; i < HASH_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* "chunks/HH/<hex>" plus an optional suffix */
static void chunk_path(char *buf, size_t len, const unsigned char h[HASH_LEN], const char *suffix)
{
	char hex[2 * HASH_LEN + 1];
	hex_of(h, hex);
	snprintf(buf, len, "chunks/%.2s/%s%s", hex, hex, suffix ? suffix : "");
}

int ckpt__chunks_new(ckpt_chunks **out, uint32_t chunk_bytes, uint32_t full_every, mode_t file_mode, mode_t dir_mode)
{
	ckpt_chunks *k;

	*out = NULL;
	if (!chunk_bytes)
		chunk_bytes = CKPT_CHUNK_DEFAULT;
	if (chunk_bytes < CKPT_CHUNK_MIN || chunk_bytes > CKPT_CHUNK_MAX)
		return -EINVAL;
	if (!(k = calloc(1, sizeof *k)))
		return -ENOMEM;
	k->cs = chunk_bytes;
	k->full_every = full_every;
	k->file_mode = file_mode;
	k->dir_mode = dir_mode;
	*out = k;
	return 0;
}

void ckpt__chunks_free(ckpt_chunks *k)
{
	if (!k)
		return;
	free(k->base);
	free(k->pend);
	free(k);
}

uint32_t ckpt__chunks_size(const ckpt_chunks *k)
{
	return k->cs;
}

const unsigned char *ckpt__chunks_table(const ckpt_chunks *k, size_t *len)
{
	*len = k->npend * HASH_LEN;
	return k->pend;
}

uint32_t ckpt__chunks_depth(const ckpt_chunks *k)
{
	return k->pend_depth;
}

uint64_t ckpt__chunks_chain(const ckpt_chunks *k)
{
	return k->pend_chain;
}

void ckpt__chunks_bytes(const ckpt_chunks *k, uint64_t *written, uint64_t *shared)
{
	*written = k->written;
	*shared = k->shared;
}

static int pend_reserve(ckpt_chunks *k, size_t n)
{
	if (n <= k->cappend)
		return 0;
	unsigned char *p = realloc(k->pend, n * HASH_LEN);
	if (!p)
		return -ENOMEM;
	k->pend = p;
	k->cappend = n;
	return 0;
}

void ckpt__chunks_settle(ckpt_chunks *k, bool ok)
{
	if (!k)
		return;
	if (!ok && k->have_pend)
		ckpt_mutant_reached("delta_wrong_base");
#ifdef CKPT_MUTANT_DELTA_WRONG_BASE
	ok = ok || k->have_pend;      /* mutant: a failed save's chunks become the base all the same */
#endif
	if (ok) {
		/* the new base: sorted for lookups (the table itself stays in recipe order on disk) */
		unsigned char *b = k->have_pend && k->npend ? malloc(k->npend * HASH_LEN) : NULL;
		free(k->base);
		k->base = b;
		k->nbase = b ? k->npend : 0;
		k->have_base = b != NULL || (k->have_pend && k->npend == 0);
		k->base_depth = k->pend_depth;
		k->base_chain = k->pend_chain;
		if (b) {
			memcpy(b, k->pend, k->npend * HASH_LEN);
			qsort(b, k->nbase, HASH_LEN, cmp_hash);
		}
	}
	k->have_pend = 0;
	k->npend = 0;
	k->pend_depth = 0;
	k->pend_chain = 0;
}

static bool in_base(const ckpt_chunks *k, const unsigned char h[HASH_LEN])
{
	return k->nbase && bsearch(h, k->base, k->nbase, HASH_LEN, cmp_hash) != NULL;
}

/* A directory under the root that must exist: made if missing (*made set), refused if not a directory. */
static int ensure_dir(ckpt_io *io, const char *path, mode_t mode, int *made)
{
	struct stat st;
	int rc = ckpt__io_lstat(io, path, &st);

	if (rc == 0) {
		if (S_ISDIR(st.st_mode))
			return 0;
		return ckpt__io_fail(io, -ENOTDIR, path, "%s/%s is not a directory (%s): the chunk store cannot be used",
				     io->root ? io->root : ".", path, S_ISLNK(st.st_mode) ? "a symbolic link" : "a file");
	}
	if (rc != -ENOENT)
		return ckpt__io_fail(io, rc, path, "cannot stat %s/%s: %s", io->root ? io->root : ".", path,
				     ckpt_describe(rc));
	/* another rank may make it at the same moment: EEXIST is fine if a directory is there now */
	ckpt_error mine, *saved = io->err;
	ckpt__error_clear(&mine);
	io->err = &mine;
	rc = ckpt__io_mkdir(io, path, mode);
	io->err = saved;
	if (rc == -EEXIST && ckpt__io_lstat(io, path, &st) == 0 && S_ISDIR(st.st_mode))
		return 0;
	if (rc < 0) {
		if (saved && saved->code == 0)
			*saved = mine;
		return rc;
	}
	*made = 1;
	return 0;
}

/* One chunk, durably at its address (the directory entry is synced by the caller). */
static int write_chunk(ckpt_chunks *k, ckpt_io *io, const unsigned char h[HASH_LEN], const void *p, size_t n)
{
	char tmp[CKPT_PATH_MAX], dst[CKPT_PATH_MAX], suffix[24];
	struct stat st;
	int fd, rc, rc2;

	snprintf(suffix, sizeof suffix, ".tmp-%d", io->rank);
	chunk_path(tmp, sizeof tmp, h, suffix);
	chunk_path(dst, sizeof dst, h, NULL);
	if (ckpt__io_lstat(io, tmp, &st) == 0 && (rc = ckpt__io_unlink(io, tmp)) < 0)
		return rc;
	if ((fd = ckpt__io_open(io, tmp, O_WRONLY | O_CREAT | O_EXCL, k->file_mode)) < 0)
		return fd;
	rc = ckpt__io_write_all(io, fd, p, n, tmp);
	if (rc == 0 && (rc = ckpt__io_phase(io, "save.chunk_sync")) == 0)
		rc = ckpt__io_fsync(io, fd, tmp);
	rc2 = ckpt__io_close(io, &fd, tmp);
	if (rc == 0)
		rc = rc2;
	if (rc == 0)
		rc = ckpt__io_rename(io, tmp, dst);
	return rc;
}

static uint64_t nbytes_of(const ckpt_entry *e)
{
	return (uint64_t)e->local_elems * ckpt__dtype_size(e->dtype);
}

int ckpt__chunks_save(ckpt_chunks *k, ckpt_io *io, ckpt_entry *const *dst, int n)
{
	unsigned char touched[256] = { 0 }, made_sub[256] = { 0 };
	int made_root = 0, rc;
	size_t total = 0;
	bool full = !k->have_base || k->full_every <= 1 || k->base_depth + 1 >= k->full_every;

	ckpt__chunks_settle(k, false);
	k->written = k->shared = 0;
	for (int t = 0; t < n; t++)
		total += (size_t)((nbytes_of(dst[t]) + k->cs - 1) / k->cs);
	if (pend_reserve(k, total ? total : 1) < 0)
		return ckpt__io_fail(io, -ENOMEM, NULL, "out of memory for %zu chunk hashes", total);
	k->pend_depth = full ? 0 : k->base_depth + 1;
	/* a full save starts a chain: its step seeds the addresses, so it shares no chunk with older chains */
	k->pend_chain = full ? io->step : k->base_chain;
	if ((rc = ckpt__io_phase(io, "save.chunk_write")) < 0)
		return rc;
	if ((rc = ensure_dir(io, "chunks", k->dir_mode, &made_root)) < 0)
		return rc;
	ckpt_mutant_reached("chunk_hash_wrong_bytes");
	for (int t = 0; t < n; t++) {
		const unsigned char *d = dst[t]->data;
		uint64_t nb = nbytes_of(dst[t]);
		for (uint64_t off = 0; off < nb; off += k->cs) {
			size_t len = nb - off < k->cs ? (size_t)(nb - off) : k->cs;
			unsigned char *h = k->pend + k->npend * HASH_LEN;
			hash_bytes(d + off, ADDRESSED(len), k->pend_chain, h);
			k->npend++;
			if (!full && in_base(k, h)) {
				k->shared += len;
				continue;
			}
			char sub[16];
			snprintf(sub, sizeof sub, "chunks/%02x", h[0]);
			if (!touched[h[0]]) {
				int made = 0;
				if ((rc = ensure_dir(io, sub, k->dir_mode, &made)) < 0)
					return rc;
				touched[h[0]] = 1;
				made_sub[h[0]] = (unsigned char)made;
			}
			if ((rc = write_chunk(k, io, h, d + off, len)) < 0)
				return rc;
			k->written += len;
			if ((rc = ckpt__io_phase(io, "save.chunk_write")) < 0)
				return rc;
		}
	}
	/* the renames and any directory made, durable before the barrier */
	if ((rc = ckpt__io_phase(io, "save.chunk_sync")) < 0)
		return rc;
	int any_made = 0;
	for (int i = 0; i < 256; i++) {
		char sub[16];
		if (!touched[i])
			continue;
		snprintf(sub, sizeof sub, "chunks/%02x", i);
		if ((rc = ckpt__io_fsync_dir(io, sub)) < 0)
			return rc;
		any_made |= made_sub[i];
	}
	if ((any_made || made_root) && (rc = ckpt__io_fsync_dir(io, "chunks")) < 0)
		return rc;
	if (made_root && (rc = ckpt__io_fsync_dir(io, ".")) < 0)
		return rc;
	k->have_pend = 1;
	return 0;
}

/* ---- recipes ------------------------------------------------------------ */

typedef struct recipe {
	char *buf;
	size_t len;
	ckpt_st_header h;
	const unsigned char *tab;
	size_t nchunks;
} recipe;

static void recipe_free(recipe *r)
{
	free(r->buf);
	ckpt__st_free(&r->h);
	memset(r, 0, sizeof *r);
}

/* Read and check rank's recipe of a loaded chunked generation. */
static int recipe_load(ckpt_io *io, const char *name, const ckpt_manifest *m, int rank, recipe *r)
{
	const ckpt_file_entry *f = NULL;
	char path[CKPT_PATH_MAX], disp[CKPT_PATH_MAX], why[400];
	uint64_t hlen = 0, data = 0, hash;
	int rc;

	memset(r, 0, sizeof *r);
	if (rank >= 0 && rank < m->nfiles && m->files[rank].rank == rank)
		f = &m->files[rank];
	if (!f)
		return ckpt__io_fail(io, -CKPT_ECORRUPT, name, "%s: manifest lists no recipe for rank %d", name, rank);
	if (snprintf(path, sizeof path, "%s/%s", name, f->name) >= (int)sizeof path)
		return ckpt__io_fail(io, -ENAMETOOLONG, name, "path too long");
	ckpt__io_display(io, path, disp, sizeof disp);
	if (f->size > CKPT_RECIPE_MAX)
		return ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: the manifest lists %" PRIu64 " bytes, over the limit "
				     "of %zu for a recipe (CKPT_RECIPE_MAX)", disp, f->size, CKPT_RECIPE_MAX);
	if ((rc = ckpt__read_small_file(io, path, &r->buf, &r->len, CKPT_RECIPE_MAX)) < 0) {
		if (io->err && io->err->code == 0)
			ckpt__io_fail(io, rc, path, "%s: cannot read: %s", disp, ckpt_describe(rc));
		return rc;
	}
	if (r->len != f->size) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: size %zu bytes, the manifest says %" PRIu64
				   " (truncated or overwritten)", disp, r->len, f->size);
		goto fail;
	}
	if ((hash = XXH3_64bits(r->buf, r->len)) != f->hash) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: xxh3 %016" PRIx64 ", manifest says %016" PRIx64
				   " (contents damaged)", disp, hash, f->hash);
		goto fail;
	}
	if (r->len >= 8)
		for (int i = 7; i >= 0; i--)
			hlen = hlen << 8 | (unsigned char)r->buf[i];
	if (r->len < 8 || hlen > r->len - 8 || hlen > CKPT_SHARD_HEADER_MAX) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: header length %" PRIu64 " does not fit the recipe (%zu "
				   "bytes)", disp, hlen, r->len);
		goto fail;
	}
	/* the data the header describes: this rank's tensors (each fits 64 bits: checked when parsed) */
	for (int k = 0; k < m->ntensors; k++) {
		uint64_t b = ckpt__layout_local(m, k, rank) * ckpt__dtype_size(m->layout[k].dtype);
		if (b > UINT64_MAX - data) {
			rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: tensor sizes overflow", disp);
			goto fail;
		}
		data += b;
	}
	if ((rc = ckpt__st_parse(r->buf + 8, (size_t)hlen, data, &r->h, why, sizeof why)) < 0 ||
	    (rc = ckpt__st_check(&r->h, m, rank, why, sizeof why)) < 0) {
		rc = ckpt__io_fail(io, rc, path, "%s: %s", disp, why);
		goto fail;
	}
	/* one hash per chunk, no more, no less (bounded by the file before anything is sized by it) */
	size_t room = (r->len - 8 - (size_t)hlen) / HASH_LEN;
	for (int k = 0; k < r->h.n; k++) {
		uint64_t c = (r->h.t[k].end - r->h.t[k].begin + m->chunk_size - 1) / m->chunk_size;
		if (c > room - r->nchunks) {
			r->nchunks = SIZE_MAX;
			break;
		}
		r->nchunks += (size_t)c;
	}
	if (r->nchunks == SIZE_MAX || 8 + hlen + (uint64_t)r->nchunks * HASH_LEN != r->len) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: the chunk table does not list one hash per %" PRIu32
				   "-byte chunk of the tensors", disp, m->chunk_size);
		goto fail;
	}
	r->tab = (const unsigned char *)r->buf + 8 + hlen;
	return 0;
fail:
	recipe_free(r);
	return rc;
}

/* Read one chunk from fd, open (into to, or a scratch buffer), check its size and hash, close it. */
static int read_chunk(ckpt_io *io, int fd, const unsigned char h[HASH_LEN], uint64_t seed, uint64_t len,
		      unsigned char *to, unsigned char *scratch, XXH3_state_t *xs)
{
	char path[CKPT_PATH_MAX], disp[CKPT_PATH_MAX], hex[2 * HASH_LEN + 1];
	struct stat sb;
	int rc, rc2;

	chunk_path(path, sizeof path, h, NULL);
	ckpt__io_display(io, path, disp, sizeof disp);
	hex_of(h, hex);
	if (fstat(fd, &sb) < 0) {
		rc = ckpt__io_fail(io, -errno, path, "%s: fstat: %s", disp, strerror(errno));
		goto out;
	}
	if ((uint64_t)sb.st_size != len) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: chunk of %lld bytes, the recipe needs %" PRIu64
				   " (truncated or overwritten)", disp, (long long)sb.st_size, len);
		goto out;
	}
	ckpt_mutant_reached("chunk_hash_wrong_bytes");
	XXH3_128bits_reset_withSeed(xs, seed);
	for (uint64_t off = 0; off < len;) {
		size_t piece = len - off < READ_PIECE ? (size_t)(len - off) : READ_PIECE;
		unsigned char *p = to ? to + off : scratch;
		if ((rc = ckpt__io_read_all(io, fd, p, piece, path)) < 0)
			goto out;
		uint64_t hashed = ADDRESSED(len);
		XXH3_128bits_update(xs, p, off >= hashed ? 0 : hashed - off < piece ? (size_t)(hashed - off) : piece);
		off += piece;
	}
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(xs));
	rc = 0;
#ifdef CKPT_MUTANT_CHUNK_NOT_VERIFIED
	memcpy(c.digest, h, HASH_LEN);      /* mutant: a chunk is trusted by its name */
#endif
	if (memcmp(c.digest, h, HASH_LEN) != 0) {
		ckpt_mutant_reached("chunk_not_verified");      /* the mutant copied the name: no mismatch */
		char got[2 * HASH_LEN + 1];
		hex_of(c.digest, got);
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: xxh3-128 of its bytes is %s, the recipe names %s "
				   "(contents damaged)", disp, got, hex);
	}
out:
	rc2 = ckpt__io_close(io, &fd, path);
	return rc < 0 ? rc : rc2;
}

/* Chunks opened ahead of the one being read, each with a readahead hint: many small files read like one. */
#define AHEAD 8

static int open_chunk(ckpt_io *io, const unsigned char h[HASH_LEN])
{
	char path[CKPT_PATH_MAX];
	int fd;

	chunk_path(path, sizeof path, h, NULL);
	if ((fd = ckpt__io_open(io, path, O_RDONLY, 0)) >= 0)
		posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
	return fd;
}

int ckpt__chunks_verify(ckpt_io *io, const char *name, const ckpt_manifest *m, int rank, ckpt_entry *const *dst,
			ckpt_chunks *keep)
{
	recipe r;
	XXH3_state_t *xs = XXH3_createState();
	unsigned char *scratch = NULL;
	size_t at = 0;
	int rc;

	if (!xs || (!dst && !(scratch = malloc(READ_PIECE)))) {
		XXH3_freeState(xs);
		return ckpt__io_fail(io, -ENOMEM, name, "out of memory");
	}
	if ((rc = recipe_load(io, name, m, rank, &r)) < 0)
		goto out;
	int ring[AHEAD];
	size_t opened = 0, done = 0;
	for (int k = 0; k < r.h.n && rc == 0; k++) {
		uint64_t n = r.h.t[k].end - r.h.t[k].begin;
		unsigned char *d = dst ? dst[k]->data : NULL;
		for (uint64_t off = 0; off < n && rc == 0; off += m->chunk_size, at++) {
			uint64_t len = n - off < m->chunk_size ? n - off : m->chunk_size;
			while (rc == 0 && opened < r.nchunks && opened < at + AHEAD) {
				int fd = open_chunk(io, r.tab + opened * HASH_LEN);
				if (fd < 0)
					rc = fd;
				else
					ring[opened++ % AHEAD] = fd;
			}
			if (rc == 0) {      /* read_chunk closes it */
				rc = read_chunk(io, ring[at % AHEAD], r.tab + at * HASH_LEN, m->chain_base, len,
						d ? d + off : NULL, scratch, xs);
				done = at + 1;
			}
		}
	}
	for (size_t i = done; i < opened; i++) {      /* opened ahead of a failure, never read */
		char path[CKPT_PATH_MAX];
		int fd = ring[i % AHEAD];
		chunk_path(path, sizeof path, r.tab + i * HASH_LEN, NULL);
		ckpt__io_close(io, &fd, path);
	}
	if (rc == 0 && dst)
		rc = ckpt__io_phase(io, "restore.verify");
	if (rc == 0 && keep) {
		ckpt__chunks_settle(keep, false);
		if (m->chunk_size == keep->cs) {      /* another chunk size: nothing to reuse */
			if (pend_reserve(keep, r.nchunks ? r.nchunks : 1) < 0) {
				rc = ckpt__io_fail(io, -ENOMEM, name, "out of memory");
				goto out;
			}
			memcpy(keep->pend, r.tab, r.nchunks * HASH_LEN);
			keep->npend = r.nchunks;
			keep->have_pend = 1;
			keep->pend_depth = m->chain_depth;
			keep->pend_chain = m->chain_base;
		}
	}
out:
	recipe_free(&r);
	XXH3_freeState(xs);
	free(scratch);
	return rc;
}

int ckpt__chunks_refs(ckpt_io *io, const char *name, const ckpt_manifest *m, ckpt_chunk_ref **out, size_t *n)
{
	ckpt_chunk_ref *v = NULL;
	size_t cnt = 0, cap = 0;
	int rc = 0;

	*out = NULL;
	*n = 0;
	for (int rank = 0; rank < m->world_size && rc == 0; rank++) {
		recipe r;
		size_t at = 0;
		if ((rc = recipe_load(io, name, m, rank, &r)) < 0)
			break;
		if (cnt + r.nchunks > cap) {
			size_t nc = cap ? cap : 64;
			while (nc < cnt + r.nchunks)
				nc *= 2;
			ckpt_chunk_ref *p = realloc(v, nc * sizeof *p);
			if (!p) {
				recipe_free(&r);
				rc = ckpt__io_fail(io, -ENOMEM, name, "out of memory");
				break;
			}
			v = p;
			cap = nc;
		}
		for (int k = 0; k < r.h.n; k++) {
			uint64_t len = r.h.t[k].end - r.h.t[k].begin;
			for (uint64_t off = 0; off < len; off += m->chunk_size, at++) {
				memcpy(v[cnt].h, r.tab + at * HASH_LEN, HASH_LEN);
				v[cnt++].bytes = len - off < m->chunk_size ? len - off : m->chunk_size;
			}
		}
		recipe_free(&r);
	}
	if (rc < 0) {
		free(v);
		return rc;
	}
	*out = v;
	*n = cnt;
	return 0;
}

/* ---- garbage collection -------------------------------------------------- */

static int hexval(int ch)
{
	return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* A chunk's canonical file name: 32 lowercase hex digits. */
static bool parse_hex(const char *s, unsigned char h[HASH_LEN])
{
	for (int i = 0; i < HASH_LEN; i++) {
		int a = hexval(s[2 * i]), b = a < 0 ? -1 : hexval(s[2 * i + 1]);
		if (a < 0 || b < 0)
			return false;
		h[i] = (unsigned char)(a << 4 | b);
	}
	return s[2 * HASH_LEN] == '\0';
}

/* The live set: every chunk a committed generation references, sorted. */
static int live_set(ckpt_io *io, ckpt_journal *j, unsigned char **out, size_t *n)
{
	uint64_t *steps = NULL;
	unsigned char *v = NULL;
	size_t cnt = 0, cap = 0;
	int nsteps = 0, rc;

	*out = NULL;
	*n = 0;
	if ((rc = ckpt__scan(io, &steps, &nsteps)) < 0)
		return rc;
	for (int i = 0; i < nsteps && rc == 0; i++) {
		char name[32];
		ckpt_manifest m;
		ckpt_chunk_ref *refs = NULL;
		size_t nrefs = 0;
		ckpt_error one, *saved = io->err;

		ckpt__gen_name(name, sizeof name, steps[i]);
		ckpt__error_clear(&one);
		io->err = &one;
		rc = ckpt__gen_load(io, name, &steps[i], &m, false);
		if (rc == 0) {
			if (m.chunk_size)
				rc = ckpt__chunks_refs(io, name, &m, &refs, &nrefs);
			ckpt__manifest_free(&m);
		}
		io->err = saved;
		if (rc < 0) {
			/*
			 * Cannot tell what it references (an I/O error, or a manifest or
			 * recipe that does not verify): delete nothing. A damaged
			 * generation holds the sweep back only until retention removes it.
			 */
			ckpt__journal_add(j, "\"event\":\"gc_blocked\",\"checkpoint\":\"%s\",\"error\":\"%s\"", name,
					  ckpt_strerror(rc));
			if (io->err)
				*io->err = one;
			break;
		}
		if (cnt + nrefs > cap) {
			size_t nc = cap ? cap : 256;
			while (nc < cnt + nrefs)
				nc *= 2;
			unsigned char *p = realloc(v, nc * HASH_LEN);
			if (!p) {
				free(refs);
				rc = ckpt__io_fail(io, -ENOMEM, NULL, "out of memory");
				break;
			}
			v = p;
			cap = nc;
		}
		for (size_t r = 0; r < nrefs; r++)
			memcpy(v + (cnt++) * HASH_LEN, refs[r].h, HASH_LEN);
		free(refs);
	}
	free(steps);
	if (rc < 0) {
		free(v);
		return rc;
	}
	if (cnt > 1)
		qsort(v, cnt, HASH_LEN, cmp_hash);
	*out = v;
	*n = cnt;
	return 0;
}

int ckpt__chunks_gc(ckpt_io *io, ckpt_journal *j, const char *phase)
{
	struct stat st;
	unsigned char *live = NULL;
	size_t nlive = 0;
	uint64_t removed = 0, kept = 0;
	DIR *d = NULL;
	struct dirent *de;
	int rc;

	if (ckpt__io_lstat(io, "chunks", &st) == -ENOENT)
		return 0;
	if ((rc = ckpt__io_phase(io, phase)) < 0)
		return rc;
	if ((rc = live_set(io, j, &live, &nlive)) < 0) {
		ckpt__journal_add(j, "\"event\":\"gc_skipped\",\"error\":\"%s\"", ckpt_strerror(rc));
		return rc;
	}
	if ((rc = ckpt__io_opendir(io, "chunks", &d)) < 0)
		goto out;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		char sub[16];
		DIR *sd;
		struct dirent *e;
		int gone = 0;
		if (strlen(de->d_name) != 2 || hexval(de->d_name[0]) < 0 || hexval(de->d_name[1]) < 0)
			continue;
		snprintf(sub, sizeof sub, "chunks/%s", de->d_name);
		if (ckpt__io_lstat(io, sub, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		if ((rc = ckpt__io_opendir(io, sub, &sd)) < 0)
			break;
		while (rc == 0 && (e = readdir(sd)) != NULL) {
			unsigned char h[HASH_LEN];
			char path[CKPT_PATH_MAX];
			bool chunk = strlen(e->d_name) == 2 * HASH_LEN && parse_hex(e->d_name, h);
			/* a temporary of a chunk write: no save is in progress, so it is abandoned */
			bool tmp = !chunk && strlen(e->d_name) > 2 * HASH_LEN && strstr(e->d_name, ".tmp-") == e->d_name + 2 * HASH_LEN;
			if (!chunk && !tmp)
				continue;           /* not ours: left alone */
			if (chunk && nlive && bsearch(h, live, nlive, HASH_LEN, cmp_hash)) {
				kept++;
				continue;
			}
			snprintf(path, sizeof path, "%s/%s", sub, e->d_name);
			if ((rc = ckpt__io_unlink(io, path)) == 0) {
				gone++;
				removed++;
			}
		}
		closedir(sd);
		if (rc == 0 && gone)
			rc = ckpt__io_fsync_dir(io, sub);
	}
	closedir(d);
out:
	ckpt__journal_add(j, "\"event\":\"gc\",\"phase\":\"%s\",\"removed\":%" PRIu64 ",\"kept\":%" PRIu64 ",\"result\":\"%s\"",
			  phase, removed, kept, ckpt_strerror(rc));
	free(live);
	return rc;
}

#ifdef CKPT_MUTANT_BASE_DELETED_WITH_GEN
/* Mutant: every chunk a generation references is deleted with it, whoever else still needs it. */
void ckpt__chunks_mutant_drop(ckpt_io *io, const char *name)
{
	ckpt_manifest m;
	ckpt_chunk_ref *refs = NULL;
	size_t n = 0;

	if (ckpt__gen_load(io, name, NULL, &m, false) < 0)
		return;
	if (m.chunk_size && ckpt__chunks_refs(io, name, &m, &refs, &n) == 0)
		for (size_t i = 0; i < n; i++) {
			char path[CKPT_PATH_MAX];
			struct stat st;
			chunk_path(path, sizeof path, refs[i].h, NULL);
			if (ckpt__io_lstat(io, path, &st) == 0)
				ckpt__io_unlink(io, path);
		}
	free(refs);
	ckpt__manifest_free(&m);
}
#endif

/* ---- usage (ckpt-tool ls) -------------------------------------------------- */

typedef struct use_entry {
	unsigned char h[HASH_LEN];
	int gen;
	uint64_t bytes;
} use_entry;

static int cmp_use(const void *a, const void *b)
{
	const use_entry *x = a, *y = b;
	int c = memcmp(x->h, y->h, HASH_LEN);
	return c ? c : x->gen - y->gen;
}

int ckpt__chunks_usage(ckpt_io *io, const uint64_t *steps, int n, uint64_t *total, uint64_t *own, uint64_t *shared)
{
	use_entry *v = NULL;
	size_t cnt = 0, cap = 0;

	for (int g = 0; g < n; g++) {
		char name[32];
		ckpt_manifest m;
		ckpt_chunk_ref *refs = NULL;
		size_t nrefs = 0;
		ckpt_error ignored, *saved = io->err;

		total[g] = own[g] = shared[g] = 0;
		ckpt__gen_name(name, sizeof name, steps[g]);
		ckpt__error_clear(&ignored);
		io->err = &ignored;
		if (ckpt__gen_load(io, name, &steps[g], &m, false) == 0) {
			if (m.chunk_size)
				ckpt__chunks_refs(io, name, &m, &refs, &nrefs);
			ckpt__manifest_free(&m);
		}
		io->err = saved;
		if (cnt + nrefs > cap) {
			size_t nc = cap ? cap : 256;
			while (nc < cnt + nrefs)
				nc *= 2;
			use_entry *p = realloc(v, nc * sizeof *p);
			if (!p) {
				free(refs);
				free(v);
				return -ENOMEM;
			}
			v = p;
			cap = nc;
		}
		for (size_t r = 0; r < nrefs; r++) {
			memcpy(v[cnt].h, refs[r].h, HASH_LEN);
			v[cnt].gen = g;
			v[cnt++].bytes = refs[r].bytes;
		}
		free(refs);
	}
	if (cnt > 1)
		qsort(v, cnt, sizeof *v, cmp_use);
	/* per chunk: the distinct generations that reference it */
	for (size_t i = 0; i < cnt;) {
		size_t j = i, users = 0;
		for (; j < cnt && memcmp(v[j].h, v[i].h, HASH_LEN) == 0; j++)
			users += j == i || v[j].gen != v[j - 1].gen;
		for (size_t k = i; k < j; k++) {
			if (k > i && v[k].gen == v[k - 1].gen)
				continue;
			total[v[k].gen] += v[k].bytes;
			*(users > 1 ? &shared[v[k].gen] : &own[v[k].gen]) += v[k].bytes;
		}
		i = j;
	}
	free(v);
	return 0;
}
