/*
 * The training-state registry: every piece of state the trainer carries, as
 * named components made of tensors. Checkpointing enumerates it to save and
 * restore; the trajectory digests each component so the oracle can name the
 * one that was not restored.
 *
 * A tensor's layout says how its global contents are spread over ranks:
 * replicated (every rank holds all of it; rank 0's copy is canonical),
 * sharded (each rank holds a contiguous run, in rank order) or per-worker
 * (each rank holds the entries of its virtual workers, in worker order). In
 * the last two cases the global tensor is the concatenation of the ranks'
 * parts in rank order, which does not depend on the world size.
 */
#ifndef REFTRAIN_STATE_H
#define REFTRAIN_STATE_H

#include <stddef.h>
#include <stdint.h>

enum reftrain_dtype { REFTRAIN_F32, REFTRAIN_BF16, REFTRAIN_U64, REFTRAIN_U8 };
enum reftrain_layout { REFTRAIN_REPLICATED, REFTRAIN_SHARDED, REFTRAIN_PER_WORKER };

#define REFTRAIN_MAX_TENSORS 4
#define REFTRAIN_MAX_COMPONENTS 9

typedef struct reftrain_tensor {
	const char *name;
	enum reftrain_dtype dtype;
	enum reftrain_layout layout;
	void *data;              /* this rank's part */
	size_t local_elems;
	size_t global_elems;
	size_t global_offset;    /* of this rank's part, in elements */
} reftrain_tensor;

typedef struct reftrain_component {
	const char *name;
	reftrain_tensor tensors[REFTRAIN_MAX_TENSORS];
	int ntensors;
} reftrain_component;

typedef struct reftrain_registry {
	reftrain_component comps[REFTRAIN_MAX_COMPONENTS];
	int ncomps;
} reftrain_registry;

static inline size_t reftrain_dtype_size(enum reftrain_dtype t)
{
	return t == REFTRAIN_F32 ? 4 : t == REFTRAIN_BF16 ? 2 : t == REFTRAIN_U64 ? 8 : 1;
}

static inline const char *reftrain_dtype_name(enum reftrain_dtype t)
{
	return t == REFTRAIN_F32 ? "F32" : t == REFTRAIN_BF16 ? "BF16" : t == REFTRAIN_U64 ? "U64" : "U8";
}

#endif
