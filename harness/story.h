/*
 * The story of one scenario run, for the HTML report (html.h): each attempt
 * (what it restored, the steps it wrote, what it committed, how it ended),
 * the faults that fired, the uninterrupted and resumed loss curves, and the
 * first difference from the uninterrupted run.
 *
 * It is read from the run's files (the attempts' trajectories, the per-rank
 * fault logs, the cached uninterrupted trajectory) right after the oracle,
 * before a passing run's work directory is removed, and kept inside
 * harness_result: fixed size, no pointer, so a suite's runner can hand it to
 * its parent as bytes. Everything is bounded; what does not fit is counted
 * (and the page says so), never overflowed.
 */
#ifndef HARNESS_STORY_H
#define HARNESS_STORY_H

#include <stdint.h>

#include "oracle.h"
#include "telemetry.h"

#define HARNESS_STORY_POINTS 240      /* points of the uninterrupted loss curve; the resumed one gets twice */
#define HARNESS_STORY_FIRES 32        /* distinct fires kept (repeats of one are folded into `count`) */
#define HARNESS_STORY_COMMITS 24      /* committed steps kept per attempt */
#define HARNESS_STORY_DAMAGE 8

typedef struct harness_story_fire {
	int16_t fault;             /* index of the fault in the plan (0-based) */
	int32_t line;              /* its line in the scenario file (0 unknown) */
	int16_t attempt;
	int32_t rank;
	int64_t step;
	int32_t nth;
	int32_t count;             /* fires of this fault on this rank in this attempt (a persistent errno repeats) */
	char phase[24];
	char op[12];
	char action[40];           /* as the fault log says: "torn:4096+kill", "errno:EIO", "power_loss" */
	char path[80];
} harness_story_fire;

typedef struct harness_story_attempt {
	int64_t restored_from;     /* the start record's step; -1 a fresh start; -2 no start record */
	char checkpoint[40];       /* the generation it restored */
	int32_t world_size;        /* the start record's (0: not said) */
	char fallbacks[320];       /* the generations its restore passed over, and why ("" none) */
	int64_t first_step, last_step;   /* the step records it wrote; -1 none */
	int ncommits;              /* every `committed` record (the first HARNESS_STORY_COMMITS are kept) */
	int64_t commits[HARNESS_STORY_COMMITS];
	int save_failed;           /* `save_failed` records */
	char end[16];              /* the end record's status: done, failed, stopped; "" none (killed) */
	char error[240];           /* the end record's error */
} harness_story_attempt;

typedef struct harness_story_damage {
	int after_attempt;
	char what[160];            /* "bitflip newest/rank-*.safetensors" */
} harness_story_damage;

typedef struct harness_story {
	int collected;             /* 0: the run never got to its attempts (see the verdict's sentence) */
	int64_t steps;             /* the run's steps */
	int nattempts;
	harness_story_attempt attempt[HARNESS_MAX_ATTEMPTS];
	int nfires;
	int fires_dropped;         /* distinct fires beyond HARNESS_STORY_FIRES */
	harness_story_fire fire[HARNESS_STORY_FIRES];
	int ndamage;
	harness_story_damage damage[HARNESS_STORY_DAMAGE];

	/* the loss curves (the `loss` field of the step records), sampled every `stride` steps */
	int stride;
	int ngolden;
	int32_t golden_step[HARNESS_STORY_POINTS + 2];   /* + the first and the last step */
	double golden_loss[HARNESS_STORY_POINTS + 2];
	int nresumed;
	int resumed_dropped;       /* points beyond the buffer */
	int32_t resumed_step[2 * HARNESS_STORY_POINTS];
	int8_t resumed_attempt[2 * HARNESS_STORY_POINTS];   /* 1-based */
	double resumed_loss[2 * HARNESS_STORY_POINTS];

	/*
	 * The first difference from the uninterrupted run, in the oracle's
	 * order (attempt by attempt: its restored state, then its step
	 * records): -1 none. diff_restore: the restored state differs (the
	 * start record's digests against the uninterrupted run's at that step).
	 */
	int64_t diff_step;
	int diff_attempt;
	int diff_restore;
	char diff_keys[160];       /* the fields (or restored components) that differ */
	/* The first step whose loss differs, and the two values as written: -1 none. */
	int64_t loss_diff_step;
	int loss_diff_attempt;
	char loss_golden[24], loss_resumed[24];
	/* save times per rank and the alerts, from libckpt's journal (telemetry.h; empty without one) */
	harness_telemetry tele;
} harness_story;

struct harness_scenario;

/*
 * Read the story of a run: s the scenario, golden the uninterrupted
 * trajectory, attempts[0..n) the attempts' trajectories, faultlog the prefix
 * of the per-rank fault logs (PREFIX.rank-R.jsonl). Unreadable or missing
 * files leave their part empty; never fails.
 */
void harness_story_collect(harness_story *st, const struct harness_scenario *s, const char *golden,
			   const char *const *attempts, int n, const char *faultlog);

/* A loss as written ("0x3f9a1b2c" fp32 bits, "0x..." 16 digits fp64 bits, or a JSON number): 0, or -1. */
int harness_story_loss(const char *hex, double *out);

#endif
