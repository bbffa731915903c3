/*
 * A one-rank communicator for the checkpoint backends' unit tests: every
 * collective of reftrain/backend.h is the identity on one rank (gather copies
 * its own bytes), and barriers are counted. No MPI.
 */
#ifndef TESTS_SOLO_COMM_H
#define TESTS_SOLO_COMM_H

#include <string.h>

#include "reftrain/backend.h"

typedef struct solo_comm {
	reftrain_backend_comm comm;
	int barriers;
} solo_comm;

static inline int solo_barrier(void *ctx)
{
	((solo_comm *)ctx)->barriers++;
	return 0;
}

static inline int solo_allreduce(void *ctx, int64_t *v, int max)
{
	(void)ctx, (void)v, (void)max;
	return 0;
}

static inline int solo_bcast(void *ctx, void *buf, size_t n, int root)
{
	(void)ctx, (void)buf, (void)n, (void)root;
	return 0;
}

static inline int solo_gather(void *ctx, const void *send, size_t n, void *recv, int root)
{
	(void)ctx, (void)root;
	memcpy(recv, send, n);
	return 0;
}

/* s->comm is then ready to pass as reftrain_backend_config.comm. */
static inline void solo_comm_init(solo_comm *s)
{
	s->barriers = 0;
	s->comm = (reftrain_backend_comm){ .ctx = s, .rank = 0, .size = 1, .barrier = solo_barrier,
					   .allreduce_i64 = solo_allreduce, .bcast = solo_bcast, .gather = solo_gather };
}

#endif
