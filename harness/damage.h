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

/* OVERWRITE: tampering, not decay: a file's bytes replaced by another committed file's (`from`). */
enum harness_damage_kind { HARNESS_BITFLIP, HARNESS_TRUNCATE, HARNESS_DELETE, HARNESS_OVERWRITE };

typedef struct harness_damage {
	int after_attempt;      /* 0: at a step boundary instead (see the fault that carries it) */
	enum harness_damage_kind kind;
	char generation[32];    /* "newest", "oldest", "all" or "step-NNNNNNNN" */
	char file[96];          /* glob on file names in the generation */
	int64_t offset;         /* bitflip: byte offset (negative: from the end); INT64_MIN = seeded */
	int64_t seed;
	int64_t size;           /* truncate: new size */
	char from[128];         /* overwrite: GENERATION/FILE whose bytes are copied over the target */
	int recompute;          /* bitflip: then recompute the plain manifest's hashes, as an attacker would */
	int line;
} harness_damage;

/*
 * Which entries directly under the root are generations, and of which step.
 * pattern NULL: libckpt's, directories named step-NNNNNNNN. Otherwise a
 * program's own layout (scenario key trainer.generations): an entry whose
 * name matches the glob, a regular file or a directory (never a link), whose
 * step is the last run of digits in its name (ckpt-00000040.bin: 40).
 * 1 and *step if name is one, else 0.
 */
int harness_generation_step(const char *pattern, const char *name, int64_t *step);

/*
 * Apply to the committed generations under root (never through a link);
 * returns how many files were damaged. GENERATION step-NNNNNNNN picks the
 * generation of that step; FILE is a glob on the files of a directory
 * generation, or on the name of a generation that is itself a file. Each
 * damaged file gets a line in log: "bitflip|truncate|delete|overwrite ROOT/GEN[/FILE] ...".
 */
int harness_damage_apply(const harness_damage *g, const char *root, const char *pattern, FILE *log);

/* The same, for damage carried by a fault (its target GENERATION/FILE), at a step boundary. */
struct harness_fault;
int harness_damage_apply_fault(const struct harness_fault *f, const char *root, const char *pattern, FILE *log);

/* The generations (steps) that the lines of a damage log name under root; at most max. */
int harness_damage_scan_log(const char *log_path, const char *root, const char *pattern, int64_t *steps, int max);

/* "step-" and eight digits: the only names a libckpt generation may have. */
int harness_is_generation_name(const char *name);

#endif
