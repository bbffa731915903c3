/*
 * Asynchronous save (ckpt/async.h): snapshot on the training thread, the
 * ordinary save on a writer thread, collectives served on the training
 * thread.
 *
 * Threads and attribution. save.snapshot is evaluated on the training
 * thread with the save's step. The writer thread runs ckpt.c's save
 * unchanged, so save.prepare ... save.latest (and save.retention, on the
 * retention thread it starts) fire on the writer with the save's step and
 * this rank: a fault aimed at "step 20, save.shard_write" hits the
 * background write of generation 20, whatever training step the job is at.
 *
 * Collectives. The writer's save gets a proxy communicator: each barrier,
 * gather or bcast parks in `slot` until the training thread serves it on the
 * job's communicator. ckpt_async_poll runs one agreement round at a time:
 * every rank contributes its writer's state (busy, parked at a collective,
 * finished), rank 0 decides (serve if all parked, finish if all finished,
 * else wait) and broadcasts the verdict, so every rank serves the same
 * collective at the same poll, or none. The save's collectives come in the
 * same order on every rank (its control flow depends only on agreed
 * outcomes), so what the ranks serve together always matches. A poll never
 * waits for the disk; a wait (ckpt_async_wait, a new save under
 * CKPT_ASYNC_WAIT, ckpt_save/restore/close) blocks until its own writer is
 * parked or finished before each round, so it never spins.
 *
 * Staging. One buffer per tensor, allocated and touched at the first call
 * of this module (ckpt_async_set_policy, or the first save) and reused; it is written only by the snapshot, which runs only when no writer
 * is in flight (the previous save finished first), and read only by the
 * writer. The snapshot failing on any rank is agreed before a writer starts,
 * so either every rank's writer runs or none does.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckpt/async.h"
#include "internal.h"

enum { W_IDLE, W_BUSY, W_PARKED, W_DONE };          /* the writer, as the training thread sees it */
enum { V_WAIT, V_SERVE, V_FINISH };                  /* the verdict of a round */
enum { Q_BARRIER, Q_GATHER, Q_BCAST };

/*
 * How long a poll waits, after serving a collective, for the writer to park
 * at its next one or finish: the protocol's collectives come in bursts
 * (barrier, two gathers; the outcome's bcast, then the end), and serving a
 * burst in one poll instead of one per step lets a save finish in three
 * polls (prepare's outcome, the burst after the shards, the outcome after
 * the commit). Only when a save is reported depends on it.
 */
#define GRACE_NS 100000L

struct ckpt_async {
	ckpt *c;
	ckpt_parts p;
	ckpt_comm *comm;            /* the job's, used on the training thread only */
	ckpt_comm proxy;            /* the writer's */
	ckpt_async_policy policy;
	ckpt_async_stats stats;

	/* staging: one copy per tensor, file order */
	int n;
	ckpt_entry *staged;
	ckpt_entry **dst;

	pthread_t thread;
	int running;                /* a writer was started and not joined */
	uint64_t step;
	unsigned tags;
	uint32_t polls;
	double t_start;
	double blocked;             /* training-thread seconds spent on the save in flight so far */
	double fence_wait;          /* of which waiting in ckpt_async_fence for the writer's copy */
	double round_wait;          /* of which finishing the pipelined rounds */
	double progress_wait;       /* of which starting and testing the writer's collectives */
	double call_t0;             /* start of the current call (or of its part that belongs to this save) */
	int *states;                /* rank 0: every rank's writer state in a round */

	pthread_mutex_t mu;
	pthread_cond_t cv;
	int wstate;                 /* under mu */
	struct {                    /* the parked collective, under mu */
		int kind, root, rc, served;
		const void *send;
		void *recv;
		size_t bytes;
	} q;
	int gate;                   /* under mu: 0 wait, 1 go, -1 cancelled (the snapshot failed somewhere) */
	int result;                 /* the writer's save, under mu once W_DONE */
	ckpt_error err;

	int pending;                /* an outcome not reported yet */
	ckpt_async_done pending_done;
	ckpt_alert alerts[CKPT_ALERTS_MAX];   /* rank 0: the alerts of the save last finished */
	int nalerts;

	/* the pipelined protocol (ckpt_async_set_nonblocking) */
	int nb;
	ckpt_comm_nonblocking ops;
	void *op_req;               /* the parked collective, started on channel 1 */
	void *round_req;            /* the round started at the last poll, on channel 0 */
	int round_mine;

	/* the copy the writer makes (ckpt_async_set_deferred) */
	unsigned deferred;          /* bit s: tensors of stage s */
	int copied;                 /* under mu: the writer has copied them (or given up) */
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the proxy communicator (writer thread) ------------------------------ */

static int park(struct ckpt_async *a, int kind, const void *send, void *recv, size_t bytes, int root)
{
	int rc;

	pthread_mutex_lock(&a->mu);
	a->q.kind = kind;
	a->q.send = send;
	a->q.recv = recv;
	a->q.bytes = bytes;
	a->q.root = root;
	a->q.served = 0;
	a->wstate = W_PARKED;
	pthread_cond_broadcast(&a->cv);
	while (!a->q.served)
		pthread_cond_wait(&a->cv, &a->mu);
	rc = a->q.rc;
	pthread_mutex_unlock(&a->mu);
	return rc;
}

static int proxy_barrier(void *ctx)
{
	return park(ctx, Q_BARRIER, NULL, NULL, 0, 0);
}

static int proxy_gather(void *ctx, const void *send, size_t bytes, void *recv, int root)
{
	return park(ctx, Q_GATHER, send, recv, bytes, root);
}

static int proxy_bcast(void *ctx, void *buf, size_t bytes, int root)
{
	return park(ctx, Q_BCAST, buf, buf, bytes, root);
}

static int is_deferred(const struct ckpt_async *a, const ckpt_entry *e)
{
	return (a->deferred >> e->stage) & 1u;
}

static size_t entry_bytes(const ckpt_entry *e)
{
	return (size_t)e->local_elems * ckpt__dtype_size(e->dtype);
}

/*
 * Writer thread, first thing: copy the deferred stages' tensors into
 * staging (phase save.stage), then let ckpt_async_fence return. A failure
 * here goes into the save as this rank's error at its barrier, so the ranks
 * still make the same collectives and agree that it failed.
 */
static void stage_deferred(struct ckpt_async *a, ckpt_error *pre)
{
	ckpt_io io = { .rootfd = -1, .root = a->p.root, .rank = a->comm->rank, .step = a->step, .phase = "save.stage",
		       .err = pre, .journal = NULL };
	int n = 0;

	for (int k = 0; k < a->n; k++)
		n += is_deferred(a, a->p.dst[k]);
	if (n > 0 && ckpt__io_phase(&io, "save.stage") == 0)
		for (int k = 0; k < a->n; k++)
			if (is_deferred(a, a->p.dst[k]) && a->dst[k] != a->p.dst[k])
				memcpy(a->dst[k]->data, a->p.dst[k]->data, entry_bytes(a->p.dst[k]));
	pthread_mutex_lock(&a->mu);
	a->copied = 1;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

/* Open the writer's gate (1), or cancel it (-1) and join it. */
static void go(struct ckpt_async *a, int how)
{
	pthread_mutex_lock(&a->mu);
	a->gate = how;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
	if (how < 0)
		pthread_join(a->thread, NULL);
}

static void *writer(void *arg)
{
	struct ckpt_async *a = arg;
	int rc;

#ifdef SCHED_BATCH
	/*
	 * A batch thread does not preempt the thread that woke it: the training
	 * thread serves a collective and goes on computing, while the writer
	 * keeps its fair share of the CPU (Linux; elsewhere nothing changes).
	 */
	struct sched_param sp = { 0 };
	pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
#endif

	pthread_mutex_lock(&a->mu);
	while (a->gate == 0)
		pthread_cond_wait(&a->cv, &a->mu);
	rc = a->gate;
	pthread_mutex_unlock(&a->mu);
	if (rc < 0)
		return NULL;
	ckpt_error pre;
	ckpt__error_clear(&pre);
	stage_deferred(a, &pre);
	rc = ckpt__save_staged(a->c, &a->proxy, a->dst, a->step, a->tags, &pre);

	pthread_mutex_lock(&a->mu);
	a->result = rc;
	a->err = *a->p.err;
	a->wstate = W_DONE;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

/* ---- the training thread's side ------------------------------------------ */

/* Hand the parked writer its collective's result. */
static void release(struct ckpt_async *a, int rc)
{
	pthread_mutex_lock(&a->mu);
	a->q.rc = rc;
	a->q.served = 1;
	a->wstate = W_BUSY;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

/*
 * The writer's state, once it is parked or finished (block > 0), within a
 * short grace (block < 0: a writer just released usually parks again within
 * microseconds), or as it is (0).
 */
static int settle(struct ckpt_async *a, int block)
{
	int st;

	pthread_mutex_lock(&a->mu);
	while (block > 0 && a->wstate == W_BUSY)
		pthread_cond_wait(&a->cv, &a->mu);
	if (block < 0 && a->wstate == W_BUSY) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += GRACE_NS;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (a->wstate == W_BUSY && pthread_cond_timedwait(&a->cv, &a->mu, &until) == 0)
			;
	}
	st = a->wstate;
	pthread_mutex_unlock(&a->mu);
	return st;
}

static int serve(struct ckpt_async *a)
{
	ckpt_comm *m = a->comm;
	int rc;

	/* the writer is parked: q is stable until served is set */
	switch (a->q.kind) {
	case Q_BARRIER:
		rc = m->barrier(m->ctx);
		break;
	case Q_GATHER:
		rc = m->gather(m->ctx, a->q.send, a->q.bytes, a->q.recv, a->q.root);
		break;
	default:
		rc = m->bcast(m->ctx, a->q.recv, a->q.bytes, a->q.root);
		break;
	}
	release(a, rc);
	return rc;
}

static const ckpt_error no_error;       /* what ckpt__error_clear leaves */

static void finish(struct ckpt_async *a)
{
	ckpt_async_done *d = &a->pending_done;

	pthread_join(a->thread, NULL);
	a->running = 0;
	a->wstate = W_IDLE;
	*d = (ckpt_async_done){ .completed = 1, .step = a->step, .code = a->result, .err = a->err, .polls = a->polls };
	if (d->code != 0 || memcmp(&d->err, &no_error, sizeof no_error) != 0)     /* else clearing them is a no-op */
		ckpt_mutant_reached("async_error_dropped");
#ifdef CKPT_MUTANT_ASYNC_ERROR_DROPPED
	d->code = 0;          /* mutant: a failure in the background is reported as a commit */
	ckpt__error_clear(&d->err);
#endif
	a->pending = 1;
	*a->p.err = a->err;
	const ckpt_alert *al;      /* the writer is joined: its save's alerts are stable until the next save */
	a->nalerts = ckpt_last_save_alerts(a->c, &al);
	memcpy(a->alerts, al, sizeof *al * (size_t)a->nalerts);
	double blocked = a->blocked + (now() - a->call_t0), fence_wait = a->fence_wait, round_wait = a->round_wait,
	       progress_wait = a->progress_wait;
	a->blocked = a->fence_wait = a->round_wait = a->progress_wait = 0;
	/* blocked_seconds: what this save cost the training thread (its ckpt_save_async call, every poll and wait) */
	ckpt__journal_add(a->p.journal,
			  "\"event\":\"async_done\",\"step\":%" PRIu64 ",\"result\":%d,\"error\":\"%s\",\"polls\":%" PRIu32
			  ",\"seconds\":%.6f,\"blocked_seconds\":%.6f,\"fence_seconds\":%.6f,\"round_seconds\":%.6f,\"progress_seconds\":%.6f",
			  a->step, a->result, ckpt_strerror(a->result), a->polls, now() - a->t_start, blocked, fence_wait,
			  round_wait, progress_wait);
}

/*
 * One agreement round. block > 0: first wait until this rank's writer is
 * parked or finished; < 0: wait for that at most GRACE_NS; 0: do not wait.
 * 2 if it served a collective (another round, with a grace, may follow),
 * 1 if it finished the save, 0 if some writer was busy, < 0 if the communicator failed. Ranks whose writers disagree for
 * good (one finished, another parked) can only follow a communicator that
 * failed on some ranks and not others; over MPI that aborts the job first.
 */
static int round_once(struct ckpt_async *a, int block)
{
	ckpt_comm *m = a->comm;
	int mine = settle(a, block), verdict = V_WAIT, rc;

	if ((rc = m->gather(m->ctx, &mine, sizeof mine, a->states, 0)) < 0)
		return rc;
	if (m->rank == 0) {
		int parked = 0, done = 0;
		for (int r = 0; r < m->size; r++) {
			parked += a->states[r] == W_PARKED;
			done += a->states[r] == W_DONE;
		}
		verdict = parked == m->size ? V_SERVE : done == m->size ? V_FINISH : V_WAIT;
	}
	if ((rc = m->bcast(m->ctx, &verdict, sizeof verdict, 0)) < 0)
		return rc;
	if (verdict == V_SERVE) {
		serve(a);       /* a failed collective reaches the writer's save, which fails and reports it */
		return 2;
	}
	if (verdict == V_FINISH) {
		finish(a);
		return 1;
	}
	return 0;
}

/* Account the training thread's time in a call to the save in flight (see finish). */
static void enter_call(struct ckpt_async *a)
{
	a->call_t0 = now();
}

static void leave_call(struct ckpt_async *a)
{
	if (a->running)
		a->blocked += now() - a->call_t0;
}

/*
 * The pipelined protocol, when the communicator offers nonblocking
 * collectives (ckpt_async_set_nonblocking). Two changes take the agreement off
 * the training path:
 *
 * - The writer's collectives go to channel 1, a communicator of their own:
 *   at each call the training thread starts the one its writer is parked at
 *   and, at later calls, sees whether it finished, never waiting. The
 *   writer's program fixes their order, the same on every rank, so no
 *   agreement is needed to serve them.
 * - Whether the save is finished is agreed by a round started at one poll
 *   (an allgather of "my writer is done" on channel 0) and finished at the
 *   next, which every rank reaches at the same call: by then the round has
 *   long completed, so finishing it costs microseconds. A save is reported
 *   one poll after every writer is done, at the same call on every rank.
 */
static const int comm_op[] = { [Q_BARRIER] = CKPT_COMM_BARRIER, [Q_GATHER] = CKPT_COMM_GATHER,
			       [Q_BCAST] = CKPT_COMM_BCAST };

/* Start the collective the writer is parked at, or finish the started one (block: wait). 1: the writer was released. */
static int serve_nb(struct ckpt_async *a, int block)
{
	ckpt_comm *m = a->comm;
	int rc;

	if (settle(a, 0) != W_PARKED)
		return 0;
	if (!a->op_req && (rc = a->ops.istart(m->ctx, 1, comm_op[a->q.kind], a->q.send, a->q.recv, a->q.bytes,
					  a->q.root, &a->op_req)) < 0) {
		a->op_req = NULL;
		release(a, rc);         /* the writer's save fails and says why */
		return 1;
	}
	if ((rc = a->ops.ifinish(m->ctx, a->op_req, block)) == 0)
		return 0;
	a->op_req = NULL;
	release(a, rc < 0 ? rc : 0);
	return 1;
}

/*
 * What this rank's writer is ready for, without waiting for the other ranks
 * or for the writer: no grace here, since a thread that sleeps even 100 us
 * on a busy machine may not run again for milliseconds.
 */
static void progress(struct ckpt_async *a)
{
	double t0 = now();

	while (serve_nb(a, 0))
		;
	a->progress_wait += now() - t0;
}

/* Finish the round started at the previous call: 1 if every writer was done (the save is finished), 0 if not. */
static int round_finish(struct ckpt_async *a)
{
	ckpt_comm *m = a->comm;
	int rc;

	double t0 = now();

	if (!a->round_req)
		return 0;
	rc = a->ops.ifinish(m->ctx, a->round_req, 1);
	a->round_req = NULL;
	a->round_wait += now() - t0;
	if (rc < 0)
		return rc;
	for (int r = 0; r < m->size; r++)
		if (a->states[r] != W_DONE)
			return 0;
	finish(a);
	return 1;
}

static int round_begin(struct ckpt_async *a)
{
	ckpt_comm *m = a->comm;
	int rc;

	a->round_mine = settle(a, 0) == W_DONE ? W_DONE : W_BUSY;
	rc = a->ops.istart(m->ctx, 0, CKPT_COMM_ALLGATHER, &a->round_mine, a->states, sizeof a->round_mine, 0,
		       &a->round_req);
	if (rc < 0)
		a->round_req = NULL;
	return rc;
}

/* A step boundary: progress, the verdict of the last round, the next round. */
static int poll_nb(struct ckpt_async *a)
{
	int rc;

	progress(a);
	if ((rc = round_finish(a)) < 0)
		return rc;
	return a->running ? round_begin(a) : 0;
}

/* Until the save is finished: every rank is in this collective call, serving its own writer. */
static int drain_nb(struct ckpt_async *a)
{
	int rc = 0;

	while (a->running) {
		while (settle(a, 1) != W_DONE)
			serve_nb(a, 1);
		if ((rc = round_finish(a)) < 0 || (a->running && (rc = round_begin(a)) < 0))
			break;
	}
	return rc;
}

/* A step boundary's worth of progress; with the blocking protocol, rounds while each serves a collective. */
static int poll_once(struct ckpt_async *a)
{
	int rc = 0;

	if (a->nb)
		return poll_nb(a);
	for (int grace = 0; a->running && (rc = round_once(a, grace)) == 2; grace = -1)
		;
	return rc < 0 ? rc : 0;
}

static int drain(struct ckpt_async *a)
{
	int rc = 0;

	enter_call(a);
	if (a->nb)
		rc = drain_nb(a);
	else
		while (a->running && (rc = round_once(a, 1)) >= 0)
			;
	leave_call(a);
	return rc < 0 ? rc : 0;
}

void ckpt__async_drain(ckpt *c)
{
	struct ckpt_async *a = *ckpt__async_of(c);

	if (a)
		drain(a);
}

void ckpt__async_free(ckpt *c)
{
	struct ckpt_async *a = *ckpt__async_of(c);

	if (!a)
		return;
	drain(a);
	if (a->running) {       /* the communicator failed: the writer is parked for good */
		pthread_mutex_lock(&a->mu);
		a->q.rc = -ECANCELED;
		a->q.served = 1;
		pthread_cond_broadcast(&a->cv);
		pthread_mutex_unlock(&a->mu);
		pthread_join(a->thread, NULL);
	}
	if (a->pending && a->pending_done.code != 0)
		ckpt__journal_add(a->p.journal, "\"event\":\"async_unreported\",\"step\":%" PRIu64 ",\"error\":\"%s\"",
				  a->pending_done.step, ckpt_strerror(a->pending_done.code));
	for (int k = 0; k < a->n; k++)
		free(a->staged[k].data);
	free(a->staged);
	free(a->dst);
	free(a->states);
	pthread_mutex_destroy(&a->mu);
	pthread_cond_destroy(&a->cv);
	free(a);
	*ckpt__async_of(c) = NULL;
}

static int get(ckpt *c, struct ckpt_async **out)
{
	ckpt_parts p;
	struct ckpt_async *a;

	if ((*out = *ckpt__async_of(c)))
		return 0;
	ckpt__parts(c, &p);      /* no writer yet: nothing else reads or swaps these */
	if (!(a = calloc(1, sizeof *a)))
		return -ENOMEM;
	a->c = c;
	a->p = p;
	a->comm = p.comm;
	a->proxy = (ckpt_comm){ .ctx = a, .rank = p.comm->rank, .size = p.comm->size, .barrier = proxy_barrier,
				.gather = proxy_gather, .bcast = proxy_bcast };
	a->n = p.state->n;
	a->staged = calloc((size_t)a->n + 1, sizeof *a->staged);
	a->dst = calloc((size_t)a->n + 1, sizeof *a->dst);
	a->states = calloc((size_t)p.comm->size, sizeof *a->states);
	if (!a->staged || !a->dst || !a->states) {
		free(a->staged);
		free(a->dst);
		free(a->states);
		free(a);
		return -ENOMEM;
	}
	/* the staging copy, touched now (page faults here, not in the first snapshot) */
	for (int k = 0; k < a->n; k++) {
		const ckpt_entry *e = p.dst[k];
		size_t nb = (size_t)e->local_elems * ckpt__dtype_size(e->dtype);
		a->staged[k] = *e;
		if (!(a->staged[k].data = malloc(nb ? nb : 1))) {
			for (int j = 0; j < k; j++)
				free(a->staged[j].data);
			free(a->staged);
			free(a->dst);
			free(a->states);
			free(a);
			return -ENOMEM;
		}
		memset(a->staged[k].data, 0, nb ? nb : 1);
	}
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	a->wstate = W_IDLE;
	*p.async = *out = a;
	return 0;
}

/* Hand over an outcome not yet reported. */
static void report(struct ckpt_async *a, ckpt_async_done *done)
{
	if (done)
		memset(done, 0, sizeof *done);
	if (!a || !a->pending || !done)
		return;
	*done = a->pending_done;
	a->pending = 0;
}

/* Copy the live state into staging (training thread, no writer in flight). */
static int snapshot(struct ckpt_async *a, ckpt_io *io)
{
	uint64_t bytes = 0;
	int rc;

	ckpt_mutant_reached("async_no_snapshot");
	for (int k = 0; k < a->n; k++) {
		const ckpt_entry *e = a->p.dst[k];
		size_t nb = (size_t)e->local_elems * ckpt__dtype_size(e->dtype);
		a->dst[k] = &a->staged[k];      /* allocated by get() */
#ifdef CKPT_MUTANT_ASYNC_NO_SNAPSHOT
		a->dst[k] = a->p.dst[k];      /* mutant: the writer reads the live state */
#endif
		bytes += nb;
	}
	if ((rc = ckpt__io_phase(io, "save.snapshot")) < 0)
		return rc;
	for (int k = 0; k < a->n; k++)
		if (a->dst[k] != a->p.dst[k] && !is_deferred(a, a->p.dst[k]))
			memcpy(a->dst[k]->data, a->p.dst[k]->data, entry_bytes(a->p.dst[k]));
	a->stats.snapshot_bytes = bytes;
	return 0;
}

int ckpt_async_set_policy(ckpt *c, ckpt_async_policy policy)
{
	struct ckpt_async *a;
	int rc;

	if (policy != CKPT_ASYNC_WAIT && policy != CKPT_ASYNC_SKIP)
		return -EINVAL;
	if ((rc = get(c, &a)) < 0)
		return rc;
	a->policy = policy;
	return 0;
}

int ckpt_save_async(ckpt *c, uint64_t step, unsigned tags, ckpt_async_done *done)
{
	struct ckpt_async *a;
	ckpt_error local, agreed;
	ckpt_io io;
	double t0 = now(), t1;
	int rc, created = 0;

	report(NULL, done);
	if ((rc = get(c, &a)) < 0)
		return rc;
	ckpt__error_clear(&local);
	ckpt__error_clear(&agreed);
	io = (ckpt_io){ .rootfd = -1, .root = a->p.root, .rank = a->comm->rank, .step = step, .phase = "save.snapshot",
			.err = &local, .journal = NULL };
	/* not only when a writer is still in flight: whether one is depends on timing */
	ckpt_mutant_reached("async_staging_reused");
#ifdef CKPT_MUTANT_ASYNC_STAGING_REUSED
	/* mutant: the staging buffers are refilled before the writer in flight is done with them */
	for (int k = 0; k < a->n && a->running; k++)
		if (a->staged[k].data)
			memcpy(a->staged[k].data, a->p.dst[k]->data,
			       (size_t)a->p.dst[k]->local_elems * ckpt__dtype_size(a->p.dst[k]->dtype));
#endif
	if (a->running) {
		if (a->policy == CKPT_ASYNC_SKIP) {
			/* a poll's worth of progress, then skip if still in flight (agreed: all ranks alike) */
			enter_call(a);
			rc = poll_once(a);
			leave_call(a);
			if (rc < 0)
				return rc;
			if (a->running) {
				ckpt__journal_add(a->p.journal, "\"event\":\"async_skipped\",\"step\":%" PRIu64
						  ",\"in_flight\":%" PRIu64, step, a->step);
				report(a, done);
				return CKPT_ASYNC_SKIPPED;
			}
		} else if ((rc = drain(a)) < 0) {
			return rc;
		}
	}
	report(a, done);        /* the save waited for, if any */

	t1 = now();
	a->blocked = a->fence_wait = a->round_wait = a->progress_wait = 0;
	a->call_t0 = t1;
	snapshot(a, &io);
	a->stats.snapshot_seconds = now() - t1;
	/* the writer starts parked at its gate: whether it may go is agreed with the snapshot's outcome */
	a->step = step;
	a->tags = tags;
	a->polls = 0;
	a->t_start = now();
	a->wstate = W_BUSY;
	a->gate = 0;
	a->copied = 0;
	if ((rc = pthread_create(&a->thread, NULL, writer, a)) != 0)
		ckpt__io_fail(&io, -rc, NULL, "cannot start the checkpoint writer thread: %s", strerror(rc));
	else
		created = 1;
	double ta = now();
	if ((rc = ckpt__agree(a->comm, &local, &agreed)) < 0) {
		if (created)
			go(a, -1);
		return rc;
	}
	if (created && agreed.code != 0)      /* agreed is read only when its code is set */
		ckpt_mutant_reached("async_error_dropped");
#ifdef CKPT_MUTANT_ASYNC_ERROR_DROPPED
	if (created)
		ckpt__error_clear(&agreed);   /* mutant: a failed snapshot is written anyway */
#endif
	if (agreed.code != 0) {
		if (created)
			go(a, -1);
		a->wstate = W_IDLE;
		*a->p.err = agreed;
		ckpt__journal_add(a->p.journal, "\"event\":\"async_snapshot\",\"step\":%" PRIu64 ",\"result\":%d,"
				  "\"error\":\"%s\"", step, agreed.code, ckpt_strerror(agreed.code));
		a->stats.blocked_seconds = now() - t0;
		return agreed.code;
	}
	ckpt__journal_add(a->p.journal, "\"event\":\"async_snapshot\",\"step\":%" PRIu64 ",\"result\":0,\"bytes\":%"
			  PRIu64 ",\"seconds\":%.6f,\"agree_seconds\":%.6f,\"call_seconds\":%.6f", step,
			  a->stats.snapshot_bytes, a->stats.snapshot_seconds, now() - ta, now() - t0);
	a->running = 1;
	go(a, 1);
	leave_call(a);          /* the snapshot, the agreement and starting the writer */
	if (done)
		ckpt_mutant_reached("async_ack_at_enqueue");
#ifdef CKPT_MUTANT_ASYNC_ACK_AT_ENQUEUE
	/* mutant: reported committed as soon as it is queued (the real outcome comes too late to matter) */
	if (done)
		*done = (ckpt_async_done){ .completed = 1, .step = step, .code = 0 };
#endif
	a->stats.blocked_seconds = now() - t0;
	return 0;
}

int ckpt_async_poll(ckpt *c, ckpt_async_done *done)
{
	struct ckpt_async *a = *ckpt__async_of(c);
	int rc = 0;

	report(NULL, done);
	if (!a)
		return 0;
	if (a->pending) {       /* an outcome from an earlier wait: report it first */
		report(a, done);
		return 0;
	}
	if (!a->running)
		return 0;
	a->polls++;
	enter_call(a);
	rc = poll_once(a);
	leave_call(a);
	report(a, done);
	return rc;
}

int ckpt_async_wait(ckpt *c, ckpt_async_done *done)
{
	struct ckpt_async *a = *ckpt__async_of(c);
	int rc;

	report(NULL, done);
	if (!a)
		return 0;
	if (a->pending) {
		report(a, done);
		return 0;
	}
	rc = drain(a);
	report(a, done);
	return rc;
}

int ckpt_async_set_deferred(ckpt *c, unsigned stages)
{
	struct ckpt_async *a;
	int rc;

	if (stages >> CKPT_STAGE_COUNT)
		return -EINVAL;
	if ((rc = get(c, &a)) < 0)
		return rc;
	if (a->running)
		return -EBUSY;
	a->deferred = stages;
	return 0;
}

int ckpt_async_set_nonblocking(ckpt *c, const ckpt_comm_nonblocking *nb)
{
	struct ckpt_async *a;
	int rc;

	if (nb && (!nb->istart || !nb->ifinish))
		return -EINVAL;
	if ((rc = get(c, &a)) < 0)
		return rc;
	if (a->running)
		return -EBUSY;
	a->nb = nb != NULL;
	if (nb)
		a->ops = *nb;
	return 0;
}

int ckpt_async_fence(ckpt *c)
{
	struct ckpt_async *a = *ckpt__async_of(c);

	if (!a || !a->running)
		return 0;
	enter_call(a);
	if (a->nb)
		progress(a);    /* local: between two polls, the writer gets its next collective started */
	if (!a->deferred) {
		leave_call(a);
		return 0;
	}
	double t0 = now();
	ckpt_mutant_reached("async_no_fence");
#ifndef CKPT_MUTANT_ASYNC_NO_FENCE
	pthread_mutex_lock(&a->mu);
	while (!a->copied)
		pthread_cond_wait(&a->cv, &a->mu);
	pthread_mutex_unlock(&a->mu);
#endif
	a->fence_wait += now() - t0;
	leave_call(a);
	return 0;
}

int ckpt_async_last_alerts(const ckpt *c, const ckpt_alert **out)
{
	const struct ckpt_async *a = *ckpt__async_of((ckpt *)c);

	*out = a ? a->alerts : NULL;
	return a ? a->nalerts : 0;
}

int ckpt_async_in_flight(const ckpt *c)
{
	const struct ckpt_async *a = *ckpt__async_of((ckpt *)c);

	return a && a->running;
}

const ckpt_async_stats *ckpt_async_last_stats(const ckpt *c)
{
	static const ckpt_async_stats none;
	const struct ckpt_async *a = *ckpt__async_of((ckpt *)c);

	return a ? &a->stats : &none;
}
