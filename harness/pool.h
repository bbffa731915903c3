/*
 * Scenarios run concurrently, each in a child process of its own with its
 * own work directory, for the suite, chaos and shrinking: a stream of
 * scenarios (next) and a callback per result (done), with which faults of
 * the plan fired. A runner dies with the harness; SIGINT/SIGTERM reach
 * every runner and start nothing new.
 */
#ifndef HARNESS_POOL_H
#define HARNESS_POOL_H

#include <stdint.h>

#include "run.h"

/* Bit i: fault i of the scenario fired (its fault log says so); damage after an attempt counts as fired. */
typedef uint64_t harness_fired;
#define HARNESS_FIRED_DAMAGE(i) ((harness_fired)1 << (HARNESS_MAX_FAULTS + (i)))

typedef struct harness_pool {
	const harness_opts *o;
	const char *root;        /* work directories go to ROOT/N */
	int jobs;
	int keep;                /* keep the work directory of a pass too */
	/*
	 * 1: each run makes its work directory where o says, as a single run
	 * does (the suite's), and fired stays 0; 0: ROOT/N, kept unless it passed.
	 */
	int own_workdir;
	/* the next scenario into *s (its index idx); 0, or 1 when there is none */
	int (*next)(void *arg, long idx, harness_scenario *s);
	void (*done)(void *arg, long idx, const harness_scenario *s, const harness_result *r, harness_fired fired);
	void *arg;
} harness_pool;

/*
 * Run until next says there is nothing more (or SIGINT/SIGTERM). A pass's
 * work directory is removed (unless keep); any other result keeps it,
 * named in r->workdir. Returns how many ran, or -errno.
 */
long harness_pool_run(const harness_pool *p);

/* Which faults of s fired in the run whose work directory is dir. */
harness_fired harness_pool_fired(const harness_scenario *s, const char *dir);

#endif
