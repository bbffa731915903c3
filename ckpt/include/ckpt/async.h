/*
 * libckpt: asynchronous save.
 *
 * ckpt_save_async copies this rank's state into staging buffers (phase
 * save.snapshot, the only part on the training path) and returns; a writer
 * thread per rank then runs the ordinary save (ckpt_save's protocol, phases
 * save.prepare ... save.retention, the same agreement) on the staged copy
 * while training goes on. The trainer calls ckpt_async_poll at every step
 * boundary: that is where the save's collectives run (see below) and where a
 * finished save is reported. A save is acknowledged (done->completed with
 * code 0) only after its commit point, on every rank at the same call.
 *
 * Collectives stay on the calling (training) thread: the writer's save talks
 * to a proxy communicator that parks each collective until the training
 * thread serves it, so the writer never calls the job's communicator (no
 * MPI_THREAD_MULTIPLE). Given nonblocking collectives
 * (ckpt_async_set_nonblocking), a poll starts the writer's parked collective
 * on a second channel and later sees it finish, never waiting for the other
 * ranks, and whether every writer is done is agreed by a round started at
 * one poll and finished at the next (pipelined: a few microseconds on the
 * training path). Otherwise, at each poll the ranks agree (gather + bcast of
 * one int) whether every writer is parked at its next collective, or
 * finished; only then do they serve it (or report the outcome) together.
 * Either way every rank makes the same sequence of collectives on each
 * channel (deadlock-free), and the training state is never touched by
 * timing: only when a save is reported depends on how fast the disk is.
 *
 * At most one save is in flight. A new ckpt_save_async while one is in
 * flight waits for it (CKPT_ASYNC_WAIT, the default) or, with
 * CKPT_ASYNC_SKIP, is skipped (returns CKPT_ASYNC_SKIPPED, journaled).
 * ckpt_save, ckpt_restore, ckpt_wait and ckpt_close first finish a save in
 * flight; an outcome that no call has reported yet is kept and reported by
 * the next ckpt_save_async / ckpt_async_poll / ckpt_async_wait, and every
 * outcome is journaled (event "async_done"): a background failure is never
 * lost.
 */
#ifndef CKPT_ASYNC_H
#define CKPT_ASYNC_H

#include <stdint.h>

#include "ckpt/alert.h"
#include "ckpt/ckpt.h"

typedef enum ckpt_async_policy {
	CKPT_ASYNC_WAIT = 0,        /* a new save waits for the one in flight */
	CKPT_ASYNC_SKIP = 1,        /* a new save is skipped while one is in flight */
} ckpt_async_policy;

/* ckpt_save_async: skipped, a save was in flight (CKPT_ASYNC_SKIP). */
#define CKPT_ASYNC_SKIPPED 1

/* The outcome of a save that finished during a call. */
typedef struct ckpt_async_done {
	int completed;              /* 1: the fields below describe a finished save */
	uint64_t step;
	int code;                   /* 0: committed (acknowledge it); < 0: failed, err says why */
	ckpt_error err;             /* agreed across ranks, like ckpt_save's */
	uint32_t polls;             /* step boundaries (polls) it was in flight for */
} ckpt_async_done;

typedef struct ckpt_async_stats {
	double snapshot_seconds;    /* the copy into staging of the last ckpt_save_async */
	double blocked_seconds;     /* the whole last ckpt_save_async call (wait + snapshot + agreement) */
	uint64_t snapshot_bytes;
} ckpt_async_stats;

/*
 * Local; the same on every rank. Default CKPT_ASYNC_WAIT. The first call of
 * this or ckpt_save_async allocates the staging copy and touches every page,
 * so calling it after ckpt_open keeps that cost off the first save.
 */
int ckpt_async_set_policy(ckpt *c, ckpt_async_policy policy);

/*
 * Collective. Snapshot the state for generation `step` and start writing it
 * in the background. 0: started; CKPT_ASYNC_SKIPPED; < 0: the snapshot failed
 * on some rank (agreed, nothing started, ckpt_last_error says why). A save
 * that finished meanwhile (the one waited for) is reported in *done.
 */
int ckpt_save_async(ckpt *c, uint64_t step, unsigned tags, ckpt_async_done *done);
/*
 * Collective, at every step boundary while saves are in flight: serve the
 * writer's next collective if every rank's writer is ready for it, report a
 * finished save in *done. Never waits for the disk. 0, or < 0 if the
 * communicator failed.
 */
int ckpt_async_poll(ckpt *c, ckpt_async_done *done);
/* Collective. Wait until no save is in flight; report it in *done. */
int ckpt_async_wait(ckpt *c, ckpt_async_done *done);
/*
 * Local; the same on every rank, while no save is in flight (else -EBUSY).
 * The tensors of the stages in `stages` (bit 1u << CKPT_STAGE_x) are copied
 * into staging by the writer thread (phase save.stage) instead of by
 * ckpt_save_async, so the copy overlaps the caller's next computation. The
 * caller then must call ckpt_async_fence before it next changes any of them
 * (a trainer: before its optimizer update, since forward and backward only
 * read the weights and moments). Default 0: everything is copied by
 * ckpt_save_async. -EINVAL for an unknown stage.
 */
int ckpt_async_set_deferred(ckpt *c, unsigned stages);
/*
 * Local. Wait until the writer has copied the deferred stages of the save
 * in flight (ckpt_async_set_deferred); returns at once if there is nothing
 * to wait for. With nonblocking collectives it also starts (or sees finish)
 * the writer's next collective, never waiting for other ranks: called
 * between two polls, it shortens the save's time in flight. Always 0: a
 * failed copy fails the save, reported as usual.
 */
int ckpt_async_fence(ckpt *c);
/*
 * Local. The save alerts (ckpt/alert.h; rank 0 only, else 0) of the last
 * background save that finished; valid until the next one finishes, which
 * is never before a call has reported this one.
 */
int ckpt_async_last_alerts(const ckpt *c, const ckpt_alert **out);
/* Nonblocking collectives for ckpt_async_set_nonblocking. */
enum ckpt_comm_op { CKPT_COMM_BARRIER, CKPT_COMM_GATHER, CKPT_COMM_BCAST, CKPT_COMM_ALLGATHER };

typedef struct ckpt_comm_nonblocking {
	/*
	 * Start `op` on channel `chan` of the communicator whose ctx it is given
	 * (ckpt_comm.ctx) and return a request in *req: channel 0 is the one of
	 * the communicator's blocking calls, channel 1 a second, independent one
	 * (its own communicator); on each channel the calls, blocking or
	 * started, come in the same order on every rank. Arguments as for the
	 * blocking calls (bcast: recv is the buffer, send is ignored; allgather:
	 * every rank receives size * bytes into recv).
	 */
	int (*istart)(void *ctx, int chan, int op, const void *send, void *recv, size_t bytes, int root, void **req);
	/*
	 * block = 0 never waits: 1 if the operation finished (the request is
	 * then released), 0 if not yet; block = 1 waits. Both return < 0 if the
	 * communicator failed (the request is released).
	 */
	int (*ifinish)(void *ctx, void *req, int block);
} ckpt_comm_nonblocking;

/*
 * Local; the same on every rank, while no save is in flight (else -EBUSY).
 * Background saves then use the pipelined protocol above (NULL: back to the
 * agreement rounds). The functions are copied; -EINVAL if one is missing.
 */
int ckpt_async_set_nonblocking(ckpt *c, const ckpt_comm_nonblocking *nb);
/* Local: 1 while a save is in flight. */
int ckpt_async_in_flight(const ckpt *c);
const ckpt_async_stats *ckpt_async_last_stats(const ckpt *c);

#endif
