/*
 * libckpt as a reftrain checkpoint backend. One source, two builds: linked
 * into reftrain as its built-in default (reftrain_backend_libckpt), and as
 * the plug-in reftrain-backend-libckpt.so (REFTRAIN_BACKEND_PLUGIN, entry
 * reftrain_backend_v1), so a scenario can show that libckpt loaded like any
 * user's backend passes what the built-in one passes. Both call the same
 * libckpt.so, so its libfiu points and phase names are the same.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/async.h"
#include "ckpt/ckpt.h"
#include "ckpt/inspect.h"
#include "reftrain/backend.h"
#if __has_include("ckpt_version.h")
#include "ckpt_version.h"
#endif

typedef struct lk {
	ckpt *c;
	ckpt_state *state;
	ckpt_comm comm;
	const reftrain_backend_comm *bc;
	const char *root;
	char err[512];
} lk;

/* ---- ckpt_comm over the backend comm: libckpt moves byte blocks only ---- */

static int lk_barrier(void *ctx)
{
	const reftrain_backend_comm *bc = ((lk *)ctx)->bc;
	return bc->barrier(bc->ctx);
}

static int lk_gather(void *ctx, const void *send, size_t bytes, void *recv, int root)
{
	const reftrain_backend_comm *bc = ((lk *)ctx)->bc;
	return bc->gather(bc->ctx, send, bytes, recv, root);
}

static int lk_bcast(void *ctx, void *buf, size_t bytes, int root)
{
	const reftrain_backend_comm *bc = ((lk *)ctx)->bc;
	return bc->bcast(bc->ctx, buf, bytes, root);
}

/* Restore fills the model first, then the optimizer, the schedule and RNG, the data cursor last. */
static ckpt_stage stage_of(const char *component)
{
	if (strcmp(component, "params") == 0 || strcmp(component, "master") == 0)
		return CKPT_STAGE_MODEL;
	if (strcmp(component, "opt") == 0)
		return CKPT_STAGE_OPTIMIZER;
	if (strcmp(component, "data") == 0 || strcmp(component, "user") == 0)
		return CKPT_STAGE_DATA;
	return CKPT_STAGE_TRAINING;    /* sched, scaler, rng, accum */
}

static ckpt_dtype dtype_of(reftrain_backend_dtype t)
{
	return t == REFTRAIN_BACKEND_F32 ? CKPT_F32 : t == REFTRAIN_BACKEND_BF16 ? CKPT_BF16
	     : t == REFTRAIN_BACKEND_U64 ? CKPT_U64 : CKPT_U8;
}

static void lk_close(void *h)
{
	lk *k = h;

	if (!k)
		return;
	ckpt_close(k->c);
	ckpt_state_free(k->state);
	free(k);
}

/*
 * The environment's part of the configuration (reftrain(1), ENVIRONMENT):
 * CKPT_EXPERIMENT and CKPT_CODE_VERSION (default: the commit this was built
 * from) label each manifest; CKPT_ALERT tunes the save alerts, "off" or
 * "window=N,warmup=N,k=X,floor=SECONDS,ratio=X,fails=N" (any subset).
 */
static int lk_env(ckpt_config *c, char *err, size_t len)
{
	const char *spec = getenv("CKPT_ALERT"), *cv = getenv("CKPT_CODE_VERSION");

	c->experiment = getenv("CKPT_EXPERIMENT");
#if __has_include("ckpt_version.h")
	c->code_version = cv ? cv : CKPT_COMMIT;
#else
	c->code_version = cv;
#endif
	if (!spec || !*spec)
		return 0;
	if (strcmp(spec, "off") == 0) {
		c->alert.off = 1;
		return 0;
	}
	for (const char *p = spec; *p;) {
		char key[16], *end;
		size_t n = strcspn(p, "=");
		double v;
		if (n == 0 || n >= sizeof key || p[n] != '=')
			goto bad;
		memcpy(key, p, n);
		key[n] = '\0';
		v = strtod(p + n + 1, &end);
		if (end == p + n + 1 || (*end && *end != ',') || !(v > 0 && v <= 1e6))
			goto bad;
		if (strcmp(key, "window") == 0)
			c->alert.window = (uint32_t)v;
		else if (strcmp(key, "warmup") == 0)
			c->alert.warmup = (uint32_t)v;
		else if (strcmp(key, "k") == 0)
			c->alert.k = v;
		else if (strcmp(key, "floor") == 0)
			c->alert.floor_seconds = v;
		else if (strcmp(key, "ratio") == 0)
			c->alert.floor_ratio = v;
		else if (strcmp(key, "fails") == 0)
			c->alert.fail_streak = (uint32_t)v;
		else
			goto bad;
		p = *end ? end + 1 : end;
	}
	return 0;
bad:
	snprintf(err, len, "CKPT_ALERT='%.100s': expected off or KEY=VALUE,... with KEY window, warmup, k, floor, ratio "
		 "or fails and VALUE a positive number", spec);
	return -EINVAL;
}

static int lk_open(void **out, const reftrain_backend_config *cfg, char *err, size_t len)
{
	lk *k = calloc(1, sizeof *k);
	ckpt_error e;
	int rc;

	*out = NULL;
	if (!k) {
		snprintf(err, len, "libckpt backend: out of memory");
		return -ENOMEM;
	}
	k->bc = cfg->comm;
	k->root = cfg->root;
	k->comm = (ckpt_comm){ .ctx = k, .rank = cfg->rank, .size = cfg->world_size,
			       .barrier = lk_barrier, .gather = lk_gather, .bcast = lk_bcast };
	if ((rc = ckpt_state_new(&k->state)) < 0) {
		snprintf(err, len, "libckpt backend: cannot create the state registry: %s", strerror(-rc));
		goto fail;
	}
	for (size_t i = 0; i < cfg->ntensors; i++) {
		const reftrain_backend_tensor *x = &cfg->tensors[i];
		rc = ckpt_state_add_tensor(k->state, x->name, x->component, stage_of(x->component), dtype_of(x->dtype),
					   x->data, x->local_elems, x->global_elems, x->global_offset);
		if (rc < 0) {
			snprintf(err, len, "cannot register %s: %s", x->name, strerror(-rc));
			goto fail;
		}
	}
	ckpt_config c = { .root = cfg->root, .keep_last = cfg->keep, .keep_best = 1, .config_hash = cfg->config_hash,
			  .validate = cfg->validate, .validate_arg = cfg->validate_arg, .incremental = cfg->incremental,
			  .full_every = cfg->full_every, .chunk_bytes = cfg->chunk_bytes, .key_file = cfg->key_file,
			  .seal_chunk_bytes = cfg->seal_chunk_bytes, .fast_root = cfg->fast_root,
			  .keep_every = cfg->durable_keep_every };
	if ((rc = lk_env(&c, err, len)) < 0)
		goto fail;
	if ((rc = ckpt_open(&k->c, &c, &k->comm, k->state, &e)) < 0) {
		snprintf(err, len, "%s", e.msg[0] ? e.msg : ckpt_describe(rc));
		goto fail;
	}
	*out = k;
	return 0;
fail:
	lk_close(k);
	return rc;
}

static int lk_save(void *h, uint64_t step, unsigned flags)
{
	lk *k = h;
	int rc = ckpt_save(k->c, step, flags & REFTRAIN_BACKEND_SAVE_BEST ? CKPT_TAG_BEST : 0);

	if (rc < 0)
		snprintf(k->err, sizeof k->err, "%s", ckpt_last_error(k->c)->msg);
	return rc;
}

static int lk_restore(void *h, reftrain_backend_restored *out)
{
	lk *k = h;
	ckpt_restore_info info;
	int rc = ckpt_restore(k->c, &info);

	if (rc == -CKPT_ENOGEN)
		return REFTRAIN_BACKEND_NOTHING;
	if (rc < 0) {
		snprintf(k->err, sizeof k->err, "%s", ckpt_last_error(k->c)->msg);
		return rc;
	}
	out->step = info.step;
	snprintf(out->name, sizeof out->name, "%s", info.name);
	out->nfallbacks = 0;
	for (int i = 0; i < info.nfallbacks && i < REFTRAIN_BACKEND_MAX_FALLBACKS; i++) {
		snprintf(out->fallbacks[i].name, sizeof out->fallbacks[i].name, "%s", info.fallbacks[i].name);
		snprintf(out->fallbacks[i].why, sizeof out->fallbacks[i].why, "%s", info.fallbacks[i].why);
		out->nfallbacks++;
	}
	return 0;
}

/* ckpt-tool ls's listing: restore's own scan and checks, read only. */
static int lk_list(void *h, reftrain_backend_generation *gens, int max)
{
	lk *k = h;
	ckpt_gen_report *reps = NULL;
	int n = 0, rc = ckpt_inspect_list(k->root, &reps, &n);

	if (rc < 0) {
		snprintf(k->err, sizeof k->err, "%s: cannot list generations: %s", k->root, ckpt_describe(rc));
		return rc;
	}
	for (int i = 0; i < n && i < max; i++) {
		gens[i] = (reftrain_backend_generation){ .step = reps[i].step, .valid = reps[i].valid };
		snprintf(gens[i].name, sizeof gens[i].name, "%s", reps[i].name);
		if (!reps[i].valid && reps[i].nproblems > 0)
			snprintf(gens[i].why, sizeof gens[i].why, "%s: %s", reps[i].problems[0].file,
				 reps[i].problems[0].why);
	}
	free(reps);
	return n;
}

static const char *lk_last_error(void *h)
{
	return h ? ((lk *)h)->err : "";
}

static const reftrain_backend table = {
	.abi = REFTRAIN_BACKEND_ABI,
	.name = "libckpt",
	.open = lk_open,
	.save = lk_save,
	.restore = lk_restore,
	.list = lk_list,
	.close = lk_close,
	.last_error = lk_last_error,
};

#ifdef REFTRAIN_BACKEND_PLUGIN
__attribute__((visibility("default"))) const reftrain_backend *reftrain_backend_v1(void);

const reftrain_backend *reftrain_backend_v1(void)
{
	return &table;
}
#else
#include "builtin.h"

const reftrain_backend *reftrain_backend_libckpt(void)
{
	return &table;
}

int reftrain_libckpt_alerts(void *h, const ckpt_alert **out)
{
	return ckpt_last_save_alerts(((lk *)h)->c, out);
}

int reftrain_libckpt_async_alerts(void *h, const ckpt_alert **out)
{
	return ckpt_async_last_alerts(((lk *)h)->c, out);
}
#endif

#ifndef REFTRAIN_BACKEND_PLUGIN
/* ---- background saves (built in only: not part of the backend ABI) ---- */
#include "builtin.h"

static void lk_done(lk *k, const ckpt_async_done *d, reftrain_async_done *out)
{
	memset(out, 0, sizeof *out);
	if (!d->completed)
		return;
	out->completed = 1;
	out->step = d->step;
	out->code = d->code;
	if (d->code < 0)
		snprintf(out->err, sizeof out->err, "%s", d->err.msg[0] ? d->err.msg : ckpt_describe(d->code));
	(void)k;
}

int reftrain_libckpt_save_async(void *h, uint64_t step, unsigned flags, reftrain_async_done *done)
{
	lk *k = h;
	ckpt_async_done d;
	int rc = ckpt_save_async(k->c, step, flags & REFTRAIN_BACKEND_SAVE_BEST ? CKPT_TAG_BEST : 0, &d);

	lk_done(k, &d, done);
	if (rc < 0)
		snprintf(k->err, sizeof k->err, "%s", ckpt_last_error(k->c)->msg);
	return rc;
}

uint64_t reftrain_libckpt_drained(void *h, int wait)
{
	lk *k = h;

	if (wait)
		ckpt_wait(k->c);
	return ckpt_drained_step(k->c);
}

/* reftrain's nonblocking collectives, for the pipelined background save */
static int lk_istart(void *ctx, int chan, int op, const void *send, void *recv, size_t bytes, int root, void **req)
{
	const reftrain_backend_comm *bc = ((lk *)ctx)->bc;
	return bc->istart(bc->ctx, chan, op, send, recv, bytes, root, req);
}

static int lk_ifinish(void *ctx, void *req, int block)
{
	const reftrain_backend_comm *bc = ((lk *)ctx)->bc;
	return bc->ifinish(bc->ctx, req, block);
}

int reftrain_libckpt_async_prepare(void *h)
{
	lk *k = h;
	int rc = ckpt_async_set_policy(k->c, CKPT_ASYNC_WAIT);

	if (rc == 0)
		rc = ckpt_async_set_deferred(k->c, 1u << CKPT_STAGE_MODEL | 1u << CKPT_STAGE_OPTIMIZER);
	if (rc == 0 && k->bc->istart && k->bc->ifinish) {
		static const ckpt_comm_nonblocking ops = { .istart = lk_istart, .ifinish = lk_ifinish };
		rc = ckpt_async_set_nonblocking(k->c, &ops);
	}
	if (rc < 0)
		snprintf(k->err, sizeof k->err, "cannot allocate the staging copy for background saves: %s",
			 ckpt_describe(rc));
	return rc;
}

void reftrain_libckpt_async_fence(void *h)
{
	ckpt_async_fence(((lk *)h)->c);
}

int reftrain_libckpt_async_poll(void *h, reftrain_async_done *done)
{
	lk *k = h;
	ckpt_async_done d;
	int rc = ckpt_async_poll(k->c, &d);

	lk_done(k, &d, done);
	if (rc < 0)
		snprintf(k->err, sizeof k->err, "communicator failed while a save was in flight: %s", ckpt_describe(rc));
	return rc;
}

int reftrain_libckpt_async_wait(void *h, reftrain_async_done *done)
{
	lk *k = h;
	ckpt_async_done d;
	int rc = ckpt_async_wait(k->c, &d);

	lk_done(k, &d, done);
	if (rc < 0)
		snprintf(k->err, sizeof k->err, "communicator failed while a save was in flight: %s", ckpt_describe(rc));
	return rc;
}
#endif
