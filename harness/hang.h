/*
 * A hang is a verdict. When the watchdog stops an attempt, this says where
 * each rank was, from the injector's trail (the last fault point each rank
 * reached, and a delay it was sleeping, see inject.h) and, for a rank that
 * left no trail, the last record of libckpt's journal under the checkpoint
 * root, e.g.
 *
 *   the job hung: rank 2 waits in restore.verify of step 30 (an injected
 *   delay of 600000 ms) while ranks 0, 1 and 3 passed restore.verify of
 *   step 30 and wait for it; the watchdog stopped attempt 2 after 8 s
 *
 * (run.c adds how the watchdog's limit was sized.)
 */
#ifndef HARNESS_HANG_H
#define HARNESS_HANG_H

#include <stddef.h>

/*
 * The sentence for attempt `attempt` of a world-rank job stopped after
 * watchdog_s, from PREFIX.rank-R trail files and ROOT/journal/. Always
 * writes a sentence (saying what is unknown); returns how many ranks had a
 * readable trail.
 */
int harness_hang_describe(const char *trail_prefix, const char *ckpt_root, int world, int attempt, double watchdog_s,
			  char *out, size_t len);

#endif
