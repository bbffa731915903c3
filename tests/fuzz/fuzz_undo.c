/*
 * libFuzzer target: the undo-record loader (harness_undo_load_stream in
 * harness/powerloss.c), as one rank's file. What it accepts must be safe to
 * roll back: every path it will touch inside the root or inside the
 * node-local directories beside it (ROOT.nodes/, a tiered trainer's fast
 * tier), every kept copy in PREFIX.keep/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "powerloss.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ROOT "/r/ckpt"
#define PREFIX "/p/undo"

/* Components after a prefix: none empty, "." or "..". */
static int components(const char *p)
{
	for (;;) {
		size_t n = strcspn(p, "/");
		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return 0;
		if (!p[n])
			return 1;
		p += n + 1;
	}
}

static int safe(const char *p)
{
	if (strcmp(p, ROOT) == 0)
		return 1;
	if (strncmp(p, ROOT "/", sizeof ROOT) == 0)
		return components(p + sizeof ROOT);
	if (strncmp(p, ROOT ".nodes/", sizeof ROOT + 6) == 0)
		return components(p + sizeof ROOT + 6);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	harness_undo u = { 0 };
	char err[512];

	if (size == 0)
		return 0;
	FILE *f = fmemopen((void *)data, size, "r");
	if (!f)
		return 0;
	int rc = harness_undo_load_stream(&u, f, "fuzz.jsonl", 0, PREFIX, ROOT "/", err, sizeof err);
	fclose(f);
	if (rc < 0 && strncmp(err, "fuzz.jsonl:", 11) != 0)
		abort();
	for (int i = 0; rc == 0 && i < u.n; i++) {
		const harness_undo_rec *x = &u.v[i];
		if (strcmp(x->op, "fsync") != 0 && !safe(x->path))
			abort();
		if (strcmp(x->op, "rename") == 0 && (!safe(x->to) || strcmp(x->path, ROOT) == 0))
			abort();
		if (x->saved[0] && (strncmp(x->saved, PREFIX ".keep/", sizeof PREFIX + 5) != 0 ||
				    strchr(x->saved + sizeof PREFIX + 5, '/')))
			abort();
	}
	harness_undo_free(&u);
	return 0;
}
