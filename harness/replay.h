/*
 * Crash states of any program, by replay: `ckpt-harness crashstates
 * --scenario FILE`. See replay.c.
 */
#ifndef HARNESS_REPLAY_H
#define HARNESS_REPLAY_H

#include "run.h"

typedef struct harness_replay_opts {
	const char *scenario;     /* its trainer is explored; its faults are ignored */
	long step;                /* only the changes of this step (a trainer that announces steps), or 0: all */
	int max_states;           /* explore at most this many changes (0: all) */
	const char *json;
	const char *out_dir;      /* where violations are written as scenarios */
	int keep;                 /* keep the recording's directory */
	int err;                  /* sweep: fail each call with this errno (once, and from then on) instead of crashing */
} harness_replay_opts;

/*
 * Exit code: 0 no violation, 1 violations, 2 bad scenario, 3 could not run.
 * With err set, the same exploration is `sweep --scenario`: each recorded
 * call fails instead of crashing.
 */
int harness_crashstates_replay(const harness_replay_opts *ro, const harness_opts *o);

#endif
