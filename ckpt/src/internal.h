/* libckpt internals: the I/O layer, the journal, the on-disk formats. */
#ifndef CKPT_INTERNAL_H
#define CKPT_INTERNAL_H

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "ckpt/ckpt.h"
#include "ckpt/fault.h"

/* Display paths (root + relative path); the root itself may be up to PATH_MAX. */
#define CKPT_PATH_MAX (4096 + 256)
#define CKPT_NAME_MAX 64
#define CKPT_COMPONENT_MAX 32
/* Bounds on what is read from disk (documented in README.md, libckpt). */
#define CKPT_MANIFEST_MAX ((size_t)256 << 20)       /* manifest.json */
#define CKPT_SHARD_HEADER_MAX ((uint64_t)100 << 20) /* a shard's JSON header, as safetensors */
#define CKPT_LATEST_MAX 64
#define CKPT_CHUNK_MIN 4096u                        /* chunk_size of a chunked generation */
#define CKPT_CHUNK_MAX (256u << 20)
#define CKPT_RECIPE_MAX ((size_t)256 << 20)         /* a rank's rank-R.chunks */
#define CKPT_DEFAULT_FILE_MODE 0600
#define CKPT_DEFAULT_DIR_MODE 0700
#define CKPT_LABEL_MAX 128                          /* a manifest label, with its NUL */
#define CKPT_ALERTS_MAX 64                          /* alerts kept per save (alert.c) */

/* ---- error helpers (error.c) -------------------------------------------- */

void ckpt__error_clear(ckpt_error *e);
/* Record code with a formatted sentence; returns code. */
int ckpt__error_set(ckpt_error *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- journal (journal.c) ------------------------------------------------ */

typedef struct ckpt_journal {
	int fd;
	int dirfd;                  /* ROOT/journal, opened without following links */
	mode_t file_mode;
	char path[CKPT_PATH_MAX];
	uint64_t seq;
	size_t bytes;
	size_t max_bytes;
} ckpt_journal;

/* Open ROOT/journal/rank-R.jsonl relative to the root descriptor (no links followed). */
int ckpt__journal_open(ckpt_journal *j, int rootfd, const char *root, int rank, size_t max_bytes,
		       mode_t file_mode, mode_t dir_mode);
void ckpt__journal_close(ckpt_journal *j);
/* Append one JSON object built from the printf-style body (without braces). */
void ckpt__journal_add(ckpt_journal *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the I/O layer (io.c) ----------------------------------------------- */

/*
 * Root confinement: once rootfd is set, every path given to the I/O layer is
 * relative to the root and resolved component by component with openat and
 * O_NOFOLLOW, so no operation follows a link or leaves the root; files are
 * opened O_NONBLOCK and anything that is not a regular file is refused (a
 * FIFO never blocks). With rootfd < 0, paths are used as given (only to
 * create the root itself). Messages, fault contexts and the undo log see the
 * full path, root + "/" + relative.
 *
 * Every POSIX call libckpt makes goes through here: EINTR is retried, short
 * writes are looped over, every return value (close and fsync included) is
 * checked, a libfiu point is evaluated before each call with the full
 * context, each call is journaled, and a failure is recorded in *err with the
 * rank, phase, operation, path and errno.
 */
typedef struct ckpt_io {
	int rootfd;                 /* -1: paths are used as given */
	const char *root;           /* for messages */
	int rank;
	uint64_t step;
	const char *phase;
	ckpt_error *err;
	ckpt_journal *journal;      /* may be NULL */
	const struct ckpt_seal_key *seal;   /* seal.h: files are sealed with it; NULL: plain */
} ckpt_io;

/* Record a failure found by libckpt itself (not by a system call). */
int ckpt__io_fail(ckpt_io *io, int code, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Enter a phase: evaluates ckpt/phase/<name>. 0 or -errno. */
int ckpt__io_phase(ckpt_io *io, const char *name);

/* Always O_NOFOLLOW | O_CLOEXEC; non-directories O_NONBLOCK and must be regular files. */
int ckpt__io_open(ckpt_io *io, const char *path, int flags, mode_t mode);
int ckpt__io_write_all(ckpt_io *io, int fd, const void *buf, size_t len, const char *path);
/* Read exactly len bytes; a file that ends early is -CKPT_ECORRUPT. */
int ckpt__io_read_all(ckpt_io *io, int fd, void *buf, size_t len, const char *path);
int ckpt__io_fsync(ckpt_io *io, int fd, const char *path);
/*
 * One "read" operation of len bytes whose bytes come from fill(arg) rather
 * than from read(2) (stream.c: a reader thread read them ahead): the fault
 * point, the journal record and the error are ckpt__io_read_all's, on the
 * calling thread. fill returns 0 or -errno (-CKPT_ECORRUPT: the file ends early).
 */
int ckpt__io_read_op(ckpt_io *io, int fd, const char *path, size_t len, int (*fill)(void *arg), void *arg);
/* Turn O_DIRECT on or off for fd: 1 changed, 0 already so, -1 refused (tmpfs has none). */
int ckpt__io_direct(int fd, bool on);
int ckpt__io_fdatasync(ckpt_io *io, int fd, const char *path);
/* Closes *fd and sets it to -1, also on failure. */
int ckpt__io_close(ckpt_io *io, int *fd, const char *path);
int ckpt__io_rename(ckpt_io *io, const char *from, const char *to);
int ckpt__io_mkdir(ckpt_io *io, const char *path, mode_t mode);
int ckpt__io_unlink(ckpt_io *io, const char *path);
int ckpt__io_rmdir(ckpt_io *io, const char *path);
int ckpt__io_ftruncate(ckpt_io *io, int fd, off_t len, const char *path);
int ckpt__io_opendir(ckpt_io *io, const char *path, DIR **out);

/* fsync a directory (open O_DIRECTORY, fsync, close). */
int ckpt__io_fsync_dir(ckpt_io *io, const char *path);
/* Remove a directory tree, then fsync its parent. Missing is fine. */
int ckpt__io_rmtree(ckpt_io *io, const char *path);
/* Write a whole small file durably: tmp (created O_EXCL), fsync, close, rename, fsync parent. */
int ckpt__io_replace_file(ckpt_io *io, const char *dir, const char *name, const void *buf, size_t len,
			  mode_t mode);
/* fstatat relative to the root without following links (no fault point: it changes nothing). */
int ckpt__io_lstat(ckpt_io *io, const char *path, struct stat *st);
/* The full path of a relative one, for messages. */
const char *ckpt__io_display(const ckpt_io *io, const char *path, char *buf, size_t len);

#include "undo.h"

/* ---- read-ahead streams (stream.c) --------------------------------------- */

/*
 * A sealed shard read from start to end. From CKPT_STREAM_MIN_BYTES on, two
 * reader threads read the file in order, with O_DIRECT where the file system
 * allows it, into a ring of aligned buffers while the caller decrypts the
 * bytes before them: the device works while the CPU authenticates, and the
 * page cache's copy and bookkeeping are not paid. Each ckpt__stream_read is
 * one "read" operation of the I/O layer (ckpt__io_read_op), faults and
 * journal as before. Otherwise (a smaller file, or a plain one, which reads
 * fastest straight into the state behind the kernel's readahead) the
 * caller's thread reads with ckpt__io_read_all. The readers touch nothing but
 * the file and the ring.
 */
#define CKPT_STREAM_MIN_BYTES ((uint64_t)8 << 20)

/*
 * len bytes (a multiple of 2 MiB) of memory for O_DIRECT transfers, aligned
 * to 2 MiB and on transparent huge pages where the system gives them when
 * asked (transparent_hugepage "madvise" or "always"). The device here takes
 * at most 254 segments a request: a 1 MiB transfer from scattered 4 KiB
 * pages goes as two requests, from a huge page as one, and a 4 MiB one as
 * about seven against one or two. Reading two 128 MiB files at once with 1 MiB
 * O_DIRECT reads took 145-162 ms into huge pages against 198-284 into shared
 * 4 KiB pages (five rounds each). Populated at once, not inherited by a fork
 * (a trainer's data workers). NULL if out of memory. ckpt__iobufs_live: how
 * many are mapped in this process (tests).
 */
unsigned char *ckpt__iobuf_map(size_t len);
void ckpt__iobuf_unmap(unsigned char *base, size_t len);
long ckpt__iobufs_live(void);
typedef struct ckpt_stream ckpt_stream;

/*
 * CKPT_STREAM_MIN_BYTES, or the environment's (*forced: given there; then
 * every file from that size on takes the streams, plain reads and small
 * O_DIRECT writes too: CKPT_STREAM_MIN_BYTES=0 is how the tests send every
 * shard through them).
 */
uint64_t ckpt__stream_min_bytes(bool *forced);
/*
 * Over fd (open for reading at offset 0, size bytes by fstat); ahead: read
 * ahead (from CKPT_STREAM_MIN_BYTES on), else the caller's thread reads.
 * ring, ring_len: a buffer (ckpt__iobuf_map) the stream may read ahead into
 * instead of mapping its own, if it is 2 to 64 MiB of whole MiB;
 * it stays the caller's, free again after ckpt__stream_close. NULL, 0: none.
 * 0, or -ENOMEM recorded in io.
 */
int ckpt__stream_open(ckpt_stream **out, ckpt_io *io, int fd, const char *path, uint64_t size, bool ahead,
		      unsigned char *ring, size_t ring_len);
/* Exactly len bytes, or -errno; a file that ends early is -CKPT_ECORRUPT. */
int ckpt__stream_read(ckpt_stream *s, void *buf, size_t len);
/*
 * Without the copy: whether len bytes can be viewed where the readers put
 * them (read ahead, in a ring whose buffers lie in a row, and not past the
 * ring's end from where the next byte is). Then view is one
 * "read" operation like ckpt__stream_read, which points *p at the next len
 * bytes instead of copying them out; they stay put until release(len),
 * which must come before the next view or read.
 */
bool ckpt__stream_can_view(const ckpt_stream *s, size_t len);
int ckpt__stream_view(ckpt_stream *s, size_t len, const unsigned char **p);
void ckpt__stream_release(ckpt_stream *s, size_t len);
/* Stops and joins the readers; the descriptor stays open. NULL is fine. */
void ckpt__stream_close(ckpt_stream *s);

/*
 * A shard written from start to end. From CKPT_STREAM_MIN_BYTES on
 * (size_hint), and where the file system allows it, the bytes are staged in
 * an aligned buffer and written with O_DIRECT in whole stages: the page
 * cache's copy and writeback are not paid, which leaves the CPU to hash or
 * seal; finish writes the tail through the cache. Otherwise each write goes
 * through the cache and its writeback starts at once (sync_file_range). The
 * writes are the I/O layer's (faults, journal, undo record); the caller's
 * fsync makes them durable either way.
 */
typedef struct ckpt_wstream ckpt_wstream;
#define CKPT_WSTREAM_STAGE ((size_t)4 << 20)  /* bytes per O_DIRECT write */
int ckpt__wstream_open(ckpt_wstream **out, ckpt_io *io, int fd, const char *path, uint64_t size_hint);
int ckpt__wstream_write(ckpt_wstream *s, const void *buf, size_t len);
/*
 * Without the copy: true while the stream writes with O_DIRECT and nothing
 * has been written yet. Then a producer may fill CKPT_WSTREAM_STAGE-byte
 * pieces of 4096-aligned memory of its own and write each with
 * write_stage (the same I/O operation as a staged write), and give what is
 * left, less than a stage, to ckpt__wstream_write before finish.
 */
bool ckpt__wstream_direct(const ckpt_wstream *s);
int ckpt__wstream_write_stage(ckpt_wstream *s, const void *buf);
/* Every byte written: the tail goes out. Call before the fsync. */
int ckpt__wstream_finish(ckpt_wstream *s);
/* NULL is fine; the descriptor stays open. */
void ckpt__wstream_close(ckpt_wstream *s);

/* ---- formats (format.c) ------------------------------------------------- */

typedef struct ckpt_entry {
	char name[CKPT_NAME_MAX];
	char component[CKPT_COMPONENT_MAX];
	ckpt_stage stage;
	ckpt_dtype dtype;
	void *data;
	uint64_t local_elems;
	uint64_t global_elems;
	uint64_t global_offset;
} ckpt_entry;

struct ckpt_state {
	ckpt_entry *e;
	int n;
	int cap;
};

typedef struct ckpt_file_entry {
	char name[CKPT_NAME_MAX];
	int rank;
	uint64_t size;
	uint64_t hash;
} ckpt_file_entry;

/*
 * A tensor of the manifest's layout: the same on every rank (name, component,
 * stage, dtype, global size), in file order. Its per-rank local size and
 * global offset are either one value for every rank or world_size values,
 * kept in the manifest's pool at base + rank * stride.
 */
typedef struct ckpt_layout_entry {
	char name[CKPT_NAME_MAX];
	char component[CKPT_COMPONENT_MAX];
	int stage;
	ckpt_dtype dtype;
	uint64_t global_elems;
	uint64_t local_elems, global_offset;    /* when uniform */
	size_t local_at, goff_at, stride;       /* SIZE_MAX: uniform */
} ckpt_layout_entry;

/* This rank's entry in a shard (what the writer lays out). */
typedef struct ckpt_tensor_entry {
	char name[CKPT_NAME_MAX];
	char component[CKPT_COMPONENT_MAX];
	int rank;
	int stage;
	ckpt_dtype dtype;
	uint64_t local_elems;
	uint64_t global_elems;
	uint64_t global_offset;
	uint64_t file_offset;       /* absolute, in the rank's shard file */
	uint64_t nbytes;
} ckpt_tensor_entry;

typedef struct ckpt_manifest {
	int schema_version;
	uint64_t step;
	int world_size;
	uint64_t config_hash;
	unsigned tags;
	int nfiles;
	ckpt_file_entry *files;
	int ntensors;               /* per rank (layout entries) */
	ckpt_layout_entry *layout;
	uint64_t *pool;
	size_t npool, cappool;
	char *telemetry_json;       /* compact JSON object, may be NULL */
	char experiment[CKPT_LABEL_MAX];    /* labels (catalog.c); "" if none */
	char code_version[CKPT_LABEL_MAX];
	uint32_t chunk_size;        /* version 3 (chunked): > 0 */
	uint32_t chain_depth;       /* version 3: saves since the last full one (0: full) */
	uint64_t chain_base;        /* version 3: the step of that full one, the seed of the chunk addresses */
	int sealed;                 /* seal.h: read from a sealed manifest; its files are sealed */
	uint64_t seal_ident;        /* the sealed manifest's stream identity */
	/* writer side only: every rank's entries, rank-major (ntensors * world_size) */
	const ckpt_tensor_entry *all;
} ckpt_manifest;

uint64_t ckpt__layout_local(const ckpt_manifest *m, int k, int rank);
uint64_t ckpt__layout_goff(const ckpt_manifest *m, int k, int rank);

size_t ckpt__dtype_size(ckpt_dtype t);
const char *ckpt__dtype_name(ckpt_dtype t);
int ckpt__dtype_parse(const char *s, ckpt_dtype *out);

/* "step-00000040" */
void ckpt__gen_name(char *buf, size_t len, uint64_t step);
/* Parse a committed generation's canonical directory name (as ckpt__gen_name writes it); false otherwise. */
bool ckpt__gen_parse(const char *name, uint64_t *step);
void ckpt__shard_name(char *buf, size_t len, int rank);
/* "rank-00001.chunks": a rank's recipe in a chunked generation */
void ckpt__recipe_name(char *buf, size_t len, int rank);

/* Entries in file order (stable by stage). Caller frees *order. */
int ckpt__state_order(const ckpt_state *s, int **order);

/*
 * The safetensors header of this rank's shard: 8-byte little-endian length,
 * then JSON padded with spaces to a multiple of 8. Fills the tensor entries'
 * offsets (te has s->n slots, in file order). Caller frees *out.
 */
int ckpt__shard_header(const ckpt_state *s, const int *order, int rank, int world, uint64_t step,
		       ckpt_tensor_entry *te, char **out, size_t *len);

/*
 * Render a manifest (schema_version 2, with its checksum) from m->all, which
 * holds every rank's entries (rank-major, m->ntensors per rank, the same
 * layout on every rank: -CKPT_ECONFIG otherwise). Caller frees *out.
 */
int ckpt__manifest_render(const ckpt_manifest *m, char **out, size_t *len);
/*
 * Parse and check a manifest of any schema version this library has written
 * (1, 2): checksum, fields, one canonical shard per rank, the same tensor
 * layout on every rank, sizes that do not overflow. Memory is linear in len.
 * On failure, why says what is wrong.
 */
int ckpt__manifest_parse(const char *text, size_t len, ckpt_manifest *m, char *why, size_t whylen);
void ckpt__manifest_free(ckpt_manifest *m);

/* A shard's safetensors header, parsed: tensors sorted by data offset. */
typedef struct ckpt_st_tensor {
	char name[CKPT_NAME_MAX];
	ckpt_dtype dtype;
	uint64_t elems;             /* product of the shape (checked for overflow) */
	uint64_t begin, end;        /* data_offsets, relative to the end of the header */
} ckpt_st_tensor;

typedef struct ckpt_st_header {
	int n;
	ckpt_st_tensor *t;
	char meta_rank[16], meta_world[16], meta_step[24], meta_format[24];
} ckpt_st_header;

/*
 * Parse the JSON header of a shard (len bytes, after the 8-byte length) and
 * check it describes data_len bytes exactly: every entry inside, no overlap,
 * no hole, size = dtype x shape. On failure why says what is wrong.
 */
int ckpt__st_parse(const char *json, size_t len, uint64_t data_len, ckpt_st_header *h, char *why, size_t whylen);
void ckpt__st_free(ckpt_st_header *h);

/* Read a whole small regular file through the I/O layer (> max: -EFBIG, message set). Caller frees *out. */
int ckpt__read_small_file(ckpt_io *io, const char *path, char **out, size_t *len, size_t max);

/* Printable copy of untrusted text: control and non-ASCII bytes as \xNN. */
void ckpt__escape(char *dst, size_t cap, const char *src);

/* ---- verification, shared by restore and ckpt-tool (verify.c) ------------ */

/*
 * Read and check generation `name` (relative to io's root): a real directory,
 * its manifest (size limit, parse, step = *step unless NULL). 0, or < 0 with the
 * error recorded in io->err. With restore, the restore.read and restore.verify
 * phase points are evaluated before reading and before parsing.
 */
int ckpt__gen_load(ckpt_io *io, const char *name, const uint64_t *step, ckpt_manifest *m, bool restore);
/*
 * Verify rank's shard of a loaded generation: a regular file of the listed
 * size; its safetensors header parsed and equal to the manifest's entries for
 * the rank (names, dtypes, shapes, contiguous offsets, metadata); xxh3 of
 * every byte. With dst (m->ntensors entries, file order), tensor bytes are
 * read straight into the state. 0, or < 0 with the error in io->err.
 */
int ckpt__shard_verify(ckpt_io *io, const char *name, const ckpt_manifest *m, int rank, ckpt_entry *const *dst);
/* A parsed safetensors header against the manifest's entries for rank (names, dtypes, shapes, metadata). */
int ckpt__st_check(const ckpt_st_header *h, const ckpt_manifest *m, int rank, char *why, size_t wl);

/*
 * LATEST, read without following a link or blocking on a FIFO: 0 with the
 * name it holds (newline removed; any content, not checked), or -errno.
 */
int ckpt__latest_read(int rootfd, char *buf, size_t len);

/* Committed generations under the root, newest first, no cap. Caller frees *steps. */
int ckpt__scan(ckpt_io *io, uint64_t **steps, int *n);

/* ---- a small strict JSON reader over a buffer (json.c) ------------------ */

/*
 * Pull parsing, no tree: linear time, memory only for what the caller keeps.
 * Strings are copied into caller buffers of a given size (too long is an
 * error); integers are unsigned 64-bit without fraction or exponent; nesting
 * is limited. The first error is kept in err with its byte offset.
 */
typedef struct ckpt_jr {
	const char *base, *p, *end;
	int depth;
	int failed;
	char err[160];
} ckpt_jr;

void ckpt__jr_init(ckpt_jr *j, const char *text, size_t len);
int ckpt__jr_fail(ckpt_jr *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Next non-space character (not consumed), or 0 at the end. */
int ckpt__jr_peek(ckpt_jr *j);
int ckpt__jr_expect(ckpt_jr *j, char c);
/* Object members: *first starts true; 1 with the key read and ':' consumed, 0 at '}'. */
int ckpt__jr_member(ckpt_jr *j, int *first, char *key, size_t cap);
/* Array elements: *first starts true; 1 if an element follows, 0 at ']'. */
int ckpt__jr_element(ckpt_jr *j, int *first);
int ckpt__jr_string(ckpt_jr *j, char *out, size_t cap);
int ckpt__jr_u64(ckpt_jr *j, uint64_t *v);
/* Skip any value. */
int ckpt__jr_skip(ckpt_jr *j);
/* Expect the end of the text (only spaces left). */
int ckpt__jr_end(ckpt_jr *j);

/* ---- catalog labels (catalog.c) ----------------------------------------- */

/* experiment and code_version: printable ASCII under CKPT_LABEL_MAX bytes. 0 or -EINVAL. */
int ckpt__labels_check(const ckpt_config *cfg);
/* The value of a manifest's "labels" member into m. 0, or -1 with the reader failed. */
int ckpt__labels_parse(ckpt_jr *j, ckpt_manifest *m);

/* ---- agreement (agree.c) ------------------------------------------------ */

/* All ranks get the first (lowest-rank) error among the local ones. */
int ckpt__agree(ckpt_comm *comm, const ckpt_error *local, ckpt_error *out);

/* ---- asynchronous save (async.c), hooks in ckpt.c ----------------------- */

struct ckpt_async;

/* What async.c needs of a ckpt (ckpt.c owns the struct). */
typedef struct ckpt_parts {
	ckpt_comm *comm;
	ckpt_state *state;
	ckpt_entry **dst;           /* state entries in file order */
	ckpt_journal *journal;
	ckpt_error *err;
	const char *root;
	struct ckpt_async **async;
} ckpt_parts;

void ckpt__parts(ckpt *c, ckpt_parts *p);
/* c->async alone: the writer swaps c->comm and c->dst while it saves, never this. */
struct ckpt_async **ckpt__async_of(ckpt *c);
/*
 * The ordinary save, with another communicator and other tensor data (the
 * writer thread's); pre: an error of this rank found before the save (its
 * shard is not written, and the save fails as for a write error), or NULL.
 */
int ckpt__save_staged(ckpt *c, ckpt_comm *comm, ckpt_entry **dst, uint64_t step, unsigned tags,
		      const ckpt_error *pre);
/* Finish a save in flight (its outcome kept for the next report). Collective; no-op if none. */
void ckpt__async_drain(ckpt *c);
/* Drain, then free the async machinery. */
void ckpt__async_free(ckpt *c);

/* ---- tiered storage (tier.c), hooks in ckpt.c ----------------------------- */

typedef struct ckpt_tier ckpt_tier;

/* Collective: open the fast tier; *rootfd, root and io switch to it (the durable root stays the tier's). */
int ckpt__tier_open(ckpt_tier **out, const ckpt_config *cfg, ckpt_comm *comm, ckpt_journal *journal, int *rootfd,
		    char *root, ckpt_io *io);
void ckpt__tier_free(ckpt_tier *t, int *rootfd);
/* This rank makes and commits the generation directories of its fast root. */
int ckpt__tier_leader(const ckpt_tier *t);
/* Collective, after rank 0 committed: the other leaders commit the same manifest on their fast roots. */
int ckpt__tier_replicate(ckpt_tier *t, ckpt_io *io, uint64_t step, const char *tmp, ckpt_error *final);
int ckpt__tier_drain_start(ckpt_tier *t, uint64_t step);
int ckpt__tier_drain_finish(ckpt_tier *t);
uint64_t ckpt__tier_drained(const ckpt_tier *t);
void ckpt__tier_retention_begin(ckpt_tier *t, ckpt_io *io);
bool ckpt__tier_keep_fast(const ckpt_tier *t, uint64_t step);
int ckpt__tier_candidates(ckpt_tier *t, ckpt_io *io, uint64_t **steps, int *n);
uint64_t ckpt__tier_pick(const ckpt_tier *t, ckpt_io *io, uint64_t cand);
/* Collective, after restoring candidate i: drain it again if only the fast tier has it. */
int ckpt__tier_restored(ckpt_tier *t, const uint64_t *cands, int n, int i);
const char *ckpt__tier_name(const ckpt_tier *t, uint64_t cand);

#endif
