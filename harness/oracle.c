#include "oracle.h"
#include "alerts.h"
#include "jsonl.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const components[] = { "params", "master", "opt", "rng", "data", "sched", "scaler", "user",
					   "accum" };
static const char *const descriptions[] = {
	"bf16 working weights (params)", "fp32 master weights (master)", "optimizer moments (opt)",
	"dropout RNG streams (rng)", "data cursor (data)", "LR schedule state (sched)",
	"loss scaler state (scaler)", "user blob (user)", "accumulated gradient (accum)",
};
static const int plural[] = { 1, 1, 1, 1, 0, 0, 0, 0, 0 };
#define NCOMP 9

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

/*
 * Components that differ, every one the restart reported that the
 * uninterrupted run also digests: reftrain's in its words ("optimizer
 * moments (opt) and loss scaler state (scaler)"), a program's by its own
 * names ("components ema and opt"); *many if plural.
 */
static int describe_components(json_t *restored, json_t *golden, int reftrain, char *buf, size_t len, int *many)
{
	const char *key;
	json_t *a;
	int n = 0;
	size_t used = 0;
	char names[512] = "";

	buf[0] = '\0';
	json_object_foreach(restored, key, a) {
		json_t *b = json_object_get(golden, key);
		int k = -1;
		if (!b || json_equal(a, b))
			continue;
		for (int i = 0; reftrain && i < NCOMP && k < 0; i++)
			if (strcmp(components[i], key) == 0)
				k = i;
		used += (size_t)snprintf(names + used, used < sizeof names ? sizeof names - used : 0, "%s%s",
					 n ? " and " : "", k >= 0 ? descriptions[k] : key);
		*many = n > 0 || (k >= 0 && plural[k]);
		n++;
	}
	if (n)
		snprintf(buf, len, "%s%s", reftrain ? "" : n > 1 ? "components " : "component ", names);
	if (!reftrain)
		*many = n > 1;
	return n;
}

/* The trajectory is reftrain's (its start record names a preset), so its components have reftrain's meaning. */
static int is_reftrain(const json_t *start)
{
	return start && json_object_get(start, "preset") && json_object_get(start, "virtual_workers");
}

/* expect.refused: at least one generation passed over, each for a reason that contains the words. */
static void check_refused(harness_oracle_result *o, const char *words, int att, json_t *fallbacks)
{
	size_t i;
	json_t *f;

	if (json_array_size(fallbacks) == 0)
		say(o, HARNESS_FAIL, "attempt %d passed over no generation, but the scenario expects one refused for "
		    "\"%s\"", att, words);
	json_array_foreach(fallbacks, i, f) {
		const char *why = json_string_value(json_object_get(f, "why"));
		if (!why || !strstr(why, words)) {
			say(o, HARNESS_FAIL, "attempt %d passed over %s for \"%s\", but the scenario expects it refused for "
			    "\"%s\"", att, json_string_value(json_object_get(f, "checkpoint")) ?
			    json_string_value(json_object_get(f, "checkpoint")) : "a generation", why ? why : "no reason",
			    words);
			break;
		}
	}
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

/* An acknowledgement: step committed, in attempt (1-based). */
typedef struct ack {
	int64_t step;
	int attempt;
	int fast_only;      /* "tier":"fast": committed on the node-local tier */
	int drained;        /* the attempt whose "drained" record covers it (0: none) */
} ack;

typedef struct acks {
	ack *v;
	int n;
} acks;

static void ack_add(acks *a, int64_t step, int attempt, int fast_only)
{
	for (int i = 0; i < a->n; i++)
		if (a->v[i].step == step) {
			a->v[i].attempt = attempt;    /* a re-save acknowledges it again */
			a->v[i].fast_only = fast_only;
			a->v[i].drained = 0;
			return;
		}
	ack *v = realloc(a->v, sizeof *v * (size_t)(a->n + 1));
	if (!v)
		return;
	a->v = v;
	a->v[a->n++] = (ack){ step, attempt, fast_only, 0 };
}

/* Tiered storage: step is on the durable tier too. */
static void ack_drained(acks *a, int64_t step, int attempt)
{
	for (int i = 0; i < a->n; i++)
		if (a->v[i].step == step && !a->v[i].drained)
			a->v[i].drained = attempt;
}

/* Tiered storage: what the sentence adds about the lost acknowledgement. */
static const char *tier_note(const acks *a, int64_t step)
{
	for (int i = 0; i < a->n; i++)
		if (a->v[i].step == step && a->v[i].fast_only)
			return a->v[i].drained ? " (and drained to the durable tier)" : " (on the fast tier)";
	return "";
}

/* Only on a fast tier that a node loss wiped after it was acknowledged and before attempt started. */
static int lost_with_fast_tier(const harness_expect *e, const ack *k, int attempt)
{
	if (!k->fast_only)
		return 0;
	for (int w = k->attempt + 1; w <= attempt && w <= HARNESS_MAX_ATTEMPTS; w++)
		if (e->fast_wiped[w] && (!k->drained || k->drained >= w))
			return 1;
	return 0;
}

/* Damaged at rest after it was acknowledged, and before `attempt` started. */
static int damaged_since_ack(const harness_expect *e, const ack *k, int attempt)
{
	for (int d = 0; d < e->ndamaged && d < HARNESS_MAX_DAMAGED; d++)
		if (e->damaged_step[d] == k->step && e->damaged_from_attempt[d] > k->attempt &&
		    e->damaged_from_attempt[d] <= attempt)
			return 1;
	return 0;
}

/*
 * The oldest step attempt `attempt` may restore: the newest acknowledged
 * generation that must still be there. Retention may have removed all but
 * the newest `keep` acknowledged generations, and damage at rest may have
 * spoiled some of those; every other acknowledged generation must survive.
 * 0 when nothing has to survive, as when the scenario made the restore's own
 * I/O fail. *skipped gets the newest damaged one passed over.
 */
static int64_t must_survive(const harness_expect *e, const acks *a, int attempt, int64_t *skipped)
{
	int64_t bound = 0;
	int rank;

	*skipped = 0;
	if (attempt <= HARNESS_MAX_ATTEMPTS && e->restore_faulted[attempt])
		return 0;            /* the scenario failed its reads: any fallback is fair */
	for (int i = 0; i < a->n; i++) {
		if (a->v[i].attempt >= attempt)
			continue;
		rank = 0;            /* how many acknowledged generations are newer */
		for (int j = 0; j < a->n; j++)
			rank += a->v[j].attempt < attempt && a->v[j].step > a->v[i].step;
		if (e->keep > 0 && rank >= e->keep)
			continue;
		if (lost_with_fast_tier(e, &a->v[i], attempt))
			continue;
		if (damaged_since_ack(e, &a->v[i], attempt)) {
			if (a->v[i].step > *skipped)
				*skipped = a->v[i].step;
			continue;
		}
		if (a->v[i].step > bound)
			bound = a->v[i].step;
	}
	return bound;
}

/* An expectation the scenario stated but the run never gave a chance to check. */
static void unchecked(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void unchecked(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (buf[0])
		return;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

static const char *restored_name(json_t *start, int64_t R)
{
	const char *ck = json_string_value(json_object_get(start, "checkpoint"));
	return R ? (ck ? ck : "a checkpoint") : "nothing (a fresh start)";
}

int harness_oracle_compare(const char *golden, const char *const *attempts, int nattempts,
			   int64_t expected_steps, const harness_expect *exp, harness_oracle_result *o)
{
	traj g, a[HARNESS_MAX_ATTEMPTS];
	int64_t last_step[HARNESS_MAX_ATTEMPTS], written = -1;
	int rc = 0, loaded = 0, restarts_started = 0, first_checked = 0;
	json_t *last_end = NULL;
	acks ak = { NULL, 0 };
	char why_unchecked[512] = "";

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
		json_t *start = NULL, *end = NULL;
		int att = i + 1;
		last_step[i] = -1;
		o->restored_from[i] = -2;
		for (int k = 0; k < a[i].n; k++) {
			const char *ev = event(a[i].rec[k]);
			if (ev && strcmp(ev, "start") == 0 && !start)
				start = a[i].rec[k];
			if (ev && strcmp(ev, "end") == 0)
				end = a[i].rec[k];
		}
		if (i > 0 && start) {
			json_t *rf = json_object_get(start, "restored_from");
			int64_t R = json_is_integer(rf) ? (int64_t)json_integer_value(rf) : 0;
			int64_t skipped, bound = must_survive(exp, &ak, att, &skipped);
			o->restored_from[i] = json_is_integer(rf) ? R : -1;
			/* a restart begins at its restored step: restored at the last step, it has none left to write */
			if (json_is_integer(rf))
				last_step[i] = R;
			restarts_started++;
			/* the work lost is measured from the last step any earlier attempt wrote */
			int64_t lost = written > R ? written - R : 0;
			if (o->ncrashes < HARNESS_MAX_ATTEMPTS)
				o->lost_steps[o->ncrashes++] = lost;
			if (lost > o->max_lost)
				o->max_lost = lost;
			/* losing an acknowledged generation is a durability bug whatever the scenario expects */
			if (R < bound && o->verdict == HARNESS_PASS)
				o->lost_acked = bound;
			if (R < bound)
				say(o, HARNESS_FAIL,
				    "attempt %d restored %s, but step %" PRId64 " had been committed%s and acknowledged before "
				    "the crash%s: a durable checkpoint was lost (a missing fsync or rename?)", att,
				    restored_name(start, R), bound, tier_note(&ak, bound),
				    skipped > bound ? " and was never damaged" : "");
			if (exp->restored_from >= 0 && !first_checked && R != exp->restored_from)
				say(o, HARNESS_FAIL, "attempt %d, the first restart to get through its restore, restored %s, "
				    "but the scenario expects step %" PRId64, att, restored_name(start, R), exp->restored_from);
			if (exp->refused[0] && !first_checked)
				check_refused(o, exp->refused, att, json_object_get(start, "fallbacks"));
			first_checked = 1;
			int64_t want = att <= HARNESS_MAX_ATTEMPTS ? exp->restored_from_at[att] : -1;
			if (want == HARNESS_EXPECT_FRESH && json_is_integer(rf))
				say(o, HARNESS_FAIL, "attempt %d restored %s, but the scenario expects it to start fresh", att,
				    restored_name(start, R));
			else if (want >= 0 && R != want)
				say(o, HARNESS_FAIL, "attempt %d restored %s, but the scenario expects step %" PRId64, att,
				    restored_name(start, R), want);
			int64_t cap = att <= HARNESS_MAX_ATTEMPTS ? exp->max_lost_at[att] : -1;
			if (cap >= 0 && lost > cap)
				say(o, HARNESS_FAIL, "attempt %d lost %" PRId64 " steps (step %" PRId64 " was written, step %"
				    PRId64 " restored), more than the %" PRId64 " the scenario allows it", att, lost, written,
				    R, cap);
			if (exp->max_lost_steps >= 0 && lost > exp->max_lost_steps)
				say(o, HARNESS_FAIL, "attempt %d lost %" PRId64 " steps (step %" PRId64 " was written, step %"
				    PRId64 " restored), more than the %" PRId64 " the scenario allows", att, lost, written, R,
				    exp->max_lost_steps);
			json_t *restored = json_object_get(start, "restored"), *gs = R ? golden_step(&g, R) : NULL;
			if (R && restored && gs) {
				char comps[512];
				int many = 0;
				if (describe_components(restored, gs, is_reftrain(start), comps, sizeof comps, &many) > 0)
					say(o, HARNESS_FAIL,
					    "%s restored at step %" PRId64 " (attempt %d, %s) differ%s from the uninterrupted "
					    "run's state after step %" PRId64, comps, R, att, restored_name(start, R),
					    many ? "" : "s", R);
			} else if (R && !gs) {
				say(o, HARNESS_FAIL, "attempt %d restored step %" PRId64 ", which the uninterrupted run never had",
				    att, R);
			}
		} else if (i > 0) {
			/* no start record: it died in start-up or restore, or refused every generation */
			const char *st = end ? json_string_value(json_object_get(end, "status")) : NULL;
			int64_t skipped, bound = must_survive(exp, &ak, att, &skipped);
			if (st && strcmp(st, "failed") == 0 && bound > 0 && o->verdict == HARNESS_PASS)
				o->lost_acked = bound;
			if (st && strcmp(st, "failed") == 0 && bound > 0)
				say(o, HARNESS_FAIL,
				    "attempt %d refused to resume (%s), but step %" PRId64 " had been committed and "
				    "acknowledged%s: a durable checkpoint was lost", att,
				    json_string_value(json_object_get(end, "error")) ? json_string_value(json_object_get(end, "error"))
										     : "no reason given",
				    bound, skipped > bound ? " and was never damaged" : "");
			if (att <= HARNESS_MAX_ATTEMPTS && exp->restored_from_at[att] != -1)
				unchecked(why_unchecked, sizeof why_unchecked,
					  "the scenario expects what attempt %d restores, but attempt %d never wrote its start "
					  "record (it %s), so that could not be checked", att, att,
					  st ? "stopped before restoring" : "died during start-up or restore");
			if (att <= HARNESS_MAX_ATTEMPTS && exp->max_lost_at[att] != -1)
				unchecked(why_unchecked, sizeof why_unchecked,
					  "the scenario bounds the steps attempt %d loses, but attempt %d never wrote its start "
					  "record (it %s), so that could not be checked", att, att,
					  st ? "stopped before restoring" : "died during start-up or restore");
		}
		for (int k = 0; k < a[i].n; k++) {
			json_t *r = a[i].rec[k];
			const char *ev = event(r);
			int64_t s = step_of(r);
			if (ev && strcmp(ev, "committed") == 0) {
				json_t *c = json_object_get(r, "step");
				const char *tier = json_string_value(json_object_get(r, "tier"));
				if (json_is_integer(c))
					ack_add(&ak, (int64_t)json_integer_value(c), att, tier && strcmp(tier, "fast") == 0);
			}
			if (ev && strcmp(ev, "drained") == 0 && json_is_integer(json_object_get(r, "step")))
				ack_drained(&ak, (int64_t)json_integer_value(json_object_get(r, "step")), att);
			if (ev && strcmp(ev, "end") == 0 && i == nattempts - 1)
				last_end = r;
			if (s < 0)
				continue;
			last_step[i] = s;
			written = s;
			json_t *gr = golden_step(&g, s);
			char keys[512];
			if (!gr) {
				say(o, HARNESS_FAIL, "attempt %d wrote step %" PRId64 ", past the uninterrupted run's end", att, s);
			} else if (diff_keys(gr, r, keys, sizeof keys) > 0) {
				int64_t R = o->restored_from[i] > 0 ? o->restored_from[i] : 0;
				if (R)
					say(o, HARNESS_FAIL,
					    "step %" PRId64 " (attempt %d, resumed from step %" PRId64 ") differs from the "
					    "uninterrupted run in %s; the restored state matched, so something outside the "
					    "checkpointed components was lost", s, att, R, keys);
				else
					say(o, HARNESS_FAIL, "step %" PRId64 " (attempt %d) differs from the uninterrupted run in %s",
					    s, att, keys);
			}
		}
	}

	const char *status = last_end ? json_string_value(json_object_get(last_end, "status")) : NULL;
	o->finished = status && strcmp(status, "done") == 0 && last_step[nattempts - 1] == expected_steps;
	o->stopped_failed = status && strcmp(status, "failed") == 0;
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
	if (!restarts_started && exp->restored_from >= 0)
		unchecked(why_unchecked, sizeof why_unchecked,
			  "the scenario expects the first restart to restore step %" PRId64 ", but no restart got through "
			  "its restore (%d attempt%s), so that could not be checked", exp->restored_from, nattempts,
			  nattempts == 1 ? "" : "s");
	if (!restarts_started && exp->max_lost_steps >= 0)
		unchecked(why_unchecked, sizeof why_unchecked,
			  "the scenario bounds the steps a crash may cost (%" PRId64 "), but no restart got through its "
			  "restore (%d attempt%s), so that could not be checked", exp->max_lost_steps, nattempts,
			  nattempts == 1 ? "" : "s");
	for (int att = nattempts + 1; att <= HARNESS_MAX_ATTEMPTS; att++)
		if (exp->restored_from_at[att] != -1 || exp->max_lost_at[att] != -1)
			unchecked(why_unchecked, sizeof why_unchecked,
				  "the scenario states what attempt %d restores or loses, but the run ended after %d "
				  "attempt%s, so that could not be checked", att, nattempts, nattempts == 1 ? "" : "s");
	{       /* libckpt's save alerts: never compared bit for bit, judged against expect.alerts */
		int total = 0, k = 0;
		for (int i = 0; i < nattempts; i++)
			total += a[i].n;
		json_t **all = calloc((size_t)total + 1, sizeof *all);
		char why[640];
		for (int i = 0; all && i < nattempts; i++)
			for (int r = 0; r < a[i].n; r++)
				all[k++] = a[i].rec[r];
		if (all && harness_alerts_judge(exp, all, k, why, sizeof why))
			say(o, HARNESS_FAIL, "%s", why);
		free(all);
	}
	if (why_unchecked[0])
		say(o, HARNESS_ERROR, "%s", why_unchecked);
	if (o->verdict == HARNESS_PASS)
		snprintf(o->sentence, sizeof o->sentence, "%s after %d attempt%s",
			 exp->outcome == HARNESS_CLEAN_FAILURE ? "failed cleanly as expected" : "resumed bit for bit",
			 nattempts, nattempts == 1 ? "" : "s");
out:
	free(ak.v);
	for (int i = 0; i < loaded; i++)
		unload(&a[i]);
	unload(&g);
	return rc;
}
