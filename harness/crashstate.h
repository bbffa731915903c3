/*
 * Crash-state exploration of one save (ckpt-harness crashstates).
 *
 * One real run of reftrain records, through libckpt's undo record, every
 * change of the save at step S. Every crash state of that save is then
 * materialized on a copy of the final checkpoint root: a crash after each
 * operation (the page cache intact), the same with a power cut (unsynced
 * data and unsynced names dropped, together and separately), with the last
 * write torn at 512 and 4096 bytes, and, at every sync point, with any one
 * non-durable operation dropped. Each state gets a restore-only check, in
 * process (threads as ranks, no training): the restored generation must be
 * step S or the one before it, its components must equal the uninterrupted
 * run's at that step, restore must not refuse while a valid generation
 * exists, and once the save was acknowledged it must be step S.
 *
 * Acknowledged means the earlier of two points among the recorded
 * operations: libckpt's (LATEST in place) and the trainer's own, its
 * `committed` record. The recording run sets $CKPT_ACK_LOG; the trainer
 * appends {"t": CLOCK_MONOTONIC ns, "step": S} there once the record is out
 * (reftrain does; for any other trainer the fault shim can, on seeing the
 * record written to $CKPT_HARNESS_TRAJECTORY), the clock the undo record
 * stamps operations with, so the acknowledgement falls between two of them.
 * Every crash state that holds every operation begun before it must restore S.
 */
#ifndef HARNESS_CRASHSTATE_H
#define HARNESS_CRASHSTATE_H

typedef struct harness_cs_opts {
	const char *preset;
	int world;
	long step;
	const char *json;
	const char *bindir;
	const char *out_dir;      /* where violation scenarios are written */
	int keep;
	int jobs;                 /* processes checking states; 0: two per online CPU */
	int shim;                 /* the undo record from the fault shim (LD_PRELOAD), not from libckpt's I/O layer */
	int incremental;          /* the save explored is incremental (--ckpt-incremental --frozen 50): chunks */
	int async;                /* --async: the save is a background one (reftrain --ckpt-async) */
} harness_cs_opts;

/* Exit code: 0 no violation, 1 violations found, 3 could not run. */
int harness_crashstates(const harness_cs_opts *o);

#endif
