#include "story.h"
#include "elastic.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonl.h"
#include "scenario.h"

/* Bounded copy of a string from a record ("" for anything else), ending in "..." if it was cut. */
static void copy_str(char *dst, size_t len, json_t *v)
{
	const char *s = json_string_value(v);
	if (snprintf(dst, len, "%s", s ? s : "") >= (int)len && len > 4)
		memcpy(dst + len - 4, "...", 4);
}

static const char *event_of(json_t *r)
{
	return json_string_value(json_object_get(r, "event"));
}

/* The step of a step record (no "event"), or -1. */
static int64_t step_of(json_t *r)
{
	json_t *s = json_object_get(r, "step");
	return !event_of(r) && json_is_integer(s) ? (int64_t)json_integer_value(s) : -1;
}

int harness_story_loss(const char *hex, double *out)
{
	char *end;
	size_t len = hex ? strlen(hex) : 0;

	if (len < 3 || hex[0] != '0' || (hex[1] != 'x' && hex[1] != 'X'))
		return -1;
	errno = 0;
	unsigned long long bits = strtoull(hex + 2, &end, 16);
	if (errno || *end)
		return -1;
	if (len == 10) {
		uint32_t b = (uint32_t)bits;
		float f;
		memcpy(&f, &b, sizeof f);
		*out = f;
	} else if (len == 18) {
		uint64_t b = bits;
		memcpy(out, &b, sizeof *out);
	} else {
		return -1;
	}
	return 0;
}

/* The loss of a step record as a number (finite), and as written (hex or number text). */
static int loss_of(json_t *r, double *v, char *text, size_t len)
{
	json_t *l = json_object_get(r, "loss");

	if (text)
		text[0] = '\0';
	if (json_is_string(l)) {
		if (text)
			snprintf(text, len, "%s", json_string_value(l));
		if (harness_story_loss(json_string_value(l), v) < 0)
			return -1;
	} else if (json_is_number(l)) {
		*v = json_number_value(l);
		if (text)
			snprintf(text, len, "%.9g", *v);
	} else {
		return -1;
	}
	return isfinite(*v) ? 0 : -1;
}

/* A trajectory in memory: its records, at most this many (a run writes one per step and a few more). */
#define STORY_MAX_RECORDS 1000000

typedef struct recs {
	json_t **v;
	int n, cap;
} recs;

static int collect_rec(json_t *j, void *arg)
{
	recs *t = arg;
	if (t->n >= STORY_MAX_RECORDS)
		return 1;
	if (t->n == t->cap) {
		int cap = t->cap ? 2 * t->cap : 256;
		json_t **v = realloc(t->v, sizeof *v * (size_t)cap);
		if (!v)
			return 1;
		t->v = v;
		t->cap = cap;
	}
	t->v[t->n++] = json_incref(j);
	return 0;
}

static void load(const char *path, recs *t)
{
	memset(t, 0, sizeof *t);
	if (path)
		harness_jsonl_each(path, collect_rec, t);
}

static void unload(recs *t)
{
	for (int i = 0; i < t->n; i++)
		json_decref(t->v[i]);
	free(t->v);
}

/* The uninterrupted run's step records, indexed by step (1..steps; others NULL). */
typedef struct golden_index {
	json_t **at;
	int64_t max;
} golden_index;

static void index_golden(const recs *g, golden_index *gi)
{
	gi->max = 0;
	for (int i = 0; i < g->n; i++)
		if (step_of(g->v[i]) > gi->max && step_of(g->v[i]) <= STORY_MAX_RECORDS)
			gi->max = step_of(g->v[i]);
	gi->at = calloc((size_t)gi->max + 1, sizeof *gi->at);
	if (!gi->at) {
		gi->max = 0;
		return;
	}
	for (int i = 0; i < g->n; i++) {
		int64_t s = step_of(g->v[i]);
		if (s >= 0 && s <= gi->max && !gi->at[s])
			gi->at[s] = g->v[i];
	}
}

static json_t *golden_at(const golden_index *gi, int64_t step)
{
	return step >= 0 && step <= gi->max ? gi->at[step] : NULL;
}

/* Append "a, b" names to buf. */
static void add_key(char *buf, size_t len, const char *key, const char *suffix)
{
	size_t used = strlen(buf);
	if (used + 1 < len)
		snprintf(buf + used, len - used, "%s%s%s", used ? ", " : "", key, suffix);
}

/* The keys whose values differ between a and b (either side), into buf; how many. */
static int differing_keys(json_t *a, json_t *b, char *buf, size_t len)
{
	const char *key;
	json_t *v;
	int n = 0;

	buf[0] = '\0';
	json_object_foreach(a, key, v) {
		json_t *w = json_object_get(b, key);
		if (w && json_equal(v, w))
			continue;
		add_key(buf, len, key, w ? "" : " (missing)");
		n++;
	}
	json_object_foreach(b, key, v) {
		if (json_object_get(a, key))
			continue;
		add_key(buf, len, key, " (extra)");
		n++;
	}
	return n;
}

/* Restored components that the uninterrupted run also digests at that step and that differ. */
static int differing_components(json_t *restored, json_t *golden, char *buf, size_t len)
{
	const char *key;
	json_t *v;
	int n = 0;

	buf[0] = '\0';
	json_object_foreach(restored, key, v) {
		json_t *w = json_object_get(golden, key);
		if (!w || json_equal(v, w))
			continue;
		add_key(buf, len, key, "");
		n++;
	}
	return n;
}

/* Keep a point at every stride-th step, and at the first and last of each attempt. */
static void add_resumed(harness_story *st, int64_t step, int attempt, double loss)
{
	if (st->nresumed >= 2 * HARNESS_STORY_POINTS) {
		st->resumed_dropped++;
		return;
	}
	st->resumed_step[st->nresumed] = (int32_t)step;
	st->resumed_attempt[st->nresumed] = (int8_t)attempt;
	st->resumed_loss[st->nresumed++] = loss;
}

static void fallbacks_text(json_t *list, char *buf, size_t len)
{
	size_t i;
	json_t *f;

	buf[0] = '\0';
	json_array_foreach(list, i, f) {
		char one[300];
		if (json_is_object(f))
			snprintf(one, sizeof one, "%s: %s",
				 json_string_value(json_object_get(f, "checkpoint")) ?
				 json_string_value(json_object_get(f, "checkpoint")) : "?",
				 json_string_value(json_object_get(f, "why")) ?
				 json_string_value(json_object_get(f, "why")) : "no reason given");
		else if (json_is_string(f))
			snprintf(one, sizeof one, "%s", json_string_value(f));
		else
			continue;
		size_t used = strlen(buf);
		if (used + 1 < len)
			snprintf(buf + used, len - used, "%s%s", used ? "; " : "", one);
	}
}

static void read_attempt(harness_story *st, int i, const recs *t, const golden_index *gi)
{
	harness_story_attempt *a = &st->attempt[i];
	json_t *start = NULL;
	int att = i + 1;
	int64_t prev = -1;

	a->restored_from = -2;
	a->first_step = a->last_step = -1;
	for (int k = 0; k < t->n; k++) {
		json_t *r = t->v[k];
		const char *ev = event_of(r);
		if (ev && strcmp(ev, "start") == 0 && !start) {
			json_t *rf = json_object_get(r, "restored_from");
			start = r;
			a->restored_from = json_is_integer(rf) ? (int64_t)json_integer_value(rf) : -1;
			copy_str(a->checkpoint, sizeof a->checkpoint, json_object_get(r, "checkpoint"));
			json_t *ws = json_object_get(r, "world_size");
			if (json_is_integer(ws) && json_integer_value(ws) > 0 && json_integer_value(ws) <= INT32_MAX)
				a->world_size = (int32_t)json_integer_value(ws);
			fallbacks_text(json_object_get(r, "fallbacks"), a->fallbacks, sizeof a->fallbacks);
			json_t *restored = json_object_get(r, "restored");
			json_t *gs = golden_at(gi, a->restored_from);
			char comps[160];
			if (i > 0 && st->diff_step < 0 && a->restored_from > 0 && json_is_object(restored) && gs &&
			    differing_components(restored, gs, comps, sizeof comps) > 0) {
				st->diff_step = a->restored_from;
				st->diff_attempt = att;
				st->diff_restore = 1;
				snprintf(st->diff_keys, sizeof st->diff_keys, "%s", comps);
			}
			continue;
		}
		if (ev && strcmp(ev, "committed") == 0) {
			json_t *c = json_object_get(r, "step");
			if (json_is_integer(c) && a->ncommits < HARNESS_STORY_COMMITS)
				a->commits[a->ncommits] = (int64_t)json_integer_value(c);
			a->ncommits++;
			continue;
		}
		if (ev && strcmp(ev, "save_failed") == 0) {
			a->save_failed++;
			continue;
		}
		if (ev && strcmp(ev, "end") == 0) {
			copy_str(a->end, sizeof a->end, json_object_get(r, "status"));
			copy_str(a->error, sizeof a->error, json_object_get(r, "error"));
			continue;
		}
		int64_t s = step_of(r);
		if (s < 0)
			continue;
		if (a->first_step < 0)
			a->first_step = s;
		a->last_step = s;
		json_t *g = golden_at(gi, s);
		char keys[160], text[24];
		if (g && st->diff_step < 0 && differing_keys(g, r, keys, sizeof keys) > 0) {
			st->diff_step = s;
			st->diff_attempt = att;
			snprintf(st->diff_keys, sizeof st->diff_keys, "%s", keys);
		}
		double v, gv;
		if (loss_of(r, &v, text, sizeof text) < 0)
			continue;
		if (st->loss_diff_step < 0 && g) {
			char gtext[24];
			json_t *gl = json_object_get(g, "loss"), *rl = json_object_get(r, "loss");
			if (!gl || !json_equal(gl, rl)) {
				st->loss_diff_step = s;
				st->loss_diff_attempt = att;
				snprintf(st->loss_resumed, sizeof st->loss_resumed, "%s", text);
				if (loss_of(g, &gv, gtext, sizeof gtext) == 0 || gtext[0])
					snprintf(st->loss_golden, sizeof st->loss_golden, "%s", gtext);
			}
		}
		/* the first step of the attempt, every stride-th, the differences; the last is added below */
		if (prev < 0 || s % st->stride == 0 || s == st->diff_step || s == st->loss_diff_step)
			add_resumed(st, s, att, v);
		prev = s;
	}
	/* the attempt's last step, so a curve ends where the attempt did */
	if (a->last_step >= 0 && (st->nresumed == 0 || st->resumed_step[st->nresumed - 1] != a->last_step ||
				  st->resumed_attempt[st->nresumed - 1] != att))
		for (int k = t->n - 1; k >= 0; k--)
			if (step_of(t->v[k]) == a->last_step) {
				double v;
				if (loss_of(t->v[k], &v, NULL, 0) == 0)
					add_resumed(st, a->last_step, att, v);
				break;
			}
}

typedef struct fire_ctx {
	harness_story *st;
	char dir[1200];            /* the run's directory, left out of the paths the fault log names */
} fire_ctx;

/* The path of a fire, relative to the run's directory; its tail if it is still too long. */
static void fire_path(char *dst, size_t len, const char *path, const char *dir)
{
	size_t dl = strlen(dir), pl;

	if (!path)
		path = "";
	if (dl && strncmp(path, dir, dl) == 0 && path[dl] == '/')
		path += dl + 1;
	pl = strlen(path);
	if (pl < len)
		snprintf(dst, len, "%s", path);
	else
		snprintf(dst, len, "...%s", path + pl - (len - 4));
}

static int add_fire(json_t *j, void *arg)
{
	fire_ctx *c = arg;
	harness_story *st = c->st;
	int fault = (int)json_integer_value(json_object_get(j, "fault"));
	int attempt = (int)json_integer_value(json_object_get(j, "attempt"));
	int rank = (int)json_integer_value(json_object_get(j, "rank"));

	/* repeats of one fault on one rank in one attempt (a persistent errno) are one entry */
	for (int i = 0; i < st->nfires; i++) {
		harness_story_fire *f = &st->fire[i];
		if (f->fault == fault && f->attempt == attempt && f->rank == rank) {
			f->count++;
			return 0;
		}
	}
	if (st->nfires >= HARNESS_STORY_FIRES) {
		st->fires_dropped++;
		return 0;
	}
	harness_story_fire *f = &st->fire[st->nfires++];
	f->fault = (int16_t)fault;
	f->attempt = (int16_t)attempt;
	f->rank = rank;
	f->step = (int64_t)json_integer_value(json_object_get(j, "step"));
	f->nth = (int32_t)json_integer_value(json_object_get(j, "nth"));
	f->count = 1;
	copy_str(f->phase, sizeof f->phase, json_object_get(j, "phase"));
	copy_str(f->op, sizeof f->op, json_object_get(j, "op"));
	/*
	 * As the coverage in run.c: under the shim an I/O call carries the last
	 * phase the trainer announced (train.reduce during a save), which makes
	 * no I/O; the call has no phase.
	 */
	if (strncmp(f->phase, "train.", 6) == 0 && strcmp(f->op, "phase") != 0)
		f->phase[0] = '\0';
	copy_str(f->action, sizeof f->action, json_object_get(j, "action"));
	fire_path(f->path, sizeof f->path, json_string_value(json_object_get(j, "path")), c->dir);
	return 0;
}

/* Fires in the order they happened, as far as the logs say: by attempt, then step, then rank. */
static int fire_cmp(const void *pa, const void *pb)
{
	const harness_story_fire *a = pa, *b = pb;
	if (a->attempt != b->attempt)
		return a->attempt - b->attempt;
	if (a->step != b->step)
		return a->step < b->step ? -1 : 1;
	if (a->rank != b->rank)
		return a->rank < b->rank ? -1 : 1;
	return a->fault - b->fault;
}

static const char *damage_kind(int k)
{
	return k == HARNESS_BITFLIP ? "bitflip" : k == HARNESS_TRUNCATE ? "truncate" : "delete";
}

void harness_story_collect(harness_story *st, const harness_scenario *s, const char *golden,
			   const char *const *attempts, int n, const char *faultlog)
{
	recs g, t;
	golden_index gi;

	memset(st, 0, sizeof *st);
	st->collected = 1;
	st->steps = s->trainer.steps;
	st->diff_step = st->loss_diff_step = -1;
	st->stride = (int)((s->trainer.steps + HARNESS_STORY_POINTS - 1) / HARNESS_STORY_POINTS);
	if (st->stride < 1)
		st->stride = 1;
	st->nattempts = n < HARNESS_MAX_ATTEMPTS ? n : HARNESS_MAX_ATTEMPTS;

	load(golden, &g);
	index_golden(&g, &gi);
	for (int64_t step = 1; step <= gi.max; step++) {
		double v;
		json_t *r = gi.at[step];
		if (!r || st->ngolden >= HARNESS_STORY_POINTS + 2 || (step % st->stride && step != 1 && step != gi.max))
			continue;
		if (loss_of(r, &v, NULL, 0) == 0) {
			st->golden_step[st->ngolden] = (int32_t)step;
			st->golden_loss[st->ngolden++] = v;
		}
	}
	for (int i = 0; i < st->nattempts; i++) {
		load(attempts[i], &t);
		read_attempt(st, i, &t, &gi);
		unload(&t);
	}
	free(gi.at);
	unload(&g);

	if (faultlog) {
		fire_ctx c = { .st = st };
		const char *slash = strrchr(faultlog, '/');
		if (slash)
			snprintf(c.dir, sizeof c.dir, "%.*s", (int)(slash - faultlog), faultlog);
		for (int rank = 0; rank < harness_ranks_max(s); rank++) {
			char path[1200];
			snprintf(path, sizeof path, "%s.rank-%d.jsonl", faultlog, rank);
			harness_jsonl_each(path, add_fire, &c);
		}
		qsort(st->fire, (size_t)st->nfires, sizeof *st->fire, fire_cmp);
		for (int i = 0; i < st->nfires; i++)
			if (st->fire[i].fault >= 0 && st->fire[i].fault < s->nfaults)
				st->fire[i].line = s->fault_line[st->fire[i].fault];
	}
	for (int i = 0; i < s->ndamage && st->ndamage < HARNESS_STORY_DAMAGE; i++) {
		harness_story_damage *d = &st->damage[st->ndamage++];
		d->after_attempt = s->damage[i].after_attempt;
		snprintf(d->what, sizeof d->what, "%s %s/%s", damage_kind(s->damage[i].kind), s->damage[i].generation,
			 s->damage[i].file);
	}
}
