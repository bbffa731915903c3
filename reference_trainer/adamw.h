/* AdamW (decoupled weight decay) on a shard of fp32 master weights. */
#ifndef REFTRAIN_ADAMW_H
#define REFTRAIN_ADAMW_H

#include <stddef.h>
#include <stdint.h>

typedef struct reftrain_adamw_cfg {
	float beta1;
	float beta2;
	float eps;
	float weight_decay;
} reftrain_adamw_cfg;

/*
 * One update of n elements at optimizer step t (1-based): g is the unscaled
 * gradient, multiplied by clip_coef before use.
 */
void reftrain_adamw_update(const reftrain_adamw_cfg *cfg, uint64_t t, float lr, float clip_coef,
			   float *master, float *m, float *v, const float *g, size_t n);

#endif
