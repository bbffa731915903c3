/*
 * Fuzz target: the safetensors header reader (ckpt__st_parse) as restore uses
 * it on a shard: 8-byte little-endian header length, bounded by the input and
 * CKPT_SHARD_HEADER_MAX, the JSON header, then data. A parsed header must
 * cover the data exactly, in order, without overlap.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ckpt_st_header h;
	char why[400];
	uint64_t n = 0;

	if (size < 8)
		return 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | data[i];
	if (n > size - 8 || n > CKPT_SHARD_HEADER_MAX)
		return 0;
	/* an exact copy, so that reading past the header is caught */
	char *hdr = malloc(n ? n : 1);
	if (!hdr)
		return 0;
	memcpy(hdr, data + 8, n);
	if (ckpt__st_parse(hdr, n, size - 8 - n, &h, why, sizeof why) == 0) {
		uint64_t at = 0;
		for (int i = 0; i < h.n; i++) {
			if (h.t[i].begin != at || h.t[i].end < h.t[i].begin)
				abort();
			at = h.t[i].end;
		}
		if (at != size - 8 - n)
			abort();
		ckpt__st_free(&h);
	}
	free(hdr);
	return 0;
}
