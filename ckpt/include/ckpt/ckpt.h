/*
 * libckpt: coordinated, atomic, verified checkpoints of a data-parallel job.
 *
 * A generation is a directory ROOT/step-NNNNNNNN holding one safetensors-layout
 * shard per rank and a manifest.json written last by rank 0 (sizes, xxh3
 * hashes, tensor entries, its own checksum). It is built under a .tmp name and
 * renamed into place, so a generation either exists complete or not at all.
 * Restore scans generations newest first and uses the first one whose
 * manifest, checksum and every file verify, falling back past damaged ones.
 *
 * Save and restore are collective over a ckpt_comm: all ranks agree on the
 * outcome, and a failure anywhere fails the call everywhere with the first
 * error (lowest failing rank), leaving earlier generations intact.
 */
#ifndef CKPT_CKPT_H
#define CKPT_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt/alert.h"
#include "ckpt/comm.h"
#include "ckpt/error.h"

/* The manifest version written; every earlier one (1) is still read. */
#define CKPT_SCHEMA_VERSION 2
/* The version an incremental save writes (chunked generations); 1 to 3 are read. */
#define CKPT_SCHEMA_VERSION_CHUNKED 3

typedef enum ckpt_dtype { CKPT_F32, CKPT_BF16, CKPT_U64, CKPT_U8 } ckpt_dtype;

/* Restore fills the state in this order. */
typedef enum ckpt_stage {
	CKPT_STAGE_MODEL = 0,
	CKPT_STAGE_OPTIMIZER,
	CKPT_STAGE_TRAINING,    /* schedule, loss scaler, RNG */
	CKPT_STAGE_DATA,        /* data cursor, user blobs */
	CKPT_STAGE_COUNT
} ckpt_stage;

enum ckpt_tag { CKPT_TAG_BEST = 1u << 0, CKPT_TAG_INTERIM = 1u << 1 };

/* ---- state registry ---------------------------------------------------- */

typedef struct ckpt_state ckpt_state;

int ckpt_state_new(ckpt_state **out);
void ckpt_state_free(ckpt_state *s);
/*
 * Register this rank's part of a tensor: local_elems elements at data, which
 * are elements [global_offset, global_offset + local_elems) of a tensor of
 * global_elems. Names are unique; the same names must be registered, in the
 * same order, on every rank.
 */
int ckpt_state_add_tensor(ckpt_state *s, const char *name, const char *component, ckpt_stage stage,
			  ckpt_dtype dtype, void *data, size_t local_elems, size_t global_elems,
			  size_t global_offset);
/* An opaque blob: a U8 tensor replicated on every rank. */
int ckpt_state_add_blob(ckpt_state *s, const char *name, const char *component, ckpt_stage stage,
			void *data, size_t bytes);

/* ---- checkpointing ----------------------------------------------------- */

typedef struct ckpt_config {
	const char *root;
	uint32_t keep_last;         /* K newest generations kept (>= 1) */
	uint32_t keep_every;        /* also keep steps that are multiples of this; 0 off */
	int keep_best;              /* also keep the newest generation tagged best */
	uint64_t config_hash;       /* restore refuses generations saved with another */
	size_t journal_max_bytes;   /* per-rank journal bound; 0 = 4 MiB */
	uint32_t file_mode;         /* mode of files created (before umask); 0 = 0600 */
	uint32_t dir_mode;          /* mode of directories created; 0 = 0700 */
	/*
	 * By default ckpt_open refuses a root that the group or others can write,
	 * or that another user owns (they could plant links or swap files).
	 * Set to accept such a root.
	 */
	int allow_shared_root;
	/*
	 * Restored values are input. Called on every rank once its part of a
	 * generation is read and verified, with the state filled: return 0 to
	 * accept, or < 0 with a reason in why to refuse the generation, which
	 * restore then passes over (-CKPT_EREFUSED, named in the fallbacks).
	 */
	int (*validate)(void *arg, uint64_t step, char *why, size_t len);
	void *validate_arg;
	/*
	 * Incremental (differential) checkpoints, off by default. On: tensors
	 * are stored as chunks of chunk_bytes, addressed by their xxh3-128, in
	 * ROOT/chunks/; a save writes only the chunks its predecessor (the last
	 * generation this job saved or restored) did not have, and every
	 * full_every-th save writes all of them again (0 or 1: every save).
	 * Retention and start-up cleanup delete a chunk only when no committed
	 * generation references it. Restore reads and verifies every chunk.
	 */
	int incremental;
	uint32_t full_every;
	uint32_t chunk_bytes;       /* 0: 1 MiB; 4 KiB to 256 MiB */
	/* save anomaly alerts (ckpt/alert.h); all zero: on, with the defaults */
	ckpt_alert_config alert;
	/*
	 * Catalog labels written into each manifest's "labels" (NULL or "": none):
	 * the experiment's name and the code version (e.g. the git commit).
	 * Printable ASCII, at most 127 bytes each.
	 */
	const char *experiment;
	const char *code_version;
	/*
	 * Sealed checkpoints (README "Sealed checkpoints"): with a key file (or,
	 * when key_file is NULL, the file the environment variable CKPT_KEY_FILE
	 * names), every shard and manifest is encrypted and authenticated
	 * (XChaCha20-Poly1305 secretstream, bound to step, rank and file name).
	 * The key file must be private (no access for group or others). With a
	 * key, generations written without one are refused unless allow_unsealed
	 * (or CKPT_ALLOW_UNSEALED=1). Not with incremental.
	 */
	const char *key_file;
	int allow_unsealed;
	uint32_t seal_chunk_bytes;  /* plaintext bytes per sealed chunk; 0: 1 MiB; 4 KiB to 16 MiB */
	/*
	 * Tiered storage, off when NULL. Saves commit on this fast tier (a
	 * node-local directory; ranks that share one form a group) and drain in
	 * the background to `root`, the durable tier, with the same commit
	 * protocol; the drain of a save is finished at the next ckpt call
	 * (save, restore, ckpt_wait, ckpt_close). The fast tier keeps keep_last
	 * generations and those not drained yet; the durable tier keeps
	 * keep_last and the multiples of keep_every. Restore takes the newest
	 * generation that verifies on either tier, the fast copy first for the
	 * same step. Not with incremental checkpoints or ckpt_save_async.
	 */
	const char *fast_root;
} ckpt_config;

typedef struct ckpt ckpt;

/* Telemetry of the latest save, on every rank (bytes and durations of this rank). */
typedef struct ckpt_save_stats {
	uint64_t bytes;             /* this rank's shard */
	uint64_t total_bytes;       /* all shards (rank 0) */
	double phase_seconds[10];   /* indexed like ckpt_save_phase_names() */
	double seconds;
	/* incremental saves, this rank: bytes of chunks written, and reused from the base */
	uint64_t chunk_bytes_written;
	uint64_t chunk_bytes_shared;
	double own_seconds;         /* seconds minus the time waiting in the save's collectives */
} ckpt_save_stats;

#define CKPT_MAX_FALLBACKS 32

typedef struct ckpt_restore_info {
	uint64_t step;
	char name[32];              /* "step-00000040" */
	int nfallbacks;
	struct {
		char name[32];
		char why[512];
	} fallbacks[CKPT_MAX_FALLBACKS];   /* newer generations passed over */
} ckpt_restore_info;

/*
 * Open (and create) the checkpoint root; removes abandoned temporary
 * directories (phase open.cleanup). Collective. All later access is relative
 * to a descriptor of the root, with O_NOFOLLOW: no link is followed and
 * nothing outside the root is read, written or deleted. The state is borrowed until ckpt_close. On
 * failure *out is NULL and, if err is not NULL, *err says why (agreed).
 */
int ckpt_open(ckpt **out, const ckpt_config *cfg, ckpt_comm *comm, ckpt_state *state, ckpt_error *err);
void ckpt_close(ckpt *c);

/*
 * Save the state as generation `step`. Collective. Idempotent for a step.
 * Retention runs on afterwards in the background (rank 0) and is waited for
 * by the next save or restore, ckpt_wait, or ckpt_close.
 */
int ckpt_save(ckpt *c, uint64_t step, unsigned tags);
/* Wait for background work (retention, the drain to the durable tier) to finish. Collective. */
void ckpt_wait(ckpt *c);
/* Tiered storage: the newest step this job's drain committed on the durable tier (0: none). */
uint64_t ckpt_drained_step(const ckpt *c);
const ckpt_save_stats *ckpt_last_save_stats(const ckpt *c);

/*
 * The alerts the latest save raised (ckpt/alert.h): on rank 0, which judges
 * every rank; elsewhere none. *out stays valid until the next save.
 */
int ckpt_last_save_alerts(const ckpt *c, const ckpt_alert **out);

/*
 * Restore the newest valid generation into the state. Collective.
 * -CKPT_ENOGEN: nothing to restore; -CKPT_ENOVALID: generations exist but none
 * verifies (the state's contents are then unspecified); -CKPT_ECONFIG: the
 * newest generation was saved by another configuration or state layout.
 * A generation saved by another world size is resharded (ckpt/reshard.h):
 * each rank's tensors are filled from the saved ranks that held their
 * elements, every saved shard read verified in full; journal event reshard.
 */
int ckpt_restore(ckpt *c, ckpt_restore_info *info);

/* The last error on this rank (code 0 if none). */
const ckpt_error *ckpt_last_error(const ckpt *c);

/* Phase names, in the order of ckpt_save_stats.phase_seconds. */
const char *const *ckpt_save_phase_names(void);

/*
 * What seals and unseals files in this process (a key configured): "openssl"
 * (libcrypto's ChaCha20 and Poly1305 in libsodium's secretstream format) or
 * "libsodium"; the same bytes either way. NULL if libsodium cannot start.
 */
const char *ckpt_seal_engine(void);

#endif
