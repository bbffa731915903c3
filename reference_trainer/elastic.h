/*
 * Elastic resume: a job saved on W1 ranks resumes on any W2 that divides the
 * virtual workers V, bit for bit.
 *
 * reftrain's part is its registry (train.c): every per-rank tensor is
 * described by its place in a global layout that does not depend on the world
 * size. Master weights and AdamW moments are the whole parameter vector cut
 * into whole chunks (reftrain_shard_of), per-virtual-worker state (dropout
 * streams, accumulated gradients) is worker-major, at worker id x its size,
 * never at the rank. libckpt reshards a generation saved by another world
 * size from that layout (ckpt/include/ckpt/reshard.h), so each worker's
 * state lands on whichever rank now hosts it, and the restored state's
 * checks (validate_restored: each dropout stream is its worker's) hold.
 */
#ifndef REFTRAIN_ELASTIC_H
#define REFTRAIN_ELASTIC_H

#include <stddef.h>

#include "config.h"

/*
 * A world size that does not divide V: there is no way to host the workers
 * evenly, so the job is refused before anything is restored. Collective
 * (after MPI_Init). Rank 0 says why on stderr and, so that the refusal reads
 * as a clean failure, in an end record of the trajectory. Returns the exit
 * status, 2 (bad usage).
 */
int reftrain_elastic_refuse(const reftrain_config *cfg, int world, int rank);

#endif
