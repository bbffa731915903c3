#include "oracle.h"
#include "jsonl.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const components[] = { "params", "master", "opt", "rng", "data", "sched", "scaler", "user" };
static const char *const descriptions[] = {
	"bf16 working weights (params)", "fp32 master weights (master)", "optimizer moments (opt)",
	"dropout RNG streams (rng)", "data cursor (data)", "LR schedule state (sched)",
	"loss scaler state (scaler)", "user blob (user)",
};
static const int plural[] = { 1, 1, 1, 1, 0, 0, 0, 0 };
#define NCOMP 8

const char *harness_component_description(const char *name)
{
	for (int i = 0; i < NCOMP; i++)
		if (strcmp(components[i], name) == 0)
			return descriptions[i];
	return name;
}

typedef struct traj {
	json_t **rec;
	int n;
} traj;

static int collect(json_t *j, void *arg)
{
	traj *t = arg;
	t->rec = realloc(t->rec, sizeof *t->rec * (size_t)(t->n + 1));
	t->rec[t->n++] = json_incref(j);
	return 0;
}

/* One JSON object a line; a torn last line (a kill mid-write) is dropped. */
static int load(const char *path, traj *t)
{
	t->rec = NULL;
	t->n = 0;
	int rc = harness_jsonl_each(path, collect, t);
	return rc == -ENOENT ? 0 : rc;      /* killed before writing anything */
}

static void unload(traj *t)
{
	for (int i = 0; i < t->n; i++)
		json_decref(t->rec[i]);
	free(t->rec);
}

static const char *event(json_t *r)
{
	return json_string_value(json_object_get(r, "event"));
}

static int64_t step_of(json_t *r)
{
	json_t *s = json_object_get(r, "step");
	return json_is_integer(s) && !event(r) ? (int64_t)json_integer_value(s) : -1;
}

static json_t *golden_step(const traj *g, int64_t step)
{
	for (int i = 0; i < g->n; i++)
		if (step_of(g->rec[i]) == step)
			return g->rec[i];
	return NULL;
}

static int say(harness_oracle_result *o, enum harness_verdict v, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int say(harness_oracle_result *o, enum harness_verdict v, const char *fmt, ...)
{
	va_list ap;

	if (o->verdict != HARNESS_PASS)
		return 0;              /* the first finding is the one reported */
	o->verdict = v;
	va_start(ap, fmt);
	vsnprintf(o->sentence, sizeof o->sentence, fmt, ap);
	va_end(ap);
	return 0;
}

/* Keys of a whose values differ in b, comma-separated, into buf. */
static int diff_keys(json_t *a, json_t *b, char *buf, size_t len)
{
	const char *key;
	json_t *v;
	int n = 0;
	size_t used = 0;

	buf[0] = '\0';
	json_object_foreach(a, key, v) {
		json_t *w = json_object_get(b, key);
		if (w && json_equal(v, w))
			continue;
		used += (size_t)snprintf(buf + used, used < len ? len - used : 0, "%s%s", n ? ", " : "", key);
		n++;
	}
	json_object_foreach(b, key, v) {
		if (json_object_get(a, key))
			continue;
		used += (size_t)snprintf(buf + used, used < len ? len - used : 0, "%s%s (missing)", n ? ", " : "", key);
		n++;
	}
	return n;
}

/* Components that differ: "optimizer moments (opt) and loss scaler state (scaler)"; *many if plural. */
static int describe_components(json_t *restored, json_t *golden, char *buf, size_t len, int *many)
{
	int n = 0;
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 0; i < NCOMP; i++) {
		json_t *a = json_object_get(restored, components[i]), *b = json_object_get(golden, components[i]);
		if (!a || !b || json_equal(a, b))
			continue;
		used += (size_t)snprintf(buf + used, used < len ? len - used : 0, "%s%s", n ? " and " : "",
					 descriptions[i]);
		*many = n > 0 || plural[i];
		n++;
	}
	return n;
}

void harness_expect_init(harness_expect *e)
{
	memset(e, 0, sizeof *e);
	e->outcome = HARNESS_RESUME_BITWISE;
	e->restored_from = -1;
	e->max_lost_steps = -1;
	for (int i = 0; i <= HARNESS_MAX_ATTEMPTS; i++)
		e->restored_from_at[i] = e->max_lost_at[i] = -1;
}

int harness_oracle_compare(const char *golden, const char *const *attempts, int nattempts,
			   int64_t expected_steps, const harness_expect *exp, harness_oracle_result *o)
{
	traj g, a[HARNESS_MAX_ATTEMPTS];
	int64_t acked = 0, last_step[HARNESS_MAX_ATTEMPTS];
	int rc = 0, loaded = 0;
	json_t *last_end = NULL;

	memset(o, 0, sizeof *o);
	o->max_lost = 0;
	if (nattempts > HARNESS_MAX_ATTEMPTS)
		nattempts = HARNESS_MAX_ATTEMPTS;
	o->attempts = nattempts;
	if ((rc = load(golden, &g)) < 0 || g.n == 0) {
		snprintf(o->sentence, sizeof o->sentence, "cannot read the golden trajectory %s", golden);
		o->verdict = HARNESS_ERROR;
		return rc < 0 ? rc : -ENOENT;
	}
	for (loaded = 0; loaded < nattempts; loaded++)
		if ((rc = load(attempts[loaded], &a[loaded])) < 0) {
			snprintf(o->sentence, sizeof o->sentence, "cannot read %s: %s", attempts[loaded], strerror(-rc));
			o->verdict = HARNESS_ERROR;
			goto out;
		}

	for (int i = 0; i < nattempts; i++) {
		json_t *start = NULL;
		last_step[i] = -1;
		o->restored_from[i] = -2;
		for (int k = 0; k < a[i].n; k++) {
			json_t *r = a[i].rec[k];
			const char *ev = event(r);
			if (ev && strcmp(ev, "start") == 0)
				start = r;
		}
		if (start) {
			json_t *rf = json_object_get(start, "restored_from");
			int64_t R = json_is_integer(rf) ? (int64_t)json_integer_value(rf) : 0;
			o->restored_from[i] = json_is_integer(rf) ? R : -1;
			if (i > 0 && o->ncrashes < HARNESS_MAX_ATTEMPTS && last_step[i - 1] >= 0) {
				int64_t lost = last_step[i - 1] - R;
				o->lost_steps[o->ncrashes++] = lost;
				if (lost > o->max_lost)
					o->max_lost = lost;
			}
			/* losing an acknowledged generation is a durability bug whatever the scenario expects */
			if (R < acked && !exp->damaged_newest)
				say(o, HARNESS_FAIL,
				    "attempt %d restored %s, but step %" PRId64 " had been committed and acknowledged before "
				    "the crash: a durable checkpoint was lost (a missing fsync or rename?)", i + 1,
				    R ? json_string_value(json_object_get(start, "checkpoint")) : "nothing (a fresh start)",
				    acked);
			else if (exp->restored_from >= 0 && i == 1 && R != exp->restored_from)
				say(o, HARNESS_FAIL, "attempt 2 restored %s, but the scenario expects step %" PRId64,
				    json_is_integer(rf) ? json_string_value(json_object_get(start, "checkpoint")) : "nothing (fresh start)",
				    exp->restored_from);
			json_t *restored = json_object_get(start, "restored"), *gs = R ? golden_step(&g, R) : NULL;
			if (R && restored && gs) {
				char comps[512];
				int many = 0;
				if (describe_components(restored, gs, comps, sizeof comps, &many) > 0)
					say(o, HARNESS_FAIL,
					    "%s restored at step %" PRId64 " (attempt %d, %s) differ%s from the uninterrupted "
					    "run's state after step %" PRId64, comps, R, i + 1,
					    json_string_value(json_object_get(start, "checkpoint")), many ? "" : "s", R);
			} else if (R && !gs) {
				say(o, HARNESS_FAIL, "attempt %d restored step %" PRId64 ", which the uninterrupted run never had",
				    i + 1, R);
			}
		}
		for (int k = 0; k < a[i].n; k++) {
			json_t *r = a[i].rec[k];
			const char *ev = event(r);
			int64_t s = step_of(r);
			if (ev && strcmp(ev, "committed") == 0) {
				int64_t c = json_integer_value(json_object_get(r, "step"));
				if (c > acked)
					acked = c;
			}
			if (ev && strcmp(ev, "end") == 0 && i == nattempts - 1)
				last_end = r;
			if (s < 0)
				continue;
			last_step[i] = s;
			json_t *gr = golden_step(&g, s);
			char keys[512];
			if (!gr) {
				say(o, HARNESS_FAIL, "attempt %d wrote step %" PRId64 ", past the uninterrupted run's end", i + 1, s);
			} else if (diff_keys(gr, r, keys, sizeof keys) > 0) {
				int64_t R = o->restored_from[i] > 0 ? o->restored_from[i] : 0;
				if (R)
					say(o, HARNESS_FAIL,
					    "step %" PRId64 " (attempt %d, resumed from step %" PRId64 ") differs from the "
					    "uninterrupted run in %s; the restored state matched, so something outside the "
					    "checkpointed components was lost", s, i + 1, R, keys);
				else
					say(o, HARNESS_FAIL, "step %" PRId64 " (attempt %d) differs from the uninterrupted run in %s",
					    s, i + 1, keys);
			}
		}
	}

	const char *status = last_end ? json_string_value(json_object_get(last_end, "status")) : NULL;
	o->finished = status && strcmp(status, "done") == 0 && last_step[nattempts - 1] == expected_steps;
	if (exp->outcome == HARNESS_CLEAN_FAILURE) {
		const char *err = last_end ? json_string_value(json_object_get(last_end, "error")) : NULL;
		if (o->finished)
			say(o, HARNESS_FAIL, "expected a clean failure (\"%s\") but the run finished all %" PRId64 " steps",
			    exp->error, expected_steps);
		else if (!status || strcmp(status, "failed") != 0)
			say(o, HARNESS_FAIL, "expected a clean failure (\"%s\") but the last attempt ended without saying "
			    "why (killed or stuck)", exp->error);
		else if (!err || !strstr(err, exp->error))
			say(o, HARNESS_FAIL, "expected a clean failure mentioning \"%s\" but it said: %s", exp->error,
			    err ? err : "(nothing)");
	} else if (!o->finished) {
		const char *err = last_end ? json_string_value(json_object_get(last_end, "error")) : NULL;
		say(o, HARNESS_FAIL, "the run did not finish: after %d attempt%s it stopped at step %" PRId64 " of %" PRId64
		    "%s%s", nattempts, nattempts == 1 ? "" : "s", last_step[nattempts - 1] > 0 ? last_step[nattempts - 1] : 0,
		    expected_steps, err ? ": " : "", err ? err : "");
	}
	if (exp->max_lost_steps >= 0 && o->max_lost > exp->max_lost_steps)
		say(o, HARNESS_FAIL, "a crash lost %" PRId64 " steps, more than the %" PRId64 " the scenario allows",
		    o->max_lost, exp->max_lost_steps);
	if (o->verdict == HARNESS_PASS)
		snprintf(o->sentence, sizeof o->sentence, "%s after %d attempt%s",
			 exp->outcome == HARNESS_CLEAN_FAILURE ? "failed cleanly as expected" : "resumed bit for bit",
			 nattempts, nattempts == 1 ? "" : "s");
out:
	for (int i = 0; i < loaded; i++)
		unload(&a[i]);
	unload(&g);
	return rc;
}
