/*
 * ckpt-harness from-journal ROOT: a crashed job's libckpt journal
 * (ROOT/journal/rank-N.jsonl, ckpt/src/journal.c) turned into a scenario
 * that crashes the job at the same rank, step, phase and operation.
 *
 * The journal records each I/O call after it returns, so a rank's last
 * record is the last call it completed: the crash came at its next call.
 * The scenario kills that rank at its next I/O call in the same step
 * (when: {attempt, rank, step, op: any, nth: K+1}, K the calls it completed
 * in that step, every phase: the next call may be the first of the next
 * phase, which the journal cannot name), in the same attempt (each "open"
 * record starts one; the start-up cleanup journaled before it is its first
 * calls, at step 0).
 * Which rank crashed: the one whose last call is the newest (by the
 * journal's clock): the others were killed by the launcher after it died,
 * most of them blocked in a collective, waiting for it, since their last
 * call. Ranks in the same phase as that one were busy side by side: of
 * them, the one with the fewest calls there stopped first. A guess all the
 * same where ranks ran I/O side by side (--rank R says which).
 *
 * What is read is untrusted: at most HARNESS_JOURNAL_MAX_READ bytes from
 * the end of each file, lines of at most HARNESS_JOURNAL_LINE_MAX, regular
 * files only, never through a link, never blocking.
 */
#ifndef HARNESS_FROM_JOURNAL_H
#define HARNESS_FROM_JOURNAL_H

#include <stddef.h>

#include "scenario.h"

#define HARNESS_JOURNAL_MAX_READ (16 << 20)
#define HARNESS_JOURNAL_LINE_MAX 8192
#define HARNESS_JOURNAL_MAX_RANKS 1024

typedef struct harness_crash_point {
	int rank;
	int attempt;               /* the journal's segment (1 = the first "open" read) */
	long long step;            /* -1: none (a phase before any step) */
	char phase[32];
	int calls;                 /* I/O calls this rank completed in (step, phase) of that attempt */
	int step_calls;            /* ... in that step, every phase */
	char last_op[16];          /* the last of them ("" if none) */
	char last_path[128];       /* its file name */
	int world_size;
} harness_crash_point;

/*
 * Read ROOT's journal: the crash point of each attempt 1..*nattempts (the
 * last one read is the crashed job's), the checkpoint interval it shows
 * (*every, 0 if it shows no two saves), the last step saved. rank >= 0
 * forces the crashed rank. 0, or -errno with err set.
 */
int harness_journal_crash_points(const char *root, int rank, harness_crash_point *points, int max, int *nattempts,
				 long long *every, long long *last_saved, char *err, size_t errlen);

/* The command: ckpt-harness from-journal ROOT [-o FILE] [--rank R] [--attempt N] [--scenario BASE]. */
int harness_from_journal_main(int argc, char **argv);

#endif
