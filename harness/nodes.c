#include "regfile.h"
#include "nodes.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jsonl.h"
#include "workdir.h"

/* The choices of this harness process (main.c), and the scenario it runs now (suite forks one per scenario). */
static enum harness_launch_kind kind = HARNESS_LAUNCH_MPIRUN;
static const char *user_hostfile;
static int gone[HARNESS_NODES_MAX];       /* 1: node k was lost without a replacement: later jobs run without it */
static _Thread_local int wiped;              /* node-local directories wiped by node losses (harness_nodes_wiped) */

int harness_launch_kind_parse(const char *name, enum harness_launch_kind *out)
{
	if (strcmp(name, "mpirun") == 0)
		*out = HARNESS_LAUNCH_MPIRUN;
	else if (strcmp(name, "srun") == 0)
		*out = HARNESS_LAUNCH_SRUN;
	else
		return -EINVAL;
	return 0;
}

void harness_nodes_configure(enum harness_launch_kind k, const char *hostfile)
{
	kind = k;
	user_hostfile = hostfile;
}

static int nodes_of(const harness_scenario *s)
{
	int n = s->trainer.nodes > 0 ? s->trainer.nodes : 1;
	return n < HARNESS_NODES_MAX ? n : HARNESS_NODES_MAX;
}

void harness_nodes_begin(const harness_scenario *s)
{
	(void)s;
	memset(gone, 0, sizeof gone);
}

int harness_nodes_override(harness_scenario *s, int nodes, char *err, size_t errlen)
{
	if (s->trainer.nodes > 1 || s->trainer.nrestart_ranks)
		return 0;          /* the scenario says where its ranks run, or sizes its restarts itself (one node) */
	for (int i = 0; i < s->nfaults; i++)
		if (s->faults[i].rpn > 0)
			return 0;
	if (s->trainer.ncommand && strcmp(s->trainer.launcher, "single") == 0 && nodes > 1) {
		snprintf(err, errlen, "%s:1:1: --nodes %d: this trainer runs one process (launcher: single); valid: no "
			 "--nodes for it", s->file, nodes);
		return -EINVAL;
	}
	if (s->trainer.world_size % nodes != 0) {
		snprintf(err, errlen, "%s:1:1: --nodes %d does not divide this trainer's world_size (%d): each node runs "
			 "the same number of ranks", s->file, nodes, s->trainer.world_size);
		return -EINVAL;
	}
	s->trainer.nodes = nodes;
	return 0;
}

int harness_nodes_gone(void)
{
	int n = 0;
	for (int k = 0; k < HARNESS_NODES_MAX; k++)
		n += gone[k];
	return n;
}

int harness_nodes_wiped(void)
{
	return wiped;
}

void harness_node_dir(char *out, size_t len, const char *ckdir, int k)
{
	snprintf(out, len, "%s.nodes/node-%d", ckdir, k);
}

/* ---- node loss -------------------------------------------------------- */

typedef struct loss_ctx {
	const harness_scenario *s;
	int attempt;
	int lost[HARNESS_NODES_MAX];     /* 1: lost, 2: lost and replaced */
} loss_ctx;

static int note_loss(json_t *j, void *arg)
{
	loss_ctx *c = arg;
	int i = (int)json_integer_value(json_object_get(j, "fault"));
	if (json_integer_value(json_object_get(j, "attempt")) != c->attempt || i < 0 || i >= c->s->nfaults)
		return 0;
	const harness_fault *f = &c->s->faults[i];
	if (f->action == HARNESS_NODE_LOSS && f->node >= 0 && f->node < HARNESS_NODES_MAX)
		c->lost[f->node] = f->arg ? 2 : 1;
	return 0;
}

int harness_nodes_after_attempt(const harness_scenario *s, const char *faultlog, int attempt, const char *ckdir,
				const char *logpath, char *err, size_t errlen)
{
	loss_ctx c = { .s = s, .attempt = attempt };
	int any = 0, left = 0;

	for (int i = 0; i < s->nfaults; i++)
		any |= s->faults[i].action == HARNESS_NODE_LOSS;
	if (!any)
		return 0;
	for (int rank = 0; rank < s->trainer.world_size; rank++) {
		char path[1200];
		snprintf(path, sizeof path, "%s.rank-%d.jsonl", faultlog, rank);
		harness_jsonl_each(path, note_loss, &c);
	}
	for (int k = 0; k < nodes_of(s); k++) {
		if (!c.lost[k])
			continue;
		/* the node-local tier goes with the node: a replacement starts empty */
		char dir[1300];
		harness_node_dir(dir, sizeof dir, ckdir, k);
		harness_workdir_remove(dir);
		wiped++;
		if (c.lost[k] == 2)
			mkdir(dir, 0755);
		else
			gone[k] = 1;
		FILE *log = fopen(logpath, "a");
		if (log)
			fprintf(log, "node_loss after attempt %d: node %d lost, %s wiped, %s\n", attempt, k, dir,
				c.lost[k] == 2 ? "a replacement node takes its place" : "the next attempt runs without it");
		if (log)
			fclose(log);
	}
	for (int k = 0; k < nodes_of(s); k++)
		left += !gone[k];
	if (!left) {
		snprintf(err, errlen, "after attempt %d no node is left to run on: every node of trainer.nodes (%d) was "
			 "lost without a replacement", attempt, nodes_of(s));
		return -ENODEV;
	}
	return 0;
}

/* ---- the launchers ------------------------------------------------------ */

enum node_mode { NODES_SIM_HOSTFILE, NODES_SIM_DAEMONS, NODES_USER_HOSTFILE, NODES_SRUN, NODES_PROCS, NODES_SINGLE };

/* What a node launcher needs beside launch.h's interface; base first (launch.c sees only that). */
typedef struct node_launcher {
	harness_launcher base;
	enum node_mode mode;
	int nodes, rpn, real_slurm_nodes;
	char exec[4096], root[4200], list[HARNESS_NODES_MAX * 4];
	char jobname[64];
	const harness_launcher *inner;    /* NODES_PROCS: the procs launcher it wraps */
} node_launcher;

static node_launcher current;

/* Strings that must live until the exec (fork after build): one job at a time per process. */
static char s_np[16], s_timeout[16], s_map[48], s_hostfile[4200], s_agent[4200];
static char s_vars[8][4400];

#define ARG(x) do { if (n + 2 >= max) return -E2BIG; argv[n++] = (char *)(x); } while (0)

/* ckpt-node-exec VARS... -- PROG...: the job's variables, the node variables, then the program. */
static int append_exec(const node_launcher *nl, char **argv, size_t n, size_t max, const char *jobdir,
		       const char *const *env, const char *const *prog, int torchrun)
{
	int nv = 0;

	ARG(nl->exec);
	for (size_t i = 0; env && env[i]; i++)
		ARG(env[i]);
	snprintf(s_vars[nv++], sizeof s_vars[0], "CKPT_HARNESS_RANKS_PER_NODE=%d", nl->rpn);
	snprintf(s_vars[nv++], sizeof s_vars[0], "CKPT_HARNESS_NODE_LIST=%s", nl->list);
	snprintf(s_vars[nv++], sizeof s_vars[0], "CKPT_HARNESS_NODE_ROOT=%s", nl->root);
	snprintf(s_vars[nv++], sizeof s_vars[0], "CKPT_HARNESS_JOBDIR=%s", jobdir);
	snprintf(s_vars[nv++], sizeof s_vars[0], "CKPT_HARNESS_SIM_HOSTS=%d", nl->mode == NODES_SIM_DAEMONS);
	snprintf(s_vars[nv++], sizeof s_vars[0], "CKPT_HARNESS_TORCHRUN_ENV=%d", torchrun);
	if (nl->mode == NODES_SINGLE)
		snprintf(s_vars[nv++], sizeof s_vars[0], "CKPT_HARNESS_DEFAULT_RANK=0");   /* one process, no rank variable */
	for (int i = 0; i < nv; i++)
		ARG(s_vars[i]);
	ARG("--");
	for (size_t i = 0; prog[i]; i++)
		ARG(prog[i]);
	argv[n] = NULL;
	return 0;
}

static int write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	size_t len = strlen(text);
	if (fd < 0)
		return -errno;
	int rc = write(fd, text, len) == (ssize_t)len ? 0 : -EIO;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	return rc;
}

/*
 * The hostfile of the live nodes: simnode-K slots=R for the simulated ones;
 * for a user's hostfile, the K-th host line of it (comments and blank lines
 * skipped) for each live node K, kept as written.
 */
static int write_hostfile(const node_launcher *nl, const char *path)
{
	char text[HARNESS_NODES_MAX * 300] = "", line[1024];
	size_t used = 0;
	int k = 0;

	if (nl->mode == NODES_SIM_HOSTFILE || nl->mode == NODES_SIM_DAEMONS) {
		int alive = 0;
		for (const char *p = nl->list; *p; alive++) {
			int node = atoi(p);
			if (nl->mode == NODES_SIM_DAEMONS)
				used += (size_t)snprintf(text + used, sizeof text - used, "simnode-%d slots=%d\n", node, nl->rpn);
			else
				used += (size_t)snprintf(text + used, sizeof text - used, "# simulated node %d: ranks %d to %d\n",
							 node, alive * nl->rpn, alive * nl->rpn + nl->rpn - 1);
			p = strchr(p, ',') ? strchr(p, ',') + 1 : p + strlen(p);
		}
		/* one line: Open MPI refuses a host listed twice; the mapping by slot puts rank r in slot r */
		if (nl->mode == NODES_SIM_HOSTFILE)
			snprintf(text + used, sizeof text - used, "localhost slots=%d\n", alive * nl->rpn);
		return write_file(path, text, 0644);
	}
	int fd = open(user_hostfile, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	FILE *f = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? fdopen(fd, "r") : NULL;
	if (!f) {
		if (fd >= 0)
			close(fd);
		fprintf(stderr, "ckpt-harness: --hostfile %s: not a readable regular file\n", user_hostfile);
		return -ENOENT;
	}
	while (fgets(line, sizeof line, f) && k < HARNESS_NODES_MAX) {
		char *hash = strchr(line, '#'), *p = line;
		if (hash)
			*hash = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p || *p == '\n')
			continue;
		int keep = 0;
		for (const char *q = nl->list; *q;) {
			keep |= atoi(q) == k;
			q = strchr(q, ',') ? strchr(q, ',') + 1 : q + strlen(q);
		}
		if (keep && used + strlen(p) + 2 < sizeof text)
			used += (size_t)snprintf(text + used, sizeof text - used, "%s%s", p, strchr(p, '\n') ? "" : "\n");
		k++;
	}
	fclose(f);
	if (k < nl->nodes) {
		fprintf(stderr, "ckpt-harness: --hostfile %s names %d hosts; the scenario runs on %d nodes\n",
			user_hostfile, k, nl->nodes);
		return -EINVAL;
	}
	return write_file(path, text, 0644);
}

/* Open MPI's rsh agent for simulated nodes: it starts host $1's daemon here, telling it which host it plays. */
static const char agent_script[] =
	"#!/bin/sh\n"
	"# ckpt-harness: start the Open MPI daemon of simulated host $1 on this machine\n"
	"host=$1; shift\n"
	"CKPT_HARNESS_HOST=$host; export CKPT_HARNESS_HOST\n"
	"exec /bin/sh -c \"$*\"\n";

static int mpirun_build(const harness_launcher *l, int np, const char *jobdir, int timeout_s,
			const char *const *env, const char *const *prog, char **argv, size_t max)
{
	const node_launcher *nl = (const node_launcher *)l;
	size_t n = 0;
	int rc;

	snprintf(s_np, sizeof s_np, "%d", np);
	snprintf(s_timeout, sizeof s_timeout, "%d", timeout_s + 10);
	snprintf(s_map, sizeof s_map, "ppr:%d:node", nl->rpn);
	snprintf(s_hostfile, sizeof s_hostfile, "%s/hostfile", jobdir);
	if ((rc = write_hostfile(nl, s_hostfile)) < 0)
		return rc;
	ARG("mpirun"); ARG("-np"); ARG(s_np); ARG("--hostfile"); ARG(s_hostfile);
	if (nl->mode == NODES_SIM_HOSTFILE) {
		ARG("--map-by"); ARG("slot");
	} else {
		ARG("--map-by"); ARG(s_map);
	}
	ARG("--rank-by"); ARG("slot");
	ARG("--bind-to"); ARG("none"); ARG("--quiet"); ARG("--stdin"); ARG("none");
	ARG("--mca"); ARG("mpi_yield_when_idle"); ARG("1");
	ARG("--mca"); ARG("odls_base_sigkill_timeout"); ARG("0");
	ARG("--mca"); ARG("orte_tmpdir_base"); ARG(jobdir);
	if (nl->mode == NODES_SIM_HOSTFILE) {
		ARG("--mca"); ARG("btl"); ARG("self,vader");
		ARG("--mca"); ARG("btl_vader_single_copy_mechanism"); ARG("none");
		ARG("--mca"); ARG("btl_vader_backing_directory"); ARG(jobdir);
	}
	if (nl->mode == NODES_SIM_DAEMONS) {
		snprintf(s_agent, sizeof s_agent, "%s/rsh-agent", jobdir);
		if ((rc = write_file(s_agent, agent_script, 0755)) < 0)
			return rc;
		ARG("--mca"); ARG("plm_rsh_agent"); ARG(s_agent);
		ARG("--mca"); ARG("plm_rsh_no_tree_spawn"); ARG("1");
		/* the daemons stay in the job's session (else orted --daemonize escapes the watchdog's sweep) */
		ARG("--mca"); ARG("orte_leave_session_attached"); ARG("1");
		ARG("--mca"); ARG("btl"); ARG("self,tcp");
		ARG("--mca"); ARG("btl_tcp_if_include"); ARG("lo");
		ARG("--mca"); ARG("oob_tcp_if_include"); ARG("lo");
	}
	ARG("--timeout"); ARG(s_timeout);
	return append_exec(nl, argv, n, max, jobdir, env, prog, 0);
}

static int srun_build(const harness_launcher *l, int np, const char *jobdir, int timeout_s,
		      const char *const *env, const char *const *prog, char **argv, size_t max)
{
	node_launcher *nl = (node_launcher *)l;
	static unsigned seq;
	static char s_nodes[16], s_rpn[16], s_name[64], s_env[6][96];
	size_t n = 0;
	const char *envv[HARNESS_NODES_MAX + 16];
	size_t ne = 0;
	(void)timeout_s;

	snprintf(s_np, sizeof s_np, "%d", np);
	snprintf(nl->jobname, sizeof nl->jobname, "ckpt-harness-%d-%u", (int)getpid(), ++seq);
	snprintf(s_name, sizeof s_name, "--job-name=%s", nl->jobname);
	ARG("srun"); ARG("--mpi=pmix"); ARG("-n"); ARG(s_np); ARG(s_name);
	ARG("--kill-on-bad-exit=1"); ARG("--overcommit"); ARG("--quiet"); ARG("--input=none");
	if (nl->real_slurm_nodes) {
		snprintf(s_nodes, sizeof s_nodes, "-N%d", np / nl->rpn);
		snprintf(s_rpn, sizeof s_rpn, "--ntasks-per-node=%d", nl->rpn);
		ARG(s_nodes); ARG(s_rpn); ARG("--distribution=block");
	} else {
		/* every rank on this node: Open MPI as the local mpirun runs it (PLATFORM-NOTES.md) */
		static const char *const local[] = { "OMPI_MCA_btl=self,vader", "OMPI_MCA_btl_vader_single_copy_mechanism=none",
						     "OMPI_MCA_mpi_yield_when_idle=1", NULL };
		for (int i = 0; local[i]; i++) {
			snprintf(s_env[i], sizeof s_env[i], "%s", local[i]);
			envv[ne++] = s_env[i];
		}
	}
	for (size_t i = 0; env && env[i] && ne + 1 < sizeof envv / sizeof *envv; i++)
		envv[ne++] = env[i];
	envv[ne] = NULL;
	return append_exec(nl, argv, n, max, jobdir, envv, prog, 0);
}

/*
 * Run a Slurm client (argv), bounded by 10 s. Returns how many bytes it
 * printed on stdout (stderr is dropped), or -1 if it could not run.
 */
static int run_slurm(char *const *argv)
{
	int out[2];
	if (pipe2(out, O_CLOEXEC) < 0)
		return -1;
	pid_t p = fork();
	if (p < 0) {
		close(out[0]);
		close(out[1]);
		return -1;
	}
	if (p == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(out[1], 1);
		dup2(null, 2);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	int printed = 0, done = 0;
	for (int i = 0; i < 1000 && !done; i++) {         /* 10 s */
		char buf[256];
		ssize_t r;
		while ((r = read(out[0], buf, sizeof buf)) > 0)
			printed += (int)r;
		pid_t w = waitpid(p, NULL, WNOHANG);
		done = w == p || (w < 0 && errno != EINTR);
		if (!done) {
			struct timespec nap = { 0, 10 * 1000 * 1000 };
			nanosleep(&nap, NULL);
		}
	}
	if (!done) {
		kill(p, SIGKILL);
		waitpid(p, NULL, 0);
	}
	close(out[0]);
	return printed;
}

static void run_scancel(const char *a1)
{
	char *argv[] = { "scancel", "--quiet", (char *)a1, NULL };
	run_slurm(argv);
}

/* Until squeue no longer lists the job or step id (its tasks are gone, not only signalled), at most 10 s. */
static void wait_gone(const char *id, int step)
{
	char sel[96];
	snprintf(sel, sizeof sel, step ? "--steps=%s" : "--jobs=%s", id);
	char *argv[] = { "squeue", "-h", sel, NULL };
	for (int i = 0; i < 100 && run_slurm(argv) > 0; i++) {
		struct timespec nap = { 0, 100 * 1000 * 1000 };
		nanosleep(&nap, NULL);
	}
}

/*
 * The step's tasks are slurmd's children, not in the job's session: cancel
 * the step (inside the harness's allocation) or srun's own job (outside
 * one), by the ids its rank 0 wrote (ckpt-node-exec), and by name for a job
 * that never started a task. Cancelling a finished job is a no-op.
 */
static void srun_cleanup(const harness_launcher *l, const char *jobdir)
{
	const node_launcher *nl = (const node_launcher *)l;
	char path[4200], buf[64] = "", id[80], name[96];
	const char *outer = getenv("SLURM_JOB_ID");

	snprintf(path, sizeof path, "%s/slurm-step", jobdir);
	int fd = harness_open_regular(AT_FDCWD, path, NULL);
	if (fd >= 0) {
		ssize_t r = read(fd, buf, sizeof buf - 1);
		buf[r > 0 ? r : 0] = '\0';
		close(fd);
	}
	unsigned long job, step;
	if (sscanf(buf, "%lu %lu", &job, &step) == 2) {
		int in_outer = outer && strtoul(outer, NULL, 10) == job;
		if (in_outer)
			snprintf(id, sizeof id, "%lu.%lu", job, step);
		else
			snprintf(id, sizeof id, "%lu", job);
		run_scancel(id);
		wait_gone(id, in_outer);
	}
	if (!outer && nl->jobname[0]) {
		snprintf(name, sizeof name, "--name=%s", nl->jobname);
		run_scancel(name);
	}
}

static int procs_build(const harness_launcher *l, int np, const char *jobdir, int timeout_s,
		       const char *const *env, const char *const *prog, char **argv, size_t max)
{
	const node_launcher *nl = (const node_launcher *)l;
	static char *wrapped[256];
	int rc;

	/* the procs launcher's environment first (env(1)), then ckpt-node-exec fixes the per-node variables */
	if ((rc = append_exec(nl, wrapped, 0, sizeof wrapped / sizeof *wrapped, jobdir, NULL, prog,
			      nl->mode == NODES_PROCS)) < 0)
		return rc;
	return nl->inner->build(nl->inner, np, jobdir, timeout_s, env, (const char *const *)wrapped, argv, max);
}

static void procs_supervise(const harness_launcher *l, int np, char **argv)
{
	const node_launcher *nl = (const node_launcher *)l;
	nl->inner->supervise(nl->inner, np, argv);
}

#undef ARG

const harness_launcher *harness_nodes_launcher(const harness_scenario *s, const char *bindir, const char *ckdir,
					       const harness_launcher *dflt, int *np)
{
	node_launcher *nl = &current;
	int nodes = nodes_of(s), rpn = s->trainer.world_size / nodes, alive = 0;
	size_t used = 0;

	*np = s->trainer.world_size;
	int is_mpirun = dflt == &harness_local_mpirun, placeholders = 0;
	for (int i = 0; i < s->trainer.ncommand; i++)
		placeholders |= strstr(s->trainer.command[i], "{node}") || strstr(s->trainer.command[i], "{node_dir}");
	if (nodes <= 1 && !placeholders && !(kind == HARNESS_LAUNCH_SRUN && is_mpirun) && !(user_hostfile && is_mpirun))
		return dflt;                   /* one node, launched as before */
	memset(nl, 0, sizeof *nl);
	nl->rpn = rpn;
	nl->nodes = nodes;
	nl->list[0] = '\0';
	for (int k = 0; k < nodes; k++) {
		if (gone[k])
			continue;
		used += (size_t)snprintf(nl->list + used, sizeof nl->list - used, "%s%d", alive ? "," : "", k);
		alive++;
		/* the node-local directory: made here, wiped by a node loss */
		char dir[4300];
		snprintf(dir, sizeof dir, "%s.nodes", ckdir);
		mkdir(dir, 0755);
		harness_node_dir(dir, sizeof dir, ckdir, k);
		mkdir(dir, 0755);
	}
	*np = alive * rpn;
	snprintf(nl->exec, sizeof nl->exec, "%s/ckpt-node-exec", bindir);
	snprintf(nl->root, sizeof nl->root, "%s.nodes", ckdir);
	if (dflt == &harness_local_single) {
		nl->mode = NODES_SINGLE;
		nl->inner = dflt;
		nl->base = (harness_launcher){ .name = "single-node", .build = procs_build };
	} else if (!is_mpirun) {
		nl->mode = NODES_PROCS;
		nl->inner = dflt;
		nl->base = (harness_launcher){ .name = "procs-nodes", .build = procs_build, .supervise = procs_supervise };
	} else if (kind == HARNESS_LAUNCH_SRUN) {
		const char *have = getenv("SLURM_JOB_NUM_NODES");
		nl->mode = NODES_SRUN;
		nl->real_slurm_nodes = nodes > 1 && have && atoi(have) >= alive;
		nl->base = (harness_launcher){ .name = "srun", .build = srun_build, .cleanup = srun_cleanup };
	} else {
		const char *d = getenv("CKPT_HARNESS_NODE_DAEMONS");
		nl->mode = user_hostfile ? NODES_USER_HOSTFILE : d && strcmp(d, "1") == 0 ? NODES_SIM_DAEMONS :
			   NODES_SIM_HOSTFILE;
		nl->base = (harness_launcher){ .name = "mpirun-hostfile", .build = mpirun_build };
	}
	return &nl->base;
}
