/*
 * A communicator made of threads, for unit tests of the commit protocol
 * without MPI: N threads in one process play N ranks. Collectives really
 * synchronize (a pthread barrier) and really move bytes, so an agreement bug
 * shows up as it would over MPI. Not a crash model: a "rank" that dies takes
 * the whole process with it.
 */
#ifndef FAKE_COMM_H
#define FAKE_COMM_H

#include "ckpt/async.h"
#include "ckpt/comm.h"

typedef struct fake_comm_group fake_comm_group;

fake_comm_group *fake_comm_group_new(int size);
void fake_comm_group_free(fake_comm_group *g);
void fake_comm_init(ckpt_comm *c, fake_comm_group *g, int rank);

/*
 * Nonblocking collectives over these communicators (two channels), for
 * ckpt_async_set_nonblocking: a collective is done once every rank started
 * it (the last one moves the bytes), whatever each rank does meanwhile;
 * ranks starting them in different orders get -EPROTO.
 */
const ckpt_comm_nonblocking *fake_comm_nonblocking(void);

typedef void fake_rank_fn(ckpt_comm *comm, void *arg);
/* Run fn on `size` threads, one per rank, with args[rank]; wait for all. */
int fake_comm_run(int size, fake_rank_fn *fn, void **args);


#endif
