/*
 * Shrinking (shrink.h), in the manner of delta debugging: greedy, one
 * simplification at a time, each tried on the current smallest failing
 * plan; the first that still fails every time becomes the new smallest, and
 * the search starts over, until no candidate is left or the budget is spent.
 */
#include "shrink.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "scenario_write.h"
#include "workdir.h"

enum harness_verdict harness_chaos_verdict(const harness_result *r)
{
	if (r->verdict == HARNESS_ERROR && !r->harness_error && r->oracle.verdict == HARNESS_PASS &&
	    strncmp(r->sentence, "fault did not fire", 18) == 0)
		return HARNESS_PASS;
	return r->verdict;
}

typedef struct trial {
	const harness_scenario *s;
	int handed, fails, done;
	char sentence[1024];
} trial;

static int trial_next(void *arg, long idx, harness_scenario *s)
{
	trial *t = arg;

	(void)idx;
	if (t->handed == HARNESS_SHRINK_REPEAT)
		return 1;
	*s = *t->s;
	t->handed++;
	return 0;
}

static void trial_done(void *arg, long idx, const harness_scenario *s, const harness_result *r, harness_fired fired)
{
	trial *t = arg;

	(void)idx;
	(void)s;
	(void)fired;
	t->done++;
	if (harness_chaos_verdict(r) == HARNESS_FAIL) {
		t->fails++;
		if (!t->sentence[0])
			snprintf(t->sentence, sizeof t->sentence, "%s", r->sentence);
	}
}

/* How many of HARNESS_SHRINK_REPEAT runs of s FAIL (with the first failure's sentence). */
static int fails(const harness_scenario *s, const harness_opts *o, int jobs, const char *root, long *serial,
		 char *sentence, size_t len)
{
	char dir[1100];
	trial t = { .s = s };

	snprintf(dir, sizeof dir, "%s/shrink-%ld", root, (*serial)++);
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -1;
	harness_pool p = { .o = o, .root = dir, .jobs = jobs, .next = trial_next, .done = trial_done, .arg = &t };
	harness_pool_run(&p);
	/* a candidate is its scenario: replaying it is the evidence, its work directories are not kept */
	harness_workdir_remove(dir);
	if (sentence && t.sentence[0])
		snprintf(sentence, len, "%s", t.sentence);
	return t.done == HARNESS_SHRINK_REPEAT ? t.fails : 0;
}

/* Does the loader accept c (as chaos would write it)? */
static int valid(harness_scenario *c)
{
	char *text = NULL, err[1024];
	size_t len;
	harness_scenario *back = malloc(sizeof *back);
	int ok = 0;

	if (back && harness_scenario_to_text(c, NULL, NULL, &text, &len) == 0 &&
	    harness_scenario_load_buffer(c->file[0] ? c->file : "shrink.yaml", text, len, back, err, sizeof err) == 0) {
		/* what the loader derives (damaged_newest, line numbers) comes from the text */
		*c = *back;
		ok = 1;
	}
	free(text);
	free(back);
	return ok;
}

static void drop_fault(harness_scenario *c, int i)
{
	memmove(&c->faults[i], &c->faults[i + 1], sizeof c->faults[0] * (size_t)(c->nfaults - i - 1));
	c->nfaults--;
}

static void drop_damage(harness_scenario *c, int i)
{
	memmove(&c->damage[i], &c->damage[i + 1], sizeof c->damage[0] * (size_t)(c->ndamage - i - 1));
	c->ndamage--;
}

/*
 * Candidate number k (0, 1, ...) smaller than cur, into c: 1 if there is
 * one, 0 when k is past the last. The order: fewer faults first, then
 * simpler actions, lower nth, earlier steps, fewer ranks, fewer steps.
 */
static int candidate(const harness_scenario *cur, int k, harness_scenario *c)
{
	const harness_trainer *t = &cur->trainer;
	int64_t every = t->every > 0 ? t->every : 1;

	*c = *cur;
	/* drop one fault */
	if (k < cur->nfaults) {
		drop_fault(c, k);
		return 1;
	}
	k -= cur->nfaults;
	if (k < cur->ndamage) {
		drop_damage(c, k);
		return 1;
	}
	k -= cur->ndamage;
	/* a simpler action: torn or power_loss -> kill, persistent errno -> transient */
	if (k < cur->nfaults) {
		harness_fault *f = &c->faults[k];
		if (f->action == HARNESS_TORN || f->action == HARNESS_POWER_LOSS) {
			f->action = HARNESS_KILL;
			f->arg = 0;
		} else if (f->action == HARNESS_NODE_LOSS && f->rpn > 0) {
			f->action = HARNESS_KILL;           /* one rank of the node, not all of it */
			f->arg = 0;
			f->rank = f->node * f->rpn;
		} else if (f->action == HARNESS_ERRNO && f->times != 1) {
			f->times = 1;
		} else {
			return -1;      /* nothing to simplify here: next candidate */
		}
		return 1;
	}
	k -= cur->nfaults;
	/* a lower nth: 1, then half */
	if (k < 2 * cur->nfaults) {
		harness_fault *f = &c->faults[k / 2];
		int nth = k % 2 == 0 ? 1 : f->nth / 2;
		if (nth < 1 || nth >= f->nth)
			return -1;
		f->nth = nth;
		return 1;
	}
	k -= 2 * cur->nfaults;
	/* an earlier step: one save earlier */
	if (k < cur->nfaults) {
		harness_fault *f = &c->faults[k];
		if (f->step < 0 || f->step - every < 1)
			return -1;
		f->step -= every;
		return 1;
	}
	k -= cur->nfaults;
	/* fewer ranks: half as many (a fault's rank folded into them) */
	if (k == 0) {
		int nodes = t->nodes > 1 ? t->nodes : 1;
		if (t->world_size < 2 || t->world_size % 2 || (t->world_size / 2) % nodes ||
		    (t->ncommand && strcmp(t->launcher, "single") == 0))
			return -1;
		c->trainer.world_size = t->world_size / 2;
		for (int i = 0; i < c->nfaults; i++) {
			harness_fault *f = &c->faults[i];
			if (f->rpn > 0) {       /* node faults: the same node, fewer ranks on it */
				f->rpn = c->trainer.world_size / nodes;
				if (f->rank >= 0)
					f->rank = f->node * f->rpn + f->rank % f->rpn;
			} else if (f->rank >= c->trainer.world_size) {
				f->rank %= c->trainer.world_size;
			}
		}
		return 1;
	}
	k--;
	/* fewer steps: one save interval less, not below the last step a fault names */
	if (k == 0) {
		int64_t last = 0;
		for (int i = 0; i < c->nfaults; i++)
			if (c->faults[i].step > last)
				last = c->faults[i].step;
		if (t->steps - every < every || t->steps - every < last + 1)
			return -1;
		c->trainer.steps -= every;
		return 1;
	}
	return 0;
}

int harness_shrink(const harness_scenario *failing, harness_fired fired, const harness_opts *o, int jobs,
		   const char *root, int budget, harness_shrink_result *out)
{
	harness_scenario *cur = malloc(sizeof *cur), *c = malloc(sizeof *c);
	long serial = 0;
	int rc = 0;

	memset(out, 0, sizeof *out);
	if (!cur || !c) {
		rc = -ENOMEM;
		goto done;
	}
	out->planned = failing->nfaults + failing->ndamage;
	/* the faults that fired, in plan order: the others never touched the run */
	*cur = *failing;
	for (int i = failing->nfaults - 1; i >= 0; i--)
		if (!(fired & ((harness_fired)1 << i)))
			drop_fault(cur, i);
	if (!valid(cur))
		*cur = *failing;      /* e.g. an attempt-2 fault without its crash: keep the whole plan */
	out->fired = cur->nfaults + cur->ndamage;
	out->fails_of = fails(cur, o, jobs, root, &serial, out->sentence, sizeof out->sentence);
	out->candidates++;
	out->confirmed = out->fails_of == HARNESS_SHRINK_REPEAT;
	if (!out->confirmed && memcmp(cur, failing, sizeof *cur) != 0) {
		/* the fired subset did not fail every time: is the whole plan any better? */
		char s2[1024] = "";
		int f2 = fails(failing, o, jobs, root, &serial, s2, sizeof s2);
		out->candidates++;
		if (f2 > out->fails_of) {
			*cur = *failing;
			out->fails_of = f2;
			snprintf(out->sentence, sizeof out->sentence, "%s", s2);
			out->confirmed = f2 == HARNESS_SHRINK_REPEAT;
		}
	}
	for (int progress = out->confirmed; progress && out->candidates < budget;) {
		progress = 0;
		for (int k = 0; out->candidates < budget; k++) {
			int have = candidate(cur, k, c);
			if (have == 0)
				break;
			if (have < 0 || !valid(c) || memcmp(c, cur, sizeof *c) == 0)
				continue;
			char sentence[1024] = "";
			int n = fails(c, o, jobs, root, &serial, sentence, sizeof sentence);
			out->candidates++;
			if (n == HARNESS_SHRINK_REPEAT) {
				*cur = *c;
				snprintf(out->sentence, sizeof out->sentence, "%s", sentence);
				progress = 1;
				break;      /* start over from the smaller plan */
			}
		}
	}
	out->s = *cur;
	out->shrunk = cur->nfaults + cur->ndamage;
done:
	free(cur);
	free(c);
	return rc;
}
