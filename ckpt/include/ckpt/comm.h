/*
 * The communicator libckpt coordinates ranks with. Small on purpose: rank,
 * size, barrier, gather and broadcast of fixed-size byte blocks. The trainer
 * implements it over MPI; fakes/ implements it with threads for unit tests.
 * Every call is collective and returns 0 or a negative errno.
 */
#ifndef CKPT_COMM_H
#define CKPT_COMM_H

#include <stddef.h>

typedef struct ckpt_comm {
	void *ctx;
	int rank;
	int size;
	int (*barrier)(void *ctx);
	/* root receives size * bytes in rank order into recv (ignored elsewhere) */
	int (*gather)(void *ctx, const void *send, size_t bytes, void *recv, int root);
	int (*bcast)(void *ctx, void *buf, size_t bytes, int root);
} ckpt_comm;

#endif
