#include "scaler.h"

void reftrain_scaler_init(reftrain_scaler *s, const reftrain_scaler_cfg *cfg)
{
	s->scale = cfg->init_scale;
	s->growth_tracker = 0;
	s->skipped = 0;
}

bool reftrain_scaler_update(reftrain_scaler *s, const reftrain_scaler_cfg *cfg, bool overflow)
{
	if (overflow) {
		float backed = s->scale * cfg->backoff_factor;
		s->scale = backed < cfg->min_scale ? cfg->min_scale : backed;
		s->growth_tracker = 0;
		s->skipped++;
		return true;
	}
	if (++s->growth_tracker >= cfg->growth_interval) {
		s->scale *= cfg->growth_factor;
		s->growth_tracker = 0;
	}
	return false;
}
