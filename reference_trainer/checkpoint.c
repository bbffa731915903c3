#include "checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- ckpt_comm over MPI: byte blocks only, so no reduction order matters ---- */

static int mpi_rc(int rc)
{
	return rc == MPI_SUCCESS ? 0 : -EIO;
}

static int mpi_barrier(void *ctx)
{
	return mpi_rc(MPI_Barrier(*(MPI_Comm *)ctx));
}

static int mpi_gather(void *ctx, const void *send, size_t bytes, void *recv, int root)
{
	if (bytes > INT32_MAX)
		return -EFBIG;
	return mpi_rc(MPI_Gather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, root, *(MPI_Comm *)ctx));
}

static int mpi_bcast(void *ctx, void *buf, size_t bytes, int root)
{
	if (bytes > INT32_MAX)
		return -EFBIG;
	return mpi_rc(MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, *(MPI_Comm *)ctx));
}

static ckpt_stage stage_of(const char *component)
{
	if (strcmp(component, "params") == 0 || strcmp(component, "master") == 0)
		return CKPT_STAGE_MODEL;
	if (strcmp(component, "opt") == 0)
		return CKPT_STAGE_OPTIMIZER;
	if (strcmp(component, "data") == 0 || strcmp(component, "user") == 0)
		return CKPT_STAGE_DATA;
	return CKPT_STAGE_TRAINING;    /* sched, scaler, rng */
}

static ckpt_dtype dtype_of(enum reftrain_dtype t)
{
	return t == REFTRAIN_F32 ? CKPT_F32 : t == REFTRAIN_BF16 ? CKPT_BF16 : t == REFTRAIN_U64 ? CKPT_U64 : CKPT_U8;
}

/* Mutants (test builds only): a whole component left out of the checkpoint. */
static int mutant_unsaved(const char *component)
{
#if defined(CKPT_MUTANT_RNG_NOT_SAVED)
	return strcmp(component, "rng") == 0;
#elif defined(CKPT_MUTANT_DATA_CURSOR_NOT_SAVED)
	return strcmp(component, "data") == 0;
#elif defined(CKPT_MUTANT_LOSS_SCALER_NOT_SAVED)
	return strcmp(component, "scaler") == 0;
#else
	(void)component;
	return 0;
#endif
}

/*
 * Restored values are input: each scalar of the trainer's state is checked
 * against the configuration and the generation's step before the trainer
 * runs on it (a data cursor past the end of the epoch indexes outside the
 * permutation; a step past the run's end would make every attempt "resume"
 * and train nothing). Checks are ranges and invariants that every state the
 * trainer itself can reach satisfies, the initial state included. libckpt
 * calls this on every rank with the state filled; a refusal makes restore
 * pass the generation over, naming the reason.
 */
static int validate_restored(void *arg, uint64_t step, char *why, size_t len)
{
	const reftrain_trainer *t = arg;
	const reftrain_config *c = &t->cfg;
	const reftrain_sampler *s = &t->sampler;
	uint64_t per = (uint64_t)c->micro_batch * c->accum, per_replica = reftrain_sampler_per_replica(s);

#define REFUSE(...) do { snprintf(why, len, __VA_ARGS__); return -1; } while (0)
	if (step > c->steps)
		REFUSE("step %" PRIu64 " is past this run's last step %" PRIu64, step, c->steps);
	if (s->st.pos > per_replica)
		REFUSE("data cursor position %" PRIu64 " is past the %" PRIu64 " samples per reader of an epoch",
		       s->st.pos, per_replica);
	if (s->st.epoch > step || (per_replica && s->st.epoch * per_replica + s->st.pos > step * per))
		REFUSE("data cursor (epoch %" PRIu64 ", position %" PRIu64 ") is ahead of what %" PRIu64
		       " steps of %" PRIu64 " samples read", s->st.epoch, s->st.pos, step, per);
	if (s->st.epoch_gen.seed != c->seed || s->st.epoch_gen.stream != REFTRAIN_STREAM_SHUFFLE)
		REFUSE("data cursor's shuffle generator (seed %" PRIu64 ", stream %" PRIu64 ") is not this run's",
		       s->st.epoch_gen.seed, s->st.epoch_gen.stream);
	for (uint32_t w = 0; w < t->wpr; w++) {
		const reftrain_gen *g = &t->dropout[w];
		if (g->seed != c->seed || g->stream != REFTRAIN_STREAM_DROPOUT + ((uint64_t)(t->first_worker + w) << 8))
			REFUSE("dropout generator of virtual worker %u (seed %" PRIu64 ", stream %" PRIu64
			       ") is not this run's", t->first_worker + w, g->seed, g->stream);
	}
	if (t->sched.count > step)
		REFUSE("LR schedule count %" PRIu64 " is ahead of step %" PRIu64, t->sched.count, step);
	if (t->adam_step > step)
		REFUSE("optimizer step %" PRIu64 " is ahead of step %" PRIu64, t->adam_step, step);
	if (!isfinite(t->scaler.scale) || !(t->scaler.scale > 0.0f))
		REFUSE("loss scale %g is not a positive finite number", (double)t->scaler.scale);
	if (c->scaler.growth_interval && t->scaler.growth_tracker >= c->scaler.growth_interval)
		REFUSE("loss scaler growth tracker %u is not below the growth interval %u", t->scaler.growth_tracker,
		       c->scaler.growth_interval);
	if (t->scaler.skipped > step)
		REFUSE("%" PRIu64 " skipped steps in %" PRIu64 " steps", t->scaler.skipped, step);
	if (t->user.best_step > step)
		REFUSE("best step %" PRIu64 " is after step %" PRIu64, t->user.best_step, step);
#undef REFUSE
	return 0;
}

int reftrain_ckpt_open(reftrain_ckpt *k, reftrain_trainer *t, char *err, size_t len)
{
	ckpt_error e;
	int rc;

	memset(k, 0, sizeof *k);
	k->mpi = t->comm;
	k->comm = (ckpt_comm){ .ctx = &k->mpi, .rank = t->rank, .size = t->world,
			       .barrier = mpi_barrier, .gather = mpi_gather, .bcast = mpi_bcast };
	if ((rc = ckpt_state_new(&k->state)) < 0)
		return rc;
	for (int i = 0; i < t->reg.ncomps; i++) {
		const reftrain_component *c = &t->reg.comps[i];
		if (mutant_unsaved(c->name))
			continue;
		for (int j = 0; j < c->ntensors; j++) {
			const reftrain_tensor *x = &c->tensors[j];
#ifdef CKPT_MUTANT_ADAM_MOMENTS_NOT_SAVED
			if (strncmp(x->name, "opt.exp_avg", 11) == 0)
				continue;      /* mutant: the moments start from zero after a restart */
#endif
			rc = ckpt_state_add_tensor(k->state, x->name, c->name, stage_of(c->name), dtype_of(x->dtype),
						   x->data, x->local_elems, x->global_elems, x->global_offset);
			if (rc < 0) {
				snprintf(err, len, "cannot register %s: %s", x->name, strerror(-rc));
				return rc;
			}
		}
	}
	ckpt_config cfg = { .root = t->cfg.ckpt_dir, .keep_last = t->cfg.keep, .keep_best = 1,
			    .config_hash = reftrain_config_hash(&t->cfg), .validate = validate_restored,
			    .validate_arg = t };
	if ((rc = ckpt_open(&k->c, &cfg, &k->comm, k->state, &e)) < 0)
		snprintf(err, len, "%s", e.msg[0] ? e.msg : ckpt_describe(rc));
	return rc;
}

void reftrain_ckpt_close(reftrain_ckpt *k)
{
	ckpt_close(k->c);
	ckpt_state_free(k->state);
	k->c = NULL;
	k->state = NULL;
}

/* Test only: a copy of one component's initial state, to put back after restore. */
static void *snapshot(const reftrain_component *c)
{
	size_t total = 0;
	for (int j = 0; j < c->ntensors; j++)
		total += c->tensors[j].local_elems * reftrain_dtype_size(c->tensors[j].dtype);
	char *buf = malloc(total + 1), *p = buf;
	for (int j = 0; buf && j < c->ntensors; j++) {
		size_t n = c->tensors[j].local_elems * reftrain_dtype_size(c->tensors[j].dtype);
		memcpy(p, c->tensors[j].data, n);
		p += n;
	}
	return buf;
}

static void put_back(const reftrain_component *c, const char *buf)
{
	for (int j = 0; j < c->ntensors; j++) {
		size_t n = c->tensors[j].local_elems * reftrain_dtype_size(c->tensors[j].dtype);
		memcpy(c->tensors[j].data, buf, n);
		buf += n;
	}
}

int reftrain_ckpt_restore(reftrain_ckpt *k, reftrain_trainer *t, ckpt_restore_info *info, char *err, size_t len)
{
	const reftrain_component *skip = NULL;
	void *initial = NULL;

	for (int i = 0; t->cfg.test_skip_restore && i < t->reg.ncomps; i++)
		if (strcmp(t->reg.comps[i].name, t->cfg.test_skip_restore) == 0)
			skip = &t->reg.comps[i];
	if (skip)
		initial = snapshot(skip);

	int rc = ckpt_restore(k->c, info);

	if (rc == 0 && skip && initial)
		put_back(skip, initial);
	free(initial);
	if (rc == 0) {
		t->step = info->step;
#ifdef CKPT_MUTANT_MASTER_FROM_BF16
		for (size_t i = t->shard.begin; i < t->shard.end; i++)      /* mutant: fp32 master from the bf16 copy */
			t->master[i - t->shard.begin] = reftrain_bf16_to_f32(t->params[i]);
#endif
#ifdef CKPT_MUTANT_SCHED_OFF_BY_ONE
		if (t->sched.count > 0)
			t->sched.count--;      /* mutant: the schedule resumes one step behind */
#endif
		reftrain_trainer_rederive(t);
	} else if (rc != -CKPT_ENOGEN) {
		snprintf(err, len, "%s", ckpt_last_error(k->c)->msg);
	}
	return rc;
}

int reftrain_ckpt_save(reftrain_ckpt *k, reftrain_trainer *t, char *err, size_t len)
{
	/* "best": the lowest loss so far was reached since the previous save */
	unsigned tags = t->user.best_step + t->cfg.ckpt_every > t->step ? CKPT_TAG_BEST : 0;
	int rc = ckpt_save(k->c, t->step, tags);
	if (rc < 0)
		snprintf(err, len, "%s", ckpt_last_error(k->c)->msg);
	return rc;
}
