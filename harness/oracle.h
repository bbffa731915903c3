/*
 * The oracle: stitches a run's attempts and compares them, bit for bit, with
 * the uninterrupted (golden) trajectory. Every step record of every attempt
 * must equal the golden record of that step; every resume must restore a
 * generation at least as new as the newest one acknowledged (committed)
 * before the crash, and restore exactly the golden state of that step,
 * component by component; the run must finish (or fail cleanly, if that is
 * what the scenario expects). A difference is reported as one sentence that
 * names the first step and what differs.
 */
#ifndef HARNESS_ORACLE_H
#define HARNESS_ORACLE_H

#include <stdint.h>

#define HARNESS_MAX_ATTEMPTS 16
#define HARNESS_MAX_DAMAGED 256
#define HARNESS_MAX_EXPECTED_ALERTS 16

enum harness_outcome { HARNESS_RESUME_BITWISE, HARNESS_CLEAN_FAILURE };

/* In restored_from_at[]: the restart must start fresh (restore nothing). */
#define HARNESS_EXPECT_FRESH (-3)

typedef struct harness_expect {
	enum harness_outcome outcome;
	char error[256];           /* clean_failure: a substring of the error */
	/*
	 * `refused: WORDS`: the first restart that gets through its restore must
	 * have passed over at least one generation, each with a reason that
	 * contains WORDS (e.g. "authentication failed"). Empty: not stated.
	 */
	char refused[128];
	/*
	 * `restored_from: N`: the first restart that gets through its restore
	 * (writes its start record) must restore step N; if none does, the
	 * scenario is an ERROR (the expectation could not be checked). -1: not stated.
	 */
	int64_t restored_from;
	/* `max_lost_steps: N`: no restart may lose more than N steps. -1: not stated. */
	int64_t max_lost_steps;
	/*
	 * Per attempt, `restored_from: {3: 30}` / `max_lost_steps: {3: 5}`: index
	 * is the attempt number (2..HARNESS_MAX_ATTEMPTS); -1: not stated;
	 * HARNESS_EXPECT_FRESH (restored_from only, written `none`): starts fresh.
	 * An attempt that never wrote its start record makes a stated entry an ERROR.
	 */
	int64_t restored_from_at[HARNESS_MAX_ATTEMPTS + 1];
	int64_t max_lost_at[HARNESS_MAX_ATTEMPTS + 1];
	int damaged_newest;        /* the scenario damages checkpoints at rest (informational) */
	/*
	 * libckpt's save alerts in the trajectories ({"event":"alert"}; alerts.c):
	 * UNCHECKED, NONE (none may be raised: `alerts: []`, or by default a
	 * reftrain scenario without delay_ms or errno faults), or LISTED: each
	 * entry must be raised (metric -1: any), and no rank outside the list.
	 */
	enum { HARNESS_ALERTS_UNCHECKED, HARNESS_ALERTS_NONE, HARNESS_ALERTS_LISTED } alerts_mode;
	int nalerts;
	struct {
		int rank;
		int metric;            /* index into harness_alert_metrics, or -1 */
	} alerts[HARNESS_MAX_EXPECTED_ALERTS];

	/*
	 * Filled in by the run, not the scenario. Retention keeps the newest
	 * `keep` generations (0: unknown, every acknowledged one counts), and
	 * the generations damaged at rest, each with the first attempt that
	 * could see the damage: an acknowledged generation may be lost only if
	 * it was damaged after its acknowledgement, or if `keep` newer
	 * acknowledged generations exist.
	 */
	int keep;
	/* Faults fired inside attempt A's restore (read errors...): it may refuse or fall back. */
	unsigned char restore_faulted[HARNESS_MAX_ATTEMPTS + 1];
	/*
	 * Tiered storage: a node's node-local directory (its fast tier) was
	 * wiped before attempt A started. A generation acknowledged with
	 * "tier":"fast" survives that only if its "drained" record (committed
	 * on the durable tier) came in an attempt before A.
	 */
	unsigned char fast_wiped[HARNESS_MAX_ATTEMPTS + 1];
	int ndamaged;
	int64_t damaged_step[HARNESS_MAX_DAMAGED];
	int damaged_from_attempt[HARNESS_MAX_DAMAGED];
} harness_expect;

/* Every field "not stated". */
void harness_expect_init(harness_expect *e);

/* SKIP: the scenario cannot run in this mode (said why); it never counts as a pass. */
enum harness_verdict { HARNESS_PASS = 0, HARNESS_FAIL = 1, HARNESS_ERROR = 2, HARNESS_SKIP = 3 };

typedef struct harness_oracle_result {
	enum harness_verdict verdict;
	char sentence[1024];
	int attempts;
	int64_t restored_from[HARNESS_MAX_ATTEMPTS];   /* per attempt, -1 = fresh start, -2 = no start record */
	int64_t lost_steps[HARNESS_MAX_ATTEMPTS];      /* per crash */
	int ncrashes;
	int64_t max_lost;
	int finished;
	int stopped_failed;        /* the last attempt ended with status "failed" (it said why) */
	int64_t lost_acked;        /* the acknowledged step a restart lost (the reported finding), or 0 */
} harness_oracle_result;

/*
 * Compare. expected_steps is the run's --steps. Returns 0, or < 0 if a file
 * cannot be read (sentence says which).
 */
int harness_oracle_compare(const char *golden, const char *const *attempts, int nattempts,
			   int64_t expected_steps, const harness_expect *exp, harness_oracle_result *out);

/* "optimizer moments (opt)" for "opt". */
const char *harness_component_description(const char *name);

#endif
