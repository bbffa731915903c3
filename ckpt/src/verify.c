/*
 * Verification of a generation, shared by restore and ckpt-tool, so that
 * "valid" means one thing: what ckpt-tool calls valid is what restore takes.
 *
 * A generation counts only if: its name is canonical; it is a real directory
 * (no link) under the root; its manifest is a regular file within
 * CKPT_MANIFEST_MAX, parses (version 1 or 2), its checksum holds and its step
 * is the name's; and each shard is a regular file of the listed size whose
 * safetensors header parses, covers the data exactly, and lists the
 * manifest's tensors for that rank (names, dtypes, shapes, in file order,
 * with the metadata of that rank, world size and step), and whose xxh3 over
 * every byte is the listed one.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "internal.h"
#include "chunks.h"
#include "seal.h"

/* Bytes per read when hashing: large enough for throughput, small for cache. */
#define HASH_PIECE (4u << 20)

int ckpt__gen_load(ckpt_io *io, const char *name, const uint64_t *step, ckpt_manifest *m, bool restore)
{
	char path[CKPT_PATH_MAX], disp[CKPT_PATH_MAX], why[400], *text = NULL;
	struct stat st;
	size_t len;
	int rc;

	memset(m, 0, sizeof *m);
	if ((rc = ckpt__io_lstat(io, name, &st)) < 0)
		return ckpt__io_fail(io, rc, name, "%s: %s", ckpt__io_display(io, name, disp, sizeof disp), ckpt_describe(rc));
	if (!S_ISDIR(st.st_mode))
		return ckpt__io_fail(io, -CKPT_ECORRUPT, name, "%s is not a directory (%s): not a generation",
				     ckpt__io_display(io, name, disp, sizeof disp),
				     S_ISLNK(st.st_mode) ? "a symbolic link, never followed" : "a file");
	if (snprintf(path, sizeof path, "%s/manifest.json", name) >= (int)sizeof path)
		return ckpt__io_fail(io, -ENAMETOOLONG, name, "path too long");
	if ((restore && (rc = ckpt__io_phase(io, "restore.read")) < 0) ||
	    (rc = ckpt__read_small_file(io, path, &text, &len, CKPT_MANIFEST_MAX)) < 0) {
		/* the I/O layer or the reader recorded why; make sure something did */
		if (io->err && io->err->code == 0)
			ckpt__io_fail(io, rc, path, "%s: cannot read: %s", ckpt__io_display(io, path, disp, sizeof disp),
				      ckpt_describe(rc));
		return rc;
	}
	int sealed;
	uint64_t ident;
	if ((restore && (rc = ckpt__io_phase(io, "restore.verify")) < 0) ||
	    (rc = ckpt__seal_manifest_open(io, name, path, &text, &len, &sealed, &ident)) < 0) {
		free(text);
		return rc;
	}
	rc = ckpt__manifest_parse(text, len, m, why, sizeof why);
	free(text);
	if (rc < 0)
		return ckpt__io_fail(io, rc, path, "%s: %s", ckpt__io_display(io, path, disp, sizeof disp), why);
	m->sealed = sealed;
	m->seal_ident = ident;
	if (step && m->step != *step) {
		ckpt__manifest_free(m);
		return ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: manifest is for step %" PRIu64 ", the directory for %" PRIu64,
				     ckpt__io_display(io, path, disp, sizeof disp), m->step, *step);
	}
	return 0;
}

/* The header against the manifest's entries for rank. */
int ckpt__st_check(const ckpt_st_header *h, const ckpt_manifest *m, int rank, char *why, size_t wl)
{
	char want[24];

	if (h->n != m->ntensors) {
		snprintf(why, wl, "safetensors header lists %d tensors, the manifest %d", h->n, m->ntensors);
		return -CKPT_ECORRUPT;
	}
	for (int k = 0; k < m->ntensors; k++) {
		const ckpt_layout_entry *e = &m->layout[k];
		const ckpt_st_tensor *t = &h->t[k];
		uint64_t local = ckpt__layout_local(m, k, rank);
		if (strcmp(e->name, t->name) != 0 || e->dtype != t->dtype || local != t->elems) {
			char a[CKPT_NAME_MAX * 4], b[CKPT_NAME_MAX * 4];
			ckpt__escape(a, sizeof a, t->name);
			ckpt__escape(b, sizeof b, e->name);
			snprintf(why, wl, "safetensors header entry %d is %s (%s x %" PRIu64 "), the manifest says %s (%s x %"
				 PRIu64 ")", k, a, ckpt__dtype_name(t->dtype), t->elems, b, ckpt__dtype_name(e->dtype), local);
			return -CKPT_ECORRUPT;
		}
	}
	snprintf(want, sizeof want, "%d", rank);
	if (strcmp(h->meta_rank, want) != 0)
		goto meta;
	snprintf(want, sizeof want, "%d", m->world_size);
	if (strcmp(h->meta_world, want) != 0)
		goto meta;
	snprintf(want, sizeof want, "%" PRIu64, m->step);
	if (strcmp(h->meta_step, want) != 0)
		goto meta;
	return 0;
meta:
	snprintf(why, wl, "safetensors metadata (rank, world_size, step) is not rank %d of %d at step %" PRIu64, rank,
		 m->world_size, m->step);
	return -CKPT_ECORRUPT;
}

static int shard_verify_plain(ckpt_io *io, const char *name, const ckpt_manifest *m, int rank, ckpt_entry *const *dst);

/* Shard bytes: verified plaintext of a sealed file (not hashed: its chunks are authenticated), or hashed as read. */
typedef struct shard_src {
	ckpt_stream *in;
	ckpt_sealr *sr;
	XXH3_state_t *xs;
} shard_src;

static int src_read(shard_src *s, void *buf, size_t len)
{
	int rc;

	if (s->sr)
		return ckpt__sealr_read(s->sr, buf, len);
	if ((rc = ckpt__stream_read(s->in, buf, len)) == 0)
		XXH3_64bits_update(s->xs, buf, len);
	return rc;
}

int ckpt__shard_verify(ckpt_io *io, const char *name, const ckpt_manifest *m, int rank, ckpt_entry *const *dst)
{
	if (m->chunk_size)        /* a chunked generation: its recipe and chunks (chunks.c) */
		return ckpt__chunks_verify(io, name, m, rank, dst, NULL);
	return shard_verify_plain(io, name, m, rank, dst);
}

static int shard_verify_plain(ckpt_io *io, const char *name, const ckpt_manifest *m, int rank, ckpt_entry *const *dst)
{
	const ckpt_file_entry *f = NULL;
	char path[CKPT_PATH_MAX], disp[CKPT_PATH_MAX], why[400], *hdr = NULL, *buf = NULL;
	unsigned char lenb[8];
	XXH3_state_t *xs = XXH3_createState();
	ckpt_st_header h = { 0 };
	struct stat sb;
	uint64_t hlen = 0, hash, size;
	unsigned char *ring = NULL;      /* the key's, lent to the stream */
	size_t ring_len = 0;
	int fd = -1, rc;
	shard_src src = { .xs = xs };

	if (rank >= 0 && rank < m->nfiles && m->files[rank].rank == rank)    /* sorted by rank when parsed */
		f = &m->files[rank];
	if (!xs || !(buf = malloc(HASH_PIECE))) {
		rc = ckpt__io_fail(io, -ENOMEM, name, "out of memory");
		goto out;
	}
	if (!f) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, name, "%s: manifest lists no shard for rank %d", name, rank);
		goto out;
	}
	if (snprintf(path, sizeof path, "%s/%s", name, f->name) >= (int)sizeof path) {
		rc = ckpt__io_fail(io, -ENAMETOOLONG, name, "path too long");
		goto out;
	}
	ckpt__io_display(io, path, disp, sizeof disp);
	XXH3_64bits_reset(xs);
	if ((fd = ckpt__io_open(io, path, O_RDONLY, 0)) < 0) {
		rc = fd;
		goto out;
	}
	if (fstat(fd, &sb) < 0) {
		rc = ckpt__io_fail(io, -errno, path, "%s: fstat: %s", disp, strerror(errno));
		goto out;
	}
	size = (uint64_t)sb.st_size;     /* of the safetensors bytes: the plaintext's, when sealed */
	/*
	 * A sealed file is read ahead by threads with O_DIRECT, into the ring
	 * the key keeps for its writers if it is free, so that the device works
	 * while this thread decrypts and the page cache costs no CPU; a plain
	 * one is read straight into the state behind the kernel's readahead,
	 * which measured faster when the CPU only hashes (bench_ckpt).
	 */
	if (m->sealed && io->seal)
		ring = ckpt__seal_ring_lend(io->seal, &ring_len);
	if ((rc = ckpt__stream_open(&src.in, io, fd, path, size, m->sealed, ring, ring_len)) < 0)
		goto out;
	if (m->sealed) {
		uint64_t ident;
		/*
		 * Authenticated first (step, rank, name bound to the first chunk),
		 * so a file moved here says so; then its identity and size.
		 */
		if ((rc = ckpt__sealr_begin(&src.sr, io->seal, io, src.in, NULL, path, size, m->step, rank, f->name, &size,
					    &ident)) < 0)
			goto out;
		if (ident != f->hash) {
			rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: stream identity %016" PRIx64 ", the manifest says %016"
					   PRIx64 " (a sealed file of another save: replayed or swapped)", disp, ident, f->hash);
			goto out;
		}
	}
	if ((uint64_t)sb.st_size != f->size) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: size %lld bytes, the manifest says %" PRIu64
				   " (truncated or overwritten)", disp, (long long)sb.st_size, f->size);
		goto out;
	}
	/* the header: its length bounded by the file and by CKPT_SHARD_HEADER_MAX before anything is allocated */
	if (size < 8) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: %" PRIu64 " bytes, shorter than a safetensors header",
				   disp, size);
		goto out;
	}
	if ((rc = src_read(&src, lenb, 8)) < 0)
		goto out;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | lenb[i];
	if (hlen > size - 8 || hlen > CKPT_SHARD_HEADER_MAX) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: safetensors header length %" PRIu64 " exceeds the file "
				   "(%" PRIu64 " bytes) or the limit of %" PRIu64, disp, hlen, size, CKPT_SHARD_HEADER_MAX);
		goto out;
	}
	if (!(hdr = malloc(hlen + 1))) {
		rc = ckpt__io_fail(io, -ENOMEM, path, "out of memory");
		goto out;
	}
	if ((rc = src_read(&src, hdr, hlen)) < 0)
		goto out;
	if ((rc = ckpt__st_parse(hdr, hlen, size - 8 - hlen, &h, why, sizeof why)) < 0 ||
	    (rc = ckpt__st_check(&h, m, rank, why, sizeof why)) < 0) {
		if (src.sr) {      /* authenticated bytes: the table itself is wrong */
			rc = ckpt__io_fail(io, rc, path, "%s: %s", disp, why);
			goto out;
		}
		/*
		 * Nothing goes into the state. Hash the rest all the same: if the
		 * bytes are not the ones saved, "contents damaged" is the news; if
		 * they are (a crafted file with hashes to match), the table is.
		 */
		int bad = rc;
		for (uint64_t pos = 8 + hlen; pos < f->size;) {
			size_t piece = f->size - pos < HASH_PIECE ? (size_t)(f->size - pos) : HASH_PIECE;
			if ((rc = ckpt__stream_read(src.in, buf, piece)) < 0)
				goto out;
			XXH3_64bits_update(xs, buf, piece);
			pos += piece;
		}
		hash = XXH3_64bits_digest(xs);
		if (hash != f->hash)
			rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: xxh3 %016" PRIx64 ", manifest says %016" PRIx64
					   " (contents damaged; %s)", disp, hash, f->hash, why);
		else
			rc = ckpt__io_fail(io, bad, path, "%s: %s", disp, why);
		goto out;
	}
	/* every byte range is now known to lie in the file: read (into the state) and hash */
	for (int k = 0; k < h.n; k++) {
		uint64_t n = h.t[k].end - h.t[k].begin;
		char *d = dst ? dst[k]->data : NULL;
		for (uint64_t off = 0; off < n;) {
			size_t piece = n - off < HASH_PIECE ? (size_t)(n - off) : HASH_PIECE;
			char *to = d ? d + off : buf;
			if ((rc = src_read(&src, to, piece)) < 0)
				goto out;
			off += piece;
		}
	}
	hash = XXH3_64bits_digest(xs);
	if (src.sr) {      /* the final tag reached and nothing after it: no truncation, no extension */
		if ((rc = ckpt__sealr_end(src.sr)) < 0)
			goto out;
		hash = f->hash;
	}
	if (dst && (rc = ckpt__io_phase(io, "restore.verify")) < 0)
		goto out;
	if (hash != f->hash)      /* with the hash right, the mutant's assignment changes nothing */
		ckpt_mutant_reached("no_verify_on_restore");
#ifdef CKPT_MUTANT_NO_VERIFY_ON_RESTORE
	hash = f->hash;      /* mutant: whatever was read is trusted */
#endif
	if (hash != f->hash)
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: xxh3 %016" PRIx64 ", manifest says %016" PRIx64
				   " (contents damaged)", disp, hash, f->hash);
out:
	ckpt__sealr_free(src.sr);
	src.sr = NULL;
	ckpt__stream_close(src.in);      /* the reader joined before its descriptor closes */
	ckpt__seal_ring_return(io->seal, ring, ring_len);
	if (fd >= 0) {
		int rc2 = ckpt__io_close(io, &fd, path);
		if (rc == 0)
			rc = rc2;
	}
	ckpt__st_free(&h);
	XXH3_freeState(xs);
	free(hdr);
	free(buf);
	return rc;
}

static int cmp_desc(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

/* Every canonical name, however many: no cap may change which generation is chosen. */
int ckpt__scan(ckpt_io *io, uint64_t **steps, int *n)
{
	DIR *d;
	struct dirent *de;
	size_t cap = 0, k = 0;
	uint64_t *v = NULL;
	int rc;

	*steps = NULL;
	*n = 0;
	if ((rc = ckpt__io_opendir(io, ".", &d)) < 0)
		return rc;
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		uint64_t s;
		if (!ckpt__gen_parse(de->d_name, &s))
			continue;
		if (k == cap) {
			size_t nc = cap ? 2 * cap : 64;
			uint64_t *p = nc <= INT32_MAX ? realloc(v, nc * sizeof *p) : NULL;
			if (!p) {
				closedir(d);
				free(v);
				return ckpt__io_fail(io, -ENOMEM, ".", "out of memory listing generations");
			}
			v = p;
			cap = nc;
		}
		v[k++] = s;
		errno = 0;
	}
	rc = errno ? -errno : 0;
	closedir(d);
	if (rc < 0) {
		free(v);
		return ckpt__io_fail(io, rc, ".", "cannot list %s: %s", io->root ? io->root : ".", ckpt_describe(rc));
	}
	if (k > 1)
		qsort(v, k, sizeof *v, cmp_desc);
	*steps = v;
	*n = (int)k;
	return 0;
}

int ckpt__latest_read(int rootfd, char *buf, size_t len)
{
	struct stat st;
	ssize_t n;
	int fd = openat(rootfd, "LATEST", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC), rc = 0;

	buf[0] = '\0';
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		rc = -EINVAL;
	else if ((n = pread(fd, buf, len - 1, 0)) < 0)
		rc = -errno;
	else
		buf[n] = '\0';
	close(fd);
	if (rc == 0)
		buf[strcspn(buf, "\n")] = '\0';
	return rc;
}
