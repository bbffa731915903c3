/*
 * Many nodes: node identity, node-local directories, node loss, and the
 * launchers that place ranks on nodes (behind launch.h's interface).
 *
 * A scenario's trainer runs on trainer.nodes nodes, world_size / nodes ranks
 * each, block mapping: rank r is on node r / ranks_per_node. Every node K
 * has a node-local directory, <checkpoint root>.nodes/node-K (the node-local
 * tier: a job's scratch or local checkpoint copies; each checkpoint root gets
 * its own, so the uninterrupted runs never share one with the attempts).
 * Every rank is started through ckpt-node-exec, which sets
 * CKPT_HARNESS_NODE (K), CKPT_HARNESS_NODE_DIR, CKPT_HARNESS_NODES and
 * CKPT_HARNESS_RANKS_PER_NODE from its rank, and checks that the launcher
 * really put it on node K where the launcher says (the simulated hostfile).
 *
 * The launchers, for a job of more than one node or under --launcher srun:
 *   - mpirun with a simulated hostfile (the default on one machine): one
 *     host name per node, simnode-K, each with ranks_per_node slots, and an
 *     rsh agent that starts each node's Open MPI daemon (orted) here, so
 *     every node has its own daemon and its ranks are its children, mapped
 *     --map-by ppr:R:node --rank-by slot; the ranks talk over TCP on the
 *     loopback (PLATFORM-NOTES.md: vader fails when two "nodes" share
 *     /dev/shm);
 *   - mpirun with a real hostfile (--hostfile FILE): node K is the K-th
 *     host of the file, same mapping;
 *   - srun (--launcher srun): srun --mpi=pmix -n N inside the allocation
 *     the harness runs in (or a job of its own); nodes are real when the
 *     allocation has that many (SLURM_JOB_NUM_NODES), else simulated by the
 *     rank grouping alone. Every step is named; when it ends, times out or
 *     the harness is interrupted or killed, the step (or srun's own job) is
 *     scancelled, so nothing outlives the harness.
 *
 * Node loss (do: node_loss): every rank of node K dies where the fault
 * matches (each is SIGKILLed by its injector, and the launcher ends the job,
 * as on a cluster that lost a node); then the harness wipes node K's
 * directory. With replace: true a fresh node takes its place (same world
 * size, an empty node-local directory); without, later attempts run on the
 * remaining nodes, with ranks_per_node fewer ranks per lost node.
 */
#ifndef HARNESS_NODES_H
#define HARNESS_NODES_H

#include <stddef.h>
#include <stdio.h>

#include "launch.h"
#include "scenario.h"

#define HARNESS_NODES_MAX 64

enum harness_launch_kind { HARNESS_LAUNCH_MPIRUN = 0, HARNESS_LAUNCH_SRUN };

/* --launcher mpirun|srun: 0 and *out, or -EINVAL. */
int harness_launch_kind_parse(const char *name, enum harness_launch_kind *out);

/* The command-line choices of run and suite (main.c), before any job. */
void harness_nodes_configure(enum harness_launch_kind kind, const char *hostfile);

/*
 * A scenario starts: every node is live again (the uninterrupted runs and
 * attempt 1 run on all of them).
 */
void harness_nodes_begin(const harness_scenario *s);

/*
 * After attempt `attempt` crashed: for every node_loss fault that fired in
 * it (the fault logs PREFIX.rank-R.jsonl), wipe that node's directory under
 * ckdir.nodes and, unless it is replaced, run the next attempts without it.
 * Appends what it did to the file logpath. 0, or -ENODEV when no node is
 * left (why in err).
 */
int harness_nodes_after_attempt(const harness_scenario *s, const char *faultlog, int attempt, const char *ckdir,
				const char *logpath, char *err, size_t errlen);

/* How many node-local directories node losses wiped in this process (replaced or not). */
int harness_nodes_wiped(void);
/* How many nodes were lost without a replacement since harness_nodes_begin. */
int harness_nodes_gone(void);

/*
 * The launcher for one job of s (dflt: the one run.c would use on one node)
 * and the ranks it runs (*np: world_size, less the lost nodes' ranks).
 * bindir: where ckpt-node-exec lives; ckdir: the job's checkpoint root (its
 * node directories are ckdir.nodes/node-K, created here).
 */
const harness_launcher *harness_nodes_launcher(const harness_scenario *s, const char *bindir, const char *ckdir,
					       const harness_launcher *dflt, int *np);

/*
 * --nodes N: a scenario that does not set trainer.nodes (and has no node
 * fault) runs on N nodes. 0, or -EINVAL with "file:1:1: why" in err when N
 * does not divide its world_size or its launcher is single.
 */
int harness_nodes_override(harness_scenario *s, int nodes, char *err, size_t errlen);

/* The node directory of node k for checkpoint root ckdir. */
void harness_node_dir(char *out, size_t len, const char *ckdir, int k);

#endif
