/*
 * Fault points. Before every I/O operation and at the start of every phase,
 * libckpt evaluates a libfiu point:
 *
 *   ckpt/io/<op>        open write fsync fdatasync rename mkdir unlink rmdir
 *                       ftruncate close read opendir
 *   ckpt/phase/<phase>  save.prepare ... restore.verify (DESIGN.md)
 *
 * An injector registered with fiu_enable_external() reads the context of the
 * call with ckpt_fault_current() and, to fail it, points *failinfo at a
 * ckpt_fault_action. A failinfo of NULL means "fail with EIO". Built without
 * FIU_ENABLE, the points compile away.
 */
#ifndef CKPT_FAULT_H
#define CKPT_FAULT_H

#include <stddef.h>
#include <stdint.h>

typedef struct ckpt_fault_ctx {
	int rank;
	uint64_t step;
	const char *phase;      /* "save.shard_write", ... */
	const char *op;         /* "write", ...; "phase" at a phase point */
	const char *path;       /* may be NULL */
	int fd;                 /* -1 if none */
	size_t bytes;           /* bytes the operation would move */
} ckpt_fault_ctx;

enum ckpt_fault_kind {
	CKPT_FAULT_ERRNO = 1,   /* fail with err, doing nothing */
	CKPT_FAULT_SHORT,       /* write only `bytes` (a short write; the caller loops) */
	CKPT_FAULT_TORN,        /* write only `bytes`, then SIGKILL the process */
	CKPT_FAULT_KILL,        /* SIGKILL the process before the operation */
	CKPT_FAULT_DELAY,       /* sleep delay_ms, then go on */
};

typedef struct ckpt_fault_action {
	enum ckpt_fault_kind kind;
	int err;
	size_t bytes;
	unsigned delay_ms;
} ckpt_fault_action;

/* The context of the operation being decided (valid inside fiu callbacks). */
const ckpt_fault_ctx *ckpt_fault_current(void);

/*
 * A phase point for code outside libckpt (the trainer's own phases, e.g.
 * train.step): evaluates ckpt/phase/<phase> with this context and carries out
 * a kill or delay. Returns 0, or -errno for an injected failure.
 */
int ckpt_fault_phase(int rank, uint64_t step, const char *phase);

/*
 * The mutation gate's reach record (scripts/mutants): every place where a
 * seeded bug (a CKPT_MUTANT_* site in libckpt or reftrain) would change what
 * runs calls ckpt_mutant_reached with the bug's name, in every build. With
 * CKPT_REACH_LOG naming a file, each name is appended to it once per process
 * (one line, O_APPEND); without it, nothing happens. A scenario whose
 * baseline run never reached a bug's sites runs the same with the bug: the
 * gate takes its verdict from the baseline instead of running it again.
 */
void ckpt_mutant_reached(const char *name);

/*
 * Who watches the fault points, for the sites below: the injector registers
 * a function saying whether a rule of its plan could still act on a point
 * with context c (could match it, and has not fired its last time). In c, a
 * NULL phase, op or path stands for any.
 */
typedef int (*ckpt_fault_watch_fn)(const ckpt_fault_ctx *c);
void ckpt_fault_set_watch(ckpt_fault_watch_fn fn);

/* Whether this process keeps a reach record (CKPT_REACH_LOG); the probes cost nothing without one. */
int ckpt_mutant_recording(void);

/*
 * ckpt_mutant_reached for a site whose bug, unless `effect` says it does
 * more here, only adds or skips fault points: points[0..n), a NULL phase, op
 * or path standing for any. Such a difference shows only to a fault at one
 * of those points, so the site counts as reached if effect is true, if
 * faults come from the LD_PRELOAD shim (it sees system calls libckpt cannot
 * ask about), or if a fault plan is set and either no watch is registered
 * or the watch says a rule could act on one of the points.
 */
void ckpt_mutant_reached_points(const char *name, int effect, const ckpt_fault_ctx *points, int n);

/*
 * The same for a site whose bug changes only when data becomes durable (a
 * sync skipped or put off), running other fault points on the way. A kill
 * never shows such a bug: the page cache outlives the process, so the next
 * attempt reads the same bytes either way. A power cut or a crash state
 * does: the effect is an undo record being kept (CKPT_UNDO_LOG, or the
 * shim's).
 */
void ckpt_mutant_reached_durability(const char *name, const ckpt_fault_ctx *points, int n);

#endif
