/*
 * The model: an MLP with ReLU and dropout on its hidden layers and a squared
 * error loss against a fixed random "teacher". Parameters are one flat fp32
 * vector (per layer: weights row-major, then biases); the forward and backward
 * passes read fp32 expansions of the bf16 working weights and accumulate fp32
 * gradients in a fixed loop order.
 */
#ifndef REFTRAIN_MODEL_H
#define REFTRAIN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"

#define REFTRAIN_MAX_LAYERS 64

typedef struct reftrain_model_cfg {
	uint32_t d_in;
	uint32_t width;
	uint32_t depth;        /* hidden layers */
	uint32_t d_out;
	float dropout;         /* probability of dropping a hidden unit */
} reftrain_model_cfg;

typedef struct reftrain_model {
	reftrain_model_cfg cfg;
	uint32_t nlayers;                    /* depth + 1 */
	uint32_t dims[REFTRAIN_MAX_LAYERS + 1];
	size_t w_off[REFTRAIN_MAX_LAYERS];
	size_t b_off[REFTRAIN_MAX_LAYERS];
	size_t nparams;
	uint32_t keep_threshold;             /* keep a unit if draw < this */
	float keep_scale;                    /* 1 / (1 - dropout) */
	float *teacher;                      /* d_out x d_in */
	/* scratch for one sample */
	float *act;                          /* activations, per layer */
	size_t act_off[REFTRAIN_MAX_LAYERS + 1];
	uint8_t *mask;
	float *dz;
	float *dz_next;
} reftrain_model;

size_t reftrain_model_param_count(const reftrain_model_cfg *cfg);
int reftrain_model_init(reftrain_model *m, const reftrain_model_cfg *cfg, uint64_t seed);
void reftrain_model_free(reftrain_model *m);

/* Initial fp32 value of parameter e (uniform in +-1/sqrt(fan_in), biases 0). */
float reftrain_model_init_param(const reftrain_model *m, uint64_t seed, size_t e);

/* Synthetic sample idx: x (d_in) and its target y (d_out). */
void reftrain_model_sample(const reftrain_model *m, uint64_t seed, uint64_t idx, float *x, float *y);

/*
 * Forward and backward for one sample with weights w (fp32 expansion of the
 * working weights). Adds gscale * d(loss)/d(w) to grad, draws dropout masks
 * from drop, and returns the sample's loss (unscaled).
 */
float reftrain_model_step(reftrain_model *m, const float *w, const float *x, const float *y,
			  reftrain_gen *drop, float gscale, float *grad);

#endif
