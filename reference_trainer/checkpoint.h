/*
 * reftrain's use of libckpt: the registry's components become libckpt state
 * entries (restored in stages: model, optimizer, training, data), MPI is the
 * communicator, and saves/restores are reported for the trajectory.
 */
#ifndef REFTRAIN_CHECKPOINT_H
#define REFTRAIN_CHECKPOINT_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "ckpt/ckpt.h"
#include "train.h"

typedef struct reftrain_ckpt {
	ckpt *c;
	ckpt_state *state;
	ckpt_comm comm;
	MPI_Comm mpi;
} reftrain_ckpt;

/* Collective. 0, or -errno / -CKPT_E* with a message in err. */
int reftrain_ckpt_open(reftrain_ckpt *k, reftrain_trainer *t, char *err, size_t len);
void reftrain_ckpt_close(reftrain_ckpt *k);

/*
 * Collective. 0: restored (info filled, trainer state replaced and re-derived);
 * -CKPT_ENOGEN: nothing to restore, fresh start; other < 0: err says why.
 */
int reftrain_ckpt_restore(reftrain_ckpt *k, reftrain_trainer *t, ckpt_restore_info *info, char *err, size_t len);

/* Collective. Save the state after step `step`. */
int reftrain_ckpt_save(reftrain_ckpt *k, reftrain_trainer *t, char *err, size_t len);

#endif
