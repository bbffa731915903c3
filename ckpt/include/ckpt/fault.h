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

#endif
