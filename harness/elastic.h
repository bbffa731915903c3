/*
 * Elastic resume in scenarios: restarts on another world size.
 *
 * `restart: {ranks: [W2, W3, ...]}` runs attempt 2 on W2 ranks, attempt 3 on
 * W3, and every later attempt on the list's last entry; attempt 1 and the
 * uninterrupted runs use trainer.world_size. The oracle still compares with
 * the uninterrupted run on trainer.world_size, bit for bit.
 */
#ifndef HARNESS_ELASTIC_H
#define HARNESS_ELASTIC_H

#include <stdbool.h>
#include <stddef.h>

#include "scenario.h"

/* The ranks attempt `attempt` runs (1, 2, ...; 0, the uninterrupted runs: world_size). */
int harness_attempt_ranks(const harness_scenario *s, int attempt);
/* The most ranks any attempt runs: how many per-rank logs there may be. */
int harness_ranks_max(const harness_scenario *s);
/*
 * After the faults are loaded: a fault naming a rank the world size of its
 * attempt does not have can never fire. 0, or the index of the first such
 * fault (>= 0 returned as index + 1) with why in err.
 */
int harness_elastic_check(const harness_scenario *s, char *err, size_t len);

/*
 * Attempt `attempt` (the next one, after the node losses so far) runs reftrain
 * on a world size that does not divide its 8 virtual workers: reftrain refuses
 * it before any restore, so that attempt cannot be held to restoring the
 * newest acknowledged generation (which stays on disk, untouched).
 */
bool harness_elastic_refused(const harness_scenario *s, int attempt);

#endif
