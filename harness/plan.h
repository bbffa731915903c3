/*
 * A fault plan: what the harness hands every rank (a text file named by
 * CKPT_FAULT_PLAN, one fault a line), and what the injector inside each rank
 * matches libckpt's and reftrain's fault points against.
 *
 *   fault attempt=1 rank=1 step=30 phase=save.shard_write op=write nth=2 times=1 path=* action=torn arg=4096 errno=0
 *
 * An integer of -1 and a string of "*" match anything.
 */
#ifndef HARNESS_PLAN_H
#define HARNESS_PLAN_H

#include <stdint.h>

enum harness_action { HARNESS_KILL, HARNESS_ERRNO, HARNESS_SHORT, HARNESS_TORN, HARNESS_DELAY, HARNESS_POWER_LOSS,
		       HARNESS_DAMAGE, HARNESS_NODE_LOSS, HARNESS_ACTION_COUNT };

typedef struct harness_fault {
	int attempt;            /* which attempt it is armed in (default 1) */
	int rank;
	int64_t step;
	char phase[32];
	char op[16];
	char path[128];         /* fnmatch glob on the path's last component */
	int nth;                /* fire from the nth matching call (1-based) */
	int times;              /* how many calls fire; 0 = every one from nth on */
	enum harness_action action;
	int err;                /* errno for HARNESS_ERRNO */
	long arg;               /* bytes (short, torn) or milliseconds (delay) */
	/* HARNESS_DAMAGE: damage at rest at a step boundary, done by the injector */
	int dkind;              /* enum harness_damage_kind */
	char target[128];       /* GENERATION/FILE-GLOB */
	int64_t doff, dseed, dsize;
	/*
	 * when: {node: N} (nodes.h): the fault applies to the ranks of node N
	 * only; rpn > 0 turns the filter on (ranks per node, block mapping:
	 * rank r is on node r / rpn unless the rank's process was told its
	 * node, CKPT_HARNESS_NODE). HARNESS_NODE_LOSS: arg 1 = a replacement
	 * node takes the lost one's place in the next attempt.
	 */
	int node, rpn;
} harness_fault;

const char *harness_action_name(enum harness_action a);
/* Human description: "torn:4096+kill", "errno:ENOSPC x2", ... */
void harness_fault_describe(const harness_fault *f, char *buf, unsigned long len);

int harness_plan_write(const char *path, const harness_fault *f, int n);
/* 0, or -errno; on a malformed line, -EINVAL. Caller frees *out. */
int harness_plan_read(const char *path, harness_fault **out, int *n);

/* errno names the scenarios may use, and back. */
int harness_errno_parse(const char *name);
const char *harness_errno_name(int err);
/* "EIO, ENOSPC, ..." */
const char *harness_errno_list(void);

#endif
