/*
 * The injector, linked into reftrain: reads the plan named by CKPT_FAULT_PLAN,
 * registers libfiu external callbacks on libckpt's and the trainer's fault
 * points, and decides per call. Every fault that fires is appended, with its
 * full context, to CKPT_FAULT_LOG.rank-R.jsonl before it acts (a kill follows
 * at once, and the harness reads the log afterwards).
 */
#ifndef HARNESS_INJECT_H
#define HARNESS_INJECT_H

#include <stdint.h>

/*
 * The trail: where a rank is. With CKPT_FAULT_TRAIL=PREFIX, each rank maps
 * PREFIX.rank-R (one harness_trail, MAP_SHARED) and, at every libckpt phase
 * and I/O point and reftrain's train.step/train.reduce, overwrites it with
 * the point it reached: a memcpy, no system call. The page cache keeps it
 * when the rank is killed, so after a hang the harness can say where each
 * rank waited. seq is odd while a record is being written.
 */
#define HARNESS_TRAIL_MAGIC "ckptrl1"

typedef struct harness_trail {
	char magic[8];          /* HARNESS_TRAIL_MAGIC, NUL-terminated */
	uint32_t seq;
	int32_t rank;
	int32_t attempt;
	uint32_t delay_ms;      /* a delay injected at this point (the rank sleeps from t_ns), else 0 */
	uint64_t points;        /* points reached so far in this process */
	uint64_t step;
	uint64_t nth;           /* this op's count within the current phase and step */
	int64_t t_ns;           /* CLOCK_MONOTONIC when the point was reached */
	char phase[32];
	char op[16];
	char path[192];         /* the last path component */
} harness_trail;

/*
 * Arm from the environment for this rank and attempt (CKPT_FAULT_PLAN and/or
 * CKPT_FAULT_TRAIL). 0 if nothing to arm or armed; < 0 on a bad plan.
 */
int harness_inject_arm_from_env(int rank, int attempt);

#endif
