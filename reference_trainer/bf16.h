/*
 * bfloat16 working weights: the top 16 bits of an IEEE binary32, rounded to
 * nearest with ties to even. NaN stays NaN (quieted, sign kept); a finite
 * value that rounds past the largest bf16 becomes infinity, as IEEE requires.
 */
#ifndef REFTRAIN_BF16_H
#define REFTRAIN_BF16_H

#include <stdint.h>
#include <string.h>

typedef uint16_t reftrain_bf16;

static inline uint32_t reftrain_f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	return u;
}

static inline float reftrain_bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

static inline reftrain_bf16 reftrain_f32_to_bf16(float f)
{
	uint32_t u = reftrain_f32_bits(f);

	if ((u & 0x7fffffffu) > 0x7f800000u)          /* NaN: keep sign, quiet it */
		return (reftrain_bf16)((u >> 16) | 0x0040u);
	u += 0x7fffu + ((u >> 16) & 1u);               /* round to nearest even */
	return (reftrain_bf16)(u >> 16);
}

static inline float reftrain_bf16_to_f32(reftrain_bf16 h)
{
	return reftrain_bits_f32((uint32_t)h << 16);
}

#endif
