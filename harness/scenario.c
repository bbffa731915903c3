#include "scenario.h"
#include "alerts.h"
#include "launch.h"
#include "suggest.h"
#include "elastic.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

/* ---- a small YAML tree with positions ----------------------------------- */

enum ykind { Y_SCALAR, Y_MAP, Y_SEQ };

typedef struct ynode {
	enum ykind kind;
	char *value;               /* scalars */
	int line, col;             /* 1-based */
	struct ynode **items;      /* seq items, or map key, value, key, value, ... */
	int n, cap;
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
	if (!y)
		return NULL;
	y->kind = k;
	y->line = m->line < INT_MAX ? (int)m->line + 1 : INT_MAX;
	y->col = m->column < INT_MAX ? (int)m->column + 1 : INT_MAX;
	return y;
}

static int yadd(ynode *p, ynode *c)
{
	if (p->n == p->cap) {
		int cap = p->cap ? 2 * p->cap : 4;
		ynode **items = realloc(p->items, sizeof *items * (size_t)cap);
		if (!items)
			return -ENOMEM;
		p->items = items;
		p->cap = cap;
	}
	p->items[p->n++] = c;
	return 0;
}

typedef struct ctx {
	const char *file;
	char *err;
	size_t errlen;
	int failed;
} ctx;

/*
 * "file:line:col: what; valid: ...". What is wrong is kept whole: if the file
 * name and the message do not both fit in err, the file name is shortened
 * from the left ("...tail/of/the/path.yaml").
 */
static int fail_at(ctx *c, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail_at(ctx *c, int line, int col, const char *fmt, ...)
{
	char msg[1536];
	va_list ap;

	if (c->failed++ || !c->err || !c->errlen)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	const char *file = c->file, *dots = "";
	size_t flen = strlen(file), fixed = strlen(msg) + 32;    /* ":line:col: " and the message */
	if (flen + fixed >= c->errlen) {
		size_t keep = c->errlen > fixed + 3 + 24 ? c->errlen - fixed - 3 - 1 : 24;
		if (keep < flen) {
			file += flen - keep;
			dots = "...";
		}
	}
	snprintf(c->err, c->errlen, "%s%s:%d:%d: %s", dots, file, line, col, msg);
	return -EINVAL;
}

static int fail(ctx *c, const ynode *y, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(ctx *c, const ynode *y, const char *fmt, ...)
{
	char msg[1536];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return fail_at(c, y->line, y->col, "%s", msg);
}

/* A value from the file, shortened for a message ("abc...") if it is long. */
static const char *clip(const char *v, char *buf, size_t len)
{
	if (!v)
		return "?";
	if (strlen(v) < len - 4)
		return v;
	snprintf(buf, len, "%.*s...", (int)(len - 4), v);
	return buf;
}
#define CLIP(v) clip((v), (char[72]){ 0 }, 72)

/* Parse the whole buffer into one tree (aliases are not supported). */
static ynode *parse(ctx *c, const char *buf, size_t len)
{
	yaml_parser_t p;
	yaml_event_t ev;
	ynode *stack[HARNESS_SCENARIO_MAX_DEPTH], *root = NULL;
	int depth = 0, done = 0, nodes = 0;

	if (!yaml_parser_initialize(&p)) {
		fail_at(c, 1, 1, "out of memory");
		return NULL;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
	while (!done) {
		if (!yaml_parser_parse(&p, &ev)) {
			fail_at(c, (int)p.problem_mark.line + 1, (int)p.problem_mark.column + 1, "not valid YAML: %s%s%s",
				p.problem ? p.problem : "syntax error", p.context ? " " : "", p.context ? p.context : "");
			break;
		}
		ynode *y = NULL;
		switch (ev.type) {
		case YAML_SCALAR_EVENT:
			if ((y = ynew(Y_SCALAR, &ev.start_mark)) &&
			    !(y->value = strndup((const char *)ev.data.scalar.value, ev.data.scalar.length))) {
				free(y);
				y = NULL;
			}
			if (!y)
				fail_at(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1, "out of memory");
			else if (strlen(y->value) != ev.data.scalar.length)
				fail(c, y, "a value holds a NUL character");
			break;
		case YAML_MAPPING_START_EVENT:
		case YAML_SEQUENCE_START_EVENT:
			if (!(y = ynew(ev.type == YAML_MAPPING_START_EVENT ? Y_MAP : Y_SEQ, &ev.start_mark)))
				fail_at(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1, "out of memory");
			break;
		case YAML_MAPPING_END_EVENT:
		case YAML_SEQUENCE_END_EVENT:
			depth--;
			break;
		case YAML_ALIAS_EVENT:
			fail_at(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
				"YAML aliases are not supported in scenario files; write the value out");
			break;
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		default:
			break;
		}
		if (y && !c->failed && ++nodes > HARNESS_SCENARIO_MAX_NODES)
			fail(c, y, "more than %d values in one scenario file; a scenario is small", HARNESS_SCENARIO_MAX_NODES);
		if (y && !c->failed && depth == 0 && root)
			fail(c, y, "a scenario file holds one document");
		if (y && !c->failed && y->kind != Y_SCALAR && depth == HARNESS_SCENARIO_MAX_DEPTH)
			fail(c, y, "nested more than %d levels deep", HARNESS_SCENARIO_MAX_DEPTH);
		if (y && !c->failed) {
			if (depth == 0) {
				root = y;
			} else if (yadd(stack[depth - 1], y) < 0) {
				fail(c, y, "out of memory");
				yfree(y);
				y = NULL;
			}
			if (y && y->kind != Y_SCALAR)
				stack[depth++] = y;
		} else if (y) {
			yfree(y);
		}
		yaml_event_delete(&ev);
		done |= c->failed;
	}
	yaml_parser_delete(&p);
	if (c->failed) {
		yfree(root);
		return NULL;
	}
	return root;
}

/* Every key once, at every level: the second of two equal keys is an error. */
static int check_duplicates(ctx *c, const ynode *y)
{
	if (y->kind == Y_MAP)
		for (int i = 2; i < y->n; i += 2) {
			const ynode *k = y->items[i];
			if (k->kind != Y_SCALAR)
				continue;
			for (int j = 0; j < i; j += 2) {
				const ynode *first = y->items[j];
				if (first->kind == Y_SCALAR && strcmp(first->value, k->value) == 0)
					return fail(c, k, "duplicate key '%s' (first at line %d, column %d); each key may "
						    "appear once in a mapping", CLIP(k->value), first->line, first->col);
			}
		}
	for (int i = 0; i < y->n; i++)
		if (check_duplicates(c, y->items[i]))
			return -EINVAL;
	return 0;
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
		return fail(c, y, "unknown %s '%s'; did you mean '%s'? valid: %s", what, CLIP(y->value), s, list);
	return fail(c, y, "unknown %s '%s'; valid: %s", what, CLIP(y->value), list);
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
			return fail(c, k, "unknown key '%s' in %s; did you mean '%s'? valid: %s", CLIP(k->value), where, s,
				    list);
		return fail(c, k, "unknown key '%s' in %s; valid: %s", k->kind == Y_SCALAR ? CLIP(k->value) : "?", where,
			    list);
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

/* The key node of key in map (for positions). */
static const ynode *key_of(const ynode *map, const char *key)
{
	for (int i = 0; map && map->kind == Y_MAP && i + 1 < map->n; i += 2)
		if (map->items[i]->kind == Y_SCALAR && strcmp(map->items[i]->value, key) == 0)
			return map->items[i];
	return NULL;
}

static int parse_int(const ynode *y, int64_t lo, int64_t hi, int64_t *out)
{
	char *end;

	if (y->kind != Y_SCALAR || !*y->value || !((*y->value >= '0' && *y->value <= '9') || *y->value == '-'))
		return -EINVAL;
	errno = 0;
	long long v = strtoll(y->value, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

static int get_int(ctx *c, const ynode *map, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
	const ynode *y = get(map, key);

	if (!y)
		return 1;    /* absent */
	if (y->kind != Y_SCALAR || !*y->value)
		return fail(c, y, "%s must be a whole number from %" PRId64 " to %" PRId64, key, lo, hi);
	if (parse_int(y, lo, hi, out) < 0)
		return fail(c, y, "%s: '%s' is not valid; expected a whole number from %" PRId64 " to %" PRId64, key,
			    CLIP(y->value), lo, hi);
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

/* A glob or target that goes into the plan file: printable, no spaces. */
static bool plain_word(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/* ---- the schema --------------------------------------------------------- */

static const char *const top_keys[] = { "name", "description", "trainer", "faults", "expect", "max_attempts",
					"timeout_s", "restart", NULL };
static const char *const restart_keys[] = { "ranks", NULL };
static const char *const trainer_keys[] = { "preset", "world_size", "steps", "seed", "checkpoint",
					    "accum_steps", "test_skip_restore", "command", "launcher", "beacon",
					    "checkpoint_root", "generations", "ckpt_backend", "nodes", "frozen", NULL };
static const char *const placeholders[] = { "ckpt_dir", "trajectory", "attempt", "steps", "seed", "world_size",
					    "every", "keep", "scenario_dir", "node", "node_dir", NULL };
static const char *const launchers[] = { "mpirun", "single", "procs", NULL };
/* reftrain's own settings: meaningless for a program named by command */
static const char *const reftrain_only[] = { "preset", "accum_steps", "test_skip_restore", "ckpt_backend", "frozen",
					     NULL };
static const char *const checkpoint_keys[] = { "every", "keep", "incremental", "full_every", "async", "encrypt",
					       "tiered", NULL };
static const char *const fault_keys[] = { "when", "do", NULL };
static const char *const when_keys[] = { "rank", "step", "phase", "op", "nth", "path", "attempt",
					 "after_attempt", "node", NULL };
static const char *const do_keys[] = { "kill", "errno", "times", "short", "torn", "then", "delay_ms", "node_loss",
				       "replace", NULL };
static const char *const damage_keys[] = { "bitflip", "truncate", "delete", "overwrite", "offset", "seed", "size",
					   "from", "recompute", NULL };
static const char *const expect_keys[] = { "outcome", "error", "restored_from", "max_lost_steps", "refused",
					   "alerts", NULL };
static const char *const presets[] = { "tiny", "small", "large", NULL };
static const char *const outcomes[] = { "resume_bitwise", "clean_failure", NULL };
static const char *const components[] = { "params", "master", "opt", "rng", "data", "sched", "scaler", "user",
					   "accum", NULL };
const char *const harness_phases[] = {
	"save.prepare", "save.shard_write", "save.shard_sync", "save.barrier", "save.manifest_write",
	"save.manifest_sync", "save.commit", "save.dir_sync", "save.latest", "save.retention", "restore.scan",
	"restore.read", "restore.verify", "train.step", "train.reduce", "open.cleanup",
	/* incremental checkpoints (libckpt's chunk store) */
	"save.chunk_write", "save.chunk_sync", "save.gc", "open.gc",
	/* asynchronous saves: libckpt's snapshot on the training thread, the writer's copy of the model
	   and optimizer, reftrain's acknowledgement */
	"save.snapshot", "save.stage", "save.acked",
	/* tiered storage: the drain of a generation to the durable tier */
	"drain.write", "drain.sync", "drain.commit", NULL,
};
const char *const harness_ops[] = { "open", "write", "fsync", "fdatasync", "rename", "mkdir", "unlink", "rmdir",
				    "ftruncate", "close", "read", "opendir", "link", "phase", "any", NULL };

static bool prefixed(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

/* An action that ends the attempt, so that a next one runs. */
static bool crashes(enum harness_action a)
{
	return a == HARNESS_KILL || a == HARNESS_TORN || a == HARNESS_POWER_LOSS || a == HARNESS_NODE_LOSS;
}

static int load_do(ctx *c, const ynode *d, harness_fault *f, bool train_phase, const ynode *op)
{
	int64_t v;
	char name[32];

	if (d->kind == Y_SCALAR) {
		if (strcmp(d->value, "kill") == 0)
			f->action = HARNESS_KILL;
		else if (strcmp(d->value, "power_loss") == 0)
			f->action = HARNESS_POWER_LOSS;
		else if (strcmp(d->value, "node_loss") == 0)
			f->action = HARNESS_NODE_LOSS;
		else
			return fail(c, d, "unknown action '%s'; valid: kill, power_loss, node_loss, or a mapping with one of "
				    "errno, short, torn, delay_ms, node_loss", CLIP(d->value));
		return 0;
	}
	if (check_keys(c, d, "do", do_keys))
		return -EINVAL;
	int actions = !!get(d, "kill") + !!get(d, "errno") + !!get(d, "short") + !!get(d, "torn") + !!get(d, "delay_ms") +
		      !!get(d, "node_loss");
	if (actions != 1)
		return fail(c, d, "do needs exactly one action of kill, errno, short, torn, delay_ms, node_loss (found %d)",
			    actions);
	if (get(d, "replace") && !get(d, "node_loss"))
		return fail(c, key_of(d, "replace"), "'replace' goes with node_loss only (a replacement node)");
	if (get(d, "node_loss")) {
		const ynode *k = get(d, "node_loss"), *r = get(d, "replace");
		if (k->kind != Y_SCALAR || strcmp(k->value, "true") != 0)
			return fail(c, k, "node_loss: '%s' is not valid; valid: node_loss: true (or write 'do: node_loss')",
				    k->kind == Y_SCALAR ? CLIP(k->value) : "a collection");
		if (r && (r->kind != Y_SCALAR || (strcmp(r->value, "true") != 0 && strcmp(r->value, "false") != 0)))
			return fail(c, r, "replace is true (a fresh node takes the lost one's place: same world size) or "
				    "false (the next attempt runs on the remaining nodes)");
		f->action = HARNESS_NODE_LOSS;
		f->arg = r && strcmp(r->value, "true") == 0;
	} else if (get(d, "kill")) {
		const ynode *k = get(d, "kill");
		if (k->kind != Y_SCALAR || strcmp(k->value, "true") != 0)
			return fail(c, k, "kill: '%s' is not valid; valid: kill: true (or write 'do: kill')",
				    k->kind == Y_SCALAR ? CLIP(k->value) : "a collection");
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
		return fail(c, key_of(d, "then"), "'then' goes with torn only");
	if (get_int(c, d, "times", 1, 1000000, &v) == 0) {
		if (f->action != HARNESS_ERRNO)
			return fail(c, key_of(d, "times"), "'times' goes with errno only (a transient error)");
		f->times = (int)v;
	}
	if (c->failed)
		return -EINVAL;
	if (train_phase && f->action != HARNESS_KILL && f->action != HARNESS_DELAY && f->action != HARNESS_NODE_LOSS)
		return fail(c, d, "the trainer's phases (train.*) take kill, power_loss, node_loss or delay_ms only");
	if ((f->action == HARNESS_SHORT || f->action == HARNESS_TORN) && strcmp(f->op, "write") != 0)
		return fail(c, op ? op : d, "%s acts on a write; valid: when: {..., op: write} (on any other call or a "
			    "phase point it would be a plain EIO)", f->action == HARNESS_SHORT ? "short" : "torn");
	return 0;
}

/*
 * Tampering (README "Sealed checkpoints"): overwrite's `from`, the
 * GENERATION/FILE whose bytes replace the target's (a shard moved between
 * ranks or generations, an older manifest put back), and bitflip's
 * `recompute: true` (the plain manifest's hashes recomputed).
 */
static int load_tamper(ctx *c, const ynode *d, harness_damage *g)
{
	const ynode *fr = get(d, "from"), *rc = get(d, "recompute");

	if (fr && g->kind != HARNESS_OVERWRITE)
		return fail(c, key_of(d, "from"), "from goes with overwrite");
	if (g->kind == HARNESS_OVERWRITE) {
		if (!fr)
			return fail(c, d, "overwrite needs 'from': the GENERATION/FILE whose bytes replace the target's, "
				    "e.g. newest/rank-00001.safetensors");
		if (get_str(c, d, "from", g->from, sizeof g->from))
			return -EINVAL;
		const char *sl = strchr(g->from, '/');
		size_t gl = sl ? (size_t)(sl - g->from) : 0;
		if (!sl || !sl[1] || strchr(sl + 1, '/') || strpbrk(sl + 1, "*?[") || !plain_word(g->from) ||
		    !((gl == 6 && strncmp(g->from, "newest", 6) == 0) || (gl == 6 && strncmp(g->from, "oldest", 6) == 0) ||
		      (gl == 13 && strncmp(g->from, "step-", 5) == 0 && strspn(g->from + 5, "0123456789") == 8)))
			return fail(c, fr, "'%s' is not GENERATION/FILE with GENERATION newest, oldest or step-NNNNNNNN and "
				    "one file name (no glob); e.g. newest/rank-00001.safetensors", CLIP(g->from));
	}
	if (rc && (rc->kind != Y_SCALAR || (strcmp(rc->value, "true") && strcmp(rc->value, "false"))))
		return fail(c, rc, "recompute is true or false");
	if (rc && g->kind != HARNESS_BITFLIP)
		return fail(c, key_of(d, "recompute"), "recompute goes with bitflip");
	g->recompute = rc && strcmp(rc->value, "true") == 0;
	return 0;
}

/* "newest/rank-00001.safetensors": a generation selector, then a file-name glob. */
static int load_damage_do(ctx *c, const ynode *d, harness_damage *g)
{
	static const char *const kinds[] = { "bitflip", "truncate", "delete", "overwrite", NULL };
	int64_t v;
	char target[128];

	if (check_keys(c, d, "do", damage_keys))
		return -EINVAL;
	int found = -1, count = 0;
	for (int k = 0; kinds[k]; k++)
		if (get(d, kinds[k])) {
			found = k;
			count++;
		}
	if (count != 1)
		return fail(c, d, "damage needs exactly one of bitflip, truncate, delete, overwrite");
	g->kind = (enum harness_damage_kind)found;
	if (get_str(c, d, kinds[found], target, sizeof target))
		return -EINVAL;
	char *slash = strchr(target, '/');
	if (!slash || strchr(slash + 1, '/') || slash == target || !slash[1] || !plain_word(target))
		return fail(c, get(d, kinds[found]), "'%s' is not GENERATION/FILE; e.g. newest/rank-00001.safetensors, "
			    "all/manifest.json, step-00000030/rank-*.safetensors", CLIP(target));
	*slash = '\0';
	uint64_t st;
	if (strcmp(target, "newest") && strcmp(target, "oldest") && strcmp(target, "all") &&
	    (strncmp(target, "step-", 5) != 0 || strlen(target) != 13 || strspn(target + 5, "0123456789") != 8 ||
	     sscanf(target + 5, "%" SCNu64, &st) != 1))
		return fail(c, get(d, kinds[found]), "unknown generation '%s'; valid: newest, oldest, all, step-NNNNNNNN",
			    CLIP(target));
	if (strlen(slash + 1) >= sizeof g->file)
		return fail(c, get(d, kinds[found]), "the file glob is longer than %zu characters", sizeof g->file - 1);
	snprintf(g->generation, sizeof g->generation, "%s", target);
	snprintf(g->file, sizeof g->file, "%s", slash + 1);
	if (get_int(c, d, "offset", INT64_MIN + 1, INT64_MAX, &v) == 0)
		g->offset = v;
	if (get_int(c, d, "seed", 0, INT64_MAX, &v) == 0)
		g->seed = v;
	if (get_int(c, d, "size", 0, INT64_MAX, &v) == 0)
		g->size = v;
	if (c->failed)
		return -EINVAL;
	if ((get(d, "offset") || get(d, "seed")) && g->kind != HARNESS_BITFLIP)
		return fail(c, get(d, "offset") ? key_of(d, "offset") : key_of(d, "seed"), "offset and seed go with bitflip");
	if (g->kind == HARNESS_TRUNCATE && !get(d, "size"))
		return fail(c, d, "truncate needs 'size' (bytes to keep)");
	if (get(d, "size") && g->kind != HARNESS_TRUNCATE)
		return fail(c, key_of(d, "size"), "size goes with truncate");
	return load_tamper(c, d, g);
}

static int load_damage(ctx *c, const ynode *w, const ynode *d, harness_damage *g, const harness_scenario *s)
{
	int64_t v;

	memset(g, 0, sizeof *g);
	g->offset = INT64_MIN;
	g->seed = 1;
	if (check_keys(c, w, "when", when_keys))
		return -EINVAL;
	if (s->max_attempts < 2)
		return fail(c, get(w, "after_attempt"), "after_attempt needs a next attempt, but max_attempts is 1");
	if (get_int(c, w, "after_attempt", 1, s->max_attempts - 1, &v) == 0)
		g->after_attempt = (int)v;
	if (c->failed)
		return -EINVAL;
	for (int i = 0; i < w->n; i += 2)
		if (strcmp(w->items[i]->value, "after_attempt") != 0)
			return fail(c, w->items[i], "after_attempt stands alone: damage between attempts strikes "
				    "committed files, not a rank or a phase");
	return load_damage_do(c, d, g);
}

static bool is_damage(const ynode *d)
{
	return d && d->kind == Y_MAP && (get(d, "bitflip") || get(d, "truncate") || get(d, "delete") || get(d, "overwrite"));
}

/*
 * What the phases allow, as libckpt and reftrain evaluate them: a fault that
 * can never fire is an error here, not a "did not fire" after the run.
 */
static int check_where(ctx *c, const ynode *w, const harness_fault *f, const harness_scenario *s)
{
	const ynode *ph = get(w, "phase"), *op = get(w, "op"), *st = get(w, "step"), *rk = get(w, "rank");
	const ynode *at = get(w, "attempt"), *pa = get(w, "path");
	int64_t every = s->trainer.every;

	if (ph && harness_foreign_backend(s) && !prefixed(f->phase, "train."))
		return fail(c, ph, "the checkpoint backend '%s' has none of libckpt's phases (%s); faults reach it "
			    "through the fault shim: name the call and file (op, path, nth) and the step", CLIP(s->trainer.ckpt_backend),
			    f->phase);
	if (s->trainer.ncommand && !s->trainer.beacon && (ph || st))
		return fail(c, ph ? ph : st, "%s is known only to a trainer that announces it through the beacon, and "
			    "this trainer (command) does not say it does; valid: op, path, nth, rank, attempt, or "
			    "trainer: {beacon: true} for a program that calls the beacon", ph ? "the phase" : "the step");
	if (!ph)
		return 0;
	bool train = prefixed(f->phase, "train."), save = prefixed(f->phase, "save.") || prefixed(f->phase, "drain.");
	if (prefixed(f->phase, "drain.") && !s->trainer.tiered)
		return fail(c, ph, "%s is a phase of tiered storage (the drain to the durable tier); valid: with "
			    "trainer: {checkpoint: {tiered: true}}", f->phase);
	if (train && op && strcmp(f->op, "phase") != 0)
		return fail(c, op, "the trainer's phase %s makes no I/O call: op '%s' never happens there; valid: "
			    "op: phase, or no op", f->phase, f->op);
	if (pa && (train || strcmp(f->op, "phase") == 0))
		return fail(c, key_of(w, "path"), "a phase point has no file: path never matches at %s%s; valid: an op "
			    "that is an I/O call, or no path", f->phase, train ? "" : " with op: phase");
	bool async_only = strcmp(f->phase, "save.snapshot") == 0 || strcmp(f->phase, "save.stage") == 0 ||
			  strcmp(f->phase, "save.acked") == 0;
	if (async_only && !s->trainer.async)
		return fail(c, ph, "%s happens only with background saves; valid: trainer: {checkpoint: {async: true}}, "
			    "or another phase", f->phase);
	if (async_only && op && strcmp(f->op, "phase") != 0)
		return fail(c, op, "%s makes no I/O call: op '%s' never happens there; valid: op: phase, or no op",
			    f->phase, f->op);
	if ((train || save) && st && f->step == 0)
		return fail(c, st, "%s never happens at step 0 (steps count from 1); valid: 1 to %" PRId64, f->phase,
			    s->trainer.steps);
	if (save && st && f->step % every != 0)
		return fail(c, st, "there is no save at step %" PRId64 ": checkpoint.every is %" PRId64 "; valid: a "
			    "multiple of %" PRId64 " up to %" PRId64, f->step, every, every, s->trainer.steps);
	if ((strcmp(f->phase, "restore.read") == 0 || strcmp(f->phase, "restore.verify") == 0) && f->attempt == 1)
		return fail(c, at ? at : ph, "%s never happens in attempt 1: nothing has been saved before it starts; "
			    "valid: attempt: 2 or later (a restart)", f->phase);
	if ((strcmp(f->phase, "restore.read") == 0 || strcmp(f->phase, "restore.verify") == 0) && st &&
	    (f->step == 0 || f->step % every != 0))
		return fail(c, st, "there is no generation of step %" PRId64 " to restore: checkpoint.every is %" PRId64
			    "; valid: a multiple of %" PRId64 " up to %" PRId64, f->step, every, every, s->trainer.steps);
	if (strcmp(f->phase, "restore.scan") == 0 && rk && f->rank != 0)
		return fail(c, rk, "restore.scan runs on rank 0 only; valid: rank: 0, or no rank");
	if ((strcmp(f->phase, "restore.scan") == 0 || strcmp(f->phase, "open.cleanup") == 0 ||
	     strcmp(f->phase, "open.gc") == 0) && st && f->step != 0)
		return fail(c, st, "%s runs before any step (its step is 0); valid: step: 0, or no step", f->phase);
	if ((strncmp(f->phase, "save.chunk_", 11) == 0 || strcmp(f->phase, "save.gc") == 0 ||
	     strcmp(f->phase, "open.gc") == 0) && !s->trainer.incremental && !s->trainer.ncommand)
		return fail(c, ph, "%s is a phase of incremental checkpoints; valid: with trainer.checkpoint.incremental: "
			    "true", f->phase);
	return 0;
}

/* when: {node: N}: the ranks of node N (block mapping, world_size / nodes ranks per node). */
static int load_node(ctx *c, const ynode *w, harness_fault *f, const harness_scenario *s)
{
	const ynode *n = get(w, "node");
	int nodes = s->trainer.nodes > 0 ? s->trainer.nodes : 1, rpn = s->trainer.world_size / nodes;
	int64_t v;

	if (!n)
		return 0;
	if (parse_int(n, 0, nodes - 1, &v) < 0)
		return fail(c, n, "node '%s' is not a node of this trainer (trainer.nodes is %d); valid: %s%d%s", n->kind ==
			    Y_SCALAR ? CLIP(n->value) : "a collection", nodes, nodes > 1 ? "0 to " : "",
			    nodes - 1, nodes > 1 ? "" : ", or trainer: {nodes: 2, ...} for more");
	f->node = (int)v;
	f->rpn = rpn;
	if (f->rank >= 0 && f->rank / rpn != f->node)
		return fail(c, get(w, "rank"), "rank %d is on node %d, not node %d (%d ranks per node, rank r on node "
			    "r / %d); valid: a rank from %d to %d, or no rank", f->rank, f->rank / rpn, f->node, rpn, rpn,
			    f->node * rpn, f->node * rpn + rpn - 1);
	return 0;
}

/* node_loss strikes a whole node, and the next attempt needs a node to run on. */
static int check_node_loss(ctx *c, const ynode *w, const ynode *d, const harness_fault *f, const harness_scenario *s)
{
	if (f->action != HARNESS_NODE_LOSS)
		return 0;
	if (!get(w, "node"))
		return fail(c, w, "node_loss strikes every rank of one node: say which, when: {node: N, ...}");
	if (get(w, "rank"))
		return fail(c, key_of(w, "rank"), "node_loss strikes every rank of node %d; it takes no rank (each rank "
			    "of the node dies where it meets the other conditions)", f->node);
	if (!f->arg && s->trainer.nodes < 2)
		return fail(c, d, "node_loss without a replacement runs the next attempt on the remaining nodes, and this "
			    "trainer has one node; valid: trainer: {nodes: 2 or more}, or do: {node_loss: true, "
			    "replace: true}");
	return 0;
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
	if (get_int(c, w, "rank", 0, harness_ranks_max(s) - 1, &v) == 0)
		f->rank = (int)v;
	if (get_int(c, w, "step", 0, s->trainer.steps, &v) == 0)
		f->step = v;
	if (get_int(c, w, "nth", 1, 1000000, &v) == 0)
		f->nth = (int)v;
	if (get_int(c, w, "attempt", 1, s->max_attempts, &v) == 0)
		f->attempt = (int)v;
	if (c->failed || load_node(c, w, f, s))
		return -EINVAL;
	const ynode *ph = get(w, "phase"), *op = get(w, "op");
	int p = -1;
	if (ph && (p = one_of(c, ph, "phase", harness_phases)) >= 0)
		strcpy(f->phase, harness_phases[p]);
	if (op) {
		int o = one_of(c, op, "op", harness_ops);
		if (o >= 0)
			strcpy(f->op, harness_ops[o]);
	}
	if (get_str(c, w, "path", f->path, sizeof f->path) == 0 && (strchr(f->path, '/') || !plain_word(f->path) ||
								     !f->path[0]))
		return fail(c, get(w, "path"), "path is a glob on a file name (no '/' or spaces), e.g. 'rank-*.safetensors'");
	if (c->failed)
		return -EINVAL;
	if (!ph && !op)
		return fail(c, w, "when needs a phase or an op: a fault must say where it strikes");
	if (op && strcmp(f->op, "link") == 0 && !s->trainer.ncommand)
		return fail(c, op, "libckpt and reftrain make no link call, so op: link never fires for them; it is "
			    "for a program named by trainer.command (the fault shim sees link, linkat, O_TMPFILE)");
	if (check_where(c, w, f, s))
		return -EINVAL;
	if (is_damage(d)) {
		/* damage at rest at a step boundary, done by the injector while the job runs */
		harness_damage g = { .offset = INT64_MIN, .seed = 1 };
		if (strcmp(f->phase, "train.step") != 0 || op)
			return fail(c, w, "damage at rest while the job runs strikes at a step boundary: "
				    "when: {step: N, phase: train.step} (or use after_attempt)");
		if (load_damage_do(c, d, &g))
			return -EINVAL;
		if (g.kind == HARNESS_OVERWRITE || g.recompute)
			return fail(c, d, "%s is applied between attempts only; valid: when: {after_attempt: N}",
				    g.recompute ? "recompute" : "overwrite");
		harness_fault_set_damage(f, &g);
		if (f->rank < 0)
			f->rank = 0;       /* one rank does it, once */
		return 0;
	}
	if (load_do(c, d, f, ph && prefixed(f->phase, "train."), op))
		return -EINVAL;
	return check_node_loss(c, w, d, f, s);
}

/*
 * Attempt k runs only if every attempt before it crashed: each needs a fault
 * that ends it. reftrain and libckpt survive an I/O error (a failed save is
 * retried); a program of the user's may well exit on one, so for it an errno
 * or a short write may end the attempt too.
 */
static bool may_crash(const harness_scenario *s, enum harness_action a)
{
	return crashes(a) || (s->trainer.ncommand && (a == HARNESS_ERRNO || a == HARNESS_SHORT));
}

static int first_without_crash(const harness_scenario *s, int upto)
{
	for (int a = 1; a < upto; a++) {
		bool any = false;
		for (int i = 0; i < s->nfaults; i++)
			any |= s->faults[i].attempt == a && may_crash(s, s->faults[i].action);
		if (!any)
			return a;
	}
	return 0;
}

/* restored_from (allow_none) or max_lost_steps: N, or {ATTEMPT: N, ...}. */
static int load_expect_steps(ctx *c, const harness_scenario *s, const ynode *ex, const char *key, bool restored,
			     int64_t *scalar, int64_t *at)
{
	const ynode *y = get(ex, key);
	int64_t v, every = s->trainer.every, steps = s->trainer.steps;
	char valid[160];

	if (!y)
		return 0;
	if (restored)
		snprintf(valid, sizeof valid, "a step with a save: a multiple of %" PRId64 " from %" PRId64 " to %" PRId64
			 "%s", every, every, steps, y->kind == Y_MAP ? ", or none (that attempt starts fresh)" : "");
	else
		snprintf(valid, sizeof valid, "0 to %" PRId64, steps);
	if (s->max_attempts < 2)
		return fail(c, key_of(ex, key), "%s needs a restart, but max_attempts is 1", key);
	if (y->kind == Y_SCALAR) {
		if (parse_int(y, restored ? every : 0, steps, &v) < 0 || (restored && v % every != 0))
			return fail(c, y, "%s: '%s' is not valid; valid: %s", key, CLIP(y->value), valid);
		int a = first_without_crash(s, 2);
		if (a)
			return fail(c, key_of(ex, key), "%s can never be checked: nothing in attempt %d can crash the job "
				    "(kill, torn or power_loss), so there is no restart", key, a);
		*scalar = v;
		return 0;
	}
	if (y->kind != Y_MAP)
		return fail(c, y, "%s must be a step, or a mapping from attempt to step, e.g. {3: 30}", key);
	for (int i = 0; i + 1 < y->n; i += 2) {
		const ynode *k = y->items[i], *val = y->items[i + 1];
		int64_t a;
		if (parse_int(k, 2, s->max_attempts, &a) < 0)
			return fail(c, k, "%s: attempt '%s' is not valid; valid: a restart, 2 to %d (max_attempts)", key,
				    k->kind == Y_SCALAR ? CLIP(k->value) : "a collection", s->max_attempts);
		if (at[a] != -1)
			return fail(c, k, "%s: attempt %" PRId64 " is stated twice", key, a);
		int no = first_without_crash(s, (int)a);
		if (no)
			return fail(c, k, "%s: attempt %" PRId64 " never runs: nothing in attempt %d can crash the job "
				    "(kill, torn or power_loss)", key, a, no);
		if (restored && val->kind == Y_SCALAR && strcmp(val->value, "none") == 0)
			v = HARNESS_EXPECT_FRESH;
		else if (parse_int(val, restored ? every : 0, steps, &v) < 0 || (restored && v % every != 0))
			return fail(c, val, "%s: '%s' is not valid for attempt %" PRId64 "; valid: %s", key,
				    val->kind == Y_SCALAR ? CLIP(val->value) : "a collection", a, valid);
		at[a] = v;
	}
	return 0;
}

void harness_fault_set_damage(harness_fault *f, const harness_damage *d)
{
	f->action = HARNESS_DAMAGE;
	f->dkind = (int)d->kind;
	snprintf(f->target, sizeof f->target, "%s/%s", d->generation, d->file);
	f->doff = d->offset;
	f->dseed = d->seed;
	f->dsize = d->size;
}

bool harness_foreign_backend(const harness_scenario *s)
{
	return s->trainer.ckpt_backend[0] && strcmp(s->trainer.ckpt_backend, "libckpt") != 0;
}

/*
 * trainer.ckpt_backend: reftrain's checkpoint code (reftrain --ckpt-backend):
 * a name (libckpt, naive: build/lib/reftrain-backend-NAME.so) or the path of
 * a backend .so, relative to the scenario's folder.
 */
/*
 * expect.alerts (alerts.c judges them): [] for none, or a list of {rank, metric}.
 * Unstated: none, unless a delay_ms or errno fault may make a save slow or fail.
 */
static int load_expect_alerts(ctx *c, const ynode *ex, harness_scenario *s)
{
	static const char *const keys[] = { "rank", "metric", NULL };
	const ynode *al = get(ex, "alerts");
	harness_expect *e = &s->expect;
	bool timing = false;

	for (int i = 0; i < s->nfaults; i++)
		timing |= s->faults[i].action == HARNESS_DELAY || s->faults[i].action == HARNESS_ERRNO;
	bool libckpt = !s->trainer.ncommand && !s->trainer.ckpt_backend[0] && !s->trainer.async;
	e->alerts_mode = !al && libckpt && !timing ? HARNESS_ALERTS_NONE : HARNESS_ALERTS_UNCHECKED;
	if (!al)
		return 0;
	if (al->kind != Y_SEQ)
		return fail(c, al, "alerts is a list of {rank: N, metric: NAME} (or [] for none)");
	if (!libckpt)
		return fail(c, al, "alerts are raised by libckpt's synchronous saves in reftrain; valid: no ckpt_backend, "
			    "no command, no checkpoint.async");
	if (al->n > HARNESS_MAX_EXPECTED_ALERTS)
		return fail(c, al, "at most %d alerts may be expected", HARNESS_MAX_EXPECTED_ALERTS);
	e->alerts_mode = al->n ? HARNESS_ALERTS_LISTED : HARNESS_ALERTS_NONE;
	for (int i = 0; i < al->n; i++) {
		const ynode *it = al->items[i], *m;
		int64_t r;
		if (it->kind != Y_MAP)
			return fail(c, it, "an expected alert is {rank: N, metric: NAME}");
		if (check_keys(c, it, "an expected alert", keys))
			return -EINVAL;
		if (!get(it, "rank"))
			return fail(c, it, "an expected alert needs its rank");
		if (get_int(c, it, "rank", 0, s->trainer.world_size - 1, &r) < 0)
			return -EINVAL;
		e->alerts[i].rank = (int)r;
		e->alerts[i].metric = -1;
		if ((m = get(it, "metric")) && (e->alerts[i].metric = one_of(c, m, "metric", harness_alert_metrics)) < 0)
			return -EINVAL;
	}
	e->nalerts = al->n;
	return 0;
}

static int load_backend(ctx *c, const ynode *cb, harness_scenario *s)
{
	char *tr = s->trainer.ckpt_backend;
	size_t len = sizeof s->trainer.ckpt_backend;

	if (cb->kind != Y_SCALAR || !cb->value[0] || !plain_word(cb->value))
		return fail(c, cb, "ckpt_backend is a backend's name (libckpt, naive) or the path of its .so");
	if (!strchr(cb->value, '/')) {
		if (strspn(cb->value, "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(cb->value) ||
		    strlen(cb->value) > 64)
			return fail(c, cb, "ckpt_backend '%s' is not a backend name (a-z, 0-9, '_', '-'; at most 64) nor a "
				    "path; valid: libckpt, naive, or a path such as ./mybackend.so", CLIP(cb->value));
		snprintf(tr, len, "%s", cb->value);
		return 0;
	}
	int n;
	const char *slash = strrchr(s->file, '/');
	if (cb->value[0] == '/')
		n = snprintf(tr, len, "%s", cb->value);
	else
		n = snprintf(tr, len, "%.*s%s", slash ? (int)(slash - s->file + 1) : 0, s->file, cb->value);
	if (n < 0 || (size_t)n >= len)
		return fail(c, cb, "the ckpt_backend path is longer than %zu characters", len - 1);
	return 0;
}

/* trainer.command, .launcher, .beacon: a program under test instead of reftrain. */
static int load_command(ctx *c, const ynode *t, harness_trainer *tr)
{
	const ynode *cmd = get(t, "command"), *la = get(t, "launcher"), *be = get(t, "beacon");
	const ynode *ge = get(t, "generations");
	int k;

	if (!cmd) {
		const ynode *only = la ? la : be ? be : ge ? ge : get(t, "checkpoint_root");
		if (only)
			return fail(c, only, "this key applies to a program named by trainer.command; reftrain is "
				    "launched by the harness");
		return 0;
	}
	for (int i = 0; reftrain_only[i]; i++)
		if (get(t, reftrain_only[i]))
			return fail(c, key_of(t, reftrain_only[i]), "%s is a setting of reftrain; a program named by "
				    "command has its own flags (put them in command)", reftrain_only[i]);
	if (cmd->kind != Y_SEQ || cmd->n < 1)
		return fail(c, cmd, "command is the program and its arguments as a list, e.g. [/usr/bin/python3, "
			    "train.py, --ckpt, \"{ckpt_dir}\"]");
	if (cmd->n > HARNESS_MAX_ARGS)
		return fail(c, cmd, "command has %d items; at most %d", cmd->n, HARNESS_MAX_ARGS);
	for (int i = 0; i < cmd->n; i++) {
		const ynode *a = cmd->items[i];
		if (a->kind != Y_SCALAR || (i == 0 && !a->value[0]))
			return fail(c, a, "each item of command is one plain word or string");
		if (strlen(a->value) >= HARNESS_MAX_ARG)
			return fail(c, a, "a command item is longer than %d characters", HARNESS_MAX_ARG - 1);
		strcpy(tr->command[i], a->value);
		for (const char *p = strchr(a->value, '{'); p; p = strchr(p + 1, '{')) {
			const char *e = strchr(p, '}');
			bool known = false;
			for (int k = 0; e && placeholders[k]; k++)
				known |= (size_t)(e - p - 1) == strlen(placeholders[k]) &&
					 strncmp(p + 1, placeholders[k], (size_t)(e - p - 1)) == 0;
			if (!known)
				return fail(c, a, "unknown placeholder in '%s'; valid: {ckpt_dir}, {trajectory}, {attempt}, "
					    "{steps}, {seed}, {world_size}, {every}, {keep}, {scenario_dir}, {node}, {node_dir}",
					    CLIP(a->value));
		}
	}
	const ynode *cr = get(t, "checkpoint_root");
	if (cr && (cr->kind != Y_SCALAR || strcmp(cr->value, "{ckpt_dir}") != 0))
		return fail(c, cr, "checkpoint_root: the harness chooses the root and hands it over as {ckpt_dir}; "
			    "valid: \"{ckpt_dir}\"");
	tr->ncommand = cmd->n;
	if (la && (k = one_of(c, la, "launcher", launchers)) >= 0)
		strcpy(tr->launcher, launchers[k]);
	if (be && (be->kind != Y_SCALAR || (strcmp(be->value, "true") != 0 && strcmp(be->value, "false") != 0)))
		return fail(c, be, "beacon is true or false");
	tr->beacon = be && strcmp(be->value, "true") == 0;
	if (ge) {
		int64_t step;
		if (ge->kind != Y_SCALAR || !ge->value[0] || !plain_word(ge->value) || strchr(ge->value, '/') ||
		    ge->value[0] == '.')
			return fail(c, ge, "generations is a glob on the names of the program's checkpoints directly "
				    "under the root (files or directories, their step the last number in the name), "
				    "e.g. \"ckpt-*.bin\" or \"step_*\"; no '/', spaces or leading '.'");
		if (strlen(ge->value) >= sizeof tr->generations)
			return fail(c, ge, "generations is longer than %zu characters", sizeof tr->generations - 1);
		if (!strpbrk(ge->value, "*?[") && !harness_generation_step(ge->value, ge->value, &step))
			return fail(c, ge, "generations '%s' names one entry with no step number in it; valid: a glob "
				    "such as \"ckpt-*.bin\"", CLIP(ge->value));
		strcpy(tr->generations, ge->value);
	}
	/* what the harness cannot know of a foreign program: a save may come at any step, every one kept */
	tr->every = 1;
	tr->keep = 0;
	tr->world_size = 1;
	return c->failed ? -EINVAL : 0;
}

/* restart: {ranks: [...]}: the world size of each restart (elastic.h) */
static int load_restart(ctx *c, const ynode *rs, harness_scenario *s)
{
	const ynode *r = get(rs, "ranks");
	int64_t v;

	if (check_keys(c, rs, "restart", restart_keys))
		return -EINVAL;
	if (!r || r->kind != Y_SEQ || r->n < 1 || r->n > s->max_attempts - 1)
		return fail(c, r ? r : rs, "restart.ranks is a list of 1 to %d world sizes (max_attempts - 1), one per "
			    "restart from attempt 2 on, e.g. restart: {ranks: [2, 8]}", s->max_attempts - 1);
	if (s->trainer.ncommand)
		return fail(c, rs, "restart.ranks restarts reftrain on other world sizes; a program named by command "
			    "runs world_size throughout");
	if (s->trainer.nodes > 1)
		return fail(c, rs, "restart.ranks with nodes: %d: on many nodes a node_loss without a replacement "
			    "shrinks the job; valid: one of the two", s->trainer.nodes);
	for (int i = 0; i < r->n; i++) {
		if (parse_int(r->items[i], 1, 64, &v) < 0)
			return fail(c, r->items[i], "restart.ranks: '%s' is not valid; valid: a world size from 1 to 64 "
				    "(reftrain refuses one that does not divide its 8 virtual workers)",
				    r->items[i]->kind == Y_SCALAR ? CLIP(r->items[i]->value) : "a collection");
		s->trainer.restart_ranks[i] = (int)v;
	}
	s->trainer.nrestart_ranks = r->n;
	return 0;
}

static int load(ctx *c, const ynode *root, harness_scenario *s)
{
	const ynode *t, *ck, *fl, *ex;
	int64_t v;

	if (!root)
		return fail_at(c, 1, 1, "empty file; a scenario needs at least name, trainer and expect");
	if (check_keys(c, root, "the scenario", top_keys) || check_duplicates(c, root))
		return -EINVAL;
	if (get_str(c, root, "name", s->name, sizeof s->name))
		return c->failed ? -EINVAL : fail(c, root, "a scenario needs a name");
	for (const char *p = s->name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return fail(c, get(root, "name"), "name '%s' may hold only a-z, 0-9, '-' and '_'", CLIP(s->name));
	if (!s->name[0])
		return fail(c, get(root, "name"), "name is empty; it may hold a-z, 0-9, '-' and '_'");
	get_str(c, root, "description", s->description, sizeof s->description);

	/* read first: the faults and expectations are checked against them */
	s->max_attempts = 4;
	s->timeout_s = 120;
	if (get_int(c, root, "max_attempts", 1, HARNESS_MAX_ATTEMPTS, &v) == 0)
		s->max_attempts = (int)v;
	if (get_int(c, root, "timeout_s", 1, 86400, &v) == 0)
		s->timeout_s = (int)v;
	if (c->failed)
		return -EINVAL;

	strcpy(s->trainer.preset, "tiny");
	s->trainer.world_size = 4;
	s->trainer.steps = 60;
	s->trainer.seed = 1;
	s->trainer.every = 10;
	s->trainer.keep = 3;
	s->trainer.accum_steps = 1;
	s->trainer.nodes = 1;
	strcpy(s->trainer.launcher, "mpirun");
	if ((t = get(root, "trainer"))) {
		if (check_keys(c, t, "trainer", trainer_keys))
			return -EINVAL;
		if (load_command(c, t, &s->trainer))
			return -EINVAL;
		const ynode *p = get(t, "preset"), *cb = get(t, "ckpt_backend");
		int k;
		if (p && (k = one_of(c, p, "preset", presets)) >= 0)
			strcpy(s->trainer.preset, presets[k]);
		if (cb && load_backend(c, cb, s))
			return -EINVAL;
		if (s->trainer.ncommand) {
			if (get_int(c, t, "world_size", 1, 1024, &v) == 0)
				s->trainer.world_size = (int)v;
			if (strcmp(s->trainer.launcher, "single") == 0 && s->trainer.world_size != 1)
				return fail(c, get(t, "world_size") ? get(t, "world_size") : get(t, "launcher"),
					    "launcher: single runs one process; valid: world_size: 1, or launcher: mpirun "
					    "or procs");
			if (strcmp(s->trainer.launcher, "procs") == 0 && s->trainer.world_size > HARNESS_PROCS_MAX)
				return fail(c, get(t, "world_size"), "launcher: procs starts at most %d processes; valid: "
					    "world_size: 1 to %d, or launcher: mpirun", HARNESS_PROCS_MAX, HARNESS_PROCS_MAX);
		} else if (get_int(c, t, "world_size", 1, 8, &v) == 0) {
			if (8 % v != 0)
				return fail(c, get(t, "world_size"), "world_size %" PRId64 " does not divide the 8 virtual "
					    "workers; valid: 1, 2, 4, 8", v);
			s->trainer.world_size = (int)v;
		}
		const ynode *nd = get(t, "nodes");
		if (nd && (parse_int(nd, 1, s->trainer.world_size, &v) < 0 || s->trainer.world_size % v != 0))
			return fail(c, nd, "nodes '%s' is not valid: each node runs the same number of ranks, so nodes "
				    "divides world_size (%d); valid: a divisor of %d from 1 to %d", nd->kind == Y_SCALAR ?
				    CLIP(nd->value) : "a collection", s->trainer.world_size, s->trainer.world_size,
				    s->trainer.world_size);
		if (nd)
			s->trainer.nodes = (int)v;
		if (nd && v > 1 && s->trainer.ncommand && strcmp(s->trainer.launcher, "single") == 0)
			return fail(c, nd, "launcher: single runs one process on one node; valid: nodes: 1, or launcher: "
				    "mpirun or procs");
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
			/* incremental checkpoints (libckpt's chunk store), and how often a save is full */
			const ynode *inc = get(ck, "incremental"), *fe = get(ck, "full_every");
			if (inc && (inc->kind != Y_SCALAR || (strcmp(inc->value, "true") && strcmp(inc->value, "false"))))
				return fail(c, inc, "incremental is true or false");
			s->trainer.incremental = inc && strcmp(inc->value, "true") == 0;
			if (get_int(c, ck, "full_every", 1, 100000, &v) == 0) {
				if (!s->trainer.incremental)
					return fail(c, fe, "full_every counts the saves between full ones of incremental "
						    "checkpoints: it needs checkpoint.incremental: true");
				s->trainer.full_every = (int)v;
			}
			const ynode *as = get(ck, "async");     /* reftrain --ckpt-async */
			if (as && (as->kind != Y_SCALAR || (strcmp(as->value, "true") != 0 && strcmp(as->value, "false") != 0)))
				return fail(c, as, "checkpoint.async is true or false (true: reftrain --ckpt-async, "
					    "background saves)");
			if (as && strcmp(as->value, "true") == 0) {
				if (s->trainer.ckpt_backend[0])
					return fail(c, as, "checkpoint.async needs the built-in libckpt backend; valid: "
						    "drop ckpt_backend, or async: false");
				s->trainer.async = 1;
			}
			const ynode *en = get(ck, "encrypt");   /* reftrain --ckpt-key-file, a key made per run */
			if (en && (en->kind != Y_SCALAR || (strcmp(en->value, "true") != 0 && strcmp(en->value, "false") != 0)))
				return fail(c, en, "checkpoint.encrypt is true or false (true: sealed checkpoints, reftrain "
					    "--ckpt-key-file with a key the harness makes for the run)");
			if (en && strcmp(en->value, "true") == 0) {
				if (s->trainer.ckpt_backend[0] || s->trainer.incremental)
					return fail(c, en, "checkpoint.encrypt needs the built-in libckpt backend without "
						    "incremental checkpoints; valid: drop %s, or encrypt: false",
						    s->trainer.ckpt_backend[0] ? "ckpt_backend" : "incremental");
				s->trainer.encrypt = 1;
			}
			const ynode *ti = get(ck, "tiered");     /* reftrain --ckpt-fast-dir on the node-local directory */
			if (ti && (ti->kind != Y_SCALAR || (strcmp(ti->value, "true") != 0 && strcmp(ti->value, "false") != 0)))
				return fail(c, ti, "checkpoint.tiered is true or false (true: saves commit on the node-local "
					    "directory and drain to the checkpoint root)");
			if (ti && strcmp(ti->value, "true") == 0) {
				if (s->trainer.ckpt_backend[0] || s->trainer.async || s->trainer.incremental)
					return fail(c, ti, "checkpoint.tiered needs the built-in libckpt backend without %s; valid: "
						    "drop it, or tiered: false", s->trainer.ckpt_backend[0] ? "ckpt_backend" :
						    s->trainer.async ? "async: true" : "incremental: true");
				s->trainer.tiered = 1;
			}
		}
		if (get_int(c, t, "frozen", 0, 95, &v) == 0)
			s->trainer.frozen = (int)v;
		if (c->failed)
			return -EINVAL;
	}

	const ynode *rs = get(root, "restart");
	if (rs && load_restart(c, rs, s))
		return -EINVAL;

	const ynode *attempt_node[HARNESS_MAX_FAULTS + HARNESS_MAX_DAMAGE];
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
				if (check_keys(c, it, "a fault", fault_keys) ||
				    load_damage(c, w, d, &s->damage[s->ndamage], s))
					return -EINVAL;
				attempt_node[HARNESS_MAX_FAULTS + s->ndamage] = get(w, "after_attempt");
				s->damage[s->ndamage++].line = it->line;
				continue;
			}
			if (load_fault(c, it, &s->faults[s->nfaults], s))
				return -EINVAL;
			attempt_node[s->nfaults] = get(w, "attempt") ? get(w, "attempt") : it;
			s->fault_line[s->nfaults++] = it->line;
		}
		/* attempt k runs only after attempts 1 to k-1 all crashed */
		for (int i = 0; i < s->nfaults; i++) {
			int no = first_without_crash(s, s->faults[i].attempt);
			if (no)
				return fail(c, attempt_node[i], "this fault is armed in attempt %d, which never runs: nothing "
					    "in attempt %d can crash the job (kill, torn or power_loss); valid: attempt: %d, "
					    "or a crash in attempt %d", s->faults[i].attempt, no, no, no);
		}
		for (int i = 0; i < s->ndamage; i++) {
			int no = first_without_crash(s, s->damage[i].after_attempt + 1);
			if (no)
				return fail(c, attempt_node[HARNESS_MAX_FAULTS + i], "damage after attempt %d never strikes: "
					    "nothing in attempt %d can crash the job (kill, torn or power_loss)",
					    s->damage[i].after_attempt, no);
		}
		/* damage at rest needs to know what a generation is: libckpt's, or the program's own names */
		for (int i = 0; s->trainer.ncommand && !s->trainer.generations[0] && i < fl->n; i++) {
			const ynode *d = get(fl->items[i], "do");
			if (is_damage(d))
				return fail(c, d, "damage at rest strikes the program's checkpoints, but this trainer does not "
					    "say what they are called; valid: trainer: {generations: \"ckpt-*.bin\"} (a glob "
					    "on the names under the root, each with its step number in it)");
		}
		for (int i = 0; harness_foreign_backend(s) && i < fl->n; i++) {
			const ynode *d = get(fl->items[i], "do");
			if (is_damage(d))
				return fail(c, d, "damage at rest strikes libckpt's generations (step-N/FILE); the checkpoint "
					    "backend '%s' has its own layout", CLIP(s->trainer.ckpt_backend));
		}
		/* damaging checkpoints on purpose may cost an acknowledged generation */
		s->expect.damaged_newest = s->ndamage > 0;
		for (int i = 0; i < s->nfaults; i++)
			s->expect.damaged_newest |= s->faults[i].action == HARNESS_DAMAGE;
	}

	if (rs && first_without_crash(s, 2))
		return fail(c, rs, "restart.ranks sizes the restarts, but nothing in attempt 1 can crash the job; valid: a "
			    "kill, torn or power_loss fault in attempt 1");
	char why[200];
	int bad = rs ? harness_elastic_check(s, why, sizeof why) : 0;
	for (int i = 0, nf = 0; bad && i < fl->n; i++) {     /* the bad-th fault's rank (damage items are not faults) */
		const ynode *w = get(fl->items[i], "when");
		if (!get(w, "after_attempt") && ++nf == bad)
			return fail(c, get(w, "rank"), "%s", why);
	}
	if (s->trainer.test_skip_restore[0] && (s->max_attempts < 2 || first_without_crash(s, 2)))
		return fail(c, get(t, "test_skip_restore"), "test_skip_restore acts on a restore, but there is no restart "
			    "(%s); valid: a kill, torn or power_loss fault in attempt 1", s->max_attempts < 2 ?
			    "max_attempts is 1" : "nothing in attempt 1 can crash the job");

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
	if (get_str(c, ex, "error", s->expect.error, sizeof s->expect.error) == 0 &&
	    s->expect.outcome != HARNESS_CLEAN_FAILURE)
		return fail(c, key_of(ex, "error"), "'error' goes with outcome: clean_failure only (a run that resumes "
			    "has no error to match); valid: outcome: clean_failure, or no error");
	if (c->failed)
		return -EINVAL;
	if (load_expect_steps(c, s, ex, "restored_from", true, &s->expect.restored_from, s->expect.restored_from_at) ||
	    load_expect_steps(c, s, ex, "max_lost_steps", false, &s->expect.max_lost_steps, s->expect.max_lost_at))
		return -EINVAL;
	if (s->expect.outcome == HARNESS_CLEAN_FAILURE && !s->expect.error[0])
		return fail(c, ex, "clean_failure needs 'error': the words the failure must say");
	if (load_expect_alerts(c, ex, s))
		return -EINVAL;
	/* refused: the words every generation the first restart passed over must be refused with */
	if (get_str(c, ex, "refused", s->expect.refused, sizeof s->expect.refused) == 0 &&
	    (s->max_attempts < 2 || first_without_crash(s, 2)))
		return fail(c, key_of(ex, "refused"), "'refused' judges a restart's restore, but there is no restart; "
			    "valid: a kill, torn or power_loss fault in attempt 1");
	return c->failed ? -EINVAL : 0;
}

int harness_scenario_load_buffer(const char *name, const char *buf, size_t len, harness_scenario *s, char *err,
				 size_t errlen)
{
	ctx c = { .file = name, .err = err, .errlen = errlen };
	int rc;

	memset(s, 0, sizeof *s);
	if (errlen)
		err[0] = '\0';
	if (strlen(name) >= sizeof s->file)
		return fail_at(&c, 1, 1, "the file name is longer than %zu characters", sizeof s->file - 1);
	snprintf(s->file, sizeof s->file, "%s", name);
	if (len > HARNESS_SCENARIO_MAX_BYTES)
		return fail_at(&c, 1, 1, "the file is %zu bytes; a scenario file may hold at most %d bytes (1 MiB)", len,
			       HARNESS_SCENARIO_MAX_BYTES);
	ynode *root = parse(&c, buf, len);
	rc = c.failed ? -EINVAL : load(&c, root, s);
	yfree(root);
	return rc;
}

int harness_scenario_load(const char *path, harness_scenario *s, char *err, size_t errlen)
{
	ctx c = { .file = path, .err = err, .errlen = errlen };
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd, rc;

	memset(s, 0, sizeof *s);
	if (strlen(path) >= sizeof s->file)
		return fail_at(&c, 1, 1, "the file name is longer than %zu characters", sizeof s->file - 1);
	/* O_NONBLOCK: a FIFO named as a scenario is refused below, never waited on */
	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)) < 0) {
		rc = -errno;
		fail_at(&c, 1, 1, "cannot read: %s", strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		fail_at(&c, 1, 1, "cannot read: %s", strerror(-rc));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = fail_at(&c, 1, 1, "not a regular file; valid: a .yaml scenario file");
		goto out;
	}
	if (st.st_size > HARNESS_SCENARIO_MAX_BYTES) {
		rc = fail_at(&c, 1, 1, "the file is %lld bytes; a scenario file may hold at most %d bytes (1 MiB)",
			     (long long)st.st_size, HARNESS_SCENARIO_MAX_BYTES);
		goto out;
	}
	/* one byte more than allowed, to see a file that grew since fstat */
	if (!(buf = malloc((size_t)HARNESS_SCENARIO_MAX_BYTES + 1))) {
		rc = fail_at(&c, 1, 1, "out of memory");
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, buf + got, (size_t)HARNESS_SCENARIO_MAX_BYTES + 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			fail_at(&c, 1, 1, "cannot read: %s", strerror(-rc));
			goto out;
		}
		if (r == 0 || (got += (size_t)r) > HARNESS_SCENARIO_MAX_BYTES)
			break;
	}
	rc = harness_scenario_load_buffer(path, buf, got, s, err, errlen);
out:
	free(buf);
	close(fd);
	return rc;
}
