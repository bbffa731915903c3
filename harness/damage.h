/*
 * Damage at rest: flip a bit in, truncate or delete the files of committed
 * generations, as a disk or an operator would. The harness applies it
 * between attempts (after a crash); the injector applies it at a step
 * boundary while the job runs.
 */
#ifndef HARNESS_DAMAGE_H
#define HARNESS_DAMAGE_H

#include <stdint.h>
#include <stdio.h>

enum harness_damage_kind { HARNESS_BITFLIP, HARNESS_TRUNCATE, HARNESS_DELETE };

typedef struct harness_damage {
	int after_attempt;      /* 0: at a step boundary instead (see the fault that carries it) */
	enum harness_damage_kind kind;
	char generation[32];    /* "newest", "oldest", "all" or "step-NNNNNNNN" */
	char file[96];          /* glob on file names in the generation */
	int64_t offset;         /* bitflip: byte offset (negative: from the end); INT64_MIN = seeded */
	int64_t seed;
	int64_t size;           /* truncate: new size */
	int line;
} harness_damage;

/*
 * Apply to the committed generations under root (real directories named
 * step-NNNNNNNN, never through a link); returns how many files were damaged.
 * Each damaged file gets a line in log: "bitflip|truncate|delete ROOT/step-N/FILE ...".
 */
int harness_damage_apply(const harness_damage *g, const char *root, FILE *log);

/* The generations (steps) that the lines of a damage log name under root; at most max. */
int harness_damage_scan_log(const char *log_path, const char *root, int64_t *steps, int max);

/* "step-" and eight digits: the only names a generation may have. */
int harness_is_generation_name(const char *name);

#endif
