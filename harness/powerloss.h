/*
 * Power loss, simulated after the fact, from libckpt's undo record
 * (ckpt/src/undo.c). What survives, under the strict POSIX model this follows
 * (as ALICE and CrashMonkey do):
 *   - file data (a write or truncation) only if the file was fsynced (or
 *     fdatasynced) after it;
 *   - a directory entry (create, mkdir, rename, unlink, rmdir) only if its
 *     parent directory was fsynced after it (both parents, for a rename);
 * everything else is rolled back, newest first: old sizes and bytes restored,
 * created names removed, renames reversed, unlinked and replaced files
 * relinked. That is the most pessimistic state a machine could come back with.
 *
 * The same engine materializes any crash state of a recorded run (crash
 * after the kth operation, with or without a power cut, with one operation
 * dropped, with the last write torn): undo a chosen set of records on a copy
 * of the final tree.
 */
#ifndef HARNESS_POWERLOSS_H
#define HARNESS_POWERLOSS_H

#include <stdint.h>
#include <stdio.h>

typedef struct harness_undo_rec {
	uint64_t t, seq, step;
	int rank;
	int pid;                /* the writing process (0 in records from before pids were written) */
	char op[12];            /* write truncate create mkdir rename unlink rmdir fsync */
	char call[16];          /* the I/O call the fault point saw: open, write, fsync, ... */
	char phase[32];
	char path[1024], to[1024], saved[1024];
	uint64_t ino, parent, from_parent, to_parent;
	int64_t off, len, old_size, size, saved_off;
	int failed;
} harness_undo_rec;

typedef struct harness_undo {
	harness_undo_rec *v;    /* in time order */
	int n, cap;
} harness_undo;

/*
 * Read PREFIX.rank-R.jsonl for R < world (a missing file: that rank changed
 * nothing). The records are untrusted: every path the rollback would touch
 * must be inside root or be root (the checkpoint root the records were made
 * under, as libckpt was given it: no '..', '.' or empty components; fsync
 * records, which touch nothing, are exempt), every kept copy a
 * file in PREFIX.keep/, every line a complete record of a known op with its
 * fields, at most 16 KiB. Returns 0, or -EINVAL with "FILE:LINE: undo record
 * refused: ..." in err (nothing loaded), or -errno.
 */
int harness_undo_load(harness_undo *u, const char *prefix, int world, const char *root, char *err, size_t errlen);
/* One rank's records from f (name for messages), appended to u unsorted; same checks. */
int harness_undo_load_stream(harness_undo *u, FILE *f, const char *name, int rank, const char *prefix,
			     const char *root, char *err, size_t errlen);
void harness_undo_free(harness_undo *u);
/* Record i would survive a power cut right before record `horizon`. */
int harness_undo_durable(const harness_undo *u, int i, int horizon);
int harness_undo_is_entry_op(const harness_undo_rec *r);

/*
 * On `root`, a copy of the tree `orig` (or orig itself), undo every record i
 * with sel[i] set, newest first. If torn_index >= 0, that write keeps only its
 * first torn_bytes. Returns how many records were undone.
 */
int harness_undo_apply(const harness_undo *u, const char *orig, const char *root, const unsigned char *sel,
		       int torn_index, int64_t torn_bytes, FILE *log);

/*
 * After a power_loss fault: roll back in place what was not durable. The
 * undo records of every attempt since the last power cut (prefixes, oldest
 * first) form one history: data an earlier, killed attempt never synced is
 * still only in the page cache, and a power cut now loses it too.
 * Returns how many records were undone, or < 0 if an undo record was
 * refused (the reason is in log) or memory ran out.
 */
int harness_powerloss_apply(const char *const *prefixes, int nprefix, int world, const char *root, FILE *log);

#endif
