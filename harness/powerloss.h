/*
 * Power loss, simulated after the fact. What survives, under the strict POSIX
 * model this follows (as ALICE and CrashMonkey do):
 *   - file data (a write or truncation) only if the file was fsynced (or
 *     fdatasynced) after it;
 *   - a directory entry (create, mkdir, rename, unlink, rmdir) only if its
 *     parent directory was fsynced after it (both parents, for a rename);
 *   - everything else is rolled back, newest first, from libckpt's undo
 *     record (ckpt/src/undo.c): old sizes and bytes, created names removed,
 *     renames reversed, unlinked and replaced files relinked.
 * The result is the most pessimistic state a real machine could come back
 * with; it is what the next attempt finds.
 */
#ifndef HARNESS_POWERLOSS_H
#define HARNESS_POWERLOSS_H

#include <stdio.h>

/* Roll back the non-durable changes in PREFIX.rank-*.jsonl; returns how many (or < 0). */
int harness_powerloss_apply(const char *prefix, int world, const char *root, FILE *log);

#endif
