#include "adamw.h"

#include <math.h>

void reftrain_adamw_update(const reftrain_adamw_cfg *cfg, uint64_t t, float lr, float clip_coef,
			   float *master, float *m, float *v, const float *g, size_t n)
{
	float b1 = cfg->beta1, b2 = cfg->beta2;
	float bc1 = (float)(1.0 - pow((double)b1, (double)t));
	float bc2 = (float)(1.0 - pow((double)b2, (double)t));
	float decay = 1.0f - lr * cfg->weight_decay;

	for (size_t i = 0; i < n; i++) {
		float gi = g[i] * clip_coef;
		m[i] = b1 * m[i] + (1.0f - b1) * gi;
		v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
		float mhat = m[i] / bc1;
		float vhat = v[i] / bc2;
		master[i] = master[i] * decay - lr * mhat / (sqrtf(vhat) + cfg->eps);
	}
}
