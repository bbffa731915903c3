/*
 * ckpt-harness chaos: seeded random fault plans, judged by the oracle,
 * failures shrunk to small scenario files (shrink.h).
 *
 * Run i's plan is a pure function of (seed, i, the trainer and the fault
 * kinds asked for): a counter-based generator, never the clock, so the plan
 * alone replays the run (`--seed S --run I` draws it again, and the scenario
 * written for a failure replays through `ckpt-harness run`). Only plans that
 * the scenario loader accepts are drawn: each is written as YAML and read
 * back through harness_scenario_load_buffer.
 */
#ifndef HARNESS_CHAOS_H
#define HARNESS_CHAOS_H

#include <stdint.h>

#include "run.h"

/*
 * The fault kinds a plan may draw. To add one: a name in
 * harness_chaos_kind_names (chaos.c), a case in draw_kind that fills the
 * fault, and what the shrinker may simplify it to (shrink.c, simpler()).
 */
enum harness_chaos_kind {
	HARNESS_CHAOS_KILL, HARNESS_CHAOS_ERRNO, HARNESS_CHAOS_TRANSIENT, HARNESS_CHAOS_SHORT, HARNESS_CHAOS_TORN,
	HARNESS_CHAOS_POWER_LOSS, HARNESS_CHAOS_DAMAGE, HARNESS_CHAOS_DELAY,
	HARNESS_CHAOS_NODE_LOSS,   /* every rank of one node killed, its local directory wiped; a trainer of 2+ nodes */
	HARNESS_CHAOS_NKINDS
};
extern const char *const harness_chaos_kind_names[HARNESS_CHAOS_NKINDS];

typedef struct harness_chaos_opts {
	uint64_t seed;
	long runs;                 /* how many runs; 0: until the budget is spent */
	double budget_s;           /* 0: no time limit (runs decides) */
	long only_run;             /* >= 0: draw and run that one run only (a replay) */
	int jobs;
	unsigned kinds;            /* bit k: enum harness_chaos_kind k may be drawn */
	int max_faults;            /* 1 to max_faults faults per plan */
	harness_scenario base;     /* the trainer, max_attempts and timeout every plan runs */
	char base_dir[4096];       /* the folder {scenario_dir} stood for ("" none) */
	const char *out_dir;       /* shrunk failures go here */
	const char *json, *junit, *html;   /* reports, as suite writes them (--html: html.h) */
	int keep;
	int shrink;                /* 0: write the failing plan as it fired, unshrunk */
	int shrink_budget;         /* at most so many candidates tried per failure */
	int print_plan;            /* print each plan's YAML before it runs */
	int plans_only;            /* print the plans, run nothing */
	int first;                 /* start no new run after the first failure */
} harness_chaos_opts;

/* Bits of the kinds in "kill,errno,..." or "all"; 0 if a name is unknown (*bad points at it). */
unsigned harness_chaos_parse_kinds(const char *list, const char **bad);

/*
 * Draw run idx's plan into *s (base trainer, drawn faults, expect
 * resume_bitwise). 0, or -EINVAL if no valid plan came out of many draws
 * (err says why).
 */
int harness_chaos_draw(const harness_chaos_opts *co, const harness_opts *o, long idx, harness_scenario *s, char *err,
		       size_t errlen);

/* The command: exit code as suite's (0, 1 a failure found, 3 could not run). */
int harness_chaos(const harness_chaos_opts *co, const harness_opts *o);



/*
 * The command line of `ckpt-harness chaos` (argv[2..]) into *co, *cache and
 * *inject (both may stay NULL / AUTO). 0, or 2 after saying what is wrong.
 */
int harness_chaos_parse_args(int argc, char **argv, harness_chaos_opts *co, const char **cache,
			     enum harness_inject *inject);
extern const char harness_chaos_usage[];
#endif
