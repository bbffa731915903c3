#include "reduce.h"

reftrain_shard reftrain_shard_of(size_t n, int w, int r)
{
	size_t chunks = reftrain_chunk_count(n), c = reftrain_chunk_size(n);
	reftrain_shard s;

	s.chunk_begin = chunks * (size_t)r / (size_t)w;
	s.chunk_end = chunks * (size_t)(r + 1) / (size_t)w;
	s.begin = s.chunk_begin * c;
	s.end = s.chunk_end * c;
	if (s.begin > n)
		s.begin = n;
	if (s.end > n)
		s.end = n;
	return s;
}

void reftrain_sum_vectors(float *out, const float *in, size_t nvec, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = in[i];
	for (size_t v = 1; v < nvec; v++) {
		const float *src = in + v * n;
		for (size_t i = 0; i < n; i++)
			out[i] += src[i];
	}
}

void reftrain_chunk_sumsq(const float *g, size_t len, size_t chunk, double *out)
{
	for (size_t c = 0; c * chunk < len; c++) {
		size_t end = (c + 1) * chunk < len ? (c + 1) * chunk : len;
		double s = 0.0;
		for (size_t i = c * chunk; i < end; i++)
			s += (double)g[i] * (double)g[i];
		out[c] = s;
	}
}

double reftrain_sum_f64(const double *v, size_t n)
{
	double s = 0.0;

	for (size_t i = 0; i < n; i++)
		s += v[i];
	return s;
}

float reftrain_sum_f32(const float *v, size_t n)
{
	float s = 0.0f;

	for (size_t i = 0; i < n; i++)
		s += v[i];
	return s;
}
