/*
 * Shrinking a failing chaos plan to a small scenario that still fails:
 * start from the faults that actually fired, then try smaller candidates
 * (drop a fault, a lower nth, an earlier step, fewer ranks, fewer steps, a
 * simpler action: torn -> kill, power_loss -> kill, persistent errno ->
 * transient), keeping a candidate only when it FAILs 3 runs out of 3.
 */
#ifndef HARNESS_SHRINK_H
#define HARNESS_SHRINK_H

#include "pool.h"

#define HARNESS_SHRINK_REPEAT 3

typedef struct harness_shrink_result {
	harness_scenario s;        /* the smallest that failed 3 of 3 (the fired plan if nothing smaller did) */
	int planned;               /* faults (and damage) in the plan */
	int fired;                 /* of them, fired in the failing run */
	int shrunk;                /* in s */
	int confirmed;             /* the fired plan failed 3 of 3 (else s is it, unconfirmed: flaky) */
	int fails_of;              /* how many of HARNESS_SHRINK_REPEAT runs of s failed */
	int candidates;            /* candidates run */
	char sentence[1024];       /* the oracle's sentence on s */
} harness_shrink_result;

/*
 * failing: the plan of a run that FAILed; fired: which of its faults fired.
 * Runs up to jobs at a time under root (ROOT/shrink-N/...), at most budget
 * candidates. 0, or -errno.
 */
int harness_shrink(const harness_scenario *failing, harness_fired fired, const harness_opts *o, int jobs,
		   const char *root, int budget, harness_shrink_result *out);

/* The verdict chaos gives a run: a PASS whose only flaw is a planned fault that was never reached is a PASS. */
enum harness_verdict harness_chaos_verdict(const harness_result *r);

#endif
