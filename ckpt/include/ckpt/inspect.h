/*
 * Looking at checkpoints from outside a job (ckpt-tool): list generations,
 * verify one fully and name every damaged file, show a manifest.
 * Single-process, read-only, no fault points armed. The listing and the
 * verification are restore's own (the same scan, the same checks), so
 * "valid" means "restore would take it" (given the job's world size and
 * configuration); access is confined to the root as in restore. Text that
 * comes from disk is escaped (control and non-ASCII bytes as \xNN).
 */
#ifndef CKPT_INSPECT_H
#define CKPT_INSPECT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CKPT_MAX_PROBLEMS 64

typedef struct ckpt_gen_report {
	char name[64];            /* directory name */
	uint64_t step;
	int world_size;
	unsigned tags;            /* CKPT_TAG_* */
	uint64_t bytes;           /* the files the manifest lists, and the chunks it references (chunked) */
	/*
	 * What is this generation's alone (deleting it frees it) and what it
	 * shares with other listed generations: with incremental checkpoints,
	 * chunks referenced by another generation are shared; everything else,
	 * its files included, is its own. Filled by ckpt_inspect_list.
	 */
	uint64_t own_bytes, shared_bytes;
	/* the catalog (manifest): the job's configuration hash and labels ("" if none; printable ASCII) */
	uint64_t config_hash;
	char experiment[128];
	char code_version[128];
	int valid;
	int nproblems;
	struct {
		char file[64];
		char why[300];
	} problems[CKPT_MAX_PROBLEMS];
} ckpt_gen_report;

/* Verify a generation directory. 0 if valid, 1 if damaged (see rep), < 0 on error. */
int ckpt_inspect_verify(const char *gen_dir, ckpt_gen_report *rep);

/* Verify every committed generation under root, newest first. Caller frees *out. */
int ckpt_inspect_list(const char *root, ckpt_gen_report **out, int *n);

/* One rank's part of one tensor, as a generation's manifest lays it out. */
typedef struct ckpt_inspect_tensor {
	char name[64];
	char component[32];
	int rank;
	int stage;                /* ckpt_stage */
	int dtype;                /* ckpt_dtype */
	uint64_t local_elems, global_elems, global_offset;
} ckpt_inspect_tensor;

/*
 * The state layout of a generation, whatever its manifest's version: every
 * rank's tensors, rank by rank, in file order (world_size x tensors
 * entries). Read and checked as restore reads it (not the shards). Caller
 * frees *out. 0, or < 0 if the manifest cannot be read or is invalid.
 */
int ckpt_inspect_layout(const char *gen_dir, ckpt_inspect_tensor **out, int *n, int *world_size,
			uint64_t *config_hash);

/* What ROOT/LATEST names (escaped), read without following links or blocking. 0 or -errno. */
int ckpt_inspect_latest(const char *root, char *buf, size_t len);

/* Print a generation's manifest for people. 0, or < 0 if it cannot be read. */
int ckpt_inspect_show(const char *gen_dir, FILE *out);

#endif
