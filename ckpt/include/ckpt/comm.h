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
	/*
	 * Optional (both NULL if not offered): nonblocking collectives, which let
	 * an asynchronous save (ckpt/async.h) keep its agreement off the training
	 * path. istart starts `op` on channel `chan` and returns a request in *req:
	 * channel 0 is the one of the blocking calls above, channel 1 a second,
	 * independent one (its own communicator); on each channel the calls,
	 * blocking or started, come in the same order on every rank. Arguments as
	 * for the blocking calls (bcast: recv is the buffer, send is ignored;
	 * allgather: every rank receives size * bytes into recv). ifinish with
	 * block = 0 never waits: 1 if the operation finished (the request is then
	 * released), 0 if not yet; with block = 1 it waits. Both return < 0 if the
	 * communicator failed (the request is released).
	 */
	int (*istart)(void *ctx, int chan, int op, const void *send, void *recv, size_t bytes, int root, void **req);
	int (*ifinish)(void *ctx, void *req, int block);
} ckpt_comm;

enum ckpt_comm_op { CKPT_COMM_BARRIER, CKPT_COMM_GATHER, CKPT_COMM_BCAST, CKPT_COMM_ALLGATHER };

#endif
