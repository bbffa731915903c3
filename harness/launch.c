#include "launch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "workdir.h"

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
static pid_t guard_start(pid_t sid, int *wfd, const harness_launcher *l, const char *jobdir, int remove_jobdir)
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
		if (l->cleanup)
			l->cleanup(l, jobdir);
		if (remove_jobdir)      /* outside the work directory: nothing else would remove it */
			harness_workdir_remove(jobdir);
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
	/*
	 * Only the transports a job on one machine uses: not probing UCX
	 * (pml ucx, osc ucx) and libfabric/PSM (pml cm's mtl) at every
	 * MPI_Init saves about a quarter of a launch's CPU time
	 * (bench/bench_harness.sh). Reductions do not depend on it: reftrain
	 * sums in a fixed order whatever the transport.
	 */
	ARG("--mca"); ARG("pml"); ARG("ob1");
	ARG("--mca"); ARG("osc"); ARG("^ucx");
	ARG("--mca"); ARG("mtl"); ARG("^ofi,psm,psm2");
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

/* ---- procs: N plain processes with torchrun's environment ---------------- */

/* The per-rank variables: each process rewrites these in its own copy after fork. */
static char procs_rank[32], procs_local[32], procs_role[32];

/*
 * A TCP port on 127.0.0.1 that is free now: bind port 0, read it back, close.
 * The race: the port is released before rank 0 binds it (the time a trainer
 * takes to start, ~0.1 s for Python), and in that window another process on
 * the machine may take it (a bind(0) or an outgoing connection drawing from
 * the same ephemeral range). torchrun does exactly this for a single node;
 * losing the race makes the job fail to start (EADDRINUSE in its log), it
 * cannot make a wrong run look right, and the kernel picks ports at random
 * from ~28000, so it is rare. Holding the socket instead would need the
 * trainer to take an inherited descriptor, which torchrun's protocol has not.
 * Never the previous job's port: that one may still be in TIME_WAIT from
 * the last attempt's connections (the second socket is bound while the first
 * still holds the old port, so the kernel must give another).
 */
static int free_port(void)
{
	static int last;
	int s[2] = { -1, -1 }, port = -1;

	for (int i = 0; i < 2; i++) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t len = sizeof a;
		if ((s[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
		    bind(s[i], (struct sockaddr *)&a, sizeof a) < 0 || getsockname(s[i], (struct sockaddr *)&a, &len) < 0) {
			port = -errno;
			break;
		}
		port = ntohs(a.sin_port);
		if (port != last)
			break;
	}
	for (int i = 0; i < 2; i++)
		if (s[i] >= 0)
			close(s[i]);
	if (port > 0)
		last = port;
	return port;
}

static int procs_build(const harness_launcher *l, int np, const char *jobdir, int timeout_s,
		       const char *const *env, const char *const *prog, char **argv, size_t max)
{
	static char ws[32], lws[32], rws[32], port[32];
	size_t n = 0;
	int p;
	(void)l;
	(void)jobdir;
	(void)timeout_s;

	if (np < 1 || np > HARNESS_PROCS_MAX || strchr(prog[0], '='))
		return -EINVAL;
	if ((p = free_port()) < 0)
		return p;
	snprintf(port, sizeof port, "MASTER_PORT=%d", p);
	snprintf(ws, sizeof ws, "WORLD_SIZE=%d", np);
	snprintf(lws, sizeof lws, "LOCAL_WORLD_SIZE=%d", np);
	snprintf(rws, sizeof rws, "ROLE_WORLD_SIZE=%d", np);
	snprintf(procs_rank, sizeof procs_rank, "RANK=0");
	snprintf(procs_local, sizeof procs_local, "LOCAL_RANK=0");
	snprintf(procs_role, sizeof procs_role, "ROLE_RANK=0");
#define ARG(s) do { if (n + 2 >= max) return -E2BIG; argv[n++] = (char *)(s); } while (0)
	ARG("env");
	/* the shim reads these before RANK: a harness inside a Slurm or MPI job must not hand on its own */
	ARG("-u"); ARG("OMPI_COMM_WORLD_RANK"); ARG("-u"); ARG("PMI_RANK");
	ARG("-u"); ARG("PMIX_RANK"); ARG("-u"); ARG("SLURM_PROCID");
	ARG("--");
	ARG(procs_rank); ARG(procs_local); ARG(procs_role);
	ARG(ws); ARG(lws); ARG(rws);
	ARG("GROUP_RANK=0"); ARG("GROUP_WORLD_SIZE=1");
	ARG("MASTER_ADDR=127.0.0.1"); ARG(port);
	ARG("TORCHELASTIC_RESTART_COUNT=0"); ARG("TORCHELASTIC_MAX_RESTARTS=0");
	if (!getenv("OMP_NUM_THREADS"))
		ARG("OMP_NUM_THREADS=1");         /* torchrun's default with more than one process */
#undef ARG
	return append_env_prog(argv, n, max, NULL, env, prog);
}

static volatile sig_atomic_t procs_stop;

static void procs_on_signal(int sig)
{
	if (!procs_stop)
		procs_stop = sig;
}

static void procs_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void procs_say(const char *fmt, ...)
{
	char line[256];
	va_list ap;

	va_start(ap, fmt);
	int len = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (len > (int)sizeof line - 1)
		len = (int)sizeof line - 1;
	if (len > 0 && write(2, line, (size_t)len) < 0)
		(void)0;
}

static void procs_signal_all(const pid_t *pid, int np, int sig)
{
	for (int i = 0; i < np; i++)
		if (pid[i] > 0)
			kill(pid[i], sig);
}

/*
 * The job's session leader for launcher: procs. Its processes stay in its
 * process group and session, so the harness's watchdog, guard and sweep
 * reach them as they reach mpirun's ranks; each also has PR_SET_PDEATHSIG,
 * so it dies with this supervisor. SIGTERM or SIGINT to the supervisor is
 * passed on to every process still running.
 */
static void procs_supervise(const harness_launcher *l, int np, char **argv)
{
	static pid_t pid[HARNESS_PROCS_MAX];
	pid_t self = getpid();
	int left = 0, first_exited = 0, first_status = 0, failed = 0, termed = 0, killed = 0, forwarded = 0;
	double fail_at = 0;
	struct sigaction sa;
	(void)l;

	/* what an exec would have closed: the supervisor is a fork of the harness and must hold no more than mpirun */
	for (int fd = 3; fd < 1024; fd++) {
		int fl = fcntl(fd, F_GETFD);
		if (fl >= 0 && (fl & FD_CLOEXEC))
			close(fd);
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = procs_on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	for (int i = 0; i < np && !procs_stop; i++) {
		pid_t p = fork();
		if (p < 0) {
			procs_say("ckpt-harness: procs: cannot start rank %d: %s\n", i, strerror(errno));
			failed = 1, first_exited = 1, first_status = 127, fail_at = now();
			break;
		}
		if (p == 0) {
			signal(SIGTERM, SIG_DFL);
			signal(SIGINT, SIG_DFL);
			signal(SIGHUP, SIG_DFL);
			if (harness_launch_die_with_parent(self) < 0)
				_exit(127);
			snprintf(procs_rank, sizeof procs_rank, "RANK=%d", i);
			snprintf(procs_local, sizeof procs_local, "LOCAL_RANK=%d", i);
			snprintf(procs_role, sizeof procs_role, "ROLE_RANK=%d", i);
			execvp(argv[0], argv);
			procs_say("ckpt-harness: procs: cannot run %s: %s\n", argv[0], strerror(errno));
			_exit(127);
		}
		pid[i] = p;
		left++;
	}
	while (left > 0) {
		int status;
		pid_t w = waitpid(-1, &status, WNOHANG);
		if (w > 0) {
			int i = 0;
			while (i < np && pid[i] != w)
				i++;
			if (i == np)
				continue;              /* not a rank (cannot happen: no other children) */
			pid[i] = 0;
			left--;
			int bad = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
			if (bad && !failed) {
				failed = 1;
				first_exited = WIFEXITED(status);
				first_status = first_exited ? WEXITSTATUS(status) : WTERMSIG(status);
				fail_at = now();
				if (left)
					procs_say("ckpt-harness: procs: rank %d (pid %d) %s %d; stopping the other %d\n", i,
						  (int)w, first_exited ? "exited with" : "was killed by signal", first_status,
						  left);
				if (!first_exited) {
					/* a crash stops the job at once: a power cut must not let a sibling write on */
					procs_signal_all(pid, np, SIGKILL);
					killed = 1;
				}
			}
			continue;
		}
		if (w < 0 && errno != EINTR)
			break;
		if (procs_stop && !forwarded) {
			procs_signal_all(pid, np, procs_stop);
			forwarded = 1;
		}
		double t = now();
		if (failed && !termed && t > fail_at + HARNESS_PROCS_GRACE_MS / 1000.0) {
			procs_signal_all(pid, np, SIGTERM);
			termed = 1;
		}
		if (failed && !killed && t > fail_at + HARNESS_PROCS_GRACE_MS / 1000.0 + 1.0) {
			procs_signal_all(pid, np, SIGKILL);
			killed = 1;
		}
		struct timespec nap = { 0, 5 * 1000 * 1000 };
		nanosleep(&nap, NULL);
	}
	if (!failed && procs_stop) {
		first_exited = 0;
		first_status = procs_stop;
		failed = 1;
	}
	if (!failed)
		_exit(0);
	if (first_exited)
		_exit(first_status);
	/* end the way the first failed process ended: by its signal, without a core file */
	struct rlimit no_core = { 0, 0 };
	setrlimit(RLIMIT_CORE, &no_core);
	signal(first_status, SIG_DFL);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, first_status);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(first_status);
	_exit(128 + first_status);
}

const harness_launcher harness_local_procs = { .name = "procs", .build = procs_build, .supervise = procs_supervise };

/*
 * A local mpirun job's Open MPI session directory and shared-memory segments
 * (btl_vader_backing_directory, orte_tmpdir_base): a folder of their own on
 * /dev/shm when that tmpfs is there with room, as Open MPI's own default
 * puts the segments. Under a work directory on disk they cost every launch:
 * 20 launches of a 4-rank tiny run took 3.71 s and 4.75 s of CPU with the
 * folder on ext4, 3.37 s and 4.17 s on /dev/shm. The folder carries the
 * harness's pid and start time like every work directory: the job's guard
 * removes it if the harness dies, and the next start sweeps what is left.
 */
#define SHM "/dev/shm"
#define SHM_PREFIX "ckpt-harness-mpi"

static int shm_jobdir(char *jobdir, size_t len)
{
	struct statvfs v;

	if (access(SHM, W_OK) < 0 || statvfs(SHM, &v) < 0 || (unsigned long long)v.f_bavail * v.f_frsize < (256ull << 20))
		return -1;
	return harness_workdir_create(jobdir, len, SHM, SHM_PREFIX);
}

void harness_launch_sweep(void)
{
	harness_workdir_sweep(SHM, SHM_PREFIX);
}

int harness_launch_run(const harness_launcher *l, int np, const char *workdir, int timeout_s,
		       const char *const *env, const char *const *prog, const char *log_path,
		       harness_job_result *out)
{
	char jobdir[4096], *argv[256];
	int rc, status = 0;

	memset(out, 0, sizeof *out);
	int on_shm = l == &harness_local_mpirun && shm_jobdir(jobdir, sizeof jobdir) == 0;
	if (!on_shm) {
		snprintf(jobdir, sizeof jobdir, "%s/mpi-job.XXXXXX", workdir);
		if (!mkdtemp(jobdir))
			return -errno;
	}
	if ((rc = l->build(l, np, jobdir, timeout_s, env, prog, argv, sizeof argv / sizeof *argv)) < 0) {
		harness_workdir_remove(jobdir);
		return rc;
	}

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
		/*
		 * A job on this machine over shared memory needs no PCI devices:
		 * without hwloc's PCI and I/O discovery (every device's config
		 * space read through sysfs, in mpirun and in each rank at
		 * MPI_Init), the CI suite takes 11% less wall time and 17% less
		 * system time (ckpt-harness suite scenarios/ci -j 2, three pairs).
		 * The ranks inherit it from mpirun. A value of the user's stays.
		 */
		if (l == &harness_local_mpirun)
			setenv("HWLOC_COMPONENTS", "-pci,-linuxio", 0);
		if (l->supervise)
			l->supervise(l, np, argv);   /* never returns */
		execvp(argv[0], argv);
		fprintf(stderr, "ckpt-harness: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	live_session = pid;
	int guard_fd = -1;
	pid_t guard = guard_start(pid, &guard_fd, l, jobdir, on_shm);

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
	if (l->cleanup)
		l->cleanup(l, jobdir);
	live_session = 0;
	if (guard > 0) {
		close(guard_fd);                /* EOF: the guard sweeps an empty session and exits */
		while (waitpid(guard, NULL, 0) < 0 && errno == EINTR)
			;
	}
	harness_workdir_remove(jobdir);

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
