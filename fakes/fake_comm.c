#include "fake_comm.h"

#include "ckpt/async.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHANNELS 2

/* A nonblocking collective: done once every rank started it; freed once every rank finished it. */
typedef struct fake_op {
	int chan, op, root, posted, finished, done;
	uint64_t seq;
	size_t bytes;
	const void **send;
	void **recv;
	struct fake_op *next;
} fake_op;

struct fake_comm_group {
	int size;
	pthread_barrier_t barrier;
	const void **slots;      /* gather: each rank's send buffer */
	void *bcast_src;
	/* nonblocking collectives, pending per channel */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	fake_op *ops[CHANNELS];
};

typedef struct fake_ctx {
	fake_comm_group *g;
	int rank;
	uint64_t seq[CHANNELS];  /* nonblocking collectives started on each channel */
} fake_ctx;

fake_comm_group *fake_comm_group_new(int size)
{
	fake_comm_group *g = calloc(1, sizeof *g);

	if (!g)
		return NULL;
	g->size = size;
	g->slots = calloc((size_t)size, sizeof *g->slots);
	if (!g->slots || pthread_barrier_init(&g->barrier, NULL, (unsigned)size) != 0) {
		free(g->slots);
		free(g);
		return NULL;
	}
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	return g;
}

void fake_comm_group_free(fake_comm_group *g)
{
	if (!g)
		return;
	pthread_barrier_destroy(&g->barrier);
	pthread_mutex_destroy(&g->mu);
	pthread_cond_destroy(&g->cv);
	for (int ch = 0; ch < CHANNELS; ch++)
		while (g->ops[ch]) {          /* started by some ranks only: the test failed */
			fake_op *o = g->ops[ch];
			g->ops[ch] = o->next;
			free(o->send);
			free(o->recv);
			free(o);
		}
	free(g->slots);
	free(g);
}

static int fbarrier(void *ctx)
{
	fake_ctx *c = ctx;
	pthread_barrier_wait(&c->g->barrier);
	return 0;
}

static int fgather(void *ctx, const void *send, size_t bytes, void *recv, int root)
{
	fake_ctx *c = ctx;

	c->g->slots[c->rank] = send;
	pthread_barrier_wait(&c->g->barrier);
	if (c->rank == root)
		for (int r = 0; r < c->g->size; r++)
			memcpy((char *)recv + (size_t)r * bytes, c->g->slots[r], bytes);
	pthread_barrier_wait(&c->g->barrier);    /* senders keep their buffers until copied */
	return 0;
}

static int fbcast(void *ctx, void *buf, size_t bytes, int root)
{
	fake_ctx *c = ctx;

	if (c->rank == root)
		c->g->bcast_src = buf;
	pthread_barrier_wait(&c->g->barrier);
	if (c->rank != root && bytes)
		memcpy(buf, c->g->bcast_src, bytes);
	pthread_barrier_wait(&c->g->barrier);
	return 0;
}

/* The last rank to start a collective moves every rank's bytes (the buffers stay valid until finished). */
static void complete(fake_op *o, int size)
{
	size_t n = o->bytes;

	for (int r = 0; r < size; r++) {
		if (o->op == CKPT_COMM_GATHER)
			memcpy((char *)o->recv[o->root] + (size_t)r * n, o->send[r], n);
		if (o->op == CKPT_COMM_BCAST && r != o->root && n)
			memcpy(o->recv[r], o->recv[o->root], n);
		for (int d = 0; o->op == CKPT_COMM_ALLGATHER && d < size; d++)
			memcpy((char *)o->recv[d] + (size_t)r * n, o->send[r], n);
	}
	o->done = 1;
}

static int fistart(void *ctx, int chan, int op, const void *send, void *recv, size_t bytes, int root, void **req)
{
	fake_ctx *c = ctx;
	fake_comm_group *g = c->g;
	fake_op *o, **at;
	int rc = 0;

	*req = NULL;
	if (chan < 0 || chan >= CHANNELS || op < CKPT_COMM_BARRIER || op > CKPT_COMM_ALLGATHER)
		return -EINVAL;
	pthread_mutex_lock(&g->mu);
	for (at = &g->ops[chan]; *at && (*at)->seq != c->seq[chan]; at = &(*at)->next)
		;
	if (!(o = *at)) {
		if (!(o = calloc(1, sizeof *o)) || !(o->send = calloc((size_t)g->size, sizeof *o->send)) ||
		    !(o->recv = calloc((size_t)g->size, sizeof *o->recv))) {
			if (o)
				free(o->send);
			free(o);
			pthread_mutex_unlock(&g->mu);
			return -ENOMEM;
		}
		*o = (fake_op){ .chan = chan, .op = op, .root = root, .seq = c->seq[chan], .bytes = bytes,
				.send = o->send, .recv = o->recv };
		*at = o;
	} else if (o->op != op || o->bytes != bytes || o->root != root) {
		rc = -EPROTO;     /* the ranks disagree on the order of their collectives: a bug in the caller */
	}
	if (rc == 0) {
		c->seq[chan]++;
		o->send[c->rank] = send;
		o->recv[c->rank] = recv;
		if (++o->posted == g->size) {
			complete(o, g->size);
			pthread_cond_broadcast(&g->cv);
		}
		*req = o;
	}
	pthread_mutex_unlock(&g->mu);
	return rc;
}

static int fifinish(void *ctx, void *req, int block)
{
	fake_comm_group *g = ((fake_ctx *)ctx)->g;
	fake_op *o = req, **at;

	pthread_mutex_lock(&g->mu);
	while (block && !o->done)
		pthread_cond_wait(&g->cv, &g->mu);
	if (!o->done) {
		pthread_mutex_unlock(&g->mu);
		return 0;
	}
	if (++o->finished == g->size) {
		for (at = &g->ops[o->chan]; *at != o; at = &(*at)->next)
			;
		*at = o->next;
		free(o->send);
		free(o->recv);
		free(o);
	}
	pthread_mutex_unlock(&g->mu);
	return 1;
}

void fake_comm_init(ckpt_comm *c, fake_comm_group *g, int rank)
{
	fake_ctx *ctx = calloc(1, sizeof *ctx);   /* freed by fake_comm_run, or leaked by the caller */

	ctx->g = g;
	ctx->rank = rank;
	*c = (ckpt_comm){ .ctx = ctx, .rank = rank, .size = g->size,
			  .barrier = fbarrier, .gather = fgather, .bcast = fbcast };
}

const ckpt_comm_nonblocking *fake_comm_nonblocking(void)
{
	static const ckpt_comm_nonblocking ops = { .istart = fistart, .ifinish = fifinish };
	return &ops;
}

typedef struct thread_arg {
	ckpt_comm comm;
	fake_rank_fn *fn;
	void *arg;
} thread_arg;

static void *thread_main(void *p)
{
	thread_arg *a = p;
	a->fn(&a->comm, a->arg);
	return NULL;
}

int fake_comm_run(int size, fake_rank_fn *fn, void **args)
{
	fake_comm_group *g = fake_comm_group_new(size);
	pthread_t *th = calloc((size_t)size, sizeof *th);
	thread_arg *ta = calloc((size_t)size, sizeof *ta);
	int rc = 0;

	if (!g || !th || !ta) {
		rc = -ENOMEM;
		goto out;
	}
	for (int r = 0; r < size; r++) {
		fake_comm_init(&ta[r].comm, g, r);
		ta[r].fn = fn;
		ta[r].arg = args ? args[r] : NULL;
		pthread_create(&th[r], NULL, thread_main, &ta[r]);
	}
	for (int r = 0; r < size; r++) {
		pthread_join(th[r], NULL);
		free(ta[r].comm.ctx);
	}
out:
	fake_comm_group_free(g);
	free(th);
	free(ta);
	return rc;
}
