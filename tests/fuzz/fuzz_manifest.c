/*
 * Fuzz target: libckpt's manifest reader (ckpt__manifest_parse), which reads
 * what is on disk, untrusted, in every schema version it wrote.
 *
 * Most random inputs fail the checksum at once; so that the fuzzer reaches the
 * reader itself, an input whose first byte is '!' is sealed first: the rest
 * gets a valid "checksum" member computed over it, exactly as the writer does.
 * A parsed manifest is then checked for the invariants restore relies on.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "ckpt/ckpt.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ckpt_manifest m;
	char why[400], *text;
	size_t len;

	if (size > (1u << 20))
		return 0;
	if (size > 0 && data[0] == '!') {
		len = size - 1;
		text = malloc(len + 64);
		if (!text)
			return 0;
		memcpy(text, data + 1, len);
		len += (size_t)snprintf(text + len, 64, "\"checksum\":\"%016" PRIx64 "\"}\n", (uint64_t)XXH3_64bits(text, len));
	} else {
		len = size;
		text = malloc(len + 1);
		if (!text)
			return 0;
		memcpy(text, data, len);
	}
	if (ckpt__manifest_parse(text, len, &m, why, sizeof why) == 0) {
		if (m.world_size < 1 || m.nfiles != m.world_size || m.ntensors < 0)
			abort();
		for (int k = 0; k < m.ntensors; k++)
			for (int r = 0; r < m.world_size; r++) {
				uint64_t l = ckpt__layout_local(&m, k, r), g = ckpt__layout_goff(&m, k, r);
				if (g > m.layout[k].global_elems || l > m.layout[k].global_elems - g)
					abort();
			}
		ckpt__manifest_free(&m);
	}
	free(text);
	return 0;
}
