/* libckpt internals: the I/O layer, the journal, the on-disk formats. */
#ifndef CKPT_INTERNAL_H
#define CKPT_INTERNAL_H

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ckpt/ckpt.h"
#include "ckpt/fault.h"

#define CKPT_PATH_MAX 512
#define CKPT_NAME_MAX 64
#define CKPT_COMPONENT_MAX 32

/* ---- error helpers (error.c) -------------------------------------------- */

void ckpt__error_clear(ckpt_error *e);
/* Record code with a formatted sentence; returns code. */
int ckpt__error_set(ckpt_error *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- journal (journal.c) ------------------------------------------------ */

typedef struct ckpt_journal {
	int fd;
	char path[CKPT_PATH_MAX];
	uint64_t seq;
	size_t bytes;
	size_t max_bytes;
} ckpt_journal;

int ckpt__journal_open(ckpt_journal *j, const char *root, int rank, size_t max_bytes);
void ckpt__journal_close(ckpt_journal *j);
/* Append one JSON object built from the printf-style body (without braces). */
void ckpt__journal_add(ckpt_journal *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the I/O layer (io.c) ----------------------------------------------- */

/*
 * Every POSIX call libckpt makes goes through here: EINTR is retried, short
 * writes are looped over, every return value (close and fsync included) is
 * checked, a libfiu point is evaluated before each call with the full
 * context, each call is journaled, and a failure is recorded in *err with the
 * rank, phase, operation, path and errno.
 */
typedef struct ckpt_io {
	int rank;
	uint64_t step;
	const char *phase;
	ckpt_error *err;
	ckpt_journal *journal;      /* may be NULL */
} ckpt_io;

/* Record a failure found by libckpt itself (not by a system call). */
int ckpt__io_fail(ckpt_io *io, int code, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Enter a phase: evaluates ckpt/phase/<name>. 0 or -errno. */
int ckpt__io_phase(ckpt_io *io, const char *name);

int ckpt__io_open(ckpt_io *io, const char *path, int flags, mode_t mode);
int ckpt__io_write_all(ckpt_io *io, int fd, const void *buf, size_t len, const char *path);
/* Read exactly len bytes; a file that ends early is -CKPT_ECORRUPT. */
int ckpt__io_read_all(ckpt_io *io, int fd, void *buf, size_t len, const char *path);
int ckpt__io_fsync(ckpt_io *io, int fd, const char *path);
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
/* Write a whole small file durably: tmp, fsync, close, rename, fsync parent. */
int ckpt__io_replace_file(ckpt_io *io, const char *dir, const char *name, const void *buf, size_t len);

/* ---- the undo record for power-loss simulation (undo.c) ---------------- */

/* Each returns the record's sequence number (0 when not armed); see undo.c. */
bool ckpt__undo_armed(void);
uint64_t ckpt__undo_open(int rank, const char *path, int flags);
uint64_t ckpt__undo_write(int rank, int fd, const char *path, size_t len);
uint64_t ckpt__undo_ftruncate(int rank, int fd, const char *path, off_t size);
uint64_t ckpt__undo_mkdir(int rank, const char *path);
uint64_t ckpt__undo_rmdir(int rank, const char *path);
uint64_t ckpt__undo_unlink(int rank, const char *path);
uint64_t ckpt__undo_rename(int rank, const char *from, const char *to);
void ckpt__undo_fsync(int rank, int fd, const char *path);
/* The change recorded as ref did not happen. */
void ckpt__undo_failed(int rank, uint64_t ref);

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
	int ntensors;
	ckpt_tensor_entry *tensors;
	char *telemetry_json;       /* compact JSON object, may be NULL */
} ckpt_manifest;

size_t ckpt__dtype_size(ckpt_dtype t);
const char *ckpt__dtype_name(ckpt_dtype t);
int ckpt__dtype_parse(const char *s, ckpt_dtype *out);

/* "step-00000040" */
void ckpt__gen_name(char *buf, size_t len, uint64_t step);
/* Parse a committed generation's directory name; false for anything else. */
bool ckpt__gen_parse(const char *name, uint64_t *step);
void ckpt__shard_name(char *buf, size_t len, int rank);

/* Entries in file order (stable by stage). Caller frees *order. */
int ckpt__state_order(const ckpt_state *s, int **order);

/*
 * The safetensors header of this rank's shard: 8-byte little-endian length,
 * then JSON padded with spaces to a multiple of 8. Fills the tensor entries'
 * offsets (te has s->n slots, in file order). Caller frees *out.
 */
int ckpt__shard_header(const ckpt_state *s, const int *order, int rank, int world, uint64_t step,
		       ckpt_tensor_entry *te, char **out, size_t *len);

/* Render a manifest (with its checksum). Caller frees *out. */
int ckpt__manifest_render(const ckpt_manifest *m, char **out, size_t *len);
/* Parse and check a manifest; on failure, why says what is wrong. */
int ckpt__manifest_parse(const char *text, size_t len, ckpt_manifest *m, char *why, size_t whylen);
void ckpt__manifest_free(ckpt_manifest *m);

/* Read a whole small file through the I/O layer. Caller frees *out. */
int ckpt__read_small_file(ckpt_io *io, const char *path, char **out, size_t *len, size_t max);

/*
 * Hash a file through the I/O layer, checking its size first. If te != NULL,
 * the byte ranges of the nte tensor entries (in file order, contiguous after
 * the header) are read straight into the matching state entries.
 */
int ckpt__hash_file(ckpt_io *io, const char *path, uint64_t expect_size, uint64_t *hash,
		    const ckpt_tensor_entry *te, ckpt_entry *const *dst, int nte);

/* ---- agreement (agree.c) ------------------------------------------------ */

/* All ranks get the first (lowest-rank) error among the local ones. */
int ckpt__agree(ckpt_comm *comm, const ckpt_error *local, ckpt_error *out);

#endif
