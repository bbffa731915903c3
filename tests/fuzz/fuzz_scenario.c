/*
 * libFuzzer target: the scenario loader (harness/scenario.c) on any bytes.
 * Beyond "no crash, no sanitizer report": a refused file says
 * "fuzz.yaml:LINE:COL: ...", and an accepted one holds only faults that
 * validate promises can fire.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static harness_scenario s;
	char err[2048];
	/* a small buffer sometimes, to exercise the shortening of messages */
	size_t errlen = size % 7 == 0 ? 1 + size % 97 : sizeof err;

	memset(err, 'x', sizeof err);
	int rc = harness_scenario_load_buffer("fuzz.yaml", (const char *)data, size, &s, err, errlen);
	if (memchr(err, '\0', errlen) == NULL)
		abort();                  /* not terminated within errlen */
	if (rc < 0) {
		if (errlen == sizeof err && strncmp(err, "fuzz.yaml:", 10) != 0)
			abort();          /* every refusal has a position */
		return 0;
	}
	if (rc != 0 || !s.name[0] || s.max_attempts < 1 || s.max_attempts > HARNESS_MAX_ATTEMPTS)
		abort();
	for (int i = 0; i < s.nfaults; i++) {
		const harness_fault *f = &s.faults[i];
		if (f->attempt < 1 || f->attempt > s.max_attempts || f->rank >= s.trainer.world_size ||
		    f->step > s.trainer.steps || (!f->phase[0] && !f->op[0]))
			abort();
	}
	for (int i = 0; i < s.ndamage; i++)
		if (s.damage[i].after_attempt < 1 || s.damage[i].after_attempt >= s.max_attempts)
			abort();
	for (int a = 0; a <= HARNESS_MAX_ATTEMPTS; a++)
		if ((s.expect.restored_from_at[a] != -1 || s.expect.max_lost_at[a] != -1) && (a < 2 || a > s.max_attempts))
			abort();
	return 0;
}
