/*
 * Shared fixture for libckpt unit tests: a temporary checkpoint root, a
 * per-rank state whose contents are a function of (rank, step), jobs of N
 * threaded ranks that save or restore, and a small fault injector on libfiu
 * (fiu_enable_external) that fails a chosen operation on a chosen rank.
 */
#ifndef CKPT_FIXTURE_H
#define CKPT_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckpt/ckpt.h"
#include "ckpt/fault.h"

#define FX_MAX_RANKS 8
#define FX_ELEMS 3000          /* per-rank elements of the sharded tensors */

typedef struct fx_rank_result {
	int rc;
	ckpt_error err;
	ckpt_restore_info info;
	bool content_ok;           /* restore: state equals what step info.step saved */
} fx_rank_result;

typedef struct fx_job {
	const char *root;
	int world;
	uint64_t step;
	unsigned tags;
	uint32_t keep_last, keep_every;
	int keep_best;
	uint64_t config_hash;
	uint32_t file_mode, dir_mode;
	int allow_shared_root;
	const char *key_file;      /* sealed checkpoints (test_ckpt_seal.c) */
	int allow_unsealed;
	uint32_t seal_chunk_bytes;
	int (*validate)(void *arg, uint64_t step, char *why, size_t len);   /* arg: the rank, as an int */
	fx_rank_result r[FX_MAX_RANKS];
} fx_job;

/* A fresh empty directory under /tmp; fx_rmrf removes it. */
char *fx_tmpdir(void);
void fx_rmrf(const char *path);

void fx_job_init(fx_job *j, const char *root, int world);
/* Save step j->step on j->world threaded ranks. Returns the agreed rc (asserts agreement). */
int fx_save(fx_job *j);
/* Restore on j->world ranks. Returns the agreed rc; checks content on success. */
int fx_restore(fx_job *j);
/* Save step on j's ranks; the test fails unless the save succeeds. */
void fx_save_ok(fx_job *j, uint64_t step);
/* ROOT/REL, REL from a format; four rotating buffers, so up to four in one expression. */
char *fx_path(const char *root, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- injector ---- */
typedef struct fx_fault {
	int rank;                  /* -1: any */
	const char *op;            /* "write", ... or "phase"; NULL: any I/O operation */
	const char *phase;         /* NULL: any */
	int nth;                   /* fire from the nth matching call (1-based) */
	int times;                 /* how many times to fire; 0 = every time from nth on */
	ckpt_fault_action action;
} fx_fault;

void fx_arm(const fx_fault *f);
void fx_disarm(void);
int fx_fired(void);
/* Matching calls seen while armed (fired or not). */
int fx_seen(void);

/* Damage a file: flip one byte at offset (negative: from the end), truncate, or remove. */
void fx_flip(const char *path, long offset);
void fx_truncate(const char *path, long size);
bool fx_exists(const char *path);
/*
 * Reseal a generation after crafting it: recompute every listed shard's size
 * and xxh3 from disk and the manifest's checksum, so that only what was
 * crafted is wrong (the hashes all hold).
 */
void fx_reseal(const char *gen_dir);
/* Copy a file. */
void fx_copy(const char *from, const char *to);

#endif
