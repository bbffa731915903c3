/*
 * ckpt-harness chaos (chaos.h): draw a plan per run from (seed, run), run
 * it, let the oracle judge, shrink what fails.
 */
#include "chaos.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "launch.h"
#include "pool.h"
#include "html.h"
#include "report.h"
#include "scenario_write.h"
#include "shrink.h"
#include "workdir.h"

const char *const harness_chaos_kind_names[HARNESS_CHAOS_NKINDS] = {
	"kill", "errno", "transient", "short", "torn", "power_loss", "damage", "delay", "node_loss",
};

unsigned harness_chaos_parse_kinds(const char *list, const char **bad)
{
	static char word[64];
	unsigned bits = 0;

	*bad = NULL;
	if (strcmp(list, "all") == 0)
		return (1u << HARNESS_CHAOS_NKINDS) - 1;
	for (const char *p = list; *p;) {
		size_t n = strcspn(p, ",");
		int k;
		snprintf(word, sizeof word, "%.*s", (int)(n < sizeof word ? n : sizeof word - 1), p);
		for (k = 0; k < HARNESS_CHAOS_NKINDS && strcmp(word, harness_chaos_kind_names[k]) != 0; k++)
			;
		if (k == HARNESS_CHAOS_NKINDS) {
			*bad = word;
			return 0;
		}
		bits |= 1u << k;
		p += n + (p[n] == ',');
	}
	if (!bits)
		*bad = list;
	return bits;
}

/*
 * The generator: splitmix64 over a counter, keyed by (seed, run). Draw k of
 * run i is mix(key(seed, i) ^ mix(k)): no state but the counter, so a run's
 * plan does not depend on the runs before it, on -j or on the clock.
 */
static uint64_t mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

typedef struct crng {
	uint64_t key, ctr;
} crng;

static uint64_t draw(crng *g)
{
	return mix(g->key ^ mix(g->ctr++));
}

/* 0 <= result < n */
static int below(crng *g, int n)
{
	return n <= 1 ? 0 : (int)(draw(g) % (uint64_t)n);
}

/*
 * Where libckpt's calls happen, as its journal shows them for a tiny job
 * (phase, op, how many such calls a rank makes in one save or restore):
 * nth is drawn up to that. rank0: only rank 0 runs that phase. A site
 * that a build or configuration never reaches only means a fault that did
 * not fire: chaos counts such a run by what did fire.
 */
typedef struct site {
	const char *phase, *op;
	int nth;
	int rank0;
} site;

static const site libckpt_sites[] = {
	{ "save.prepare", "phase", 1, 1 },        { "save.prepare", "mkdir", 1, 1 },
	{ "save.prepare", "open", 1, 1 },         { "save.prepare", "fsync", 1, 1 },
	{ "save.shard_write", "phase", 1, 0 },    { "save.shard_write", "open", 1, 0 },
	{ "save.shard_write", "write", 11, 0 },   { "save.shard_sync", "fsync", 1, 0 },
	{ "save.shard_sync", "close", 1, 0 },     { "save.barrier", "phase", 1, 0 },
	{ "save.manifest_write", "open", 1, 1 },  { "save.manifest_write", "write", 1, 1 },
	{ "save.manifest_sync", "fsync", 2, 1 },  { "save.manifest_sync", "close", 2, 1 },
	{ "save.commit", "rename", 1, 1 },        { "save.commit", "phase", 1, 1 },
	{ "save.dir_sync", "open", 1, 1 },        { "save.dir_sync", "fsync", 1, 1 },
	{ "save.latest", "open", 2, 1 },          { "save.latest", "write", 1, 1 },
	{ "save.latest", "fsync", 2, 1 },         { "save.latest", "rename", 1, 1 },
	{ "save.retention", "phase", 1, 1 },      { "save.retention", "rename", 1, 1 },
	{ "save.retention", "unlink", 3, 1 },     { "save.retention", "rmdir", 1, 1 },
	{ "restore.scan", "opendir", 1, 1 },      { "restore.read", "open", 2, 0 },
	{ "restore.read", "read", 13, 0 },        { "restore.verify", "phase", 1, 0 },
	{ "train.step", "phase", 1, 0 },          { "train.reduce", "phase", 1, 0 },
};

/* Under the fault shim: calls and files only (and the beacon's train.* phases and steps). */
static const site shim_sites[] = {
	{ "", "open", 3, 0 },   { "", "write", 6, 0 },  { "", "fsync", 2, 0 },  { "", "rename", 2, 0 },
	{ "", "close", 3, 0 },  { "", "mkdir", 1, 0 },  { "", "unlink", 2, 0 }, { "", "read", 4, 0 },
	{ "train.step", "phase", 1, 0 }, { "train.reduce", "phase", 1, 0 },
};

enum { ANY_SITE, IO_SITE, WRITE_SITE };

typedef struct drawer {
	const harness_chaos_opts *co;
	const site *sites;
	int nsites;
	int shim;                 /* no libckpt phase may be named */
	int steps_known;          /* step and train.* phases match (libfiu, or a beacon) */
	int has_crash_in_1;       /* a fault of attempt 1 so far ends it */
} drawer;

static int is_train(const site *x)
{
	return strncmp(x->phase, "train.", 6) == 0;
}

static int is_restore(const site *x)
{
	return strncmp(x->phase, "restore.", 8) == 0;
}

static const site *pick_site(crng *g, drawer *d, int want)
{
	for (int tries = 0; tries < 64; tries++) {
		const site *x = &d->sites[below(g, d->nsites)];
		int io = strcmp(x->op, "phase") != 0;
		if ((want == IO_SITE && !io) || (want == WRITE_SITE && strcmp(x->op, "write") != 0))
			continue;
		if (is_train(x) && !d->steps_known)
			continue;
		if (is_restore(x) && !d->has_crash_in_1)
			continue;      /* a restore happens only after a crash */
		/*
		 * An I/O error in a restore may rightly end the job (a clean
		 * failure, or a fallback the plan cannot foresee): errors strike
		 * saves only. Crashes and delays may strike a restore.
		 */
		if (is_restore(x) && want != ANY_SITE)
			continue;
		return x;
	}
	return NULL;
}

static int64_t save_step(crng *g, const harness_trainer *t)
{
	int64_t saves = t->steps / (t->every > 0 ? t->every : 1);
	return saves < 1 ? -1 : (int64_t)(below(g, (int)(saves < 100000 ? saves : 100000)) + 1) * t->every;
}

static const int errnos[] = { EIO, ENOSPC, EDQUOT, EACCES, EROFS };

/* One fault of kind k at a drawn site: 0, or -1 if no site fits (the plan is drawn again). */
static int draw_kind(crng *g, drawer *d, harness_scenario *s, int k)
{
	const harness_trainer *t = &s->trainer;
	int want = k == HARNESS_CHAOS_ERRNO || k == HARNESS_CHAOS_TRANSIENT ? IO_SITE
		   : k == HARNESS_CHAOS_SHORT || k == HARNESS_CHAOS_TORN ? WRITE_SITE : ANY_SITE;

	if (k == HARNESS_CHAOS_DAMAGE) {
		/*
		 * Damage at rest at a step boundary, to one generation, while an
		 * older or newer one is intact: damaging every generation has
		 * another right outcome (a clean failure), which a random plan
		 * cannot state. So one damage per plan, at a step after two saves.
		 */
		static const char *const gens[] = { "newest", "oldest" };
		const char *files = t->ncommand ? "*" : below(g, 2) ? "manifest.json" : "rank-*.safetensors";
		int64_t first = 2 * t->every + 1;
		harness_damage dm = { .kind = (enum harness_damage_kind)below(g, 3), .offset = INT64_MIN,
				      .seed = below(g, 1000) + 1 };
		snprintf(dm.generation, sizeof dm.generation, "%s", gens[below(g, 2)]);
		snprintf(dm.file, sizeof dm.file, "%s", files);
		dm.size = dm.kind == HARNESS_TRUNCATE ? below(g, 64) : 0;
		for (int i = 0; i < s->nfaults; i++)
			if (s->faults[i].action == HARNESS_DAMAGE)
				return -1;
		if (t->keep < 2 || first > t->steps)
			return -1;
		if (!d->steps_known || s->nfaults == HARNESS_MAX_FAULTS)
			return -1;
		harness_fault *f = &s->faults[s->nfaults++];
		memset(f, 0, sizeof *f);
		f->attempt = 1;
		f->rank = 0;
		f->step = below(g, (int)t->steps) + 1;
		f->nth = 1;
		strcpy(f->phase, "train.step");
		harness_fault_set_damage(f, &dm);
		return 0;
	}
	const site *x = pick_site(g, d, want);
	if (!x || s->nfaults == HARNESS_MAX_FAULTS)
		return -1;
	if (k == HARNESS_CHAOS_NODE_LOSS) {
		/*
		 * A node lost in attempt 1 at a save's phase or a step, and replaced
		 * in the next attempt (the same world size): the run must resume bit
		 * for bit. Without a replacement the right outcome depends on
		 * elastic resume, which a random plan cannot state.
		 */
		if (t->nodes < 2 || is_restore(x) || (d->shim && x->phase[0] == '\0'))
			return -1;
		harness_fault *f = &s->faults[s->nfaults++];
		memset(f, 0, sizeof *f);
		f->attempt = 1;
		f->rank = -1;
		f->rpn = t->world_size / t->nodes;
		f->node = below(g, t->nodes);
		f->nth = below(g, x->nth) + 1;
		snprintf(f->phase, sizeof f->phase, "%s", x->phase);
		snprintf(f->op, sizeof f->op, "%s", x->op);
		f->step = is_train(x) ? below(g, (int)t->steps) + 1 : save_step(g, t);
		if (f->step < 0)
			return -1;
		f->action = HARNESS_NODE_LOSS;
		f->arg = 1;
		d->has_crash_in_1 = 1;
		return 0;
	}
	harness_fault *f = &s->faults[s->nfaults++];
	memset(f, 0, sizeof *f);
	/* errors and short writes in attempt 1 only: a later attempt begins with a restore, under the shim too */
	f->attempt = is_restore(x) || (want == ANY_SITE && d->has_crash_in_1 && s->nfaults > 1 && below(g, 4) == 0) ? 2
		     : 1;
	f->rank = x->rank0 ? 0 : below(g, t->world_size);
	f->nth = below(g, x->nth) + 1;
	snprintf(f->phase, sizeof f->phase, "%s", x->phase);
	snprintf(f->op, sizeof f->op, "%s", x->op);
	if (is_train(x))
		f->step = below(g, (int)t->steps) + 1;
	else if (is_restore(x) || !d->steps_known)
		f->step = -1;
	else if (d->shim && t->ncommand)
		f->step = below(g, (int)t->steps) + 1;      /* a program's saves: every step may be one */
	else
		f->step = save_step(g, t);
	if (x->phase[0] && !is_train(x) && f->step < 0 && strncmp(x->phase, "save.", 5) == 0)
		return -1;
	switch (k) {
	case HARNESS_CHAOS_KILL: f->action = HARNESS_KILL; break;
	case HARNESS_CHAOS_POWER_LOSS: f->action = HARNESS_POWER_LOSS; break;
	case HARNESS_CHAOS_ERRNO:
		f->action = HARNESS_ERRNO;
		f->err = errnos[below(g, (int)(sizeof errnos / sizeof *errnos))];
		break;
	case HARNESS_CHAOS_TRANSIENT:
		f->action = HARNESS_ERRNO;
		f->err = below(g, 4) == 0 ? EINTR : errnos[below(g, (int)(sizeof errnos / sizeof *errnos))];
		f->times = below(g, 2) + 1;
		break;
	case HARNESS_CHAOS_SHORT: f->action = HARNESS_SHORT; f->arg = below(g, 64) + 1; break;
	case HARNESS_CHAOS_TORN: f->action = HARNESS_TORN; f->arg = below(g, 4097); break;
	case HARNESS_CHAOS_DELAY: f->action = HARNESS_DELAY; f->arg = 10 + below(g, 141); break;
	default: return -1;
	}
	if (f->attempt == 1 && (k == HARNESS_CHAOS_KILL || k == HARNESS_CHAOS_TORN || k == HARNESS_CHAOS_POWER_LOSS))
		d->has_crash_in_1 = 1;
	return 0;
}

static void describe_plan(const harness_scenario *s, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 0; i < s->nfaults && used + 1 < len; i++) {
		const harness_fault *f = &s->faults[i];
		char act[64];
		harness_fault_describe(f, act, sizeof act);
		used += (size_t)snprintf(buf + used, len - used, "%s%s at attempt %d rank %d step %" PRId64 " %s/%s nth %d",
					 i ? "; " : "", act, f->attempt, f->rank, f->step, f->phase[0] ? f->phase : "-",
					 f->op[0] ? f->op : "-", f->nth);
	}
	for (int i = 0; i < s->ndamage && used + 1 < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s damage of %s/%s after attempt %d",
					 used ? "; " : "", s->damage[i].kind == HARNESS_BITFLIP ? "bitflip"
					 : s->damage[i].kind == HARNESS_TRUNCATE ? "truncate" : "delete",
					 s->damage[i].generation, s->damage[i].file, s->damage[i].after_attempt);
}

int harness_chaos_draw(const harness_chaos_opts *co, const harness_opts *o, long idx, harness_scenario *s, char *err,
		       size_t errlen)
{
	crng g = { mix(mix(co->seed) ^ ((uint64_t)idx * 0xd1342543de82ef95ull + 1)), 0 };
	const harness_trainer *t = &co->base.trainer;
	int kinds[HARNESS_CHAOS_NKINDS], nk = 0;
	char *text = NULL;
	size_t len;

	for (int k = 0; k < HARNESS_CHAOS_NKINDS; k++)
		if ((co->kinds & (1u << k)) && (k != HARNESS_CHAOS_NODE_LOSS || t->nodes > 1))
			kinds[nk++] = k;     /* node_loss only for a trainer on 2 or more nodes */
	if (!nk) {
		snprintf(err, errlen, "no fault kind to draw");
		return -EINVAL;
	}
	drawer d = { .co = co };
	d.shim = t->ncommand || harness_foreign_backend(&co->base) || harness_inject_mode(o) == HARNESS_INJECT_SHIM;
	d.sites = d.shim ? shim_sites : libckpt_sites;
	d.nsites = d.shim ? (int)(sizeof shim_sites / sizeof *shim_sites) : (int)(sizeof libckpt_sites / sizeof *libckpt_sites);
	d.steps_known = !t->ncommand || t->beacon;
	for (int attempt = 0; attempt < 256; attempt++) {
		harness_scenario *c = s;
		*c = co->base;
		c->nfaults = c->ndamage = 0;
		memset(c->faults, 0, sizeof c->faults);
		memset(c->fault_line, 0, sizeof c->fault_line);
		harness_expect_init(&c->expect);
		snprintf(c->name, sizeof c->name, "chaos-%" PRIu64 "-%ld", co->seed, idx);
		d.has_crash_in_1 = 0;
		int n = below(&g, co->max_faults) + 1, bad = 0;
		for (int i = 0; i < n && !bad; i++)
			bad = draw_kind(&g, &d, c, kinds[below(&g, nk)]) < 0;
		if (bad)
			continue;
		char plan[800];
		describe_plan(c, plan, sizeof plan);
		snprintf(c->description, sizeof c->description, "chaos --seed %" PRIu64 " run %ld: %s", co->seed, idx, plan);
		/* only what the loader accepts is a plan: write it, read it back */
		if (harness_scenario_to_text(c, NULL, NULL, &text, &len) < 0) {
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		char file[HARNESS_SCENARIO_PATH_MAX];
		snprintf(file, sizeof file, "%s", co->base.file[0] ? co->base.file : "chaos.yaml");
		char why[1024];
		int rc = harness_scenario_load_buffer(file, text, len, c, why, sizeof why);
		free(text);
		text = NULL;
		if (rc < 0)
			continue;
		char blind[256];
		if (d.shim && harness_shim_blind_spot(c, blind, sizeof blind))
			continue;
		return 0;
	}
	snprintf(err, errlen, "no valid plan in 256 draws for run %ld: the trainer or --faults leave no place for a fault",
		 idx);
	return -EINVAL;
}

/* ---- the command ---- */

#define MAX_PAIRS 256

typedef struct chaos_state {
	const harness_chaos_opts *co;
	const harness_opts *o;
	double t0;
	long runs_done, failed, errors, next_idx, nresults;
	long fired_kind[HARNESS_CHAOS_NKINDS];
	char pairs[MAX_PAIRS][48];
	int npairs;
	harness_result *results;
	long cap;
	/* the failures, to shrink after the runs */
	struct failure {
		long idx;
		harness_scenario s;
		harness_fired fired;
		char sentence[1024];
	} *fail;
	long nfail;
	int tty;
	int draw_error;
	char draw_err[1024];
} chaos_state;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int kind_of(const harness_fault *f)
{
	switch (f->action) {
	case HARNESS_KILL: return HARNESS_CHAOS_KILL;
	case HARNESS_ERRNO: return f->times ? HARNESS_CHAOS_TRANSIENT : HARNESS_CHAOS_ERRNO;
	case HARNESS_SHORT: return HARNESS_CHAOS_SHORT;
	case HARNESS_TORN: return HARNESS_CHAOS_TORN;
	case HARNESS_POWER_LOSS: return HARNESS_CHAOS_POWER_LOSS;
	case HARNESS_DAMAGE: return HARNESS_CHAOS_DAMAGE;
	case HARNESS_DELAY: return HARNESS_CHAOS_DELAY;
	case HARNESS_NODE_LOSS: return HARNESS_CHAOS_NODE_LOSS;
	default: return -1;
	}
}

static int next_plan(void *arg, long idx, harness_scenario *s)
{
	chaos_state *st = arg;
	const harness_chaos_opts *co = st->co;
	long run;

	(void)idx;
	if (st->draw_error || harness_interrupted() || (co->first && st->failed))
		return 1;
	if (co->only_run >= 0) {
		if (st->next_idx > 0)
			return 1;
		run = co->only_run;
	} else {
		if (co->runs > 0 && st->next_idx >= co->runs)
			return 1;
		if (co->budget_s > 0 && now() - st->t0 >= co->budget_s)
			return 1;
		run = st->next_idx;
	}
	if (harness_chaos_draw(co, st->o, run, s, st->draw_err, sizeof st->draw_err) < 0) {
		st->draw_error = 1;
		return 1;
	}
	st->next_idx++;
	if (co->print_plan || co->plans_only) {
		char head[64];
		snprintf(head, sizeof head, "run %ld", run);
		harness_scenario_write(stdout, s, head, co->base_dir[0] ? co->base_dir : NULL);
		fflush(stdout);
	}
	return 0;
}

static void progress(chaos_state *st, int force)
{
	if (!st->tty && !force && st->runs_done % 10 != 0)
		return;
	fprintf(stderr, "%schaos: %ld runs, %ld failed, %ld errors | fired:", st->tty ? "\r" : "", st->runs_done,
		st->failed, st->errors);
	for (int k = 0; k < HARNESS_CHAOS_NKINDS; k++)
		if (st->co->kinds & (1u << k))
			fprintf(stderr, " %s %ld", harness_chaos_kind_names[k], st->fired_kind[k]);
	fprintf(stderr, " | %d (phase, op) pairs%s", st->npairs, st->tty ? "\033[K" : "\n");
}

static void run_done(void *arg, long idx, const harness_scenario *s, const harness_result *r, harness_fired fired)
{
	chaos_state *st = arg;
	harness_result res = *r;

	(void)idx;
	res.verdict = harness_chaos_verdict(r);
	if (res.verdict != r->verdict)
		snprintf(res.sentence, sizeof res.sentence, "%s (%d of %d planned faults fired)", r->oracle.sentence,
			 r->faults_fired, r->faults_planned);
	st->runs_done++;
	for (int i = 0; i < s->nfaults; i++)
		if (fired & ((harness_fired)1 << i)) {
			int k = kind_of(&s->faults[i]);
			if (k >= 0)
				st->fired_kind[k]++;
		}
	for (int i = 0; i < s->ndamage; i++)
		st->fired_kind[HARNESS_CHAOS_DAMAGE]++;
	for (int c = 0; c < r->ncoverage; c++) {
		int known = 0;
		for (int k = 0; k < st->npairs && !known; k++)
			known = strcmp(st->pairs[k], r->coverage[c]) == 0;
		if (!known && st->npairs < MAX_PAIRS)
			snprintf(st->pairs[st->npairs++], sizeof st->pairs[0], "%s", r->coverage[c]);
	}
	if (st->nresults == st->cap) {
		long cap = st->cap ? st->cap * 2 : 64;
		harness_result *n = realloc(st->results, sizeof *n * (size_t)cap);
		if (!n)
			return;
		st->results = n;
		st->cap = cap;
	}
	st->results[st->nresults++] = res;
	if (res.verdict == HARNESS_FAIL) {
		st->failed++;
		struct failure *f = realloc(st->fail, sizeof *f * (size_t)(st->nfail + 1));
		if (f) {
			st->fail = f;
			f[st->nfail].idx = s->name[0] ? strtol(strrchr(s->name, '-') + 1, NULL, 10) : idx;
			f[st->nfail].s = *s;
			f[st->nfail].fired = fired;
			snprintf(f[st->nfail].sentence, sizeof f[st->nfail].sentence, "%s", res.sentence);
			st->nfail++;
		}
		fprintf(stderr, "%sFAIL %s: %s%s%s\n", st->tty ? "\r\033[K" : "", s->name, res.sentence,
			res.workdir[0] ? "; evidence in " : "", res.workdir);
	} else if (res.verdict != HARNESS_PASS && res.verdict != HARNESS_SKIP) {
		st->errors++;
		fprintf(stderr, "%sERROR %s: %s\n", st->tty ? "\r\033[K" : "", s->name, res.sentence);
	}
	progress(st, 0);
}

/* Results in run order (they arrive in the order the runs end). */
static long run_of(const harness_result *r)
{
	const char *dash = strrchr(r->name, '-');
	return dash ? strtol(dash + 1, NULL, 10) : 0;
}

static int by_run(const void *a, const void *b)
{
	long x = run_of(a), y = run_of(b);
	return (x > y) - (x < y);
}

/* The options that draw run idx's plan again (the plan depends on them all). */
static void replay_args(const harness_chaos_opts *co, long idx, char *buf, size_t len)
{
	const harness_trainer *t = &co->base.trainer;
	size_t used = (size_t)snprintf(buf, len, "--seed %" PRIu64 " --run %ld --max-faults %d --faults ", co->seed, idx,
				       co->max_faults);
	int first = 1;

	for (int k = 0; k < HARNESS_CHAOS_NKINDS && used < len; k++)
		if (co->kinds & (1u << k)) {
			used += (size_t)snprintf(buf + used, len - used, "%s%s", first ? "" : ",", harness_chaos_kind_names[k]);
			first = 0;
		}
	if (used >= len)
		return;
	if (co->base.file[0])
		snprintf(buf + used, len - used, " --scenario %s", co->base.file);
	else
		snprintf(buf + used, len - used, " --preset %s --world-size %d --steps %" PRId64 " --every %" PRId64
			 " --ckpt-keep %d", t->preset, t->world_size, t->steps, t->every, t->keep);
}

/* Shrink one failure and write it to the out folder. 0, or -errno (said). */
static int write_failure(chaos_state *st, const struct failure *f, const char *root)
{
	const harness_chaos_opts *co = st->co;
	harness_shrink_result *sr = calloc(1, sizeof *sr);
	char path[4200], comment[3000], err[2048];
	int rc;

	if (!sr)
		return -ENOMEM;
	if (co->shrink) {
		fprintf(stderr, "chaos: shrinking %s (%d faults planned)...\n", f->s.name, f->s.nfaults + f->s.ndamage);
		rc = harness_shrink(&f->s, f->fired, st->o, co->jobs, root, co->shrink_budget, sr);
		if (rc < 0) {
			fprintf(stderr, "chaos: cannot shrink %s: %s\n", f->s.name, strerror(-rc));
			free(sr);
			return rc;
		}
	} else {
		sr->s = f->s;
		sr->planned = sr->fired = sr->shrunk = f->s.nfaults + f->s.ndamage;
		sr->confirmed = 1;      /* not re-run: it failed once, as the run showed */
		sr->fails_of = 1;
		snprintf(sr->sentence, sizeof sr->sentence, "%s", f->sentence);
	}
	snprintf(sr->s.name, sizeof sr->s.name, "chaos-%" PRIu64 "-%ld", co->seed, f->idx);
	snprintf(sr->s.description, sizeof sr->s.description, "Found by ckpt-harness chaos --seed %" PRIu64
		 " (run %ld); shrunk from %d faults to %d.", co->seed, f->idx, sr->planned, sr->shrunk);
	char again[1024];
	replay_args(co, f->idx, again, sizeof again);
	snprintf(comment, sizeof comment,
		 "Found by ckpt-harness chaos --seed %" PRIu64 ", run %ld. The run again:\n"
		 "  ckpt-harness chaos %s\n"
		 "Faults: %d planned, %d fired, %d after shrinking (%d candidates tried; each kept only if it\n"
		 "FAILed %d of %d runs). %s\n"
		 "The failure: %s\n"
		 "Replay: ckpt-harness run THIS-FILE  (FAIL on the build that has the bug)",
		 co->seed, f->idx, again, sr->planned, sr->fired, sr->shrunk, sr->candidates,
		 HARNESS_SHRINK_REPEAT, HARNESS_SHRINK_REPEAT,
		 sr->confirmed ? "" : "UNCONFIRMED: the fired plan did not fail every time (flaky); it is written as it fired.",
		 sr->sentence[0] ? sr->sentence : f->sentence);
	mkdir(co->out_dir, 0755);
	snprintf(path, sizeof path, "%s/%s.yaml", co->out_dir, sr->s.name);
	rc = harness_scenario_save(path, &sr->s, comment, co->base_dir[0] ? co->base_dir : NULL, err, sizeof err);
	if (rc < 0)
		fprintf(stderr, "chaos: %s\n", err);
	else
		fprintf(stderr, "chaos: wrote %s: %d faults -> %d, fails %d/%d: %s\n", path, sr->planned, sr->shrunk,
			sr->fails_of, co->shrink ? HARNESS_SHRINK_REPEAT : 1, sr->sentence[0] ? sr->sentence : f->sentence);
	/* the bench and the tests read this line */
	printf("found %s planned=%d fired=%d shrunk=%d fails=%d/%d candidates=%d\n", path, sr->planned, sr->fired,
	       sr->shrunk, sr->fails_of, co->shrink ? HARNESS_SHRINK_REPEAT : 1, sr->candidates);
	free(sr);
	return rc;
}

static int preflight_next(void *arg, long idx, harness_scenario *s)
{
	chaos_state *st = arg;

	if (idx > 0)
		return 1;
	*s = st->co->base;
	s->nfaults = s->ndamage = 0;
	harness_expect_init(&s->expect);
	snprintf(s->name, sizeof s->name, "chaos-%" PRIu64 "-nofault", st->co->seed);
	snprintf(s->description, sizeof s->description, "chaos preflight: the trainer with no fault");
	return 0;
}

/*
 * Before any plan: the trainer with no fault (which also fills the golden
 * cache once for every run). If that fails, every plan would fail for the
 * same reason: that one failure is reported and written, with no fault.
 */
static int preflight(chaos_state *st, const char *root)
{
	harness_pool p = { .o = st->o, .root = root, .jobs = 1, .keep = st->co->keep, .next = preflight_next,
			   .done = run_done, .arg = st };
	char dir[1100];

	snprintf(dir, sizeof dir, "%s/preflight", root);
	mkdir(dir, 0755);
	p.root = dir;
	harness_pool_run(&p);
	rmdir(dir);      /* empty unless the run failed (its evidence) */
	st->runs_done = 0;
	if (st->nresults == 1 && st->results[0].verdict == HARNESS_PASS) {
		st->nresults = 0;     /* not a chaos run */
		return 0;
	}
	if (st->nfail == 0) {
		fprintf(stderr, "chaos: the run with no fault could not be judged, so no plan is run\n");
		return 1;
	}
	fprintf(stderr, "chaos: the trainer fails with no fault at all, so no plan is run\n");
	for (long i = 0; i < st->nfail; i++) {
		st->fail[i].idx = -1;
		struct failure *f = &st->fail[i];
		char path[4200], comment[1400], err[2048];
		mkdir(st->co->out_dir, 0755);
		snprintf(path, sizeof path, "%s/%s.yaml", st->co->out_dir, f->s.name);
		snprintf(comment, sizeof comment, "Found by ckpt-harness chaos --seed %" PRIu64 " before any plan: the trainer "
			 "fails with no fault.\nThe failure: %s", st->co->seed, f->sentence);
		if (harness_scenario_save(path, &f->s, comment, st->co->base_dir[0] ? st->co->base_dir : NULL, err,
					  sizeof err) < 0)
			fprintf(stderr, "chaos: %s\n", err);
		else
			printf("found %s planned=0 fired=0 shrunk=0 fails=1/1 candidates=0\n", path);
	}
	return 1;
}

int harness_chaos(const harness_chaos_opts *co, const harness_opts *o)
{
	chaos_state st = { .co = co, .o = o, .tty = isatty(2) };
	char root[1024];
	int rc, code;

	if ((rc = harness_workdir_create(root, sizeof root, harness_workdir_tmp(), "ckpt-harness-chaos")) < 0) {
		fprintf(stderr, "ckpt-harness chaos: cannot create a work directory: %s\n", strerror(-rc));
		return 3;
	}
	st.t0 = now();
	harness_pool p = { .o = o, .root = root, .jobs = co->jobs, .keep = co->keep, .next = next_plan, .done = run_done,
			   .arg = &st };
	if (co->plans_only) {
		/* --plans: draw, print, run nothing */
		harness_scenario *s = malloc(sizeof *s);
		while (s && next_plan(&st, 0, s) == 0)
			;
		free(s);
		harness_workdir_remove(root);
		if (st.draw_error) {
			fprintf(stderr, "ckpt-harness chaos: %s\n", st.draw_err);
			return 2;
		}
		return 0;
	}
	if (!co->plans_only && co->only_run < 0 && preflight(&st, root) != 0) {
		/* the trainer fails with no fault at all: no plan could say anything more */
		code = harness_exit_code(st.results, (int)st.nresults);
		if (co->json)
			harness_report_json(co->json, st.results, (int)st.nresults, now() - st.t0);
		if (co->junit)
			harness_report_junit(co->junit, st.results, (int)st.nresults, now() - st.t0);
		if (co->html)
			harness_report_html(co->html, st.results, (int)st.nresults, now() - st.t0);
		harness_workdir_keep(root);
		free(st.results);
		free(st.fail);
		return code ? code : 3;
	}
	long ran = harness_pool_run(&p);
	double secs = now() - st.t0;
	if (st.tty || st.runs_done % 10 != 0)
		progress(&st, 1);
	if (st.tty)
		fputc('\n', stderr);
	if (st.draw_error) {
		fprintf(stderr, "ckpt-harness chaos: %s\n", st.draw_err);
		harness_workdir_remove(root);
		free(st.results);
		free(st.fail);
		return 2;
	}
	printf("chaos: seed %" PRIu64 ": %ld runs, %ld failed, %ld errors in %.1f s (%.1f runs/min)\n", co->seed,
	       ran < 0 ? 0 : ran, st.failed, st.errors, secs, secs > 0 ? (double)st.runs_done * 60.0 / secs : 0.0);
	printf("fault kinds fired:");
	for (int k = 0; k < HARNESS_CHAOS_NKINDS; k++)
		if (co->kinds & (1u << k))
			printf(" %s=%ld", harness_chaos_kind_names[k], st.fired_kind[k]);
	printf("\ncoverage:");
	for (int k = 0; k < st.npairs; k++)
		printf("%s %s", k ? "," : "", st.pairs[k]);
	printf("%s(%d phase/op pairs hit)\n", st.npairs ? " " : " none ", st.npairs);
	fflush(stdout);
	/* --first: the first failure is the one asked for (others were already running) */
	for (long i = 0; i < (co->first && st.nfail ? 1 : st.nfail) && !harness_interrupted(); i++)
		if (write_failure(&st, &st.fail[i], root) < 0)
			rc = 3;
	qsort(st.results, (size_t)st.nresults, sizeof *st.results, by_run);
	code = harness_exit_code(st.results, (int)st.nresults);
	if (co->json && harness_report_json(co->json, st.results, (int)st.nresults, secs) < 0) {
		fprintf(stderr, "ckpt-harness: cannot write %s\n", co->json);
		code = 3;
	}
	if (co->junit && harness_report_junit(co->junit, st.results, (int)st.nresults, secs) < 0) {
		fprintf(stderr, "ckpt-harness: cannot write %s\n", co->junit);
		code = 3;
	}
	int e;
	if (co->html && (e = harness_report_html(co->html, st.results, (int)st.nresults, secs)) < 0) {
		fprintf(stderr, "ckpt-harness: cannot write %s: %s\n", co->html, strerror(-e));
		code = 3;
	}
	if (!co->keep && st.nfail == 0 && st.errors == 0)
		harness_workdir_remove(root);
	else
		harness_workdir_keep(root);
	free(st.results);
	free(st.fail);
	if (harness_interrupted())
		return 128 + harness_interrupted();
	if (ran <= 0)
		return 3;
	return rc == 3 && code < 3 ? 3 : code;
}

/* ---- the command line ---- */

const char harness_chaos_usage[] =
"ckpt-harness chaos [--seed S] (--runs N | --budget DURATION | --run I) [-j N] [--faults KINDS] [--max-faults N]\n"
"                   [--scenario BASE.yaml | --preset P --world-size N --steps N --every N --ckpt-keep N]\n"
"                   [--out DIR] [--json FILE] [--junit FILE] [--html FILE] [--keep] [--no-shrink] [--shrink-budget N]\n"
"                   [--first] [--plans] [--print-plans] [--inject fiu|shim] [--cache DIR]\n"
"KINDS: all, or a comma list of kill, errno, transient, short, torn, power_loss, damage, delay, node_loss\n"
"       (node_loss: a trainer on 2 or more nodes; the node is replaced in the next attempt).\n"
"DURATION: seconds, or a number with s, m or h (90s, 5m, 1h).";

static int chaos_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "ckpt-harness chaos: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nusage: %s\n", harness_chaos_usage);
	return 2;
}

static int whole(const char *opt, const char *v, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long n = strtol(v, &end, 10);
	if (!*v || *end || errno || n < lo || n > hi) {
		fprintf(stderr, "ckpt-harness chaos: %s: '%s' is not valid; expected a whole number from %ld to %ld\n"
			"usage: %s\n", opt, v, lo, hi, harness_chaos_usage);
		return 2;
	}
	*out = n;
	return 0;
}

int harness_chaos_parse_args(int argc, char **argv, harness_chaos_opts *co, const char **cache,
			     enum harness_inject *inject)
{
	const char *base = NULL;
	long v, world = 2, steps = 20, every = 5, ckeep = 2;
	const char *preset = "tiny";
	int trainer_opts = 0, howmany = 0;

	memset(co, 0, sizeof *co);
	co->seed = 1;
	co->only_run = -1;
	co->jobs = 2;
	co->kinds = (1u << HARNESS_CHAOS_NKINDS) - 1;
	co->max_faults = 2;
	co->out_dir = "chaos-found";
	co->shrink = 1;
	co->shrink_budget = 40;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--keep") == 0) {
			co->keep = 1;
			continue;
		} else if (strcmp(a, "--no-shrink") == 0) {
			co->shrink = 0;
			continue;
		} else if (strcmp(a, "--plans") == 0) {
			co->plans_only = 1;
			continue;
		} else if (strcmp(a, "--first") == 0) {
			co->first = 1;
			continue;
		} else if (strcmp(a, "--print-plans") == 0) {
			co->print_plan = 1;
			continue;
		}
		if (a[0] != '-')
			return chaos_usage("unexpected argument '%s' (a base scenario goes with --scenario FILE)", a);
		static const char *const valued[] = { "--seed", "--runs", "--run", "--budget", "-j", "--faults",
						      "--max-faults", "--shrink-budget", "--scenario", "--preset",
						      "--world-size", "--steps", "--every", "--ckpt-keep", "--out", "--json",
						      "--junit", "--html", "--cache", "--inject", NULL };
		int known = 0;
		for (int k = 0; valued[k] && !known; k++)
			known = strcmp(a, valued[k]) == 0;
		if (!known)
			return chaos_usage("unknown option '%s'", a);
		if (!val)
			return chaos_usage("%s needs a value", a);
		i++;
		if (strcmp(a, "--seed") == 0) {
			char *end;
			errno = 0;
			unsigned long long s = strtoull(val, &end, 10);
			if (!*val || *end || errno || val[0] == '-')
				return chaos_usage("--seed: '%s' is not valid; expected a whole number >= 0", val);
			co->seed = s;
		} else if (strcmp(a, "--runs") == 0) {
			if (whole(a, val, 1, 100000000, &co->runs))
				return 2;
			howmany++;
		} else if (strcmp(a, "--run") == 0) {
			if (whole(a, val, 0, 100000000, &co->only_run))
				return 2;
			howmany++;
		} else if (strcmp(a, "--budget") == 0) {
			char *end;
			double d = strtod(val, &end);
			double unit = strcmp(end, "") == 0 || strcmp(end, "s") == 0 ? 1 : strcmp(end, "m") == 0 ? 60
				      : strcmp(end, "h") == 0 ? 3600 : -1;
			if (end == val || unit < 0 || !(d > 0) || d * unit > 30 * 86400)
				return chaos_usage("--budget: '%s' is not valid; expected a duration such as 90, 90s, 5m or 1h "
						   "(at most 30 days)", val);
			co->budget_s = d * unit;
			howmany++;
		} else if (strcmp(a, "-j") == 0) {
			if (whole(a, val, 1, 64, &v))
				return 2;
			co->jobs = (int)v;
		} else if (strcmp(a, "--faults") == 0) {
			const char *bad;
			co->kinds = harness_chaos_parse_kinds(val, &bad);
			if (!co->kinds) {
				char msg[256];
				snprintf(msg, sizeof msg, "--faults: '%s' is not a fault kind; valid: all, or a comma list of "
					 "kill, errno, transient, short, torn, power_loss, damage, delay", bad);
				return chaos_usage("%s", msg);
			}
		} else if (strcmp(a, "--max-faults") == 0) {
			if (whole(a, val, 1, 8, &v))
				return 2;
			co->max_faults = (int)v;
		} else if (strcmp(a, "--shrink-budget") == 0) {
			if (whole(a, val, 1, 10000, &v))
				return 2;
			co->shrink_budget = (int)v;
		} else if (strcmp(a, "--scenario") == 0) {
			base = val;
		} else if (strcmp(a, "--preset") == 0) {
			if (strcmp(val, "tiny") && strcmp(val, "small") && strcmp(val, "large"))
				return chaos_usage("--preset: '%s' is not valid; expected tiny, small or large", val);
			preset = val;
			trainer_opts++;
		} else if (strcmp(a, "--world-size") == 0) {
			if (whole(a, val, 1, 8, &world))
				return 2;
			if (8 % world)
				return chaos_usage("--world-size: '%s' does not divide the 8 virtual workers; expected 1, 2, 4 "
						   "or 8", val);
			trainer_opts++;
		} else if (strcmp(a, "--steps") == 0) {
			if (whole(a, val, 2, 1000000, &steps))
				return 2;
			trainer_opts++;
		} else if (strcmp(a, "--every") == 0) {
			if (whole(a, val, 1, 1000000, &every))
				return 2;
			trainer_opts++;
		} else if (strcmp(a, "--ckpt-keep") == 0) {
			if (whole(a, val, 1, 1000, &ckeep))
				return 2;
			trainer_opts++;
		} else if (strcmp(a, "--out") == 0) {
			co->out_dir = val;
		} else if (strcmp(a, "--json") == 0) {
			co->json = val;
		} else if (strcmp(a, "--junit") == 0) {
			co->junit = val;
		} else if (strcmp(a, "--html") == 0) {
			co->html = val;
		} else if (strcmp(a, "--cache") == 0) {
			*cache = val;
		} else if (strcmp(a, "--inject") == 0) {
			if (strcmp(val, "fiu") == 0)
				*inject = HARNESS_INJECT_FIU;
			else if (strcmp(val, "shim") == 0)
				*inject = HARNESS_INJECT_SHIM;
			else
				return chaos_usage("--inject: '%s' is not valid; expected fiu or shim", val);
#ifndef HARNESS_HAVE_FIU
			if (*inject == HARNESS_INJECT_FIU)
				return chaos_usage("--inject %s: this build has no libfiu points; expected shim", val);
#endif
		} else {
			return chaos_usage("unknown option '%s'", a);
		}
	}
	if (howmany != 1)
		return chaos_usage("%s", howmany ? "say how many runs once: --runs N, --budget DURATION or --run I"
					 : "say how many runs: --runs N, --budget DURATION or --run I");
	if (base && trainer_opts)
		return chaos_usage("%s", "--scenario names the trainer; --preset, --world-size, --steps, --every and "
				   "--ckpt-keep go without it");
	if (base) {
		char err[2048];
		if (harness_scenario_load(base, &co->base, err, sizeof err) < 0) {
			fprintf(stderr, "%s\n", err);
			return 2;
		}
		const char *slash = strrchr(co->base.file, '/');
		char dir[4096];
		snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - co->base.file) : 1, slash ? co->base.file : ".");
		if (!realpath(dir, co->base_dir))
			snprintf(co->base_dir, sizeof co->base_dir, "%s", dir);
		return 0;
	}
	if (steps < every)
		return chaos_usage("%s", "--steps must be at least --every: a run with no save tests no checkpoint");
	/* the base trainer from the options, through the loader (its defaults and checks) */
	char text[512], err[2048];
	int n = snprintf(text, sizeof text,
			 "name: chaos\ntrainer: {preset: %s, world_size: %ld, steps: %ld, checkpoint: {every: %ld, keep: %ld}}\n"
			 "max_attempts: 4\ntimeout_s: 120\nexpect: {outcome: resume_bitwise}\n",
			 preset, world, steps, every, ckeep);
	if (harness_scenario_load_buffer("chaos.yaml", text, (size_t)n, &co->base, err, sizeof err) < 0) {
		fprintf(stderr, "ckpt-harness chaos: %s\n", err);
		return 2;
	}
	co->base.file[0] = '\0';
	return 0;
}
