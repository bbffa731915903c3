/*
 * The injector, linked into reftrain: reads the plan named by CKPT_FAULT_PLAN,
 * registers libfiu external callbacks on libckpt's and the trainer's fault
 * points, and decides per call. Every fault that fires is appended, with its
 * full context, to CKPT_FAULT_LOG.rank-R.jsonl before it acts (a kill follows
 * at once, and the harness reads the log afterwards).
 */
#ifndef HARNESS_INJECT_H
#define HARNESS_INJECT_H

/* Arm from the environment for this rank and attempt. 0 if nothing to arm or armed; < 0 on a bad plan. */
int harness_inject_arm_from_env(int rank, int attempt);

#endif
