/*
 * ckpt-node-exec NAME=VALUE... -- PROGRAM [ARG...]
 *
 * What every rank of a job on several nodes is started through (nodes.h):
 * sets the variables, then from the rank (OMPI_COMM_WORLD_RANK, PMI_RANK,
 * PMIX_RANK, SLURM_PROCID or RANK, the fault shim's order) and
 * CKPT_HARNESS_RANKS_PER_NODE / CKPT_HARNESS_NODE_LIST / CKPT_HARNESS_NODE_ROOT
 * the node variables: CKPT_HARNESS_NODE (the node's index in the scenario),
 * CKPT_HARNESS_NODE_DIR (its node-local directory) and CKPT_HARNESS_NODES
 * (nodes in this job). Under the simulated hostfile it checks that Open MPI
 * started the rank on that node's daemon (CKPT_HARNESS_HOST, set by the rsh
 * agent): a rank on the wrong node would make every node fault a lie, so it
 * refuses to run (exit 126). With CKPT_HARNESS_TORCHRUN_ENV=1 it also sets
 * torchrun's per-node variables (LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
 * GROUP_WORLD_SIZE). {node} and {node_dir} in the program's arguments
 * become the node and its directory (trainer.command's per-rank
 * placeholders). Under srun, rank 0 writes "JOBID STEPID" to
 * $CKPT_HARNESS_JOBDIR/slurm-step, so the harness can cancel the step.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *var(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

static int set_int(const char *name, long v)
{
	char buf[32];
	snprintf(buf, sizeof buf, "%ld", v);
	return setenv(name, buf, 1);
}

/* arg with every {node} and {node_dir} replaced (a new string; the process execs next). */
static char *substitute(const char *arg, const char *node, const char *dir)
{
	size_t cap = strlen(arg) * (strlen(dir) + 2) + 1, o = 0;
	char *out = malloc(cap);
	if (!out)
		return (char *)arg;
	while (*arg) {
		if (strncmp(arg, "{node}", 6) == 0) {
			o += (size_t)snprintf(out + o, cap - o, "%s", node);
			arg += 6;
		} else if (strncmp(arg, "{node_dir}", 10) == 0) {
			o += (size_t)snprintf(out + o, cap - o, "%s", dir);
			arg += 10;
		} else {
			out[o++] = *arg++;
		}
	}
	out[o] = '\0';
	return out;
}

int main(int argc, char **argv)
{
	static const char *const rank_vars[] = { "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID", "RANK" };
	int i = 1;

	for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
		char *eq = strchr(argv[i], '=');
		if (!eq || eq == argv[i]) {
			fprintf(stderr, "ckpt-node-exec: '%s' is not NAME=VALUE\n", argv[i]);
			return 125;
		}
		*eq = '\0';
		if (setenv(argv[i], eq + 1, 1) < 0)
			return 125;
		*eq = '=';
	}
	if (i + 1 >= argc) {
		fprintf(stderr, "usage: ckpt-node-exec NAME=VALUE... -- PROGRAM [ARG...]\n");
		return 125;
	}
	long rank = -1, rpn = var("CKPT_HARNESS_RANKS_PER_NODE") ? atol(var("CKPT_HARNESS_RANKS_PER_NODE")) : 0;
	for (size_t k = 0; k < sizeof rank_vars / sizeof *rank_vars && rank < 0; k++)
		if (var(rank_vars[k]))
			rank = atol(var(rank_vars[k]));
	if (rank < 0 && var("CKPT_HARNESS_DEFAULT_RANK"))
		rank = atol(var("CKPT_HARNESS_DEFAULT_RANK"));
	const char *list = var("CKPT_HARNESS_NODE_LIST"), *root = var("CKPT_HARNESS_NODE_ROOT");
	if (rank < 0 || rpn <= 0 || !list || !root) {
		fprintf(stderr, "ckpt-node-exec: no rank (%s), CKPT_HARNESS_RANKS_PER_NODE, CKPT_HARNESS_NODE_LIST or "
			"CKPT_HARNESS_NODE_ROOT\n", "OMPI_COMM_WORLD_RANK, PMI_RANK, PMIX_RANK, SLURM_PROCID, RANK");
		return 125;
	}
	/* the slot of this rank among the live nodes, and that slot's node index */
	long slot = rank / rpn, node = -1, nodes = 0;
	for (const char *p = list; *p; nodes++) {
		if (nodes == slot)
			node = atol(p);
		p = strchr(p, ',') ? strchr(p, ',') + 1 : p + strlen(p);
	}
	if (node < 0) {
		fprintf(stderr, "ckpt-node-exec: rank %ld is past the last node of %s (%ld ranks per node)\n", rank, list,
			rpn);
		return 125;
	}
	char host[64], dir[4300];
	snprintf(host, sizeof host, "simnode-%ld", node);
	const char *sim = var("CKPT_HARNESS_SIM_HOSTS"), *on = var("CKPT_HARNESS_HOST");
	if (sim && strcmp(sim, "1") == 0 && (!on || strcmp(on, host) != 0)) {
		fprintf(stderr, "ckpt-node-exec: rank %ld belongs on %s (node %ld) but the launcher started it on %s\n",
			rank, host, node, on ? on : "no simulated host");
		return 126;
	}
	snprintf(dir, sizeof dir, "%s/node-%ld", root, node);
	if (set_int("CKPT_HARNESS_NODE", node) < 0 || setenv("CKPT_HARNESS_NODE_DIR", dir, 1) < 0 ||
	    set_int("CKPT_HARNESS_NODES", nodes) < 0)
		return 125;
	const char *tr = var("CKPT_HARNESS_TORCHRUN_ENV");
	if (tr && strcmp(tr, "1") == 0) {
		set_int("LOCAL_RANK", rank % rpn);
		set_int("LOCAL_WORLD_SIZE", rpn);
		set_int("GROUP_RANK", slot);
		set_int("GROUP_WORLD_SIZE", nodes);
	}
	const char *jobdir = var("CKPT_HARNESS_JOBDIR"), *job = var("SLURM_JOB_ID"), *step = var("SLURM_STEP_ID");
	if (rank == 0 && jobdir && job && step) {
		char path[4200], line[64];
		snprintf(path, sizeof path, "%s/slurm-step", jobdir);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd >= 0) {
			int len = snprintf(line, sizeof line, "%s %s\n", job, step);
			if (write(fd, line, (size_t)len) < 0)
				(void)0;    /* then the harness cancels by the step's name */
			close(fd);
		}
	}
	/* the per-rank placeholders of trainer.command the harness left for us */
	char nodes_s[32];
	snprintf(nodes_s, sizeof nodes_s, "%ld", node);
	for (int a = i + 1; a < argc; a++)
		if (strstr(argv[a], "{node}") || strstr(argv[a], "{node_dir}"))
			argv[a] = substitute(argv[a], nodes_s, dir);
	execvp(argv[i + 1], argv + i + 1);
	fprintf(stderr, "ckpt-node-exec: cannot run %s: %s\n", argv[i + 1], strerror(errno));
	return 127;
}
