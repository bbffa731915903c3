/*
 * reftrain checkpoint backends: plug your own checkpoint code into the
 * reference trainer and it inherits every scenario the harness runs.
 *
 * A backend is a shared object that exports one symbol,
 *
 *     const reftrain_backend *reftrain_backend_v1(void);
 *
 * returning a static table of the functions below. reftrain loads it with
 * `reftrain --ckpt-backend PATH.so` (or a bare NAME, which means
 * <dir of reftrain>/../lib/reftrain-backend-NAME.so) and refuses, with exit
 * status 2, a file it cannot load, a missing entry symbol, or a table whose
 * `abi` is not REFTRAIN_BACKEND_ABI. Without --ckpt-backend reftrain uses
 * its built-in libckpt backend, which is the same source as
 * reftrain-backend-libckpt.so.
 *
 * This header is self-contained (C99, no MPI, no libckpt): a backend needs
 * neither. reftrain hands it the state as a list of tensors and the job's
 * communicator as a few collective callbacks.
 *
 * Errors. Functions return 0 (restore: also REFTRAIN_BACKEND_NOTHING) or a
 * negative errno (-EIO, -ENOSPC, ...; -EBADMSG for bytes on disk that make
 * no sense), and leave a sentence naming the file and what went wrong for
 * `last_error`. Backends never print and never exit.
 *
 * Collectiveness. open, save, restore and close are collective: every rank
 * calls them, in the same order, with the same step. reftrain agrees on the
 * outcome after each call (if one rank fails, every rank reports the lowest
 * failing rank's message), and refuses a restore after which ranks disagree
 * on the step (or on whether anything was restored): a backend need not
 * coordinate, but one that returns different steps on different ranks has
 * restored a mix, and reftrain says so. `list` and `last_error` are local.
 *
 * Ownership. The config, the tensor table, every tensor's name and data,
 * and the comm are reftrain's and stay valid from open until close; the
 * backend copies nothing it must keep beyond that. The handle is the
 * backend's; close(NULL) is a no-op. Strings returned by the backend
 * (last_error) stay valid until the next call on the same handle.
 *
 * Trust. What a backend reads from disk is untrusted: a restore must bound
 * every size it reads (the tensor table says how many bytes each tensor
 * has) before it allocates or copies, and must not write into a tensor's
 * data beyond local_elems elements.
 */
#ifndef REFTRAIN_BACKEND_H
#define REFTRAIN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on every incompatible change of the structs or functions below. */
#define REFTRAIN_BACKEND_ABI 1
/* The one symbol a backend .so exports: const reftrain_backend *(void). */
#define REFTRAIN_BACKEND_ENTRY "reftrain_backend_v1"

/* restore found nothing to restore: a fresh start, not an error. */
#define REFTRAIN_BACKEND_NOTHING 1

typedef enum reftrain_backend_dtype {
	REFTRAIN_BACKEND_F32 = 0,   /* 4 bytes */
	REFTRAIN_BACKEND_BF16 = 1,  /* 2 bytes */
	REFTRAIN_BACKEND_U64 = 2,   /* 8 bytes */
	REFTRAIN_BACKEND_U8 = 3,    /* 1 byte: opaque blobs */
} reftrain_backend_dtype;

typedef enum reftrain_backend_layout {
	/* every rank holds the whole tensor, with the same bytes (rank 0's is canonical) */
	REFTRAIN_BACKEND_REPLICATED = 0,
	/*
	 * each rank holds its own part: elements [global_offset, global_offset +
	 * local_elems) of a tensor of global_elems (sharded optimizer state,
	 * per-worker RNG streams); the parts of all ranks, in rank order, make
	 * up the tensor
	 */
	REFTRAIN_BACKEND_PER_RANK = 1,
} reftrain_backend_layout;

/* One tensor of this rank's state. The same names, in the same order, on every rank. */
typedef struct reftrain_backend_tensor {
	const char *name;           /* unique, e.g. "master.fp32" */
	const char *component;      /* the state component it belongs to, e.g. "master", "opt", "rng" */
	reftrain_backend_dtype dtype;
	reftrain_backend_layout layout;
	void *data;                 /* this rank's part: save reads it, restore fills it */
	size_t local_elems;
	size_t global_elems;
	size_t global_offset;       /* of this rank's part, in elements (0 if replicated) */
} reftrain_backend_tensor;

/*
 * The job's communicator. Every call is collective over all ranks and
 * returns 0 or a negative errno; ctx is opaque (reftrain's MPI_Comm).
 */
typedef struct reftrain_backend_comm {
	void *ctx;
	int rank;
	int size;
	int (*barrier)(void *ctx);
	/* *value becomes the minimum (max = 0) or the maximum (max = 1) over all ranks */
	int (*allreduce_i64)(void *ctx, int64_t *value, int max);
	/* root's bytes to every rank */
	int (*bcast)(void *ctx, void *buf, size_t bytes, int root);
	/* root receives size * bytes in rank order into recv (ignored on other ranks) */
	int (*gather)(void *ctx, const void *send, size_t bytes, void *recv, int root);
	/*
	 * Optional (NULL if not offered; reftrain offers them): nonblocking
	 * collectives on channel 0 (the calls above) or 1 (a communicator of its
	 * own), with the semantics of libckpt's ckpt_comm_nonblocking
	 * (ckpt/async.h); op is 0 barrier, 1 gather, 2 bcast, 3 allgather.
	 */
	int (*istart)(void *ctx, int chan, int op, const void *send, void *recv, size_t bytes, int root, void **req);
	int (*ifinish)(void *ctx, void *req, int block);
} reftrain_backend_comm;

typedef struct reftrain_backend_config {
	const char *root;           /* the checkpoint directory (--ckpt-dir); may not exist yet */
	int rank, world_size;       /* the same as comm->rank, comm->size */
	uint32_t keep;              /* generations to keep (--keep, >= 1); a backend may keep fewer */
	/* a digest of everything that determines the trajectory: refuse state saved under another */
	uint64_t config_hash;
	const reftrain_backend_tensor *tensors;
	size_t ntensors;
	const reftrain_backend_comm *comm;
	/*
	 * Optional: the trainer's own check of a restored state (ranges and
	 * invariants). A backend that keeps several generations may call it on
	 * every rank once the tensors are filled, to pass over a generation the
	 * trainer would refuse: 0 accepts, < 0 refuses with a reason in why.
	 * reftrain calls it again after restore returns, whatever the backend did.
	 */
	int (*validate)(void *arg, uint64_t step, char *why, size_t len);
	void *validate_arg;
	/*
	 * Incremental checkpoints (--ckpt-incremental), for a backend that has
	 * them (libckpt); others may ignore it: a full save is always correct.
	 * full_every: every M-th save is full; chunk_bytes 0: the backend's default.
	 */
	int incremental;
	uint32_t full_every;
	uint32_t chunk_bytes;
	/*
	 * Sealed checkpoints (--ckpt-key-file, libckpt only: reftrain refuses it
	 * with another backend): the key file, and the plaintext bytes per
	 * sealed chunk (0: the backend's default).
	 */
	const char *key_file;
	uint32_t seal_chunk_bytes;
	/*
	 * Tiered storage (--ckpt-fast-dir), for a backend that has it (libckpt):
	 * fast_root NULL is one tier; others may ignore it (root is durable).
	 * durable_keep_every: the durable tier also keeps multiples of it.
	 */
	const char *fast_root;
	uint32_t durable_keep_every;
} reftrain_backend_config;

/* save flags */
#define REFTRAIN_BACKEND_SAVE_BEST 1u   /* the lowest loss so far was reached since the previous save */

#define REFTRAIN_BACKEND_MAX_FALLBACKS 32

/* What restore restored, filled on success; reftrain writes it to the trajectory. */
typedef struct reftrain_backend_restored {
	uint64_t step;
	char name[64];              /* what the generation is called, e.g. "step-00000040" */
	int nfallbacks;             /* newer generations passed over, newest first */
	struct {
		char name[64];
		char why[512];
	} fallbacks[REFTRAIN_BACKEND_MAX_FALLBACKS];
} reftrain_backend_restored;

/* One generation, as list sees it. */
typedef struct reftrain_backend_generation {
	uint64_t step;
	char name[64];
	int valid;                  /* restore would take it (as far as the backend can tell) */
	char why[256];              /* if not valid */
} reftrain_backend_generation;

typedef struct reftrain_backend {
	uint32_t abi;               /* REFTRAIN_BACKEND_ABI; the first member in every ABI version */
	const char *name;           /* short, for messages: "libckpt", "naive" */

	/* Collective. Create the root if needed. 0 and *out, or < 0 and a sentence in err. */
	int (*open)(void **out, const reftrain_backend_config *cfg, char *err, size_t len);
	/* Collective. Save the state as it is after step `step`; flags: REFTRAIN_BACKEND_SAVE_*. */
	int (*save)(void *h, uint64_t step, unsigned flags);
	/*
	 * Collective. Fill every tensor from the newest generation the backend
	 * trusts and fill *out: 0; REFTRAIN_BACKEND_NOTHING if there is nothing
	 * to restore (tensors untouched); < 0 on failure (tensors unspecified).
	 */
	int (*restore)(void *h, reftrain_backend_restored *out);
	/*
	 * Local, read only; may be NULL. Up to max generations, newest first,
	 * into gens; the number found (which may exceed max) or < 0.
	 */
	int (*list)(void *h, reftrain_backend_generation *gens, int max);
	/* Collective. Finish background work and free the handle; NULL is a no-op. */
	void (*close)(void *h);
	/* Local. The sentence of this rank's last failure on h ("" if none). */
	const char *(*last_error)(void *h);
} reftrain_backend;

typedef const reftrain_backend *(*reftrain_backend_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif
