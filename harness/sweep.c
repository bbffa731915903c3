#include "sweep.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "launch.h"
#include "report.h"

static void build(const harness_sweep_opts *so, int rank, int persistent, int nth, harness_scenario *s)
{
	long S = so->step, E = so->step / 2;

	memset(s, 0, sizeof *s);
	snprintf(s->name, sizeof s->name, "sweep-rank%d-%s-op%d", rank, persistent ? "persistent" : "transient", nth);
	snprintf(s->file, sizeof s->file, "(sweep)");
	snprintf(s->trainer.preset, sizeof s->trainer.preset, "%s", so->preset);
	s->trainer.world_size = so->world;
	s->trainer.steps = S + E;
	s->trainer.seed = 1;
	s->trainer.every = E;
	s->trainer.keep = 3;
	harness_fault *f = &s->faults[0];
	f->attempt = 1;
	f->rank = rank;
	f->step = S;
	strcpy(f->op, "any");
	f->nth = nth;
	f->times = persistent ? 0 : 1;
	f->action = HARNESS_ERRNO;
	f->err = so->err;
	harness_fault *k = &s->faults[1];
	*k = (harness_fault){ .attempt = 1, .rank = (rank + 1) % so->world, .step = S + 2, .nth = 1, .action = HARNESS_KILL };
	strcpy(k->phase, "train.step");
	s->nfaults = 2;
	s->fault_line[0] = s->fault_line[1] = 0;
	harness_expect_init(&s->expect);
	s->max_attempts = 4;
	s->timeout_s = 120;
}

static void write_case(const harness_sweep_opts *so, const harness_scenario *s, const harness_result *r, char *path,
		       size_t len)
{
	const harness_fault *f = &s->faults[0];
	snprintf(path, len, "%s/%s.yaml", so->out_dir, s->name);
	FILE *out = fopen(path, "w");
	if (!out)
		return;
	fprintf(out, "# Found by ckpt-harness sweep: %s\n# %s\n", harness_verdict_name(r->verdict), r->sentence);
	fprintf(out, "name: %s\ndescription: The %dth I/O call of rank %d in the save of step %ld fails with %s%s.\n",
		s->name, f->nth, f->rank, so->step, harness_errno_name(f->err), f->times ? " once" : " from then on");
	fprintf(out, "trainer: {preset: %s, world_size: %d, steps: %ld, checkpoint: {every: %ld, keep: 3}}\nfaults:\n",
		s->trainer.preset, s->trainer.world_size, (long)s->trainer.steps, (long)s->trainer.every);
	if (f->times)
		fprintf(out, "  - when: {rank: %d, step: %ld, op: any, nth: %d}\n    do: {errno: %s, times: 1}\n", f->rank,
			so->step, f->nth, harness_errno_name(f->err));
	else
		fprintf(out, "  - when: {rank: %d, step: %ld, op: any, nth: %d}\n    do: {errno: %s}\n", f->rank, so->step,
			f->nth, harness_errno_name(f->err));
	fprintf(out, "  - when: {rank: %d, step: %ld, phase: train.step}\n    do: kill\nexpect: {outcome: resume_bitwise}\n",
		s->faults[1].rank, so->step + 2);
	fclose(out);
}

int harness_sweep(const harness_sweep_opts *so, const harness_opts *o)
{
	json_t *cases = json_array();
	int runs = 0, failures = 0, errors = 0;
	harness_scenario *s = calloc(1, sizeof *s);
	harness_result *r = calloc(1, sizeof *r);

	mkdir(so->out_dir, 0755);
	for (int rank = 0; rank < so->world; rank++) {
		if (so->only_rank >= 0 && rank != so->only_rank)
			continue;
		for (int persistent = 0; persistent <= 1; persistent++) {
			for (int nth = 1; nth < 10000 && !harness_interrupted(); nth++) {
				build(so, rank, persistent, nth, s);
				harness_run_scenario(s, o, r);
				if (r->harness_error) {
					fprintf(stderr, "ckpt-harness: sweep: %s\n", r->sentence);
					errors++;
					goto done;
				}
				/* the sweep ends where the save has no Nth call left */
				if (r->verdict == HARNESS_ERROR && strstr(r->sentence, "did not fire") && strstr(r->sentence, "errno"))
					break;
				runs++;
				char path[1200] = "";
				if (r->verdict != HARNESS_PASS) {
					failures++;
					write_case(so, s, r, path, sizeof path);
				}
				fprintf(stderr, "[%d] rank %d %s op %d: %s%s%s\n", runs, rank, persistent ? "persistent" : "transient",
					nth, harness_verdict_name(r->verdict), r->verdict == HARNESS_PASS ? "" : ": ",
					r->verdict == HARNESS_PASS ? "" : r->sentence);
				json_array_append_new(cases, json_pack("{s:i,s:s,s:i,s:s,s:s,s:s}", "rank", rank, "mode",
								       persistent ? "persistent" : "transient", "nth", nth,
								       "verdict", harness_verdict_name(r->verdict), "sentence",
								       r->sentence, "scenario", path));
			}
		}
	}
done:
	printf("sweep of the save of step %ld (%s, %d ranks, %s): %d runs, %d failing\n", so->step, so->preset, so->world,
	       harness_errno_name(so->err), runs, failures);
	if (so->json) {
		json_t *j = json_pack("{s:i,s:i,s:s,s:i,s:i,s:o}", "runs", runs, "failures", failures, "errno",
				      harness_errno_name(so->err), "world_size", so->world, "step", (int)so->step, "cases", cases);
		cases = NULL;
		json_dump_file(j, so->json, JSON_INDENT(2));
		json_decref(j);
	}
	json_decref(cases);
	free(s);
	free(r);
	return errors ? 3 : failures ? 1 : 0;
}
