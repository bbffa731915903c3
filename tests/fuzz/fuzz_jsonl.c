/*
 * libFuzzer target: the JSON Lines reader (harness/jsonl.c) that the oracle,
 * the fault logs and the golden digests go through. Every object it hands on
 * is walked; a stop request is obeyed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct seen {
	int n, stop_at;
	size_t keys;
} seen;

static int visit(json_t *obj, void *arg)
{
	seen *s = arg;
	const char *k;
	json_t *v;

	if (!json_is_object(obj) || s->n >= s->stop_at)
		abort();          /* only objects, and nothing after a stop */
	json_object_foreach(obj, k, v) {
		s->keys += strlen(k);
		if (json_is_string(v))
			s->keys += json_string_length(v);
	}
	return ++s->n == s->stop_at;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	seen s = { .stop_at = size ? 1 + data[0] % 8 : 1 };

	if (size == 0)
		return 0;
	FILE *f = fmemopen((void *)data, size, "r");
	if (!f)
		return 0;
	if (harness_jsonl_each_stream(f, visit, &s) < 0)
		abort();
	fclose(f);
	return 0;
}
