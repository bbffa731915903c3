/*
 * The training loop over MPI: V virtual workers spread over W ranks (rank r
 * runs workers r*V/W .. (r+1)*V/W - 1), gradients moved to their owners with
 * an all-to-all and summed there in worker order, AdamW on each rank's shard
 * of the fp32 master weights (ZeRO-1), bf16 working weights all-gathered.
 */
#ifndef REFTRAIN_TRAIN_H
#define REFTRAIN_TRAIN_H

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

#include "bf16.h"
#include "config.h"
#include "model.h"
#include "reduce.h"
#include "rng.h"
#include "sampler.h"
#include "scaler.h"
#include "sched.h"
#include "state.h"

/* State a training hook would keep: the "user" component. */
typedef struct reftrain_user {
	float ema_loss;
	float best_loss;
	uint64_t best_step;
} reftrain_user;

typedef struct reftrain_trainer {
	reftrain_config cfg;
	MPI_Comm comm;
	int rank, world;
	uint32_t wpr;                  /* virtual workers per rank */
	uint32_t first_worker;
	uint64_t step;                 /* steps completed */
	reftrain_model model;
	size_t nparams;
	reftrain_shard shard;          /* this rank's */
	int *elem_counts, *elem_displs;   /* per rank, elements of the shard */
	int *chunk_counts, *chunk_displs; /* per rank, chunks of the shard */
	int *a2a_send_counts, *a2a_send_displs, *a2a_recv_counts, *a2a_recv_displs;

	/* training state (the registry points here) */
	reftrain_bf16 *params;         /* working weights, replicated */
	float *master, *exp_avg, *exp_avg_sq;   /* sharded */
	uint64_t adam_step;
	reftrain_gen *dropout;         /* one per local virtual worker */
	reftrain_sampler sampler;
	reftrain_sched sched;
	reftrain_scaler scaler;
	reftrain_user user;
	reftrain_registry reg;

	/* derived and scratch */
	float *wf;                     /* fp32 expansion of params */
	float *grads;                  /* wpr x nparams */
	float *sendbuf, *recvbuf, *gsum;
	double *chunk_sq, *chunk_all;
	float *losses, *losses_all;
	uint32_t *batch;
	float *x, *y;

	/*
	 * Optional: called before the optimizer update changes the model and
	 * optimizer state (params, master, opt): a background save that copies
	 * them while the step computes waits there until it has (--ckpt-async).
	 */
	void (*before_update)(void *arg);
	void *before_update_arg;
} reftrain_trainer;

/* Outcome of one step, as recorded in the trajectory. */
typedef struct reftrain_step_out {
	uint64_t step;
	float loss, lr, grad_norm, loss_scale;
	bool skipped;
	bool warmup;            /* the rate came from the warmup ramp */
	uint64_t epoch;         /* the data epoch the step's last sample came from */
	int32_t micro;          /* position in the accumulation window, -1 without --accum-steps */
} reftrain_step_out;

int reftrain_trainer_init(reftrain_trainer *t, const reftrain_config *cfg, MPI_Comm comm);
void reftrain_trainer_free(reftrain_trainer *t);
/* Recompute derived data (fp32 weights, permutation) after state was replaced. */
void reftrain_trainer_rederive(reftrain_trainer *t);
int reftrain_trainer_step(reftrain_trainer *t, reftrain_step_out *out);

/*
 * xxh3-64 of a component's global contents: for each tensor, all ranks' parts
 * in rank order (replicated tensors: rank 0's copy). Collective; the value is
 * valid on rank 0.
 */
uint64_t reftrain_component_digest(reftrain_trainer *t, const reftrain_component *c);

#endif
