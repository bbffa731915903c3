#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t reftrain_model_param_count(const reftrain_model_cfg *cfg)
{
	size_t n = 0, prev = cfg->d_in;

	for (uint32_t l = 0; l <= cfg->depth; l++) {
		size_t out = l == cfg->depth ? cfg->d_out : cfg->width;
		n += out * prev + out;
		prev = out;
	}
	return n;
}

int reftrain_model_init(reftrain_model *m, const reftrain_model_cfg *cfg, uint64_t seed)
{
	size_t off = 0, act = 0, maxw = 0;

	memset(m, 0, sizeof *m);
	if (cfg->depth + 1 > REFTRAIN_MAX_LAYERS || cfg->d_in == 0 || cfg->d_out == 0 ||
	    (cfg->depth > 0 && cfg->width == 0) || !(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
		return -EINVAL;
	m->cfg = *cfg;
	m->nlayers = cfg->depth + 1;
	m->dims[0] = cfg->d_in;
	for (uint32_t l = 1; l <= cfg->depth; l++)
		m->dims[l] = cfg->width;
	m->dims[m->nlayers] = cfg->d_out;
	for (uint32_t l = 0; l < m->nlayers; l++) {
		m->w_off[l] = off;
		off += (size_t)m->dims[l + 1] * m->dims[l];
		m->b_off[l] = off;
		off += m->dims[l + 1];
	}
	m->nparams = off;
	for (uint32_t l = 0; l <= m->nlayers; l++) {
		m->act_off[l] = act;
		act += m->dims[l];
		if (m->dims[l] > maxw)
			maxw = m->dims[l];
	}
	double keep = (1.0 - (double)cfg->dropout) * 4294967296.0;
	m->keep_threshold = keep >= 4294967295.0 ? UINT32_MAX : (uint32_t)keep;
	m->keep_scale = 1.0f / (1.0f - cfg->dropout);
	m->teacher = malloc(sizeof(float) * cfg->d_out * cfg->d_in);
	m->act = malloc(sizeof(float) * act);
	m->mask = malloc(act);
	m->dz = malloc(sizeof(float) * maxw);
	m->dz_next = malloc(sizeof(float) * maxw);
	if (!m->teacher || !m->act || !m->mask || !m->dz || !m->dz_next) {
		reftrain_model_free(m);
		return -ENOMEM;
	}
	float tscale = 2.0f / sqrtf((float)cfg->d_in);
	for (size_t i = 0; i < (size_t)cfg->d_out * cfg->d_in; i++) {
		float u = reftrain_u32_to_unit(reftrain_philox_word(seed, REFTRAIN_STREAM_TEACHER, i));
		m->teacher[i] = (2.0f * u - 1.0f) * tscale;
	}
	return 0;
}

void reftrain_model_free(reftrain_model *m)
{
	free(m->teacher);
	free(m->act);
	free(m->mask);
	free(m->dz);
	free(m->dz_next);
	m->teacher = m->act = m->dz = m->dz_next = NULL;
	m->mask = NULL;
}

float reftrain_model_init_param(const reftrain_model *m, uint64_t seed, size_t e)
{
	uint32_t l = 0;

	while (l + 1 < m->nlayers && e >= m->w_off[l + 1])
		l++;
	if (e >= m->b_off[l])
		return 0.0f;
	float bound = 1.0f / sqrtf((float)m->dims[l]);
	float u = reftrain_u32_to_unit(reftrain_philox_word(seed, REFTRAIN_STREAM_INIT, e));
	return (2.0f * u - 1.0f) * bound;
}

void reftrain_model_sample(const reftrain_model *m, uint64_t seed, uint64_t idx, float *x, float *y)
{
	uint32_t din = m->cfg.d_in, dout = m->cfg.d_out;

	for (uint32_t j = 0; j < din; j++) {
		uint32_t w = reftrain_philox_word(seed, REFTRAIN_STREAM_DATA, idx * din + j);
		x[j] = 2.0f * reftrain_u32_to_unit(w) - 1.0f;
	}
	for (uint32_t i = 0; i < dout; i++) {
		float z = 0.0f;
		for (uint32_t j = 0; j < din; j++)
			z += m->teacher[(size_t)i * din + j] * x[j];
		y[i] = tanhf(z);
	}
}

float reftrain_model_step(reftrain_model *m, const float *w, const float *x, const float *y,
			  reftrain_gen *drop, float gscale, float *grad)
{
	uint32_t L = m->nlayers;
	float *a0 = m->act + m->act_off[0];

	memcpy(a0, x, sizeof(float) * m->dims[0]);
	for (uint32_t l = 0; l < L; l++) {
		const float *W = w + m->w_off[l], *b = w + m->b_off[l];
		const float *in = m->act + m->act_off[l];
		float *out = m->act + m->act_off[l + 1];
		uint8_t *mask = m->mask + m->act_off[l + 1];
		uint32_t nin = m->dims[l], nout = m->dims[l + 1];

		for (uint32_t i = 0; i < nout; i++) {
			float z = b[i];
			for (uint32_t j = 0; j < nin; j++)
				z += W[(size_t)i * nin + j] * in[j];
			if (l + 1 < L) {
				/* ReLU, then dropout drawn from the worker's generator */
				mask[i] = reftrain_gen_next(drop) < m->keep_threshold;
				z = (z > 0.0f && mask[i]) ? z * m->keep_scale : 0.0f;
			}
			out[i] = z;
		}
	}

	const float *yhat = m->act + m->act_off[L];
	uint32_t dout = m->dims[L];
	float loss = 0.0f;
	for (uint32_t i = 0; i < dout; i++) {
		float d = yhat[i] - y[i];
		loss += d * d;
		m->dz[i] = gscale * d / (float)dout;
	}
	loss = loss / (2.0f * (float)dout);

	for (uint32_t l = L; l-- > 0;) {
		const float *W = w + m->w_off[l];
		float *gW = grad + m->w_off[l], *gb = grad + m->b_off[l];
		const float *in = m->act + m->act_off[l];
		uint32_t nin = m->dims[l], nout = m->dims[l + 1];

		for (uint32_t i = 0; i < nout; i++) {
			float dz = m->dz[i];
			gb[i] += dz;
			for (uint32_t j = 0; j < nin; j++)
				gW[(size_t)i * nin + j] += dz * in[j];
		}
		if (l == 0)
			break;
		/* back through W, then through dropout and ReLU of layer l's input */
		const uint8_t *mask = m->mask + m->act_off[l];
		for (uint32_t j = 0; j < nin; j++) {
			float s = 0.0f;
			for (uint32_t i = 0; i < nout; i++)
				s += W[(size_t)i * nin + j] * m->dz[i];
			m->dz_next[j] = (in[j] > 0.0f && mask[j]) ? s * m->keep_scale : 0.0f;
		}
		float *t = m->dz;
		m->dz = m->dz_next;
		m->dz_next = t;
	}
	return loss;
}
