/*
 * The one plan matcher and fault logger that both injector front ends use:
 * the libfiu callbacks on libckpt's points (inject.c) and the LD_PRELOAD
 * shim for any program (shim/shim.c). It depends only on plan.h, the
 * context type of ckpt/fault.h and libc: no allocation, no stdio, no lock,
 * so the shim can call it from inside an intercepted write.
 *
 * Counting: every call that matches fault i increments seen[i] (an atomic,
 * which may live in shared memory so that a rank's threads and child
 * processes count together); fault i fires on the calls whose count n
 * satisfies nth <= n < nth + times (times 0: every call from nth on; an
 * errno fault without times fires from nth on, any other action once).
 * Faults are tried in plan order and the first that fires wins; faults after
 * it are not counted for that call.
 */
#ifndef HARNESS_FAULTMATCH_H
#define HARNESS_FAULTMATCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "ckpt/fault.h"
#include "plan.h"

/* Fault f applies to the call described by c in this attempt (ignores nth). */
bool harness_fault_matches(const harness_fault *f, const ckpt_fault_ctx *c, int attempt);
/*
 * Could f still act on a point with context c, having matched seen calls so
 * far? False once it has fired its last time. A NULL phase, op or path in c
 * stands for any (the durability probes ask about a phase or an op at once).
 */
bool harness_fault_may_act(const harness_fault *f, int seen, const ckpt_fault_ctx *c, int attempt);

/*
 * A process that knows its node (CKPT_HARNESS_NODE, set per rank by the
 * launcher: after a node was lost, rank r is no longer on node r / rpn)
 * settles every node filter of its plan once: a fault of its own node keeps
 * its other conditions, another node's fault never matches. node < 0: no
 * change (the filter falls back to rank / rpn).
 */
void harness_fault_resolve_node(harness_fault *plan, int n, int node);

/* How many calls fault f fires on from its nth on; 0 = all of them. */
int harness_fault_times(const harness_fault *f);

/*
 * Decide the call c: count it against every fault of plan[0..n) that matches,
 * in order, until one fires. Returns the index of the fault that fires (and
 * its count in *nth), or -1 for none.
 */
int harness_fault_decide(const harness_fault *plan, int n, atomic_int *seen, const ckpt_fault_ctx *c, int attempt,
			 int *nth);

/*
 * The fault-log line of a fire (JSON, one line, '\n'-terminated):
 *   {"fault":I,"attempt":A,"rank":R,"step":S,"phase":"...","op":"...","path":"...","nth":N,"action":"torn:4096+kill"}
 * Returns its length (truncated to len - 1 on overflow, still a line).
 */
int harness_fault_log_line(char *buf, size_t len, int index, const harness_fault *f, const ckpt_fault_ctx *c,
			   int attempt, int nth);

/* The human line echoed to stderr: "FAULT io rank=1 step=30 phase=save.shard_write op=write nth=2 -> torn:4096+kill\n". */
int harness_fault_echo_line(char *buf, size_t len, const harness_fault *f, const ckpt_fault_ctx *c, int nth);

/* Name of a rank's fault log: PREFIX.rank-R.jsonl. Returns snprintf's count. */
int harness_fault_log_path(char *buf, size_t len, const char *prefix, int rank);

/*
 * Log a fire: the JSON line to log_fd (if >= 0) and the echo to echo_fd (if
 * >= 0), each one write(2) through `wr` (the real write, for the shim; NULL:
 * write). Best effort: the harness reports a planned fault that never fired.
 */
void harness_fault_log(int log_fd, int echo_fd, ssize_t (*wr)(int, const void *, size_t), int index,
		       const harness_fault *f, const ckpt_fault_ctx *c, int attempt, int nth);

#endif
