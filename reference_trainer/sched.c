#include "sched.h"

#include <math.h>

void reftrain_sched_init(reftrain_sched *s)
{
	s->count = 0;
	s->last_lr = 0.0f;
	s->pad = 0;
}

int reftrain_sched_in_warmup(const reftrain_sched_cfg *cfg, uint64_t count)
{
	return cfg->warmup_steps > 0 && count + 1 <= cfg->warmup_steps;
}

float reftrain_sched_lr_at(const reftrain_sched_cfg *cfg, uint64_t count)
{
	uint64_t step = count + 1;     /* warmup reaches base_lr at step warmup_steps */

	if (reftrain_sched_in_warmup(cfg, count))
		return (float)((double)cfg->base_lr * (double)step / (double)cfg->warmup_steps);
	if (step >= cfg->total_steps || cfg->total_steps <= cfg->warmup_steps)
		return cfg->min_lr;

	double progress = (double)(step - cfg->warmup_steps) /
			  (double)(cfg->total_steps - cfg->warmup_steps);
	double cosine = 0.5 * (1.0 + cos(M_PI * progress));
	return (float)((double)cfg->min_lr + ((double)cfg->base_lr - (double)cfg->min_lr) * cosine);
}

float reftrain_sched_step(reftrain_sched *s, const reftrain_sched_cfg *cfg)
{
	s->last_lr = reftrain_sched_lr_at(cfg, s->count);
	s->count++;
	return s->last_lr;
}
