/* Streams over shards (internal.h): read-ahead with a reader thread and O_DIRECT; writes staged for O_DIRECT. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define RING 8                      /* buffers of a ring of the stream's own: one being checked, seven on their way */
#define RING_MAX 64                 /* buffers of a lent ring, at most */
#define PIECE ((size_t)1 << 20)     /* bytes per pread: a multiple of any logical block size */
#define ALIGN 4096
#define READERS 2

typedef struct slot {
	unsigned char *buf;
	size_t len;                 /* bytes read into buf */
	int err;                    /* -errno of the read that filled it, or 0 */
	int full;                   /* 1: the reader is done with it, the caller may take it */
	int busy;                   /* a reader is filling it */
} slot;

struct ckpt_stream {
	ckpt_io *io;
	int fd;
	const char *path;
	uint64_t size;
	int threaded, direct;
	pthread_t thread[READERS];
	pthread_mutex_t mu;
	pthread_cond_t filled, emptied;
	int stop;
	int done;                   /* readers returned: once READERS, no slot fills any more */
	uint64_t claim;             /* the next piece to read */
	int last_set;               /* a piece ended short or failed: none after it is read */
	slot ring[RING_MAX];
	unsigned nslots;            /* of ring[] */
	unsigned take;              /* the slot the caller reads from; pos within it */
	size_t pos;
	unsigned char *iobuf;       /* the ring's buffers in a row (ckpt__iobuf_map); NULL: separate buffers */
	int lent;                   /* iobuf is the caller's: not unmapped here */
	/* the current ckpt__io_read_op: into out, or (out NULL) a view at *view */
	unsigned char *out;
	const unsigned char **view;
	size_t want;
};

uint64_t ckpt__stream_min_bytes(bool *forced)
{
	const char *e = getenv("CKPT_STREAM_MIN_BYTES");
	char *end;

	*forced = false;
	if (e && *e) {
		unsigned long long v = strtoull(e, &end, 10);
		if (*end == '\0') {
			*forced = true;
			return v;
		}
	}
	return CKPT_STREAM_MIN_BYTES;
}

/* pread until n bytes or the end of the file; O_DIRECT refused at run time: off, and again. */
static int fill_slot(ckpt_stream *s, slot *sl, uint64_t off)
{
	size_t got = 0;

	while (got < PIECE) {
		ssize_t n = pread(s->fd, sl->buf + got, PIECE - got, (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EINVAL && __atomic_load_n(&s->direct, __ATOMIC_RELAXED) &&
		    ckpt__io_direct(s->fd, false) >= 0) {
			__atomic_store_n(&s->direct, 0, __ATOMIC_RELAXED);
			continue;
		}
		if (n < 0) {
			sl->len = got;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		/* O_DIRECT reads stop short only at the end of the file; a buffered read may stop anywhere */
		if (__atomic_load_n(&s->direct, __ATOMIC_RELAXED) && got % ALIGN)
			break;
	}
	sl->len = got;
	return 0;
}

/*
 * Each reader claims the next piece in file order, waits for its slot to be
 * free and reads it: READERS preads in flight keep the device busier than
 * one. A piece that ends short (the end of the file) or fails is the last
 * one claimed.
 */
static void *reader(void *arg)
{
	ckpt_stream *s = arg;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		uint64_t i = s->claim;
		slot *sl = &s->ring[i % s->nslots];
		while (!s->stop && !s->last_set && (sl->full || sl->busy || s->claim != i)) {
			pthread_cond_wait(&s->emptied, &s->mu);
			i = s->claim;
			sl = &s->ring[i % s->nslots];
		}
		/* an error, the end of the file, or every byte fstat promised: nothing more to read */
		if (s->stop || s->last_set || i * PIECE >= s->size)
			break;
		s->claim++;
		sl->busy = 1;
		pthread_mutex_unlock(&s->mu);
		int err = fill_slot(s, sl, i * PIECE);
		pthread_mutex_lock(&s->mu);
		sl->err = err;
		sl->busy = 0;
		sl->full = 1;
		if (err < 0 || sl->len < PIECE)
			s->last_set = 1;
		pthread_cond_broadcast(&s->filled);
		pthread_cond_broadcast(&s->emptied);
	}
	s->done++;
	pthread_cond_broadcast(&s->filled);
	pthread_cond_broadcast(&s->emptied);
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

int ckpt__stream_open(ckpt_stream **out, ckpt_io *io, int fd, const char *path, uint64_t size, bool ahead,
		      unsigned char *ring, size_t ring_len)
{
	ckpt_stream *s = calloc(1, sizeof *s);

	*out = NULL;
	if (!s)
		return ckpt__io_fail(io, -ENOMEM, path, "out of memory");
	s->io = io;
	s->fd = fd;
	s->path = path;
	s->size = size;
	*out = s;
	bool forced;
	if (size < ckpt__stream_min_bytes(&forced) || !(ahead || forced))
		return 0;
	/*
	 * The pieces in a row, on huge pages where the system gives them (then
	 * a view may span pieces): the caller's if it lends a buffer of whole
	 * pieces (mapping one anew took 4 to 6 ms of a 150 ms restore).
	 */
	s->nslots = RING;
	if (ring && ring_len % PIECE == 0 && ring_len / PIECE >= 2 && ring_len / PIECE <= RING_MAX) {
		s->iobuf = ring;
		s->lent = 1;
		s->nslots = (unsigned)(ring_len / PIECE);
	} else {
		s->iobuf = ckpt__iobuf_map(RING * PIECE);
	}
	if (s->iobuf)
		for (unsigned i = 0; i < s->nslots; i++)
			s->ring[i].buf = s->iobuf + i * PIECE;
	for (int i = 0; i < RING && !s->iobuf; i++)
		if (posix_memalign((void **)&s->ring[i].buf, ALIGN, PIECE) != 0) {
			ckpt__stream_close(s);
			*out = NULL;
			return ckpt__io_fail(io, -ENOMEM, path, "out of memory for a read-ahead ring of %d x %zu bytes",
					     RING, PIECE);
		}
	/* no O_DIRECT (tmpfs before Linux 6.6): the readers still read ahead, through the cache */
	s->direct = ckpt__io_direct(fd, true) >= 0;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->filled, NULL);
	pthread_cond_init(&s->emptied, NULL);
	int started = 0;
	while (started < READERS && pthread_create(&s->thread[started], NULL, reader, s) == 0)
		started++;
	s->threaded = started;
	if (started == 0) {
		/* no thread: read in the caller as a small file is */
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->filled);
		pthread_cond_destroy(&s->emptied);
		if (s->direct)
			ckpt__io_direct(fd, false);
		s->direct = 0;
		return 0;
	}
	pthread_mutex_lock(&s->mu);
	s->done += READERS - started;     /* the ones that did not start are done */
	pthread_mutex_unlock(&s->mu);
	return 0;
}

/* The bytes of one read operation, from the ring. */
static int fill(void *arg)
{
	ckpt_stream *s = arg;
	size_t done = 0;
	int rc = 0;

	pthread_mutex_lock(&s->mu);
	while (done < s->want) {
		slot *sl = &s->ring[s->take % s->nslots];
		while (!sl->full && s->done < READERS)
			pthread_cond_wait(&s->filled, &s->mu);
		if (!sl->full) {            /* read to the size fstat gave, and more is asked */
			rc = -CKPT_ECORRUPT;
			break;
		}
		if (s->pos == sl->len) {
			if (sl->err < 0 || sl->len < PIECE) {   /* the reader stopped here */
				rc = sl->err < 0 ? sl->err : -CKPT_ECORRUPT;
				break;
			}
			sl->full = 0;
			s->take++;
			s->pos = 0;
			pthread_cond_broadcast(&s->emptied);
			continue;
		}
		size_t n = sl->len - s->pos < s->want - done ? sl->len - s->pos : s->want - done;
		pthread_mutex_unlock(&s->mu);     /* the reader never touches a full slot */
		memcpy(s->out + done, sl->buf + s->pos, n);
		pthread_mutex_lock(&s->mu);
		s->pos += n;
		done += n;
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

/*
 * The bytes of one view: every slot they span full, and from where they
 * start, contiguous in the ring's buffer (ckpt__stream_can_view).
 */
static int view_fill(void *arg)
{
	ckpt_stream *s = arg;
	size_t need = s->pos + s->want;     /* bytes from the start of slot take */
	int rc = 0;

	pthread_mutex_lock(&s->mu);
	for (unsigned k = 0; rc == 0 && (size_t)k * PIECE < need; k++) {
		slot *sl = &s->ring[(s->take + k) % s->nslots];
		while (!sl->full && s->done < READERS)
			pthread_cond_wait(&s->filled, &s->mu);
		if (!sl->full)
			rc = -CKPT_ECORRUPT;        /* read to the size fstat gave, and more is asked */
		else if ((size_t)(k + 1) * PIECE < need && sl->len < PIECE)
			rc = sl->err < 0 ? sl->err : -CKPT_ECORRUPT;   /* the reader stopped inside the view */
		else if ((size_t)k * PIECE + sl->len < need && (size_t)(k + 1) * PIECE >= need)
			rc = sl->err < 0 ? sl->err : -CKPT_ECORRUPT;
	}
	pthread_mutex_unlock(&s->mu);
	if (rc == 0)
		*s->view = s->ring[s->take % s->nslots].buf + s->pos;
	return rc;
}

bool ckpt__stream_can_view(const ckpt_stream *s, size_t len)
{
	if (!s->threaded || !s->iobuf)
		return false;
	size_t at = (size_t)(s->take % s->nslots) * PIECE + s->pos;     /* where the next byte is */
	return len <= (size_t)s->nslots * PIECE - at;
}

int ckpt__stream_view(ckpt_stream *s, size_t len, const unsigned char **p)
{
	*p = NULL;
	s->out = NULL;
	s->view = p;
	s->want = len;
	return ckpt__io_read_op(s->io, s->fd, s->path, len, view_fill, s);
}

void ckpt__stream_release(ckpt_stream *s, size_t len)
{
	pthread_mutex_lock(&s->mu);
	s->pos += len;
	while (s->pos >= PIECE) {   /* a slot read to its end: the readers' again */
		s->ring[s->take % s->nslots].full = 0;
		s->take++;
		s->pos -= PIECE;
		pthread_cond_broadcast(&s->emptied);
	}
	pthread_mutex_unlock(&s->mu);
}

int ckpt__stream_read(ckpt_stream *s, void *buf, size_t len)
{
	if (!s->threaded)
		return ckpt__io_read_all(s->io, s->fd, buf, len, s->path);
	if (len == 0)
		return 0;
	s->out = buf;
	s->want = len;
	return ckpt__io_read_op(s->io, s->fd, s->path, len, fill, s);
}

void ckpt__stream_close(ckpt_stream *s)
{
	if (!s)
		return;
	if (s->threaded) {
		pthread_mutex_lock(&s->mu);
		s->stop = 1;
		pthread_cond_broadcast(&s->emptied);
		pthread_mutex_unlock(&s->mu);
		for (int i = 0; i < s->threaded; i++)
			pthread_join(s->thread[i], NULL);
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->filled);
		pthread_cond_destroy(&s->emptied);
	}
	if (s->iobuf && !s->lent)
		ckpt__iobuf_unmap(s->iobuf, RING * PIECE);
	else if (!s->iobuf)
		for (int i = 0; i < RING; i++)
			free(s->ring[i].buf);
	free(s);
}

/* ---- buffers for O_DIRECT ------------------------------------------------ */

#define HUGE ((size_t)2 << 20)

static long iobufs_live;

unsigned char *ckpt__iobuf_map(size_t len)
{
	unsigned char *raw, *base;

	if (len == 0 || len % HUGE)
		return NULL;
	/* aligned to a huge page: mapped with one to spare, the ends trimmed */
	raw = mmap(NULL, len + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	base = (unsigned char *)(((uintptr_t)raw + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
	if (base > raw)
		munmap(raw, (size_t)(base - raw));
	munmap(base + len, (size_t)(raw + HUGE - base));        /* the tail: never empty */
	madvise(base, len, MADV_HUGEPAGE);      /* a request: refused where huge pages are off */
	madvise(base, len, MADV_DONTFORK);
	/*
	 * Populated now, not at the first transfer: MADV_POPULATE_WRITE (Linux
	 * 5.14), else (EINVAL: an older kernel) a write per page. Out of memory:
	 * NULL, and the caller goes without, rather than a fault later.
	 */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
	if (madvise(base, len, MADV_POPULATE_WRITE) != 0) {
		if (errno != EINVAL) {
			munmap(base, len);
			return NULL;
		}
		long pg = sysconf(_SC_PAGESIZE);
		for (size_t i = 0; i < len; i += (size_t)(pg > 0 ? pg : 4096))
			base[i] = 0;
	}
	__atomic_add_fetch(&iobufs_live, 1, __ATOMIC_RELAXED);
	return base;
}

void ckpt__iobuf_unmap(unsigned char *base, size_t len)
{
	if (!base)
		return;
	munmap(base, len);
	__atomic_sub_fetch(&iobufs_live, 1, __ATOMIC_RELAXED);
}

long ckpt__iobufs_live(void)
{
	return __atomic_load_n(&iobufs_live, __ATOMIC_RELAXED);
}

/* ---- writes --------------------------------------------------------------- */

#define STAGE CKPT_WSTREAM_STAGE

struct ckpt_wstream {
	ckpt_io *io;
	int fd;
	const char *path;
	uint64_t off;               /* bytes handed to the I/O layer */
	unsigned char *stage;       /* NULL: straight through the page cache */
	size_t fill;
};

int ckpt__wstream_open(ckpt_wstream **out, ckpt_io *io, int fd, const char *path, uint64_t size_hint)
{
	ckpt_wstream *s = calloc(1, sizeof *s);

	*out = NULL;
	if (!s)
		return ckpt__io_fail(io, -ENOMEM, path, "out of memory");
	s->io = io;
	s->fd = fd;
	s->path = path;
	*out = s;
	bool forced;
	if (size_hint < ckpt__stream_min_bytes(&forced) || (!forced && size_hint < STAGE))
		return 0;
	if (ckpt__io_direct(fd, true) < 0)     /* no O_DIRECT (tmpfs before Linux 6.6): through the cache */
		return 0;
	if (!(s->stage = ckpt__iobuf_map(STAGE)))     /* huge pages: a stage goes out in one or two requests */
		ckpt__io_direct(fd, false);
	return 0;
}

static int put(ckpt_wstream *s, const void *buf, size_t len)
{
	int rc = ckpt__io_write_all(s->io, s->fd, buf, len, s->path);
	/*
	 * Through the cache: start writing this piece back now (no wait, no
	 * durability claimed: the caller's fsync is the one that counts), so the
	 * device works while the next piece is prepared instead of all at the fsync.
	 */
	if (rc == 0 && !s->stage)
		sync_file_range(s->fd, (off64_t)s->off, (off64_t)len, SYNC_FILE_RANGE_WRITE);
	s->off += len;
	return rc;
}

int ckpt__wstream_write(ckpt_wstream *s, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	int rc;

	if (!s->stage)
		return put(s, buf, len);
	while (len > 0) {
		size_t n = STAGE - s->fill < len ? STAGE - s->fill : len;
		memcpy(s->stage + s->fill, p, n);
		s->fill += n;
		p += n;
		len -= n;
		if (s->fill == STAGE) {
			s->fill = 0;
			if ((rc = put(s, s->stage, STAGE)) < 0)
				return rc;
		}
	}
	return 0;
}

bool ckpt__wstream_direct(const ckpt_wstream *s)
{
	return s->stage && s->fill == 0 && s->off == 0;
}

int ckpt__wstream_write_stage(ckpt_wstream *s, const void *buf)
{
	return put(s, buf, STAGE);
}

int ckpt__wstream_finish(ckpt_wstream *s)
{
	if (!s->stage || s->fill == 0)
		return 0;
	/* the tail is no whole number of blocks: written through the cache */
	ckpt__io_direct(s->fd, false);
	size_t n = s->fill;
	s->fill = 0;
	return put(s, s->stage, n);
}

void ckpt__wstream_close(ckpt_wstream *s)
{
	if (!s)
		return;
	ckpt__iobuf_unmap(s->stage, STAGE);
	free(s);
}
