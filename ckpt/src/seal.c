/* Sealed checkpoint files (seal.h): libsodium secretstream per file, bound to step, rank and name. */
#include "seal.h"
#include "secretstream.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define ABYTES crypto_secretstream_xchacha20poly1305_ABYTES
#define HBYTES crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define TAG_FINAL crypto_secretstream_xchacha20poly1305_TAG_FINAL
#define TAG_MESSAGE crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
#define AD_MAX (16 + 64 + CKPT_NAME_MAX)

typedef ckpt_ss_state sstate;

/*
 * A key's cache of one writer's ring (the writer, below). Mapping a ring
 * costs a page fault per page (of shared memory, twice), about as much
 * system time as the copy it saves costs user time, so a key keeps the ring
 * its last writer used for the next file and the next save; freed with the
 * key. It holds ciphertext only.
 */
struct ckpt_seal_ring {
	pthread_mutex_t mu;
	unsigned char *base;        /* NULL: none kept */
	size_t len;
};

_Static_assert(8 + 4 + 4 + HBYTES == CKPT_SEAL_PREAMBLE, "preamble layout");

static int sodium_ready(void)
{
	return ckpt__ss_ready() == 0 ? 0 : -ENOSYS;
}

/* ---- keys --------------------------------------------------------------- */

static int hexval(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int ckpt__seal_key_load(ckpt_seal_key **out, const char *path, char *why, size_t wl)
{
	unsigned char buf[72];
	struct stat st;
	ssize_t n;
	int fd, rc = -EINVAL;
	ckpt_seal_key *k = NULL;

	*out = NULL;
	if (sodium_ready() < 0) {
		snprintf(why, wl, "libsodium failed to initialize");
		return -ENOSYS;
	}
	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
		rc = -errno;
		snprintf(why, wl, "key file %s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, wl, "key file %s is not a regular file", path);
		goto out;
	}
	if (st.st_uid != geteuid()) {
		rc = -EPERM;
		snprintf(why, wl, "key file %s is owned by uid %u, not by this user (uid %u): refused", path,
			 (unsigned)st.st_uid, (unsigned)geteuid());
		goto out;
	}
	if (st.st_mode & 077) {
		rc = -EPERM;
		snprintf(why, wl, "key file %s is %s by its group or others (mode %04o): refused; make it private "
			 "(chmod 600 %s)", path, st.st_mode & 044 ? "readable" : "accessible",
			 (unsigned)(st.st_mode & 07777), path);
		goto out;
	}
	n = read(fd, buf, sizeof buf);
	if (!(k = calloc(1, sizeof *k)) || !(k->rings = calloc(1, sizeof *k->rings))) {
		rc = -ENOMEM;
		snprintf(why, wl, "out of memory");
		goto out;
	}
	pthread_mutex_init(&k->rings->mu, NULL);
	if (n == 32) {
		memcpy(k->k, buf, 32);
	} else if (n == 64 || (n == 65 && buf[64] == '\n')) {
		for (int i = 0; i < 32; i++) {
			int hi = hexval(buf[2 * i]), lo = hexval(buf[2 * i + 1]);
			if (hi < 0 || lo < 0)
				goto bad;
			k->k[i] = (unsigned char)(hi << 4 | lo);
		}
	} else {
		goto bad;
	}
	k->chunk = CKPT_SEAL_CHUNK_DEFAULT;
	*out = k;
	k = NULL;
	rc = 0;
	goto out;
bad:
	snprintf(why, wl, "key file %s holds %zd bytes: a key is 32 raw bytes or 64 hex digits (e.g. head -c 32 "
		 "/dev/urandom > KEY)", path, n);
out:
	sodium_memzero(buf, sizeof buf);
	ckpt__seal_key_free(k);
	close(fd);
	return rc;
}

/* The key's ring, if it keeps one, unmapped; none is mapped. */
static void ring_drop(ckpt_seal_key *k)
{
	ckpt_seal_ring *r = k->rings;
	unsigned char *base = NULL;
	size_t len = 0;

	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	base = r->base;
	len = r->len;
	r->base = NULL;
	pthread_mutex_unlock(&r->mu);
	ckpt__iobuf_unmap(base, len);
}

static void rings_free(ckpt_seal_ring *r);

void ckpt__seal_key_free(ckpt_seal_key *k)
{
	if (!k)
		return;
	rings_free(k->rings);
	sodium_memzero(k, sizeof *k);
	free(k);
}

static ckpt_seal_key *env_key;
static char env_why[400];       /* why CKPT_KEY_FILE was not loaded, for the reader's message */
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static void env_load(void)
{
	const char *p = getenv("CKPT_KEY_FILE");

	if (p && *p && ckpt__seal_key_load(&env_key, p, env_why, sizeof env_why) == 0) {
		const char *a = getenv("CKPT_ALLOW_UNSEALED");
		env_key->allow_unsealed = a && strcmp(a, "1") == 0;
	}
}

const ckpt_seal_key *ckpt__seal_key_env(void)
{
	pthread_once(&env_once, env_load);
	return env_key;
}

bool ckpt__seal_is_sealed(const void *buf, size_t len)
{
	return len >= 8 && memcmp(buf, CKPT_SEAL_MAGIC, 8) == 0;
}

/* Associated data: the preamble's fixed part, then step, rank and name. */
static size_t make_ad(unsigned char *ad, const unsigned char *pre16, uint64_t step, int rank, const char *name)
{
	ckpt_mutant_reached("seal_ad_unbound");
#ifdef CKPT_MUTANT_SEAL_AD_UNBOUND
	(void)ad, (void)pre16, (void)step, (void)rank, (void)name;
	return 0;                       /* mutant: nothing bound; writer and reader agree */
#else
	memcpy(ad, pre16, 16);
	int n = snprintf((char *)ad + 16, AD_MAX - 16, "step=%" PRIu64 " rank=%d file=%s", step, rank, name);
	return 16 + (size_t)(n < AD_MAX - 16 ? n : AD_MAX - 17);
#endif
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- writer ------------------------------------------------------------- */

/*
 * A file of CKPT_STREAM_MIN_BYTES or more is sealed by a thread of its own
 * while this one writes the chunks sealed before: WPIPE chunk slots go
 * round, filled here, sealed there, written here in order. Every write is
 * still this thread's, through the I/O layer (faults, journal, undo record
 * unchanged); the sealer touches only the stream state and the buffers.
 * A smaller file is sealed chunk by chunk in the caller.
 *
 * Where the write stream writes with O_DIRECT, the chunks are sealed
 * straight into a ring that the writes read from, with no copy: the file's
 * bytes in order, byte o at ring + o % RING, in memory on huge pages where
 * the system has them (ckpt__iobuf_map: fewer, larger device requests). The
 * one chunk of a lap that runs past the ring's end is sealed into a buffer
 * of the writer's and copied to its two places (a copy of one chunk in
 * RING bytes). Whole stages (CKPT_WSTREAM_STAGE, which divides RING) go out
 * as soon as they are sealed and never cross the end; the tail goes to the
 * write stream. RING holds every slot's chunk
 * and a stage besides: less than a stage sealed and not written, at most
 * WPIPE - 1 chunks in the sealer's hands, and the one being placed, so a
 * chunk's place is always free (24 MiB with chunks of 1 MiB, mapped once per
 * key: ckpt_seal_ring). The caller writes a stage as soon as one is sealed,
 * and hands the sealer no chunk while it does, so the sealer needs many
 * chunks in hand to keep busy: with 6 slots it waited 18-28 ms a file of
 * 128 MiB, with 16 6-14 ms. Elsewhere (no O_DIRECT) each slot has a
 * buffer of its own, copied into the stream.
 *
 * One buffer for the chunk across the end is enough: such a chunk covers
 * the ring's last and first bytes, so the next one of its kind, a lap
 * later, gets its place only once this one is written, long after its copy.
 */
#define WPIPE 16
#define STAGE CKPT_WSTREAM_STAGE

enum { SLOT_FREE, SLOT_READY, SLOT_SEALED };

typedef struct wslot {
	unsigned char *plain, *cipher;  /* cipher: in the ring, once placed, or a buffer of the slot's own */
	unsigned char *wrap;        /* the chunk across the ring's end: its place (cipher is the writer's across) */
	const unsigned char *src;   /* the plaintext: plain, or a whole chunk of the caller's (stable input) */
	size_t fill;                /* plaintext bytes */
	unsigned long long clen;    /* ciphertext bytes, once sealed */
	unsigned char tag;
	int state;
} wslot;

struct ckpt_sealw {
	sstate st;
	ckpt_io *io;
	ckpt_wstream *ws;
	const char *path;
	unsigned char pre[CKPT_SEAL_PREAMBLE];
	unsigned char ad[AD_MAX];
	size_t adlen;
	uint32_t chunk;
	uint64_t size;
	wslot slot[WPIPE];
	unsigned nslots;
	ckpt_seal_key *key;
	unsigned char *ring;        /* RING bytes; NULL: no ring */
	size_t ring_len;
	unsigned char *across;      /* the chunk across the ring's end, sealed here first */
	uint64_t placed, sealed, written;   /* file bytes given a place in the ring; sealed in order; written */
	unsigned cur, out;          /* the slot being filled; the next to write */
	int threaded, stop;
	int stable;                 /* the caller's buffers stay unchanged until end: sealed where they are */
	pthread_t sealer;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

#ifdef CKPT_MUTANT_SEAL_NONCE_REUSE
/* mutant: the stream made once per process is reused for every file, save and retry */
static sstate reuse_st;
static unsigned char reuse_hdr[HBYTES];
static int reuse_have;
static pthread_mutex_t reuse_mu = PTHREAD_MUTEX_INITIALIZER;
#endif

static void seal_slot(ckpt_sealw *w, wslot *sl)
{
	ckpt__ss_push(&w->st, sl->cipher, &sl->clen, sl->src ? sl->src : sl->plain,
						   sl->fill, w->ad, w->adlen, sl->tag);
	if (sl->wrap) {         /* to its two places: the ring's last bytes and its first */
		size_t first = (size_t)(w->ring + w->ring_len - sl->wrap);
		memcpy(sl->wrap, sl->cipher, first);
		memcpy(w->ring, sl->cipher + first, (size_t)sl->clen - first);
	}
}

static void *sealer(void *arg)
{
	ckpt_sealw *w = arg;

	for (unsigned i = 0;; i = (i + 1) % w->nslots) {
		wslot *sl = &w->slot[i];
		pthread_mutex_lock(&w->mu);
		while (sl->state != SLOT_READY && !w->stop)
			pthread_cond_wait(&w->cv, &w->mu);
		int stop = w->stop;
		pthread_mutex_unlock(&w->mu);
		if (stop)
			break;
		seal_slot(w, sl);       /* READY: only this thread touches it */
		int final = sl->tag == TAG_FINAL;   /* once SEALED, the slot is the writer's again */
		pthread_mutex_lock(&w->mu);
		sl->state = SLOT_SEALED;
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->mu);
		if (final)
			break;
	}
	return NULL;
}

/* The ring of a writer of chunks of this size: WPIPE chunks and a stage, in whole stages. */
static size_t ring_len_for(uint32_t chunk)
{
	size_t need = WPIPE * ((size_t)chunk + ABYTES) + STAGE;
	return (need + STAGE - 1) / STAGE * STAGE;
}

/* The ring the key keeps, if *len bytes long (or *len 0: any, its length in *len); else NULL. */
static unsigned char *ring_kept(const ckpt_seal_key *k, size_t *len)
{
	ckpt_seal_ring *r = k->rings;
	unsigned char *b = NULL;

	if (r) {                /* (a key made elsewhere than by key_load has no cache) */
		pthread_mutex_lock(&r->mu);
		if (r->base && (*len == 0 || r->len == *len)) {
			b = r->base;
			*len = r->len;
			r->base = NULL;
		}
		pthread_mutex_unlock(&r->mu);
	}
	return b;
}

/* A ring of len bytes: the key's, if it keeps one of that size, else a new one. */
static unsigned char *ring_take(const ckpt_seal_key *k, size_t len)
{
	unsigned char *b = ring_kept(k, &len);
	return b ? b : ckpt__iobuf_map(len);
}

/* Back to the key, which keeps the newest; what it does not keep is unmapped. */
static void ring_give(const ckpt_seal_key *k, unsigned char *base, size_t len)
{
	ckpt_seal_ring *r = k->rings;
	unsigned char *drop = base;
	size_t drop_len = len;

	if (r) {
		pthread_mutex_lock(&r->mu);
		if (!r->base || r->len != len) {        /* kept: the newest size (one of it is enough) */
			drop = r->base;
			drop_len = r->len;
			r->base = base;
			r->len = len;
		}
		pthread_mutex_unlock(&r->mu);
	}
	if (drop)
		ckpt__iobuf_unmap(drop, drop_len);
}

static void rings_free(ckpt_seal_ring *r)
{
	if (!r)
		return;
	if (r->base)
		ckpt__iobuf_unmap(r->base, r->len);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

unsigned char *ckpt__seal_ring_lend(const ckpt_seal_key *k, size_t *len)
{
	*len = 0;
	return ring_kept(k, len);
}

void ckpt__seal_ring_return(const ckpt_seal_key *k, unsigned char *base, size_t len)
{
	if (base)
		ring_give(k, base, len);
}

void ckpt__seal_prepare(ckpt_seal_key *k, uint64_t plain_bytes)
{
	bool forced;

	if (k->rings && plain_bytes >= ckpt__stream_min_bytes(&forced) && plain_bytes > k->chunk) {
		unsigned char *r = ring_take(k, ring_len_for(k->chunk));
		if (r)
			ring_give(k, r, ring_len_for(k->chunk));
	}
}

int ckpt__sealw_begin(ckpt_sealw **out, ckpt_seal_key *k, ckpt_io *io, ckpt_wstream *ws, const char *path,
		      uint64_t step, int rank, const char *name, uint64_t size_hint)
{
	ckpt_sealw *w = calloc(1, sizeof *w);

	*out = NULL;
	if (!w || sodium_ready() < 0)
		goto nomem;
	w->chunk = k->chunk;
	w->key = k;
	bool forced;
	w->nslots = size_hint >= ckpt__stream_min_bytes(&forced) && size_hint > k->chunk ? WPIPE : 1;
	if (w->nslots > 1 && ckpt__wstream_direct(ws)) {
		w->ring_len = ring_len_for(k->chunk);
		w->ring = ring_take(k, w->ring_len);
	} else if (w->nslots > 1) {
		ring_drop(k);   /* a file system without O_DIRECT: a ring mapped ahead would only sit there */
	}
	for (unsigned i = 0; i < w->nslots; i++)
		if (!(w->slot[i].plain = malloc(k->chunk)) ||
		    (!w->ring && !(w->slot[i].cipher = malloc((size_t)k->chunk + ABYTES))))
			goto nomem;
	if (w->ring && !(w->across = malloc((size_t)k->chunk + ABYTES)))
		goto nomem;
	w->io = io;
	w->ws = ws;
	w->path = path;
	memcpy(w->pre, CKPT_SEAL_MAGIC, 8);
	put32(w->pre + 8, 1);
	put32(w->pre + 12, k->chunk);
	ckpt_mutant_reached("seal_nonce_reuse");
#ifdef CKPT_MUTANT_SEAL_NONCE_REUSE
	pthread_mutex_lock(&reuse_mu);
	if (!reuse_have)
		crypto_secretstream_xchacha20poly1305_init_push(&reuse_st, reuse_hdr, k->k), reuse_have = 1;
	w->st = reuse_st;
	memcpy(w->pre + 16, reuse_hdr, HBYTES);
	pthread_mutex_unlock(&reuse_mu);
#else
	/* a random header per file: no (key, nonce) pair is ever used twice, whatever is retried */
	crypto_secretstream_xchacha20poly1305_init_push(&w->st, w->pre + 16, k->k);
#endif
	w->adlen = make_ad(w->ad, w->pre, step, rank, name);
	if (w->ring) {          /* the file's first bytes, written with the first stage */
		memcpy(w->ring, w->pre, sizeof w->pre);
		w->placed = w->sealed = sizeof w->pre;
	} else {
		int rc = ckpt__wstream_write(ws, w->pre, sizeof w->pre);
		if (rc < 0) {
			ckpt__sealw_free(w);
			return rc;
		}
	}
	w->size = sizeof w->pre;
	if (w->nslots > 1) {
		pthread_mutex_init(&w->mu, NULL);
		pthread_cond_init(&w->cv, NULL);
		if (pthread_create(&w->sealer, NULL, sealer, w) == 0) {
			w->threaded = 1;
		} else {       /* no thread: seal in this one */
			pthread_mutex_destroy(&w->mu);
			pthread_cond_destroy(&w->cv);
			w->nslots = 1;
		}
	}
	*out = w;
	return 0;
nomem:
	ckpt__sealw_free(w);
	return ckpt__io_fail(io, -ENOMEM, path, "cannot start sealing %s: out of memory", path);
}

/* A sealed slot, the next in order: copied into the stream, or (ring) every stage it completes written. */
static int write_slot(ckpt_sealw *w, wslot *sl)
{
	int rc = 0;

	w->size += sl->clen;
	if (!w->ring)
		return ckpt__wstream_write(w->ws, sl->cipher, (size_t)sl->clen);
	w->sealed += sl->clen;
	while (rc == 0 && w->sealed - w->written >= STAGE) {
		rc = ckpt__wstream_write_stage(w->ws, w->ring + w->written % w->ring_len);
		w->written += STAGE;
	}
	return rc;
}

/*
 * The slot being filled goes out with tag. Without a sealer: sealed and
 * written now. With one: handed to it, and what it has sealed is written in
 * order until the next slot to fill is free (FINAL: until every chunk is
 * written).
 */
static int send(ckpt_sealw *w, unsigned char tag)
{
	wslot *sl = &w->slot[w->cur];
	int rc = 0;

	sl->tag = tag;
	sl->wrap = NULL;
	if (w->ring) {          /* its place: free, as RING is sized (above) */
		size_t at = (size_t)(w->placed % w->ring_len);
		sl->cipher = w->ring + at;
		if (at + sl->fill + ABYTES > w->ring_len) {
			sl->wrap = sl->cipher;
			sl->cipher = w->across;
		}
		w->placed += sl->fill + ABYTES;
	}
	if (!w->threaded) {
		seal_slot(w, sl);
		sl->fill = 0;
		sl->src = NULL;
		return write_slot(w, sl);
	}
	pthread_mutex_lock(&w->mu);
	sl->state = SLOT_READY;
	pthread_cond_broadcast(&w->cv);
	w->cur = (w->cur + 1) % w->nslots;
	for (;;) {
		wslot *o = &w->slot[w->out];
		if (o->state == SLOT_SEALED) {
			pthread_mutex_unlock(&w->mu);
			rc = write_slot(w, o);      /* SEALED: the sealer is done with it */
			pthread_mutex_lock(&w->mu);
			o->fill = 0;
			o->src = NULL;
			o->state = SLOT_FREE;
			w->out = (w->out + 1) % w->nslots;
			if (rc < 0)
				break;
			continue;
		}
		if (tag == TAG_FINAL ? o->state == SLOT_FREE && w->out == w->cur : w->slot[w->cur].state == SLOT_FREE)
			break;
		pthread_cond_wait(&w->cv, &w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return rc;
}

int ckpt__sealw_write(ckpt_sealw *w, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	int rc;

	while (len > 0) {
		wslot *sl = &w->slot[w->cur];
		if (w->stable && sl->fill == 0 && len > w->chunk) {
			/* a whole chunk with more to follow: sealed from the caller's memory, no copy */
			sl->src = p;
			sl->fill = w->chunk;
			p += w->chunk;
			len -= w->chunk;
			if ((rc = send(w, TAG_MESSAGE)) < 0)
				return rc;
			continue;
		}
		size_t n = w->chunk - sl->fill < len ? w->chunk - sl->fill : len;
		memcpy(sl->plain + sl->fill, p, n);
		sl->fill += n;
		p += n;
		len -= n;
		/* a full chunk goes out only once more follows: the last one, full or not, is FINAL */
		if (sl->fill == w->chunk && len > 0 && (rc = send(w, TAG_MESSAGE)) < 0)
			return rc;
	}
	return 0;
}

void ckpt__sealw_stable(ckpt_sealw *w)
{
	w->stable = 1;
}

int ckpt__sealw_end(ckpt_sealw *w, uint64_t *size, uint64_t *ident)
{
	int rc;

	if (w->slot[w->cur].fill == w->chunk && (rc = send(w, TAG_MESSAGE)) < 0)
		goto out;
	if ((rc = send(w, TAG_FINAL)) < 0)
		goto out;
	if (w->ring && (rc = ckpt__wstream_write(w->ws, w->ring + w->written % w->ring_len,
						  (size_t)(w->sealed - w->written))) < 0)
		goto out;       /* the tail, less than a stage */
	*size = w->size;
	*ident = XXH3_64bits(w->pre, sizeof w->pre);
out:
	ckpt__sealw_free(w);
	return rc;
}

/* Tell a worker thread to stop (*stop under mu, then cv), join it, and destroy its mutex and condition. */
static void worker_stop(pthread_t t, pthread_mutex_t *mu, pthread_cond_t *cv, int *stop)
{
	pthread_mutex_lock(mu);
	*stop = 1;
	pthread_cond_broadcast(cv);
	pthread_mutex_unlock(mu);
	pthread_join(t, NULL);
	pthread_mutex_destroy(mu);
	pthread_cond_destroy(cv);
}

void ckpt__sealw_free(ckpt_sealw *w)
{
	if (!w)
		return;
	if (w->threaded)
		worker_stop(w->sealer, &w->mu, &w->cv, &w->stop);
	sodium_memzero(&w->st, sizeof w->st);
	for (unsigned i = 0; i < WPIPE; i++) {
		if (w->slot[i].plain)
			sodium_memzero(w->slot[i].plain, w->chunk);
		free(w->slot[i].plain);
		if (!w->ring)
			free(w->slot[i].cipher);
	}
	if (w->ring)
		ring_give(w->key, w->ring, w->ring_len);
	free(w->across);
	free(w);
}

/* ---- reader ------------------------------------------------------------- */

/*
 * Two chunks at a time, on two cores. A chunk's stream state follows from
 * the one before and that chunk's MAC, which sits in its ciphertext
 * (libsodium's secretstream: the nonce's last 8 bytes XOR the MAC's first 8,
 * the 32-bit counter + 1, a rekey on TAG_REKEY or a counter back at 0). So
 * while this thread authenticates and decrypts chunk i, a helper does chunk
 * i + 1 from the state derived for it. That derivation is checked against
 * the state libsodium itself leaves after chunk i; where they differ (a
 * rekey, a counter wrap, a libsodium that keeps its state otherwise) chunk
 * i + 1 is pulled again here, in order. The helper decrypts into a buffer
 * of its own, handed out only after chunk i verified, so nothing reaches the
 * caller before every chunk before it did. Only for files read through a
 * stream (ckpt_stream) with at least PAIR_MIN_CHUNKS chunks.
 */
#define PAIR_MIN_CHUNKS 4

/* The helper's chunk: always cipher2 into ahead, from st. */
typedef struct pair_job {
	sstate st;
	unsigned char tag;
	int rc, busy;
} pair_job;

struct ckpt_sealr {
	sstate st;
	ckpt_io *io;
	ckpt_stream *in;
	const unsigned char *mem;
	uint64_t pos_in;            /* bytes consumed from the file or memory */
	const char *path;
	unsigned char ad[AD_MAX];
	size_t adlen;
	uint32_t chunk;
	uint64_t nchunks, next;     /* chunks in the file; the next to pull */
	uint64_t plain_len, last_len;
	int final_seen;
	unsigned char *plain, *cipher;
	size_t avail, pos;          /* verified plaintext in plain[pos..avail) */
	/* pairs (above): 1 while they may be used; the helper and its job */
	int pairs, helper_on, helper_stop;
	pthread_t helper;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pair_job job;
	unsigned char *cipher2, *ahead;     /* chunk next's ciphertext; and its plaintext when verified ahead */
	int ahead_ready;                    /* chunk `next` is verified in ahead[0..chunk) */
};

static int src_read(ckpt_sealr *r, void *buf, size_t len)
{
	r->pos_in += len;
	if (r->mem) {
		memcpy(buf, r->mem + r->pos_in - len, len);
		return 0;
	}
	/* a large file: the reader thread reads the next chunks while this one is authenticated and decrypted */
	return ckpt__stream_read(r->in, buf, len);
}

/* Chunk r->next did not authenticate. */
static int auth_failed(ckpt_sealr *r)
{
	char disp[CKPT_PATH_MAX];
	return ckpt__io_fail(r->io, -CKPT_ECORRUPT, r->path, "%s: authentication failed at chunk %" PRIu64 " of %" PRIu64
			     " (tampered, or moved from another generation, rank or file)",
			     ckpt__io_display(r->io, r->path, disp, sizeof disp), r->next, r->nchunks);
}

/* Chunk r->next is tagged final and is not the last, or the other way round. */
static int tagged_final(ckpt_sealr *r)
{
	char disp[CKPT_PATH_MAX];
	bool last = r->next + 1 == r->nchunks;
	return ckpt__io_fail(r->io, -CKPT_ECORRUPT, r->path, "%s: chunk %" PRIu64 " of %" PRIu64 " is %s (truncated or "
			     "extended)", ckpt__io_display(r->io, r->path, disp, sizeof disp), r->next, r->nchunks,
			     last ? "not the final one" : "tagged final");
}

/* The next chunk, its ciphertext at c, verified into out (chunk bytes of room). */
static int pull_loaded(ckpt_sealr *r, const unsigned char *c, unsigned char *out)
{
	bool last = r->next + 1 == r->nchunks;
	size_t mlen = last ? (size_t)r->last_len : r->chunk;
	unsigned long long got;
	unsigned char tag = 0;

	if (!last)
		ckpt_mutant_reached("seal_mac_after_use");
#ifdef CKPT_MUTANT_SEAL_MAC_AFTER_USE
	if (!last) {    /* mutant: decrypted and handed out now, its tag left for "later" (never comes) */
		const unsigned char *mac = c + 1 + mlen;
		crypto_stream_chacha20_ietf_xor_ic(out, c + 1, mlen, r->st.nonce, 2U, r->st.k);
		ckpt__ss_after(&r->st, mac);
		r->next++;
		r->pos = 0;
		r->avail = out == r->plain ? mlen : 0;
		return 0;
	}
#endif
	if (ckpt__ss_pull(&r->st, out, &got, &tag, c, mlen + ABYTES, r->ad, r->adlen) != 0)
		return auth_failed(r);
	if (last != (tag == TAG_FINAL))
		return tagged_final(r);
	r->final_seen = last;
	r->next++;
	r->pos = 0;
	r->avail = out == r->plain ? (size_t)got : 0;
	return 0;
}

/*
 * The next chunk, read and verified, into out (r->plain or the caller's
 * buffer, chunk bytes of room): authenticated and decrypted where the
 * stream's readers put it when they can show it in place, else copied out
 * first.
 */
static int pull_into(ckpt_sealr *r, unsigned char *out)
{
	bool last = r->next + 1 == r->nchunks;
	size_t unit = (last ? (size_t)r->last_len : r->chunk) + ABYTES;
	const unsigned char *c = r->cipher;
	int rc;

	if (r->in && ckpt__stream_can_view(r->in, unit)) {
		r->pos_in += unit;
		if ((rc = ckpt__stream_view(r->in, unit, &c)) < 0)
			return rc;
		rc = pull_loaded(r, c, out);
		ckpt__stream_release(r->in, unit);
		return rc;
	}
	rc = src_read(r, r->cipher, unit);
	return rc < 0 ? rc : pull_loaded(r, c, out);
}

static int pull(ckpt_sealr *r)
{
	return pull_into(r, r->plain);
}

static void *helper_main(void *arg)
{
	ckpt_sealr *r = arg;
	unsigned long long got;

	pthread_mutex_lock(&r->mu);
	for (;;) {
		while (!r->job.busy && !r->helper_stop)
			pthread_cond_wait(&r->cv, &r->mu);
		if (r->helper_stop)
			break;
		pthread_mutex_unlock(&r->mu);
		int rc = ckpt__ss_pull(&r->job.st, r->ahead, &got, &r->job.tag, r->cipher2, (size_t)r->chunk + ABYTES,
				       r->ad, r->adlen);
		pthread_mutex_lock(&r->mu);
		r->job.rc = rc;
		r->job.busy = 0;
		pthread_cond_broadcast(&r->cv);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/*
 * Whether this process has a core to spare for a helper: fewer processes
 * of the job on this machine than CPUs it may run on. The launcher says how
 * many (Open MPI, MPICH, torchrun, Slurm); a process no launcher counted is
 * alone. With every core taken by a rank (2 ranks on 2 cores), a helper
 * only contends: restore measured 1.07-1.11 times the plain time without
 * and 1.19-1.22 with (bench_seal.sh 7 256 2). CKPT_SEAL_PAIRS=0 or 1 decides
 * instead (benchmarks, tests).
 */
static int pairs_wanted(void)
{
	static const char *const local[] = { "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "LOCAL_WORLD_SIZE",
					     "SLURM_NTASKS_PER_NODE" };
	const char *e = getenv("CKPT_SEAL_PAIRS");
	long peers = 1, cpus;
	cpu_set_t set;

	if (e && (strcmp(e, "0") == 0 || strcmp(e, "1") == 0))
		return *e == '1';
	for (size_t i = 0; i < sizeof local / sizeof *local; i++) {
		const char *v = getenv(local[i]);
		char *end;
		long n = v ? strtol(v, &end, 10) : 0;
		if (v && *v && !*end && n > 0) {
			peers = n;
			break;
		}
	}
	cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
	return peers < cpus;
}

/* The helper, started on first use; 0, or -1 (then chunks go one at a time). */
static int helper_start(ckpt_sealr *r)
{
	if (r->helper_on)
		return 0;
	if (!(r->cipher2 = malloc((size_t)r->chunk + ABYTES)) || !(r->ahead = malloc(r->chunk)))
		return -1;
	if (pthread_mutex_init(&r->mu, NULL) != 0)
		return -1;
	if (pthread_cond_init(&r->cv, NULL) != 0) {
		pthread_mutex_destroy(&r->mu);
		return -1;
	}
	if (pthread_create(&r->helper, NULL, helper_main, r) != 0) {
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
		return -1;
	}
	r->helper_on = 1;
	return 0;
}

/*
 * Chunks next and next + 1, neither the last: the first into out, the
 * second verified into r->ahead (r->ahead_ready). Errors as pull_into's,
 * for the first chunk that fails.
 */
static int pull_pair(ckpt_sealr *r, unsigned char *out)
{
	size_t unit = (size_t)r->chunk + ABYTES;
	unsigned long long got;
	unsigned char tag = 0;
	sstate derived;
	int rc, same;

	if ((rc = src_read(r, r->cipher, unit)) < 0 || (rc = src_read(r, r->cipher2, unit)) < 0)
		return rc;
	derived = r->st;
	ckpt__ss_after(&derived, r->cipher + 1 + r->chunk);     /* if chunk i neither rekeys nor wraps */
	pthread_mutex_lock(&r->mu);
	r->job = (pair_job){ .st = derived, .busy = 1 };
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	/* the seeded bug's code is pull_loaded's (its build takes no pairs): both chunks would pass it */
	ckpt_mutant_reached("seal_mac_after_use");
	rc = ckpt__ss_pull(&r->st, out, &got, &tag, r->cipher, unit, r->ad, r->adlen);
	pthread_mutex_lock(&r->mu);
	while (r->job.busy)
		pthread_cond_wait(&r->cv, &r->mu);
	pthread_mutex_unlock(&r->mu);
	same = sodium_memcmp(&derived, &r->st, sizeof derived) == 0;
	sodium_memzero(&derived, sizeof derived);
	if (rc != 0)
		return auth_failed(r);
	if (tag == TAG_FINAL)
		return tagged_final(r);
	r->next++;
	r->pos = 0;
	r->avail = out == r->plain ? r->chunk : 0;
	if (!same) {
		/* not the state libsodium went on with (a rekey, a wrap): the second chunk in order, here */
		size_t pos = r->pos, avail = r->avail;
		memcpy(r->cipher, r->cipher2, unit);
		if ((rc = pull_loaded(r, r->cipher, r->ahead)) < 0)
			return rc;
		r->next--;              /* verified ahead, not consumed yet */
		r->pos = pos;
		r->avail = avail;
	} else {
		if (r->job.rc != 0)
			return auth_failed(r);
		if (r->job.tag == TAG_FINAL)
			return tagged_final(r);
		r->st = r->job.st;
	}
	sodium_memzero(&r->job.st, sizeof r->job.st);
	r->ahead_ready = 1;
	return 0;
}

int ckpt__sealr_begin(ckpt_sealr **out, const ckpt_seal_key *k, ckpt_io *io, ckpt_stream *in, const unsigned char *mem,
		      const char *path, uint64_t file_size, uint64_t step, int rank, const char *name,
		      uint64_t *plain_len, uint64_t *ident)
{
	char disp[CKPT_PATH_MAX];
	unsigned char pre[CKPT_SEAL_PREAMBLE];
	ckpt_sealr *r = calloc(1, sizeof *r);
	int rc;

	*out = NULL;
	ckpt__io_display(io, path, disp, sizeof disp);
	if (!r || sodium_ready() < 0) {
		free(r);
		return ckpt__io_fail(io, -ENOMEM, path, "cannot open sealed %s: out of memory", disp);
	}
	r->io = io;
	r->in = in;
	r->mem = mem;
	r->path = path;
	if (file_size < CKPT_SEAL_PREAMBLE + ABYTES) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: %" PRIu64 " bytes, shorter than a sealed file", disp,
				   file_size);
		goto fail;
	}
	if ((rc = src_read(r, pre, sizeof pre)) < 0)
		goto fail;
	r->chunk = get32(pre + 12);
	if (!ckpt__seal_is_sealed(pre, sizeof pre) || get32(pre + 8) != 1 || r->chunk < CKPT_SEAL_CHUNK_MIN ||
	    r->chunk > CKPT_SEAL_CHUNK_MAX) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: not a sealed file of version 1 with a chunk size of %u "
				   "to %u bytes", disp, CKPT_SEAL_CHUNK_MIN, CKPT_SEAL_CHUNK_MAX);
		goto fail;
	}
	uint64_t body = file_size - CKPT_SEAL_PREAMBLE, unit = (uint64_t)r->chunk + ABYTES;
	if (body % unit < ABYTES) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: %" PRIu64 " bytes is no whole number of sealed chunks "
				   "(truncated or extended)", disp, file_size);
		goto fail;
	}
	r->nchunks = body / unit + 1;
	r->last_len = body % unit - ABYTES;
	r->plain_len = (r->nchunks - 1) * r->chunk + r->last_len;
	if (!(r->plain = malloc(r->chunk)) || !(r->cipher = malloc(unit))) {
		rc = ckpt__io_fail(io, -ENOMEM, path, "%s: out of memory", disp);
		goto fail;
	}
	r->adlen = make_ad(r->ad, pre, step, rank, name);
	r->pairs = in && r->nchunks >= PAIR_MIN_CHUNKS && pairs_wanted();
#ifdef CKPT_MUTANT_SEAL_MAC_AFTER_USE
	r->pairs = 0;           /* the seeded bug lives in pull_loaded: every chunk goes through it */
#endif
	if (crypto_secretstream_xchacha20poly1305_init_pull(&r->st, pre + 16, k->k) != 0) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: invalid stream header", disp);
		goto fail;
	}
	/* authenticated before anything else about the file is believed */
	if ((rc = pull(r)) < 0)
		goto fail;
	*plain_len = r->plain_len;
	*ident = XXH3_64bits(pre, sizeof pre);
	*out = r;
	return 0;
fail:
	ckpt__sealr_free(r);
	return rc;
}

int ckpt__sealr_read(ckpt_sealr *r, void *buf, size_t len)
{
	char disp[CKPT_PATH_MAX];
	unsigned char *p = buf;
	int rc;

	while (len > 0) {
		if (r->pos == r->avail) {
			if (r->ahead_ready) {   /* chunk next, verified by the last pair */
				r->ahead_ready = 0;
				r->next++;
				if (len >= r->chunk) {
					memcpy(p, r->ahead, r->chunk);
					p += r->chunk;
					len -= r->chunk;
				} else {
					unsigned char *t = r->plain;
					r->plain = r->ahead;
					r->ahead = t;
					r->pos = 0;
					r->avail = r->chunk;
				}
				continue;
			}
			if (r->next == r->nchunks)
				return ckpt__io_fail(r->io, -CKPT_ECORRUPT, r->path, "%s: read past the sealed data",
						     ckpt__io_display(r->io, r->path, disp, sizeof disp));
			/* a whole chunk wanted: straight into the caller's buffer, verified there before return */
			bool whole = r->next + 1 < r->nchunks && len >= r->chunk;
			bool pair = r->pairs && r->next + 2 < r->nchunks;
			if (pair && helper_start(r) < 0) {
				r->pairs = 0;   /* no thread to be had: one at a time */
				pair = false;
			}
			if ((rc = pair ? pull_pair(r, whole ? p : r->plain) : pull_into(r, whole ? p : r->plain)) < 0)
				return rc;
			if (whole) {
				p += r->chunk;
				len -= r->chunk;
			}
			continue;
		}
		size_t n = r->avail - r->pos < len ? r->avail - r->pos : len;
		memcpy(p, r->plain + r->pos, n);
		r->pos += n;
		p += n;
		len -= n;
	}
	return 0;
}

int ckpt__sealr_end(ckpt_sealr *r)
{
	char disp[CKPT_PATH_MAX];
	int rc;

	while (!r->ahead_ready && r->next < r->nchunks)    /* an empty final chunk may remain */
		if ((rc = pull(r)) < 0)
			return rc;
	if (!r->final_seen || r->pos != r->avail || r->ahead_ready)
		return ckpt__io_fail(r->io, -CKPT_ECORRUPT, r->path, "%s: sealed data not consumed to its final tag",
				     ckpt__io_display(r->io, r->path, disp, sizeof disp));
	return 0;
}

void ckpt__sealr_free(ckpt_sealr *r)
{
	if (!r)
		return;
	if (r->helper_on)
		worker_stop(r->helper, &r->mu, &r->cv, &r->helper_stop);
	sodium_memzero(&r->st, sizeof r->st);
	sodium_memzero(&r->job.st, sizeof r->job.st);
	if (r->plain)
		sodium_memzero(r->plain, r->chunk);
	if (r->ahead)
		sodium_memzero(r->ahead, r->chunk);
	free(r->plain);
	free(r->ahead);
	free(r->cipher);
	free(r->cipher2);
	free(r);
}

/* ---- the manifest ------------------------------------------------------- */

int ckpt__seal_manifest_open(ckpt_io *io, const char *name, const char *path, char **text, size_t *len,
			     int *sealed, uint64_t *ident)
{
	char disp[CKPT_PATH_MAX], *plain = NULL;
	ckpt_sealr *r = NULL;
	uint64_t step = 0, plen = 0;
	int rc;

	*sealed = ckpt__seal_is_sealed(*text, *len);
	*ident = 0;
	ckpt__io_display(io, path, disp, sizeof disp);
	if (*sealed && !io->seal && env_why[0])     /* ckpt-tool: CKPT_KEY_FILE was given and refused */
		return ckpt__io_fail(io, -EACCES, path, "manifest.json is sealed, and CKPT_KEY_FILE was not used: %s", env_why);
	if (*sealed && !io->seal)
		return ckpt__io_fail(io, -EACCES, path, "%s is sealed (encrypted and authenticated by libckpt): reading it "
				     "needs its key (ckpt_config.key_file, CKPT_KEY_FILE, reftrain --ckpt-key-file)", disp);
	if (!*sealed) {
		if (io->seal && !io->seal->allow_unsealed)
			return ckpt__io_fail(io, -EACCES, path, "%s is not sealed, and a key is configured: refused, since "
					     "anyone who can write the root can recompute a plain generation's xxh3 (set "
					     "ckpt_config.allow_unsealed or CKPT_ALLOW_UNSEALED=1 to read generations "
					     "written before the key)", disp);
		return 0;
	}
	if (!ckpt__gen_parse(name, &step))
		return ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: a sealed manifest outside a step-NNNNNNNN generation",
				     disp);
	if ((rc = ckpt__sealr_begin(&r, io->seal, io, NULL, (const unsigned char *)*text, path, *len, step, -1,
				    "manifest.json", &plen, ident)) < 0)
		return rc;
	if (!(plain = malloc(plen + 1))) {
		rc = ckpt__io_fail(io, -ENOMEM, path, "%s: out of memory", disp);
		goto out;
	}
	if ((rc = ckpt__sealr_read(r, plain, plen)) < 0 || (rc = ckpt__sealr_end(r)) < 0)
		goto out;
	plain[plen] = '\0';
	free(*text);
	*text = plain;
	*len = plen;
	plain = NULL;
out:
	free(plain);
	ckpt__sealr_free(r);
	return rc;
}

/* ---- configuration ------------------------------------------------------ */

int ckpt__seal_setup(ckpt_io *io, const ckpt_config *cfg, ckpt_seal_key **out)
{
	const char *path = cfg->key_file, *a;
	char why[400];
	int rc;

	*out = NULL;
	if (!path || !*path)
		path = getenv("CKPT_KEY_FILE");
	if (!path || !*path)
		return 0;
	if (cfg->incremental)
		return ckpt__io_fail(io, -EINVAL, path, "sealed checkpoints (a key file) and incremental checkpoints "
				     "cannot be combined yet: chunks are addressed by the hash of their plaintext");
	if (cfg->seal_chunk_bytes && (cfg->seal_chunk_bytes < CKPT_SEAL_CHUNK_MIN || cfg->seal_chunk_bytes > CKPT_SEAL_CHUNK_MAX))
		return ckpt__io_fail(io, -EINVAL, path, "seal_chunk_bytes %u is out of range: %u to %u", cfg->seal_chunk_bytes,
				     CKPT_SEAL_CHUNK_MIN, CKPT_SEAL_CHUNK_MAX);
	if ((rc = ckpt__seal_key_load(out, path, why, sizeof why)) < 0)
		return ckpt__io_fail(io, rc, path, "%s", why);
	a = getenv("CKPT_ALLOW_UNSEALED");
	(*out)->allow_unsealed = cfg->allow_unsealed || (a && strcmp(a, "1") == 0);
	if (cfg->seal_chunk_bytes)
		(*out)->chunk = cfg->seal_chunk_bytes;
	return 0;
}
