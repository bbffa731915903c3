/*
 * Learning-rate schedule: linear warmup, then cosine decay to min_lr.
 * Its state (how many times it was stepped, the last rate it gave) is a
 * training-state component of its own: it advances on every step, also on
 * steps the loss scaler skips, so it is not derivable from the optimizer's
 * step count.
 */
#ifndef REFTRAIN_SCHED_H
#define REFTRAIN_SCHED_H

#include <stdint.h>

typedef struct reftrain_sched_cfg {
	float base_lr;
	float min_lr;
	uint64_t warmup_steps;
	uint64_t total_steps;
} reftrain_sched_cfg;

typedef struct reftrain_sched {
	uint64_t count;        /* times stepped */
	float last_lr;         /* rate returned by the latest reftrain_sched_step */
	uint32_t pad;
} reftrain_sched;

void reftrain_sched_init(reftrain_sched *s);
/* Rate for scheduler step `count` (0-based) under cfg. */
float reftrain_sched_lr_at(const reftrain_sched_cfg *cfg, uint64_t count);
/* Scheduler step `count` (0-based) is on the warmup ramp. */
int reftrain_sched_in_warmup(const reftrain_sched_cfg *cfg, uint64_t count);
/* Rate for the current step; advances the state. */
float reftrain_sched_step(reftrain_sched *s, const reftrain_sched_cfg *cfg);

#endif
