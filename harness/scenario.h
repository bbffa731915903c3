/*
 * Scenario files (YAML, see scenarios/README.md): read with libyaml,
 * validated with errors that say file:line:column, what is wrong and what
 * would be valid.
 */
#ifndef HARNESS_SCENARIO_H
#define HARNESS_SCENARIO_H

#include <stddef.h>
#include <stdint.h>

#include <stdbool.h>

#include "oracle.h"
#include "damage.h"
#include "plan.h"

#define HARNESS_MAX_FAULTS 32

/*
 * Limits on what is read: a larger file is refused before it is parsed, and
 * the parse stops at so many values (scalars, mappings, lists) or so deep.
 */
#define HARNESS_SCENARIO_MAX_BYTES (1 << 20)
#define HARNESS_SCENARIO_MAX_NODES 10000
#define HARNESS_SCENARIO_MAX_DEPTH 32
#define HARNESS_SCENARIO_PATH_MAX 4096
#define HARNESS_MAX_ARGS 32
#define HARNESS_MAX_ARG 256

typedef struct harness_trainer {
	char preset[16];
	int world_size;
	int64_t steps;
	int64_t seed;
	int64_t every;
	int keep;
	int accum_steps;              /* steps per optimizer update (reftrain --accum-steps) */
	int frozen;                   /* percent of the parameters frozen (reftrain --frozen), 0 none */
	int incremental;              /* checkpoint.incremental: reftrain --ckpt-incremental */
	int full_every;               /* checkpoint.full_every (reftrain --ckpt-full-every), 0: its default */
	int async;                    /* checkpoint.async: reftrain --ckpt-async */
	int encrypt;                  /* checkpoint.encrypt: reftrain --ckpt-key-file (sealed checkpoints) */
	int tiered;                   /* checkpoint.tiered: reftrain --ckpt-fast-dir <node-local dir> */
	char test_skip_restore[16];   /* test only */
	/*
	 * A program that speaks the trainer protocol (DESIGN.md, "Any program
	 * under test") instead of reftrain: ncommand > 0. Faults reach it
	 * through the LD_PRELOAD shim; step and phase only if it announces them
	 * through the beacon (beacon = 1).
	 */
	char command[HARNESS_MAX_ARGS][HARNESS_MAX_ARG];
	int ncommand;
	char launcher[8];             /* "mpirun" (N ranks), "procs" (N processes, torchrun's env) or "single" */
	int beacon;
	char generations[96];         /* glob on its checkpoint names under the root ("" = libckpt's step-N) */
	char ckpt_backend[512];       /* reftrain --ckpt-backend: a name or a .so path ("" = libckpt built in) */
	int nodes;                    /* simulated (or real) nodes, world_size / nodes ranks each (nodes.h); default 1 */
	/* restart: {ranks: [...]}: the world size of attempt 2, 3, ... (elastic.h); 0 entries: world_size throughout */
	int restart_ranks[HARNESS_MAX_ATTEMPTS];
	int nrestart_ranks;
} harness_trainer;

#define HARNESS_MAX_DAMAGE 8

typedef struct harness_scenario {
	char file[HARNESS_SCENARIO_PATH_MAX];   /* a longer path is refused, never truncated */
	char name[128];
	char description[1024];
	harness_trainer trainer;
	harness_fault faults[HARNESS_MAX_FAULTS];
	int fault_line[HARNESS_MAX_FAULTS];
	int nfaults;
	harness_damage damage[HARNESS_MAX_DAMAGE];
	int ndamage;
	harness_expect expect;
	int max_attempts;
	int timeout_s;
} harness_scenario;

/*
 * 0, or -EINVAL with "file:line:col: what; valid: ..." in err (-errno if
 * unreadable). Only a regular file of at most HARNESS_SCENARIO_MAX_BYTES is
 * read (opened O_NONBLOCK: a FIFO is refused, never waited on).
 */
int harness_scenario_load(const char *path, harness_scenario *s, char *err, size_t errlen);

/* f becomes damage at rest d, done at a step boundary by the injector (when: {step, phase: train.step}). */
void harness_fault_set_damage(harness_fault *f, const harness_damage *d);

/* reftrain checkpoints with a backend other than libckpt (no libfiu points, its own layout). */
bool harness_foreign_backend(const harness_scenario *s);
/* The same from memory (buf need not be NUL-terminated); name is the file name in messages. */
int harness_scenario_load_buffer(const char *name, const char *buf, size_t len, harness_scenario *s, char *err,
				 size_t errlen);

#endif
