#include "launch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t interrupted;
static volatile pid_t live_session;      /* the job running now (one per process) */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Every process whose session is sid (scans /proc: there is no killsession). */
static int kill_session(pid_t sid, int sig)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)) != NULL) {
		char path[64], buf[512];
		pid_t pid = (pid_t)atoi(de->d_name);
		if (pid <= 0)
			continue;
		snprintf(path, sizeof path, "/proc/%d/stat", pid);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		ssize_t len = read(fd, buf, sizeof buf - 1);
		close(fd);
		if (len <= 0)
			continue;
		buf[len] = '\0';
		/* pid (comm) state ppid pgrp session ...; comm may hold spaces */
		char *p = strrchr(buf, ')');
		int ppid, pgrp, session;
		char state;
		/* a zombie is dead already: it only waits for its reaper */
		if (p && sscanf(p + 1, " %c %d %d %d", &state, &ppid, &pgrp, &session) == 4 && session == sid &&
		    state != 'Z') {
			kill(pid, sig);
			n++;
		}
	}
	closedir(d);
	return n;
}

static void on_signal(int sig)
{
	if (!interrupted)
		interrupted = sig;
	if (live_session > 0)
		kill(live_session, SIGTERM);      /* mpirun forwards it to the ranks */
}

int harness_launch_die_with_parent(pid_t parent)
{
	/* PR_SET_PDEATHSIG fires when the thread that forked us exits: the harness forks only from its main thread */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		return -errno;
	/* the parent may have died before prctl: then nobody will send the signal */
	if (getppid() != parent)
		return -ESRCH;
	return 0;
}

/*
 * The guard: a small process, forked per job, that blocks reading a pipe whose
 * only write end the harness holds. When the harness ends in any way, SIGKILL
 * included, the pipe reaches EOF and the guard kills what is left of the
 * job's session. Open MPI's ranks die about 1 s after their mpirun is
 * SIGKILLed (measured), but a procs launcher or a stuck rank would not.
 */
static pid_t guard_start(pid_t sid, int *wfd)
{
	int p[2];
	pid_t g;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	if ((g = fork()) < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (g == 0) {
		char c;
		ssize_t n;
		/* outlive a Ctrl-C or SIGTERM to the harness's process group: the EOF is the signal */
		signal(SIGINT, SIG_IGN);
		signal(SIGTERM, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
		prctl(PR_SET_CHILD_SUBREAPER, 0);
		close(p[1]);
		/* hold none of the harness's descriptors: a reader of its stdout must not wait for the guard */
		int null = open("/dev/null", O_RDWR);
		for (int fd = 0; fd < 3 && null >= 0; fd++)
			dup2(null, fd);
		for (int fd = 3; fd < 1024; fd++)
			if (fd != p[0])
				close(fd);
		while ((n = read(p[0], &c, 1)) != 0)
			if (n < 0 && errno != EINTR)
				break;
		for (int round = 0; round < 500 && kill_session(sid, SIGKILL) > 0; round++) {
			struct timespec nap = { 0, 10 * 1000 * 1000 };
			nanosleep(&nap, NULL);
		}
		_exit(0);
	}
	close(p[0]);
	*wfd = p[1];
	return g;
}

void harness_launch_init(void)
{
	struct sigaction sa;

	prctl(PR_SET_CHILD_SUBREAPER, 1);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

int harness_interrupted(void)
{
	return interrupted;
}

/* argv[n..]: each variable (after `flag`, if any), then the program; NULL-terminated. */
static int append_env_prog(char **argv, size_t n, size_t max, const char *flag, const char *const *env,
			   const char *const *prog)
{
	for (size_t i = 0; env && env[i]; i++) {
		if (n + 3 >= max)
			return -E2BIG;
		if (flag)
			argv[n++] = (char *)flag;
		argv[n++] = (char *)env[i];
	}
	for (size_t i = 0; prog[i]; i++) {
		if (n + 2 >= max)
			return -E2BIG;
		argv[n++] = (char *)prog[i];
	}
	argv[n] = NULL;
	return 0;
}

static int local_build(const harness_launcher *l, int np, const char *jobdir, int timeout_s,
		       const char *const *env, const char *const *prog, char **argv, size_t max)
{
	static char nps[16], tos[16];
	size_t n = 0;
	(void)l;

#define ARG(s) do { if (n + 2 >= max) return -E2BIG; argv[n++] = (char *)(s); } while (0)
	snprintf(nps, sizeof nps, "%d", np);
	/* a backstop: the harness's own watchdog stops the job at timeout_s and reads where each rank was */
	snprintf(tos, sizeof tos, "%d", timeout_s + 10);
	ARG("mpirun"); ARG("-np"); ARG(nps); ARG("--oversubscribe"); ARG("--bind-to"); ARG("none");
	ARG("--quiet"); ARG("--stdin"); ARG("none");
	ARG("--mca"); ARG("btl"); ARG("self,vader");
	ARG("--mca"); ARG("btl_vader_single_copy_mechanism"); ARG("none");
	ARG("--mca"); ARG("mpi_yield_when_idle"); ARG("1");
	ARG("--mca"); ARG("odls_base_sigkill_timeout"); ARG("0");
	ARG("--mca"); ARG("btl_vader_backing_directory"); ARG(jobdir);
	ARG("--mca"); ARG("orte_tmpdir_base"); ARG(jobdir);
	ARG("--timeout"); ARG(tos);
#undef ARG
	return append_env_prog(argv, n, max, "-x", env, prog);
}

const harness_launcher harness_local_mpirun = { .name = "local-mpirun", .build = local_build };

/*
 * One process, no MPI: env(1) hands it the variables (the harness's own
 * environment stays as it is, so LD_PRELOAD reaches the program only). It
 * runs in the job's session under the same watchdog as an mpirun job.
 */
static int single_build(const harness_launcher *l, int np, const char *jobdir, int timeout_s,
			const char *const *env, const char *const *prog, char **argv, size_t max)
{
	size_t n = 0;
	(void)l;
	(void)jobdir;
	(void)timeout_s;

	if (np != 1)
		return -EINVAL;
#define ARG(s) do { if (n + 2 >= max) return -E2BIG; argv[n++] = (char *)(s); } while (0)
	if (strchr(prog[0], '='))
		return -EINVAL;         /* env(1) would take it for a variable */
	ARG("env");
	ARG("--");
#undef ARG
	return append_env_prog(argv, n, max, NULL, env, prog);
}

const harness_launcher harness_local_single = { .name = "single", .build = single_build };

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

int harness_launch_run(const harness_launcher *l, int np, const char *workdir, int timeout_s,
		       const char *const *env, const char *const *prog, const char *log_path,
		       harness_job_result *out)
{
	char jobdir[4096], *argv[256];
	int rc, status = 0;

	memset(out, 0, sizeof *out);
	snprintf(jobdir, sizeof jobdir, "%s/mpi-job.XXXXXX", workdir);
	if (!mkdtemp(jobdir))
		return -errno;
	if ((rc = l->build(l, np, jobdir, timeout_s, env, prog, argv, sizeof argv / sizeof *argv)) < 0)
		return rc;

	/* the ranks get env through -x; mpirun itself needs these as root */
	setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
	setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);

	double t0 = now();
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* the job dies with the harness, even with a SIGKILL; the guard sweeps the session too */
		if (harness_launch_die_with_parent(parent) < 0)
			_exit(127);
		setsid();
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull >= 0)
			dup2(devnull, 0);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		execvp(argv[0], argv);
		fprintf(stderr, "ckpt-harness: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	live_session = pid;
	int guard_fd = -1;
	pid_t guard = guard_start(pid, &guard_fd);

	/* the watchdog; mpirun's own --timeout is a backstop behind it */
	double deadline = t0 + timeout_s;
	int sent_term = 0;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			status = 0;
			break;
		}
		double t = now();
		if ((interrupted || t > deadline) && !sent_term) {
			out->timed_out = !interrupted;
			kill(pid, SIGTERM);
			sent_term = 1;
			deadline = t + 2;          /* then SIGKILL the whole session */
		} else if (sent_term && t > deadline) {
			kill_session(pid, SIGKILL);
			deadline = t + 3600;
		}
		struct timespec nap = { 0, 5 * 1000 * 1000 };
		nanosleep(&nap, NULL);
	}
	out->seconds = now() - t0;
	/* whatever is left of the session (orphaned ranks) goes, and is reaped */
	for (int round = 0; round < 50 && kill_session(pid, SIGKILL) > 0; round++) {
		struct timespec nap = { 0, 10 * 1000 * 1000 };
		nanosleep(&nap, NULL);
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
	}
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	live_session = 0;
	if (guard > 0) {
		close(guard_fd);                /* EOF: the guard sweeps an empty session and exits */
		while (waitpid(guard, NULL, 0) < 0 && errno == EINTR)
			;
	}
	nftw(jobdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);

	if (WIFEXITED(status)) {
		out->exited = 1;
		out->status = WEXITSTATUS(status);
		if (out->status == 110)      /* mpirun --timeout */
			out->timed_out = 1;
	} else {
		out->status = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	}
	return 0;
}
