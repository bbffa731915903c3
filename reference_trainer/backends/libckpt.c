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
			  .full_every = cfg->full_every, .chunk_bytes = cfg->chunk_bytes, .fast_root = cfg->fast_root,
			  .keep_every = cfg->durable_keep_every };
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

int reftrain_libckpt_async_prepare(void *h)
{
	lk *k = h;
	int rc = ckpt_async_set_policy(k->c, CKPT_ASYNC_WAIT);

	if (rc < 0)
		snprintf(k->err, sizeof k->err, "cannot allocate the staging copy for background saves: %s",
			 ckpt_describe(rc));
	return rc;
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
