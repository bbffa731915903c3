/*
 * Work directories that name their owner. A harness process that is killed
 * (SIGKILL, OOM, a lost node) cannot remove its directories, so each one
 * carries the owning process's pid and start time (field 22 of
 * /proc/PID/stat, so a reused pid is not mistaken for the owner):
 *
 *   PARENT/PREFIX.PID-START.XXXXXX      e.g. /tmp/ckpt-harness-kill-rank1.4242-918273.a1B2c3
 *
 * At start the harness removes the directories of that pattern, in the
 * parents it uses, whose owner is dead, unless the owner kept it on purpose
 * (a failed scenario's evidence: a file named KEPT inside). Nothing else is
 * touched: other names, symbolic links, other users' directories.
 */
#ifndef HARNESS_WORKDIR_H
#define HARNESS_WORKDIR_H

#include <stddef.h>

/* mkdtemp of PARENT/PREFIX.PID-START.XXXXXX into out. 0 or -errno. */
int harness_workdir_create(char *out, size_t len, const char *parent, const char *prefix);

/* The owner keeps dir on purpose (evidence): later sweeps leave it. */
void harness_workdir_keep(const char *dir);

/*
 * Remove the stale directories in parent whose name is PREFIX*.PID-START.XXXXXX
 * (PREFIX followed by no '.') and whose owner is dead. Returns how many.
 */
int harness_workdir_sweep(const char *parent, const char *prefix);

/* Remove path and everything below it; a symbolic link inside is removed, never followed. 0 or -1. */
int harness_workdir_remove(const char *path);

/* $TMPDIR, or /tmp. */
const char *harness_workdir_tmp(void);

#endif
