#include "scenario.h"
#include "suggest.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* ---- a small YAML tree with positions ----------------------------------- */

enum ykind { Y_SCALAR, Y_MAP, Y_SEQ };

typedef struct ynode {
	enum ykind kind;
	char *value;               /* scalars */
	int line, col;             /* 1-based */
	struct ynode **items;      /* seq items, or map key, value, key, value, ... */
	int n;
} ynode;

static void yfree(ynode *y)
{
	if (!y)
		return;
	for (int i = 0; i < y->n; i++)
		yfree(y->items[i]);
	free(y->items);
	free(y->value);
	free(y);
}

static ynode *ynew(enum ykind k, const yaml_mark_t *m)
{
	ynode *y = calloc(1, sizeof *y);
	y->kind = k;
	y->line = (int)m->line + 1;
	y->col = (int)m->column + 1;
	return y;
}

static void yadd(ynode *p, ynode *c)
{
	p->items = realloc(p->items, sizeof *p->items * (size_t)(p->n + 1));
	p->items[p->n++] = c;
}

typedef struct ctx {
	const char *file;
	char *err;
	size_t errlen;
	int failed;
} ctx;

static int fail_at(ctx *c, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail_at(ctx *c, int line, int col, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (c->failed++)
		return -EINVAL;
	n = snprintf(c->err, c->errlen, "%s:%d:%d: ", c->file, line, col);
	va_start(ap, fmt);
	vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int fail(ctx *c, const ynode *y, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(ctx *c, const ynode *y, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return fail_at(c, y->line, y->col, "%s", msg);
}

/* Parse the whole stream into one tree (aliases are not supported). */
static ynode *parse(ctx *c, FILE *f)
{
	yaml_parser_t p;
	yaml_event_t ev;
	ynode *stack[64], *root = NULL;
	int depth = 0, done = 0;

	yaml_parser_initialize(&p);
	yaml_parser_set_input_file(&p, f);
	while (!done) {
		if (!yaml_parser_parse(&p, &ev)) {
			fail_at(c, (int)p.problem_mark.line + 1, (int)p.problem_mark.column + 1, "not valid YAML: %s%s%s",
				p.problem ? p.problem : "syntax error", p.context ? " " : "", p.context ? p.context : "");
			yfree(root);
			root = NULL;
			break;
		}
		ynode *y = NULL;
		switch (ev.type) {
		case YAML_SCALAR_EVENT:
			y = ynew(Y_SCALAR, &ev.start_mark);
			y->value = strndup((const char *)ev.data.scalar.value, ev.data.scalar.length);
			break;
		case YAML_MAPPING_START_EVENT:
			y = ynew(Y_MAP, &ev.start_mark);
			break;
		case YAML_SEQUENCE_START_EVENT:
			y = ynew(Y_SEQ, &ev.start_mark);
			break;
		case YAML_MAPPING_END_EVENT:
		case YAML_SEQUENCE_END_EVENT:
			depth--;
			break;
		case YAML_ALIAS_EVENT:
			fail_at(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
				"YAML aliases are not supported in scenario files; write the value out");
			done = 1;
			break;
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		default:
			break;
		}
		if (y) {
			if (depth == 0 && root) {
				fail(c, y, "a scenario file holds one document");
				yfree(y);
				done = 1;
			} else if (depth == 0) {
				root = y;
			} else {
				yadd(stack[depth - 1], y);
			}
			if (!done && y->kind != Y_SCALAR) {
				if (depth == 64) {
					fail(c, y, "nested too deeply");
					done = 1;
				} else {
					stack[depth++] = y;
				}
			}
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&p);
	if (c->failed) {
		yfree(root);
		return NULL;
	}
	return root;
}

/* ---- validation helpers ------------------------------------------------- */

static void join(const char *const *valid, char *buf, size_t len)
{
	size_t used = 0;
	buf[0] = '\0';
	for (int i = 0; valid[i] && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", valid[i]);
}

static int one_of(ctx *c, const ynode *y, const char *what, const char *const *valid)
{
	char list[1024];

	if (y->kind != Y_SCALAR)
		return fail(c, y, "%s must be a plain value", what);
	for (int i = 0; valid[i]; i++)
		if (strcmp(y->value, valid[i]) == 0)
			return i;
	join(valid, list, sizeof list);
	const char *s = harness_suggest(y->value, valid);
	if (s)
		return fail(c, y, "unknown %s '%s'; did you mean '%s'? valid: %s", what, y->value, s, list);
	return fail(c, y, "unknown %s '%s'; valid: %s", what, y->value, list);
}

/* Every key of map y is in valid; returns 0 or -EINVAL. */
static int check_keys(ctx *c, const ynode *y, const char *where, const char *const *valid)
{
	char list[512];

	if (y->kind != Y_MAP)
		return fail(c, y, "%s must be a mapping (key: value)", where);
	for (int i = 0; i < y->n; i += 2) {
		const ynode *k = y->items[i];
		int ok = 0;
		for (int j = 0; valid[j]; j++)
			ok |= k->kind == Y_SCALAR && strcmp(k->value, valid[j]) == 0;
		if (ok)
			continue;
		join(valid, list, sizeof list);
		const char *s = k->kind == Y_SCALAR ? harness_suggest(k->value, valid) : NULL;
		if (s)
			return fail(c, k, "unknown key '%s' in %s; did you mean '%s'? valid: %s", k->value, where, s, list);
		return fail(c, k, "unknown key '%s' in %s; valid: %s", k->kind == Y_SCALAR ? k->value : "?", where, list);
	}
	return 0;
}

static const ynode *get(const ynode *map, const char *key)
{
	for (int i = 0; map && map->kind == Y_MAP && i + 1 < map->n; i += 2)
		if (map->items[i]->kind == Y_SCALAR && strcmp(map->items[i]->value, key) == 0)
			return map->items[i + 1];
	return NULL;
}

static int get_int(ctx *c, const ynode *map, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
	const ynode *y = get(map, key);
	char *end;

	if (!y)
		return 1;    /* absent */
	if (y->kind != Y_SCALAR || !*y->value)
		return fail(c, y, "%s must be a whole number from %" PRId64 " to %" PRId64, key, lo, hi);
	errno = 0;
	long long v = strtoll(y->value, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return fail(c, y, "%s: '%s' is not valid; expected a whole number from %" PRId64 " to %" PRId64, key,
			    y->value, lo, hi);
	*out = v;
	return 0;
}

static int get_str(ctx *c, const ynode *map, const char *key, char *out, size_t len)
{
	const ynode *y = get(map, key);

	if (!y)
		return 1;
	if (y->kind != Y_SCALAR)
		return fail(c, y, "%s must be a plain value", key);
	if (strlen(y->value) >= len)
		return fail(c, y, "%s is longer than %zu characters", key, len - 1);
	strcpy(out, y->value);
	return 0;
}

/* ---- the schema --------------------------------------------------------- */

static const char *const top_keys[] = { "name", "description", "trainer", "faults", "expect", "max_attempts",
					"timeout_s", NULL };
static const char *const trainer_keys[] = { "preset", "world_size", "steps", "seed", "checkpoint",
					    "accum_steps", "test_skip_restore", NULL };
static const char *const checkpoint_keys[] = { "every", "keep", NULL };
static const char *const fault_keys[] = { "when", "do", NULL };
static const char *const when_keys[] = { "rank", "step", "phase", "op", "nth", "path", "attempt",
					 "after_attempt", NULL };
static const char *const do_keys[] = { "kill", "errno", "times", "short", "torn", "then", "delay_ms", NULL };
static const char *const damage_keys[] = { "bitflip", "truncate", "delete", "offset", "seed", "size", NULL };
static const char *const expect_keys[] = { "outcome", "error", "restored_from", "max_lost_steps", NULL };
static const char *const presets[] = { "tiny", "small", "large", NULL };
static const char *const outcomes[] = { "resume_bitwise", "clean_failure", NULL };
static const char *const components[] = { "params", "master", "opt", "rng", "data", "sched", "scaler", "user",
					   "accum", NULL };
const char *const harness_phases[] = {
	"save.prepare", "save.shard_write", "save.shard_sync", "save.barrier", "save.manifest_write",
	"save.manifest_sync", "save.commit", "save.dir_sync", "save.latest", "save.retention", "restore.scan",
	"restore.read", "restore.verify", "train.step", "train.reduce", NULL,
};
const char *const harness_ops[] = { "open", "write", "fsync", "fdatasync", "rename", "mkdir", "unlink", "rmdir",
				    "ftruncate", "close", "read", "opendir", "phase", "any", NULL };

static int load_do(ctx *c, const ynode *d, harness_fault *f, bool train_phase)
{
	int64_t v;
	char name[32];

	if (d->kind == Y_SCALAR) {
		if (strcmp(d->value, "kill") == 0)
			f->action = HARNESS_KILL;
		else if (strcmp(d->value, "power_loss") == 0)
			f->action = HARNESS_POWER_LOSS;
		else
			return fail(c, d, "unknown action '%s'; valid: kill, power_loss, or a mapping with one of errno, "
				    "short, torn, delay_ms", d->value);
		return 0;
	}
	if (check_keys(c, d, "do", do_keys))
		return -EINVAL;
	int actions = !!get(d, "kill") + !!get(d, "errno") + !!get(d, "short") + !!get(d, "torn") + !!get(d, "delay_ms");
	if (actions != 1)
		return fail(c, d, "do needs exactly one action of kill, errno, short, torn, delay_ms (found %d)", actions);
	if (get(d, "kill")) {
		f->action = HARNESS_KILL;
	} else if (get_str(c, d, "errno", name, sizeof name) == 0) {
		f->action = HARNESS_ERRNO;
		if (!(f->err = harness_errno_parse(name)))
			return fail(c, get(d, "errno"), "unknown errno '%s'; valid: %s", name, harness_errno_list());
	} else if (get_int(c, d, "short", 1, 1 << 30, &v) == 0) {
		f->action = HARNESS_SHORT;
		f->arg = (long)v;
	} else if (get_int(c, d, "torn", 0, 1 << 30, &v) == 0) {
		f->action = HARNESS_TORN;
		f->arg = (long)v;
		const ynode *then = get(d, "then");
		if (!then || then->kind != Y_SCALAR || strcmp(then->value, "kill") != 0)
			return fail(c, then ? then : d, "torn needs 'then: kill' (a torn write is what a crash mid-write leaves)");
	} else if (get_int(c, d, "delay_ms", 0, 600000, &v) == 0) {
		f->action = HARNESS_DELAY;
		f->arg = (long)v;
	}
	if (c->failed)
		return -EINVAL;
	if (get(d, "then") && f->action != HARNESS_TORN)
		return fail(c, get(d, "then"), "'then' goes with torn only");
	if (get_int(c, d, "times", 1, 1000000, &v) == 0) {
		if (f->action != HARNESS_ERRNO)
			return fail(c, get(d, "times"), "'times' goes with errno only (a transient error)");
		f->times = (int)v;
	}
	if (train_phase && f->action != HARNESS_KILL && f->action != HARNESS_DELAY)
		return fail(c, d, "the trainer's phases (train.*) take kill or delay_ms only");
	return c->failed ? -EINVAL : 0;
}

/* "newest/rank-00001.safetensors": a generation selector, then a file-name glob. */
static int load_damage_do(ctx *c, const ynode *d, harness_damage *g)
{
	static const char *const kinds[] = { "bitflip", "truncate", "delete", NULL };
	int64_t v;
	char target[160];

	if (check_keys(c, d, "do", damage_keys))
		return -EINVAL;
	int found = -1, count = 0;
	for (int k = 0; kinds[k]; k++)
		if (get(d, kinds[k])) {
			found = k;
			count++;
		}
	if (count != 1)
		return fail(c, d, "damage needs exactly one of bitflip, truncate, delete");
	g->kind = (enum harness_damage_kind)found;
	if (get_str(c, d, kinds[found], target, sizeof target))
		return -EINVAL;
	char *slash = strchr(target, '/');
	if (!slash || strchr(slash + 1, '/') || slash == target || !slash[1] || strpbrk(target, " \t"))
		return fail(c, get(d, kinds[found]), "'%s' is not GENERATION/FILE; e.g. newest/rank-00001.safetensors, "
			    "all/manifest.json, step-00000030/rank-*.safetensors", target);
	*slash = '\0';
	uint64_t st;
	if (strcmp(target, "newest") && strcmp(target, "oldest") && strcmp(target, "all") &&
	    (strncmp(target, "step-", 5) != 0 || strlen(target) != 13 || sscanf(target + 5, "%" SCNu64, &st) != 1))
		return fail(c, get(d, kinds[found]), "unknown generation '%s'; valid: newest, oldest, all, step-NNNNNNNN",
			    target);
	snprintf(g->generation, sizeof g->generation, "%s", target);
	snprintf(g->file, sizeof g->file, "%s", slash + 1);
	if (get_int(c, d, "offset", INT64_MIN + 1, INT64_MAX, &v) == 0)
		g->offset = v;
	if (get_int(c, d, "seed", 0, INT64_MAX, &v) == 0)
		g->seed = v;
	if (get_int(c, d, "size", 0, INT64_MAX, &v) == 0)
		g->size = v;
	if ((get(d, "offset") || get(d, "seed")) && g->kind != HARNESS_BITFLIP)
		return fail(c, get(d, "offset") ? get(d, "offset") : get(d, "seed"), "offset and seed go with bitflip");
	if (g->kind == HARNESS_TRUNCATE && !get(d, "size"))
		return fail(c, d, "truncate needs 'size' (bytes to keep)");
	if (get(d, "size") && g->kind != HARNESS_TRUNCATE)
		return fail(c, get(d, "size"), "size goes with truncate");
	return c->failed ? -EINVAL : 0;
}

static int load_damage(ctx *c, const ynode *w, const ynode *d, harness_damage *g)
{
	int64_t v;

	memset(g, 0, sizeof *g);
	g->offset = INT64_MIN;
	g->seed = 1;
	if (check_keys(c, w, "when", when_keys))
		return -EINVAL;
	if (get_int(c, w, "after_attempt", 1, HARNESS_MAX_ATTEMPTS - 1, &v) == 0)
		g->after_attempt = (int)v;
	for (int i = 0; i < w->n; i += 2)
		if (strcmp(w->items[i]->value, "after_attempt") != 0)
			return fail(c, w->items[i], "after_attempt stands alone: damage between attempts strikes "
				    "committed files, not a rank or a phase");
	return load_damage_do(c, d, g);
}

static bool is_damage(const ynode *d)
{
	return d && d->kind == Y_MAP && (get(d, "bitflip") || get(d, "truncate") || get(d, "delete"));
}

static int load_fault(ctx *c, const ynode *y, harness_fault *f, const harness_scenario *s)
{
	const ynode *w, *d;
	int64_t v;

	memset(f, 0, sizeof *f);
	f->attempt = 1;
	f->rank = -1;
	f->step = -1;
	f->nth = 1;
	if (check_keys(c, y, "a fault", fault_keys))
		return -EINVAL;
	if (!(w = get(y, "when")) || !(d = get(y, "do")))
		return fail(c, y, "a fault needs both 'when' (where it strikes) and 'do' (what happens)");
	if (check_keys(c, w, "when", when_keys))
		return -EINVAL;
	if (get_int(c, w, "rank", 0, s->trainer.world_size - 1, &v) == 0)
		f->rank = (int)v;
	if (get_int(c, w, "step", 0, s->trainer.steps, &v) == 0)
		f->step = v;
	if (get_int(c, w, "nth", 1, 1000000, &v) == 0)
		f->nth = (int)v;
	if (get_int(c, w, "attempt", 1, HARNESS_MAX_ATTEMPTS, &v) == 0)
		f->attempt = (int)v;
	const ynode *ph = get(w, "phase"), *op = get(w, "op");
	int p = -1;
	if (ph && (p = one_of(c, ph, "phase", harness_phases)) >= 0)
		strcpy(f->phase, harness_phases[p]);
	if (op) {
		int o = one_of(c, op, "op", harness_ops);
		if (o >= 0)
			strcpy(f->op, harness_ops[o]);
	}
	if (get_str(c, w, "path", f->path, sizeof f->path) == 0 && strpbrk(f->path, " \t/"))
		return fail(c, get(w, "path"), "path is a glob on a file name (no '/' or spaces), e.g. 'rank-*.safetensors'");
	if (c->failed)
		return -EINVAL;
	if (!ph && !op)
		return fail(c, w, "when needs a phase or an op: a fault must say where it strikes");
	if (is_damage(d)) {
		/* damage at a step boundary, done by the injector while the job runs */
		harness_damage g = { .offset = INT64_MIN, .seed = 1 };
		if (strcmp(f->phase, "train.step") != 0 || op)
			return fail(c, w, "damage at rest while the job runs strikes at a step boundary: "
				    "when: {step: N, phase: train.step} (or use after_attempt)");
		if (load_damage_do(c, d, &g))
			return -EINVAL;
		f->action = HARNESS_DAMAGE;
		f->dkind = (int)g.kind;
		snprintf(f->target, sizeof f->target, "%s/%s", g.generation, g.file);
		f->doff = g.offset;
		f->dseed = g.seed;
		f->dsize = g.size;
		if (f->rank < 0)
			f->rank = 0;       /* one rank does it, once */
		return 0;
	}
	return load_do(c, d, f, ph && strncmp(f->phase, "train.", 6) == 0);
}

static int load(ctx *c, const ynode *root, harness_scenario *s)
{
	const ynode *t, *ck, *fl, *ex;
	int64_t v;

	if (!root)
		return fail_at(c, 1, 1, "empty file; a scenario needs at least name, trainer and expect");
	if (check_keys(c, root, "the scenario", top_keys))
		return -EINVAL;
	if (get_str(c, root, "name", s->name, sizeof s->name))
		return c->failed ? -EINVAL : fail(c, root, "a scenario needs a name");
	for (const char *p = s->name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return fail(c, get(root, "name"), "name '%s' may hold only a-z, 0-9, '-' and '_'", s->name);
	get_str(c, root, "description", s->description, sizeof s->description);

	strcpy(s->trainer.preset, "tiny");
	s->trainer.world_size = 4;
	s->trainer.steps = 60;
	s->trainer.seed = 1;
	s->trainer.every = 10;
	s->trainer.keep = 3;
	s->trainer.accum_steps = 1;
	if ((t = get(root, "trainer"))) {
		if (check_keys(c, t, "trainer", trainer_keys))
			return -EINVAL;
		const ynode *p = get(t, "preset");
		int k;
		if (p && (k = one_of(c, p, "preset", presets)) >= 0)
			strcpy(s->trainer.preset, presets[k]);
		if (get_int(c, t, "world_size", 1, 8, &v) == 0) {
			if (8 % v != 0)
				return fail(c, get(t, "world_size"), "world_size %" PRId64 " does not divide the 8 virtual "
					    "workers; valid: 1, 2, 4, 8", v);
			s->trainer.world_size = (int)v;
		}
		if (get_int(c, t, "steps", 1, 1000000, &v) == 0)
			s->trainer.steps = v;
		if (get_int(c, t, "seed", 0, INT64_MAX, &v) == 0)
			s->trainer.seed = v;
		if (get_int(c, t, "accum_steps", 1, 1024, &v) == 0)
			s->trainer.accum_steps = (int)v;
		const ynode *sk = get(t, "test_skip_restore");
		if (sk && (k = one_of(c, sk, "component", components)) >= 0)
			strcpy(s->trainer.test_skip_restore, components[k]);
		if ((ck = get(t, "checkpoint"))) {
			if (check_keys(c, ck, "checkpoint", checkpoint_keys))
				return -EINVAL;
			if (get_int(c, ck, "every", 1, 1000000, &v) == 0)
				s->trainer.every = v;
			if (get_int(c, ck, "keep", 1, 1000, &v) == 0)
				s->trainer.keep = (int)v;
		}
		if (c->failed)
			return -EINVAL;
	}

	if ((fl = get(root, "faults"))) {
		if (fl->kind != Y_SEQ)
			return fail(c, fl, "faults must be a list (each item starting with '- when:')");
		if (fl->n > HARNESS_MAX_FAULTS)
			return fail(c, fl, "at most %d faults in one scenario", HARNESS_MAX_FAULTS);
		for (int i = 0; i < fl->n; i++) {
			const ynode *it = fl->items[i], *w = get(it, "when"), *d = get(it, "do");
			if (w && get(w, "after_attempt")) {
				if (!d)
					return fail(c, it, "a fault needs both 'when' and 'do'");
				if (s->ndamage == HARNESS_MAX_DAMAGE)
					return fail(c, it, "at most %d damage actions", HARNESS_MAX_DAMAGE);
				if (check_keys(c, it, "a fault", fault_keys) || load_damage(c, w, d, &s->damage[s->ndamage]))
					return -EINVAL;
				s->damage[s->ndamage++].line = it->line;
				continue;
			}
			if (load_fault(c, it, &s->faults[s->nfaults], s))
				return -EINVAL;
			s->fault_line[s->nfaults++] = it->line;
		}
		/* damaging checkpoints on purpose may cost an acknowledged generation */
		s->expect.damaged_newest = s->ndamage > 0;
		for (int i = 0; i < s->nfaults; i++)
			s->expect.damaged_newest |= s->faults[i].action == HARNESS_DAMAGE;
	}

	int damaged = s->expect.damaged_newest;
	harness_expect_init(&s->expect);
	s->expect.damaged_newest = damaged;
	if (!(ex = get(root, "expect")))
		return fail(c, root, "a scenario needs 'expect' (e.g. expect: {outcome: resume_bitwise})");
	if (check_keys(c, ex, "expect", expect_keys))
		return -EINVAL;
	const ynode *oc = get(ex, "outcome");
	int k;
	if (oc && (k = one_of(c, oc, "outcome", outcomes)) >= 0)
		s->expect.outcome = (enum harness_outcome)k;
	get_str(c, ex, "error", s->expect.error, sizeof s->expect.error);
	if (get_int(c, ex, "restored_from", 0, s->trainer.steps, &v) == 0)
		s->expect.restored_from = v;
	if (get_int(c, ex, "max_lost_steps", 0, s->trainer.steps, &v) == 0)
		s->expect.max_lost_steps = v;
	if (c->failed)
		return -EINVAL;
	if (s->expect.outcome == HARNESS_CLEAN_FAILURE && !s->expect.error[0])
		return fail(c, ex, "clean_failure needs 'error': the words the failure must say");

	s->max_attempts = 4;
	s->timeout_s = 120;
	if (get_int(c, root, "max_attempts", 1, HARNESS_MAX_ATTEMPTS, &v) == 0)
		s->max_attempts = (int)v;
	if (get_int(c, root, "timeout_s", 1, 86400, &v) == 0)
		s->timeout_s = (int)v;
	return c->failed ? -EINVAL : 0;
}

int harness_scenario_load(const char *path, harness_scenario *s, char *err, size_t errlen)
{
	ctx c = { .file = path, .err = err, .errlen = errlen };
	FILE *f = fopen(path, "r");
	int rc;

	memset(s, 0, sizeof *s);
	snprintf(s->file, sizeof s->file, "%s", path);
	if (!f) {
		rc = -errno;
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		return rc;
	}
	ynode *root = parse(&c, f);
	fclose(f);
	rc = c.failed ? -EINVAL : load(&c, root, s);
	yfree(root);
	return rc;
}
