/*
 * Dynamic loss scaling, as in mixed-precision training: the loss is multiplied
 * by `scale` before the backward pass; a step whose gradients overflow is
 * skipped and the scale backs off; after `growth_interval` clean steps in a row
 * the scale grows. State: scale, the clean-step counter, and a count of skips.
 */
#ifndef REFTRAIN_SCALER_H
#define REFTRAIN_SCALER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct reftrain_scaler_cfg {
	float init_scale;
	float growth_factor;       /* > 1, a power of two keeps unscaling exact */
	float backoff_factor;      /* < 1 */
	uint32_t growth_interval;  /* clean steps before the scale grows */
	float min_scale;
} reftrain_scaler_cfg;

typedef struct reftrain_scaler {
	float scale;
	uint32_t growth_tracker;   /* clean steps since the last change */
	uint64_t skipped;          /* total overflow-skipped steps */
} reftrain_scaler;

void reftrain_scaler_init(reftrain_scaler *s, const reftrain_scaler_cfg *cfg);
/* Records the outcome of a step; returns true if the step must be skipped. */
bool reftrain_scaler_update(reftrain_scaler *s, const reftrain_scaler_cfg *cfg, bool overflow);

#endif
