/*
 * Launching jobs and leaving nothing behind. A launcher turns (ranks,
 * program, environment) into a command line: the local mpirun of
 * PLATFORM-NOTES.md, one plain process, or N plain processes with torchrun's
 * environment (procs); a hostfile or srun launcher plugs in beside them.
 * A launcher that starts its processes itself (procs) also names a
 * supervisor, which runs as the job's session leader in place of exec.
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
	/*
	 * NULL: the job's session leader execs argv. Else it calls this instead (in
	 * a fork of the harness, stdout/stderr already on the log); it starts the
	 * np processes itself from argv, supervises them, and never returns: it
	 * ends the way the job ended (the first failure's exit code or signal).
	 */
	void (*supervise)(const struct harness_launcher *l, int np, char **argv);
	/*
	 * NULL, or called once the job's session is gone (also by the guard when
	 * the harness died): release what the job left outside the session, such
	 * as a Slurm step whose tasks slurmd started (nodes.c).
	 */
	void (*cleanup)(const struct harness_launcher *l, const char *jobdir);
} harness_launcher;

extern const harness_launcher harness_local_mpirun;
/* One process (a trainer with launcher: single), the variables set with env(1). */
extern const harness_launcher harness_local_single;

/*
 * np processes of the program on this node, as torchrun starts them (a
 * trainer with launcher: procs). Each gets RANK = LOCAL_RANK = ROLE_RANK = i,
 * WORLD_SIZE = LOCAL_WORLD_SIZE = ROLE_WORLD_SIZE = np, GROUP_RANK = 0,
 * GROUP_WORLD_SIZE = 1, MASTER_ADDR = 127.0.0.1, MASTER_PORT = a port that was
 * free when the job started (a different one from the previous job of this
 * harness process), TORCHELASTIC_RESTART_COUNT = TORCHELASTIC_MAX_RESTARTS =
 * 0, OMP_NUM_THREADS = 1 unless set, and the job's variables; the rank
 * variables of other launchers (OMPI_COMM_WORLD_RANK, PMI_RANK, PMIX_RANK,
 * SLURM_PROCID) are removed, so the fault shim reads RANK. When a process
 * exits non-zero, its siblings get HARNESS_PROCS_GRACE_MS to end by
 * themselves, then SIGTERM, then SIGKILL 1 s later; when one is killed by a
 * signal (a crash, a planned kill, a power cut), the others are SIGKILLed at
 * once, as mpirun does here. The job's result is the first failure, 0 only
 * when every process exits 0.
 */
extern const harness_launcher harness_local_procs;
#define HARNESS_PROCS_MAX 256
#define HARNESS_PROCS_GRACE_MS 1000

typedef struct harness_job_result {
	int exited;            /* 1: exit code in status; 0: killed by signal `status` */
	int status;
	int timed_out;
	double seconds;
} harness_job_result;

/* Once, at start: become a subreaper and install SIGINT/SIGTERM cleanup. */
void harness_launch_init(void);

/* At start: remove the MPI job folders on /dev/shm that dead harnesses left (launch.c). */
void harness_launch_sweep(void);
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
