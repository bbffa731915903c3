#include "fake_comm.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct fake_comm_group {
	int size;
	pthread_barrier_t barrier;
	const void **slots;      /* gather: each rank's send buffer */
	void *bcast_src;
};

typedef struct fake_ctx {
	fake_comm_group *g;
	int rank;
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
	return g;
}

void fake_comm_group_free(fake_comm_group *g)
{
	if (!g)
		return;
	pthread_barrier_destroy(&g->barrier);
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

void fake_comm_init(ckpt_comm *c, fake_comm_group *g, int rank)
{
	fake_ctx *ctx = calloc(1, sizeof *ctx);   /* freed by fake_comm_run, or leaked by the caller */

	ctx->g = g;
	ctx->rank = rank;
	*c = (ckpt_comm){ .ctx = ctx, .rank = rank, .size = g->size,
			  .barrier = fbarrier, .gather = fgather, .bcast = fbcast };
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
