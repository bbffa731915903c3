/*
 * Launching jobs and leaving nothing behind. A launcher turns (ranks,
 * program, environment) into a command line: today the local mpirun of
 * PLATFORM-NOTES.md; a hostfile or srun launcher plugs in beside it.
 *
 * Every job runs in its own session (setsid) with its own directory for Open
 * MPI's session files and shared memory, under a watchdog. The harness is a
 * child subreaper, so ranks orphaned by a dying mpirun come back to it; when
 * a job ends, or on SIGINT/SIGTERM, every process of its session is killed
 * and its directory removed.
 *
 * When the harness itself is SIGKILLed nothing of it runs any more, so two
 * things outside it take over: mpirun has PR_SET_PDEATHSIG (SIGKILL), and a
 * guard process per job, blocked on a pipe only the harness writes to, kills
 * the job's session when the pipe reaches EOF (a pipe's EOF survives SIGKILL).
 */
#ifndef HARNESS_LAUNCH_H
#define HARNESS_LAUNCH_H

#include <stddef.h>
#include <sys/types.h>

typedef struct harness_launcher {
	const char *name;
	/* Fill argv (NULL-terminated, at most max entries) for np ranks of prog. */
	int (*build)(const struct harness_launcher *l, int np, const char *jobdir, int timeout_s,
		     const char *const *env, const char *const *prog, char **argv, size_t max);
} harness_launcher;

extern const harness_launcher harness_local_mpirun;
/* One process (a trainer with launcher: single), the variables set with env(1). */
extern const harness_launcher harness_local_single;

typedef struct harness_job_result {
	int exited;            /* 1: exit code in status; 0: killed by signal `status` */
	int status;
	int timed_out;
	double seconds;
} harness_job_result;

/* Once, at start: become a subreaper and install SIGINT/SIGTERM cleanup. */
void harness_launch_init(void);
/* The signal (SIGINT or SIGTERM) that arrived first, or 0. */
int harness_interrupted(void);

/*
 * In a child just forked from parent (before exec): be SIGKILLed when parent
 * dies. -ESRCH if parent died already (the caller should exit).
 */
int harness_launch_die_with_parent(pid_t parent);

/*
 * Run one job to completion or until timeout_s (the watchdog: SIGTERM, 2 s,
 * SIGKILL of the session; out->timed_out), stdout and stderr appended to
 * log_path. env: NAME=value strings exported to every rank. 0, or -errno if it
 * could not be started.
 */
int harness_launch_run(const harness_launcher *l, int np, const char *workdir, int timeout_s,
		       const char *const *env, const char *const *prog, const char *log_path,
		       harness_job_result *out);

#endif
