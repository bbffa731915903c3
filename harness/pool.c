/* Concurrent scenario runs for the suite, chaos and shrinking (pool.h). */
#include "pool.h"
#include "elastic.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jsonl.h"
#include "launch.h"
#include "workdir.h"

typedef struct fired_ctx {
	int nfaults;
	harness_fired bits;
} fired_ctx;

static int note_fired(json_t *j, void *arg)
{
	fired_ctx *c = arg;
	json_t *f = json_object_get(j, "fault");

	if (json_is_integer(f) && json_integer_value(f) >= 0 && json_integer_value(f) < c->nfaults)
		c->bits |= (harness_fired)1 << json_integer_value(f);
	return 0;
}

harness_fired harness_pool_fired(const harness_scenario *s, const char *dir)
{
	fired_ctx c = { s->nfaults, 0 };

	for (int rank = 0; rank < harness_ranks_max(s); rank++) {
		char path[1200];
		snprintf(path, sizeof path, "%s/faults.rank-%d.jsonl", dir, rank);
		harness_jsonl_each(path, note_fired, &c);
	}
	for (int i = 0; i < s->ndamage; i++)
		c.bits |= HARNESS_FIRED_DAMAGE(i);
	return c.bits;
}

typedef struct slot {
	pid_t pid;
	long idx;
	harness_scenario s;
} slot;

typedef struct child_out {
	harness_result r;
	harness_fired fired;
} child_out;

static void child(const harness_pool *p, const slot *sl, pid_t parent)
{
	char work[1100], path[1100];
	harness_opts o = *p->o;
	child_out out;

	if (harness_launch_die_with_parent(parent) < 0)
		_exit(0);
	harness_launch_init();
	memset(&out, 0, sizeof out);
	if (p->own_workdir) {
		harness_run_scenario(&sl->s, &o, &out.r);
	} else {
		snprintf(work, sizeof work, "%s/%ld", p->root, sl->idx);
		o.work = work;
		o.keep = 1;
		harness_run_scenario(&sl->s, &o, &out.r);
		out.fired = harness_pool_fired(&sl->s, work);
		if (out.r.verdict == HARNESS_PASS && !p->keep) {
			harness_workdir_remove(work);
			out.r.workdir[0] = '\0';
		}
	}
	snprintf(path, sizeof path, "%s/%ld.result", p->root, sl->idx);
	FILE *f = fopen(path, "wb");
	if (f) {
		fwrite(&out, sizeof out, 1, f);
		fclose(f);
	}
	_exit(0);
}

static void collect(const harness_pool *p, slot *sl, int status)
{
	char path[1100];
	child_out *out = calloc(1, sizeof *out);

	snprintf(path, sizeof path, "%s/%ld.result", p->root, sl->idx);
	FILE *f = out ? fopen(path, "rb") : NULL;
	if (!f || fread(out, sizeof *out, 1, f) != 1) {
		if (out) {
			memset(out, 0, sizeof *out);
			snprintf(out->r.name, sizeof out->r.name, "%s", sl->s.name);
			snprintf(out->r.file, sizeof out->r.file, "%s", sl->s.file);
			out->r.verdict = HARNESS_ERROR;
			out->r.harness_error = 1;
			snprintf(out->r.sentence, sizeof out->r.sentence, "the scenario's runner died (status %d)", status);
		}
	}
	if (f)
		fclose(f);
	unlink(path);
	if (out)
		p->done(p->arg, sl->idx, &sl->s, &out->r, out->fired);
	free(out);
	sl->pid = 0;
}

long harness_pool_run(const harness_pool *p)
{
	slot *slots = calloc((size_t)p->jobs, sizeof *slots);
	pid_t self = getpid();
	long idx = 0, ran = 0;
	int running = 0, more = 1, forwarded = 0;

	if (!slots)
		return -ENOMEM;
	for (;;) {
		for (int k = 0; k < p->jobs && more && !harness_interrupted(); k++) {
			if (slots[k].pid)
				continue;
			if (p->next(p->arg, idx, &slots[k].s) != 0) {
				more = 0;
				break;
			}
			slots[k].idx = idx++;
			pid_t pid = fork();
			if (pid == 0)
				child(p, &slots[k], self);
			if (pid < 0) {
				more = 0;
				break;
			}
			slots[k].pid = pid;
			running++;
		}
		if (running == 0)
			break;
		if (harness_interrupted() && !forwarded) {
			for (int k = 0; k < p->jobs; k++)
				if (slots[k].pid > 0)
					kill(slots[k].pid, harness_interrupted());
			forwarded = 1;
			more = 0;
		}
		int status;
		pid_t w = wait(&status);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int k = 0; k < p->jobs; k++)
			if (slots[k].pid == w) {
				collect(p, &slots[k], status);
				running--;
				ran++;
			}
	}
	free(slots);
	return ran;
}
