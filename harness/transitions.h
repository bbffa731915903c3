/*
 * Resume coverage: which trainer state transitions the restored runs of a
 * scenario crossed.
 *
 * A transition is a step at which the trainer's state changes regime, where a
 * restore bug that is invisible before it can show. Where they happen is read
 * from the uninterrupted (golden) trajectory's step records, so any trainer
 * that writes the fields takes part:
 *
 *   epoch_boundary      step s with "epoch" different from step s-1's
 *   overflow_skip       step s with "skipped": true
 *   warmup_end          step s with "warmup": false after step s-1 with true
 *   accum_boundary      step s that ends a gradient-accumulation window that
 *                       spans steps ("micro": k, 0 at a window's first step;
 *                       s is a window's last step when step s+1 has micro 0)
 *
 * and from libckpt's journal (ROOT/journal/rank-00000.jsonl, one "open"
 * event per attempt) and the attempts' trajectories:
 *
 *   retention_deletion  retention deleted a generation ("event":"retention")
 *   resave              a "committed" step whose generation already existed:
 *                       acknowledged by an earlier attempt and not deleted by
 *                       retention since, or passed over by this attempt's
 *                       restore (its start record's "fallbacks")
 *
 * An attempt that restored step R and wrote step records up to L:
 *   - crossed X ("across") if X happens at a step s with R < s <= L (for the
 *     journal and committed-record kinds: during that attempt): state
 *     restored from before X was carried across X. For accum_boundary only
 *     the first window end after R counts, and only if R is inside that
 *     window (R is not itself a window end): otherwise no accumulated
 *     gradient was carried.
 *   - restored state from after X ("restored_after") if X happened at a step
 *     s <= R (epoch_boundary, overflow_skip, warmup_end, accum_boundary), or,
 *     for retention_deletion, in an earlier attempt; for resave, if the
 *     restored step itself had been committed twice before.
 */
#ifndef HARNESS_TRANSITIONS_H
#define HARNESS_TRANSITIONS_H

#include <stdint.h>

enum harness_transition {
	HARNESS_TR_EPOCH_BOUNDARY,
	HARNESS_TR_OVERFLOW_SKIP,
	HARNESS_TR_WARMUP_END,
	HARNESS_TR_ACCUM_BOUNDARY,
	HARNESS_TR_RETENTION_DELETION,
	HARNESS_TR_RESAVE,
	HARNESS_TR_COUNT
};

enum harness_crossing_how { HARNESS_CROSSED_ACROSS, HARNESS_CROSSED_RESTORED_AFTER };

#define HARNESS_MAX_CROSSINGS 48

typedef struct harness_crossing {
	int8_t transition;        /* enum harness_transition */
	int8_t how;               /* enum harness_crossing_how */
	int16_t attempt;          /* 2, 3, ...: the restored attempt */
	int64_t restored_from;    /* the step it restored */
	int64_t step;             /* where X happened (the generation's step for the journal kinds) */
} harness_crossing;

typedef struct harness_transitions {
	harness_crossing v[HARNESS_MAX_CROSSINGS];   /* at most one per (transition, how, attempt) */
	int n;
} harness_transitions;

/* "epoch_boundary", ... */
const char *harness_transition_name(int transition);
const char *harness_crossing_how_name(int how);

/*
 * From the golden trajectory, the attempts' trajectories (attempt 1 first)
 * and the checkpoint root (for libckpt's journal, optional: NULL or absent
 * leaves the journal kinds out). Files that cannot be read count as empty.
 */
void harness_transitions_find(const char *golden, const char *const *attempts, int nattempts, const char *ckpt_root,
			      harness_transitions *out);

/* Did t cross transition x in this way? */
int harness_transitions_has(const harness_transitions *t, int transition, int how);

#endif
