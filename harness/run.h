/* Running one scenario: golden (cached), attempts under faults, the oracle. */
#ifndef HARNESS_RUN_H
#define HARNESS_RUN_H

#include "launch.h"
#include "oracle.h"
#include "scenario.h"
#include "story.h"
#include "transitions.h"

#define HARNESS_MAX_COVERAGE 64

/*
 * How faults reach reftrain: its libfiu points (libckpt's phases and I/O
 * calls), or the LD_PRELOAD shim, as for any program (the libc calls under
 * the checkpoint root, reftrain's train.* phases and steps through the
 * beacon). AUTO: libfiu when this build has libfiu points, else the shim.
 * A program of the user's (trainer.command) always gets the shim.
 */
enum harness_inject { HARNESS_INJECT_AUTO = 0, HARNESS_INJECT_FIU, HARNESS_INJECT_SHIM };

typedef struct harness_opts {
	const char *work;          /* NULL: a fresh directory under $TMPDIR */
	int keep;                  /* keep the work directory even on a pass */
	const char *bindir;        /* where reftrain lives */
	const char *cache;         /* golden cache directory */
	enum harness_inject inject;
	const char *ckpt_backend;  /* --ckpt-backend: reftrain's checkpoint backend for every scenario, or NULL */
	/*
	 * --reach DIR (the mutation gate, scripts/mutants): every process of a
	 * scenario's jobs appends the seeded bugs whose sites it reaches
	 * (ckpt_mutant_reached, CKPT_REACH_LOG) to DIR/NAME.reach, the
	 * uninterrupted run's included (kept beside it in the golden cache); a
	 * line "*" says the record is incomplete: count every bug as reached.
	 */
	const char *reach;
	/*
	 * --golden-from CACHE:NAME (the mutation gate, for mutant NAME): a
	 * scenario's uninterrupted runs are taken from CACHE, the baseline's
	 * golden cache made under --reach, when its record there does not name
	 * NAME (nor "*"): up to a bug's first site its build runs as the
	 * baseline's, so those runs would come out the same. Else computed.
	 */
	const char *golden_from;
	const char *golden_mutant;
} harness_opts;

/* o->inject with AUTO resolved for this build. */
enum harness_inject harness_inject_mode(const harness_opts *o);

/*
 * Whether reftrain under the shim can see every fault of s: NULL if so, else
 * a sentence naming the first it cannot (a libckpt phase: only its libfiu
 * points announce those).
 */
const char *harness_shim_blind_spot(const harness_scenario *s, char *buf, size_t len);

typedef struct harness_result {
	char name[128];
	char file[HARNESS_SCENARIO_PATH_MAX];
	enum harness_verdict verdict;
	int harness_error;         /* the harness could not do its job (exit 3) */
	char sentence[1024];
	int attempts;
	int faults_planned;
	int faults_fired;
	harness_oracle_result oracle;
	double seconds;
	double launch_seconds;     /* sum of the mpirun wall times */
	int launches;
	char coverage[HARNESS_MAX_COVERAGE][48];   /* "phase/op" hit by a fired fault */
	int ncoverage;
	char workdir[512];
	harness_transitions transitions;   /* what the restored attempts crossed */
	harness_story story;               /* attempts, fires, loss curves: the HTML report's (story.h) */
} harness_result;

void harness_run_scenario(const harness_scenario *s, const harness_opts *o, harness_result *r);

/*
 * One uninterrupted run of s's trainer (attempt 1, no fault) with the undo
 * record on (PREFIX undo; PREFIX.keep/ must exist), its trajectory to traj
 * and its checkpoints under ckdir: the recording the replayed crash states
 * start from (replay.c). 0 (see jr for how it ended), or -errno.
 */
int harness_record_run(const harness_scenario *s, const harness_opts *o, const char *dir, const char *traj,
		       const char *ckdir, const char *undo, const char *log, harness_job_result *jr);

#endif
