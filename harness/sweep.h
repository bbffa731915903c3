/*
 * The Nth-operation sweep on real jobs (ckpt-harness sweep), the way SQLite
 * tests I/O errors: for each rank, fail its Nth I/O call of the save at step
 * S, once (transient) and from then on (persistent), for N = 1, 2, ... until
 * a run fires no fault. Each run also kills a rank two steps after the save,
 * so the restart shows which generation survived; the oracle checks every
 * run. A failing case is written out as a scenario file.
 */
#ifndef HARNESS_SWEEP_H
#define HARNESS_SWEEP_H

#include "run.h"

typedef struct harness_sweep_opts {
	const char *preset;
	int world;
	long step;
	int err;
	int only_rank;          /* -1: every rank */
	const char *json;
	const char *out_dir;
} harness_sweep_opts;

/* Exit code: 0 every case passed, 1 a case failed, 3 could not run. */
int harness_sweep(const harness_sweep_opts *so, const harness_opts *o);

#endif
