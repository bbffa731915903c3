#include "transitions.h"

#include <inttypes.h>
#include <stdint.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonl.h"

static const char *const names[HARNESS_TR_COUNT] = {
	"epoch_boundary", "overflow_skip", "warmup_end", "accum_boundary", "retention_deletion", "resave",
};

const char *harness_transition_name(int transition)
{
	return transition >= 0 && transition < HARNESS_TR_COUNT ? names[transition] : "?";
}

const char *harness_crossing_how_name(int how)
{
	return how == HARNESS_CROSSED_ACROSS ? "across" : "restored_after";
}

/* ---- per-step facts of the uninterrupted run ----------------------------- */

/* Unknown fields stay -1: a trainer that does not write them has no such transition. */
typedef struct step_facts {
	int64_t step;
	int64_t epoch;
	int8_t warmup, skipped;
	int32_t micro;
} step_facts;

/* The records in step order; sized by the records read, never by the step numbers in them. */
typedef struct golden_steps {
	step_facts *s;
	int n, cap;
} golden_steps;

static int64_t step_of(json_t *j)
{
	json_t *s = json_object_get(j, "step");
	return json_is_integer(s) && !json_object_get(j, "event") ? (int64_t)json_integer_value(s) : -1;
}

static int8_t flag(json_t *v)
{
	return json_is_boolean(v) ? (int8_t)json_is_true(v) : -1;
}

static int take_step(json_t *j, void *arg)
{
	golden_steps *g = arg;
	int64_t step = step_of(j);

	if (step < 1)
		return 0;
	if (g->n == g->cap) {
		int cap = g->cap ? 2 * g->cap : 256;
		step_facts *n = realloc(g->s, sizeof *n * (size_t)cap);
		if (!n)
			return 1;
		g->s = n;
		g->cap = cap;
	}
	json_t *e = json_object_get(j, "epoch"), *m = json_object_get(j, "micro");
	g->s[g->n++] = (step_facts){
		.step = step,
		.epoch = json_is_integer(e) ? (int64_t)json_integer_value(e) : -1,
		.warmup = flag(json_object_get(j, "warmup")),
		.skipped = flag(json_object_get(j, "skipped")),
		.micro = json_is_integer(m) ? (int32_t)json_integer_value(m) : -1,
	};
	return 0;
}

static int cmp_step(const void *a, const void *b)
{
	const step_facts *x = a, *y = b;
	return x->step < y->step ? -1 : x->step > y->step;
}

/* The record of step s, or NULL. */
static const step_facts *lookup(const golden_steps *g, int64_t s)
{
	step_facts key = { .step = s };
	return g->n ? bsearch(&key, g->s, (size_t)g->n, sizeof *g->s, cmp_step) : NULL;
}

/* Step s ends an accumulation window: the next step starts one (or s is the run's last). */
static int window_end(const golden_steps *g, int64_t s)
{
	const step_facts *f = lookup(g, s), *next = s < INT64_MAX ? lookup(g, s + 1) : NULL;
	if (!f || f->micro < 0)
		return 0;
	return next ? next->micro == 0 : f == &g->s[g->n - 1];
}

/* Does transition x happen at step s of the uninterrupted run? */
static int happens_at(const golden_steps *g, int x, int64_t s)
{
	const step_facts *f = lookup(g, s), *p = lookup(g, s - 1);
	if (!f)
		return 0;
	switch (x) {
	case HARNESS_TR_EPOCH_BOUNDARY:
		return p && f->epoch >= 0 && p->epoch >= 0 && f->epoch != p->epoch;
	case HARNESS_TR_OVERFLOW_SKIP:
		return f->skipped == 1;
	case HARNESS_TR_WARMUP_END:
		return p && p->warmup == 1 && f->warmup == 0;
	case HARNESS_TR_ACCUM_BOUNDARY:
		return window_end(g, s);
	}
	return 0;
}

/* ---- what each attempt did ----------------------------------------------- */

#define MAX_COMMITS 256
#define MAX_NAMES 64

typedef struct attempt_facts {
	int started;              /* wrote its start record */
	int64_t restored;         /* step restored, -1 fresh */
	int64_t last;             /* last step record, -1 none */
	int64_t commits[MAX_COMMITS];
	int ncommits;
	int64_t fallbacks[MAX_NAMES];
	int nfallbacks;
	int64_t deleted[MAX_NAMES];   /* by retention, from the journal */
	int ndeleted;
} attempt_facts;

/* "step-00000040" -> 40, or -1 */
static int64_t gen_step(const char *name)
{
	unsigned long long v;
	int used = 0;
	if (!name || sscanf(name, "step-%llu%n", &v, &used) != 1 || name[used] != '\0')
		return -1;
	return (int64_t)v;
}

static int take_attempt(json_t *j, void *arg)
{
	attempt_facts *a = arg;
	const char *ev = json_string_value(json_object_get(j, "event"));
	int64_t step = step_of(j);

	if (step >= 0) {
		a->last = step;
	} else if (ev && strcmp(ev, "start") == 0) {
		json_t *r = json_object_get(j, "restored_from"), *fb;
		size_t i;
		a->started = 1;
		a->restored = json_is_integer(r) ? (int64_t)json_integer_value(r) : -1;
		json_array_foreach(json_object_get(j, "fallbacks"), i, fb) {
			int64_t s = gen_step(json_string_value(json_object_get(fb, "checkpoint")));
			if (s >= 0 && a->nfallbacks < MAX_NAMES)
				a->fallbacks[a->nfallbacks++] = s;
		}
	} else if (ev && strcmp(ev, "committed") == 0) {
		json_t *s = json_object_get(j, "step");
		if (json_is_integer(s) && a->ncommits < MAX_COMMITS)
			a->commits[a->ncommits++] = (int64_t)json_integer_value(s);
	}
	return 0;
}

typedef struct journal_ctx {
	attempt_facts *a;
	int nattempts;
	int current;              /* index of the attempt the lines belong to, -1 before the first open */
} journal_ctx;

/* Rank 0's journal: each process's "open" starts the next attempt's lines. */
static int take_journal(json_t *j, void *arg)
{
	journal_ctx *c = arg;
	const char *ev = json_string_value(json_object_get(j, "event"));

	if (!ev)
		return 0;
	if (strcmp(ev, "open") == 0) {
		c->current++;
		return c->current >= c->nattempts;
	}
	if (strcmp(ev, "retention") == 0 && c->current >= 0) {
		attempt_facts *a = &c->a[c->current];
		int64_t s = gen_step(json_string_value(json_object_get(j, "deleted")));
		if (s >= 0 && a->ndeleted < MAX_NAMES)
			a->deleted[a->ndeleted++] = s;
	}
	return 0;
}

static void add(harness_transitions *t, int x, int how, int attempt, int64_t restored, int64_t step)
{
	for (int i = 0; i < t->n; i++)
		if (t->v[i].transition == x && t->v[i].how == how && t->v[i].attempt == attempt)
			return;
	if (t->n < HARNESS_MAX_CROSSINGS)
		t->v[t->n++] = (harness_crossing){ (int8_t)x, (int8_t)how, (int16_t)attempt, restored, step };
}

static int contains(const int64_t *v, int n, int64_t x)
{
	for (int i = 0; i < n; i++)
		if (v[i] == x)
			return 1;
	return 0;
}

/* Generation S existed when attempt k saved it: acknowledged before and not deleted since, or passed over. */
static int existed(const attempt_facts *a, int k, int64_t S)
{
	if (contains(a[k].fallbacks, a[k].nfallbacks, S))
		return 1;
	int alive = 0;
	for (int i = 0; i < k; i++) {
		if (contains(a[i].commits, a[i].ncommits, S))
			alive = 1;
		if (contains(a[i].deleted, a[i].ndeleted, S))
			alive = 0;
	}
	return alive;
}

void harness_transitions_find(const char *golden, const char *const *attempts, int nattempts, const char *ckpt_root,
			      harness_transitions *out)
{
	golden_steps g = { NULL, 0, 0 };
	attempt_facts *a = calloc((size_t)(nattempts > 0 ? nattempts : 1), sizeof *a);

	memset(out, 0, sizeof *out);
	if (!a)
		return;
	harness_jsonl_each(golden, take_step, &g);
	if (g.n > 1)
		qsort(g.s, (size_t)g.n, sizeof *g.s, cmp_step);
	for (int k = 0; k < nattempts; k++) {
		a[k].restored = -1;
		a[k].last = -1;
		harness_jsonl_each(attempts[k], take_attempt, &a[k]);
	}
	if (ckpt_root) {
		/* a rotated journal's older half first */
		char path[1200];
		journal_ctx c = { a, nattempts, -1 };
		snprintf(path, sizeof path, "%s/journal/rank-00000.jsonl.1", ckpt_root);
		harness_jsonl_each_with(path, "\"event\"", take_journal, &c);
		snprintf(path, sizeof path, "%s/journal/rank-00000.jsonl", ckpt_root);
		harness_jsonl_each_with(path, "\"event\"", take_journal, &c);
	}

	for (int k = 1; k < nattempts; k++) {
		int64_t R = a[k].restored, L = a[k].last;
		int at = k + 1;
		if (!a[k].started || R < 0)
			continue;
		/* the step kinds, from the uninterrupted run */
		for (int x = HARNESS_TR_EPOCH_BOUNDARY; x <= HARNESS_TR_ACCUM_BOUNDARY; x++) {
			/* the uninterrupted run's steps, in order: the attempt's numbers only bound the walk */
			for (int i = 0; i < g.n; i++) {
				int64_t s = g.s[i].step;
				if (s <= R || s > L || !happens_at(&g, x, s))
					continue;
				/* an accumulation window carries gradients only into a restore from inside it */
				const step_facts *r = lookup(&g, R);
				if (x != HARNESS_TR_ACCUM_BOUNDARY || (r && r->micro >= 0 && !window_end(&g, R)))
					add(out, x, HARNESS_CROSSED_ACROSS, at, R, s);
				break;     /* the first one after R decides */
			}
			for (int i = g.n - 1; i >= 0; i--)
				if (g.s[i].step <= R && happens_at(&g, x, g.s[i].step)) {
					add(out, x, HARNESS_CROSSED_RESTORED_AFTER, at, R, g.s[i].step);
					break;
				}
		}
		/* the on-disk kinds */
		if (a[k].ndeleted > 0)
			add(out, HARNESS_TR_RETENTION_DELETION, HARNESS_CROSSED_ACROSS, at, R, a[k].deleted[0]);
		for (int i = 0; i < k; i++)
			if (a[i].ndeleted > 0)
				add(out, HARNESS_TR_RETENTION_DELETION, HARNESS_CROSSED_RESTORED_AFTER, at, R, a[i].deleted[0]);
		for (int c = 0; c < a[k].ncommits; c++)
			if (existed(a, k, a[k].commits[c])) {
				add(out, HARNESS_TR_RESAVE, HARNESS_CROSSED_ACROSS, at, R, a[k].commits[c]);
				break;
			}
		int times = 0;
		for (int i = 0; i < k; i++)
			times += contains(a[i].commits, a[i].ncommits, R);
		if (times >= 2)
			add(out, HARNESS_TR_RESAVE, HARNESS_CROSSED_RESTORED_AFTER, at, R, R);
	}
	free(g.s);
	free(a);
}

int harness_transitions_has(const harness_transitions *t, int transition, int how)
{
	for (int i = 0; i < t->n; i++)
		if (t->v[i].transition == transition && t->v[i].how == how)
			return 1;
	return 0;
}
