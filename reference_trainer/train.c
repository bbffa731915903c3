#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "adamw.h"
#include "beacon.h"
#include "ckpt/fault.h"

/*
 * One of the trainer's own fault points (train.step, train.reduce): libckpt's
 * fault layer (libfiu) and the fault shim's beacon, whichever is armed, so a
 * scenario naming the step and phase reaches reftrain under either injector.
 */
static void trainer_point(const reftrain_trainer *t, uint64_t step, const char *phase)
{
	ckpt_beacon_step(step);
	ckpt_beacon_phase(phase);
	ckpt_fault_phase(t->rank, step, phase);
}

/* Gradients beyond fp16's range overflow, as they would in fp16 communication. */
#define FP16_MAX 65504.0f

static void add_tensor(reftrain_component *c, const char *name, enum reftrain_dtype dt,
		       enum reftrain_layout layout, void *data, size_t local, size_t global, size_t off)
{
	c->tensors[c->ntensors++] = (reftrain_tensor){
		.name = name, .dtype = dt, .layout = layout, .data = data,
		.local_elems = local, .global_elems = global, .global_offset = off,
	};
}

static reftrain_component *add_component(reftrain_registry *r, const char *name)
{
	reftrain_component *c = &r->comps[r->ncomps++];
	c->name = name;
	c->ntensors = 0;
	return c;
}

static void build_registry(reftrain_trainer *t)
{
	reftrain_registry *r = &t->reg;
	size_t P = t->nparams, sh = t->shard.end - t->shard.begin, b = t->shard.begin;
	size_t V = t->cfg.virtual_workers;
	const size_t gen_words = sizeof(reftrain_gen) / sizeof(uint64_t);
	reftrain_component *c;

	r->ncomps = 0;
	c = add_component(r, "params");
	add_tensor(c, "params.bf16", REFTRAIN_BF16, REFTRAIN_REPLICATED, t->params, P, P, 0);
	c = add_component(r, "master");
	add_tensor(c, "master.fp32", REFTRAIN_F32, REFTRAIN_SHARDED, t->master, sh, P, b);
	c = add_component(r, "opt");
	add_tensor(c, "opt.exp_avg", REFTRAIN_F32, REFTRAIN_SHARDED, t->exp_avg, sh, P, b);
	add_tensor(c, "opt.exp_avg_sq", REFTRAIN_F32, REFTRAIN_SHARDED, t->exp_avg_sq, sh, P, b);
	add_tensor(c, "opt.step", REFTRAIN_U64, REFTRAIN_REPLICATED, &t->adam_step, 1, 1, 0);
	c = add_component(r, "rng");
	if (t->first_worker != (uint32_t)t->rank)      /* else the mutant's offset is the same */
		ckpt_mutant_reached("worker_state_by_rank");
#ifdef CKPT_MUTANT_WORKER_STATE_BY_RANK
	/* mutant: the dropout streams placed by rank, not by worker id (same world size: no difference) */
	add_tensor(c, "rng.dropout", REFTRAIN_U64, REFTRAIN_PER_WORKER, t->dropout,
		   t->wpr * gen_words, V * gen_words, (size_t)t->rank * gen_words);
#else
	/* by worker id: worker w's stream is at w, on whichever rank hosts it (elastic.h) */
	add_tensor(c, "rng.dropout", REFTRAIN_U64, REFTRAIN_PER_WORKER, t->dropout,
		   t->wpr * gen_words, V * gen_words, t->first_worker * gen_words);
#endif
	c = add_component(r, "data");
	add_tensor(c, "data.cursor", REFTRAIN_U64, REFTRAIN_REPLICATED, &t->sampler.st,
		   sizeof t->sampler.st / 8, sizeof t->sampler.st / 8, 0);
	c = add_component(r, "sched");
	add_tensor(c, "sched.state", REFTRAIN_U8, REFTRAIN_REPLICATED, &t->sched,
		   sizeof t->sched, sizeof t->sched, 0);
	c = add_component(r, "scaler");
	add_tensor(c, "scaler.state", REFTRAIN_U8, REFTRAIN_REPLICATED, &t->scaler,
		   sizeof t->scaler, sizeof t->scaler, 0);
	c = add_component(r, "user");
	add_tensor(c, "user.blob", REFTRAIN_U8, REFTRAIN_REPLICATED, &t->user,
		   sizeof t->user, sizeof t->user, 0);
	if (t->cfg.accum_steps > 1) {
		/* gradients accumulated so far in the current window, per virtual worker */
		c = add_component(r, "accum");
		add_tensor(c, "accum.grads", REFTRAIN_F32, REFTRAIN_PER_WORKER, t->grads, t->wpr * P, V * P,
			   t->first_worker * P);
	}
}

static int alloc_all(reftrain_trainer *t)
{
	size_t P = t->nparams, W = (size_t)t->world, sh = t->shard.end - t->shard.begin;
	size_t V = t->cfg.virtual_workers, per_step = (size_t)t->cfg.micro_batch * t->cfg.accum;
	size_t chunks = reftrain_chunk_count(P);

#define ALLOC(p, n) do { if (!((p) = calloc((n) + 1, sizeof *(p)))) return -ENOMEM; } while (0)
	ALLOC(t->elem_counts, W);
	ALLOC(t->elem_displs, W);
	ALLOC(t->chunk_counts, W);
	ALLOC(t->chunk_displs, W);
	ALLOC(t->a2a_send_counts, W);
	ALLOC(t->a2a_send_displs, W);
	ALLOC(t->a2a_recv_counts, W);
	ALLOC(t->a2a_recv_displs, W);
	ALLOC(t->params, P);
	ALLOC(t->wf, P);
	ALLOC(t->master, sh);
	ALLOC(t->exp_avg, sh);
	ALLOC(t->exp_avg_sq, sh);
	ALLOC(t->dropout, t->wpr);
	ALLOC(t->grads, t->wpr * P);
	ALLOC(t->sendbuf, t->wpr * P);
	ALLOC(t->recvbuf, V * sh);
	ALLOC(t->gsum, sh);
	ALLOC(t->chunk_sq, chunks);
	ALLOC(t->chunk_all, chunks);
	ALLOC(t->losses, t->wpr);
	ALLOC(t->losses_all, V);
	ALLOC(t->batch, V * per_step);
	ALLOC(t->x, t->cfg.model.d_in);
	ALLOC(t->y, t->cfg.model.d_out);
#undef ALLOC
	return 0;
}

int reftrain_trainer_init(reftrain_trainer *t, const reftrain_config *cfg, MPI_Comm comm)
{
	int err;
	uint32_t V = cfg->virtual_workers;

	memset(t, 0, sizeof *t);
	t->cfg = *cfg;
	t->comm = comm;
	MPI_Comm_rank(comm, &t->rank);
	MPI_Comm_size(comm, &t->world);
	if (V % (uint32_t)t->world != 0)
		return -EINVAL;
	t->wpr = V / (uint32_t)t->world;
	t->first_worker = (uint32_t)t->rank * t->wpr;
	if ((err = reftrain_model_init(&t->model, &cfg->model, cfg->seed)) < 0)
		return err;
	t->nparams = t->model.nparams;
	t->shard = reftrain_shard_of(t->nparams, t->world, t->rank);
	/* MPI counts are ints: every buffer we move must fit */
	if ((uint64_t)t->wpr * t->nparams > INT32_MAX || (uint64_t)V * t->nparams / t->world > INT32_MAX)
		return -EFBIG;
	if ((err = alloc_all(t)) < 0)
		return err;

	size_t wpr = t->wpr;
	for (int r = 0; r < t->world; r++) {
		reftrain_shard s = reftrain_shard_of(t->nparams, t->world, r);
		t->elem_counts[r] = (int)(s.end - s.begin);
		t->elem_displs[r] = (int)s.begin;
		t->chunk_counts[r] = (int)(s.chunk_end - s.chunk_begin);
		t->chunk_displs[r] = (int)s.chunk_begin;
		/* to rank r: its shard of each of my workers' gradients, worker by worker */
		t->a2a_send_counts[r] = (int)(wpr * (s.end - s.begin));
		t->a2a_send_displs[r] = (int)(wpr * s.begin);
		/* from rank r: my shard of each of r's workers, which come in worker order */
		t->a2a_recv_counts[r] = (int)(wpr * (t->shard.end - t->shard.begin));
		t->a2a_recv_displs[r] = r * t->a2a_recv_counts[r];
	}

	for (size_t i = t->shard.begin; i < t->shard.end; i++)
		t->master[i - t->shard.begin] = reftrain_model_init_param(&t->model, cfg->seed, i);
	for (size_t i = 0; i < t->nparams; i++)
		t->params[i] = reftrain_f32_to_bf16(reftrain_model_init_param(&t->model, cfg->seed, i));
	for (uint32_t w = 0; w < t->wpr; w++)
		reftrain_gen_init(&t->dropout[w], cfg->seed,
				  REFTRAIN_STREAM_DROPOUT + ((uint64_t)(t->first_worker + w) << 8));
	if ((err = reftrain_sampler_init(&t->sampler, cfg->seed, cfg->samples, V)) < 0)
		return err;
	reftrain_sched_init(&t->sched);
	reftrain_scaler_init(&t->scaler, &cfg->scaler);
	t->user = (reftrain_user){ .ema_loss = 0.0f, .best_loss = INFINITY, .best_step = 0 };
	build_registry(t);
	reftrain_trainer_rederive(t);
	return 0;
}

void reftrain_trainer_free(reftrain_trainer *t)
{
	reftrain_model_free(&t->model);
	reftrain_sampler_free(&t->sampler);
	void *bufs[] = {
		t->elem_counts, t->elem_displs, t->chunk_counts, t->chunk_displs,
		t->a2a_send_counts, t->a2a_send_displs, t->a2a_recv_counts, t->a2a_recv_displs,
		t->params, t->wf, t->master, t->exp_avg, t->exp_avg_sq, t->dropout, t->grads,
		t->sendbuf, t->recvbuf, t->gsum, t->chunk_sq, t->chunk_all, t->losses,
		t->losses_all, t->batch, t->x, t->y,
	};
	for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
		free(bufs[i]);
	memset(t, 0, sizeof *t);
}

/*
 * shuffle_seed_not_saved re-seeds the shuffle in reftrain_sampler_reload
 * (reftrain_core, which links no libckpt: probed here, its one caller): that
 * changes something only once the generator has moved on from the seed.
 */
static void reach_shuffle_seed(const reftrain_sampler *s)
{
	reftrain_gen g;

	reftrain_gen_init(&g, s->seed, REFTRAIN_STREAM_SHUFFLE);
	if (g.seed != s->st.epoch_gen.seed || g.stream != s->st.epoch_gen.stream || g.pos != s->st.epoch_gen.pos)
		ckpt_mutant_reached("shuffle_seed_not_saved");
}

void reftrain_trainer_rederive(reftrain_trainer *t)
{
	for (size_t i = 0; i < t->nparams; i++)
		t->wf[i] = reftrain_bf16_to_f32(t->params[i]);
	reach_shuffle_seed(&t->sampler);
	reftrain_sampler_reload(&t->sampler);
}

static bool overflow_injected(const reftrain_config *c, uint64_t step)
{
	for (size_t i = 0; i < c->n_overflow; i++)
		if (c->overflow_steps[i] == step)
			return true;
	return false;
}

/*
 * Each local virtual worker: its micro-batches, accumulated into its
 * gradient, which starts from zero at the first step of an accumulation
 * window (every step unless --accum-steps).
 */
static void local_gradients(reftrain_trainer *t, uint64_t step, float gscale, int window_start)
{
	size_t P = t->nparams, per = (size_t)t->cfg.micro_batch * t->cfg.accum;

	for (uint32_t w = 0; w < t->wpr; w++) {
		uint32_t vw = t->first_worker + w;
		float *g = t->grads + w * P, loss = 0.0f;

		if (window_start)
			memset(g, 0, sizeof(float) * P);
		for (size_t k = 0; k < per; k++) {
			reftrain_model_sample(&t->model, t->cfg.seed, t->batch[vw * per + k], t->x, t->y);
			loss += reftrain_model_step(&t->model, t->wf, t->x, t->y, &t->dropout[w], gscale, g);
		}
		/* a deterministic overflow, as a bad batch in fp16 would produce */
		if (overflow_injected(&t->cfg, step) && vw == step % t->cfg.virtual_workers)
			g[0] = INFINITY;
		t->losses[w] = loss;
	}
}

/* Move every worker's gradient shard to its owner; sum there in worker order. */
static void reduce_gradients(reftrain_trainer *t)
{
	size_t P = t->nparams, sh = t->shard.end - t->shard.begin;

	for (int r = 0; r < t->world; r++) {
		size_t b = (size_t)t->elem_displs[r], n = (size_t)t->elem_counts[r];
		for (uint32_t w = 0; w < t->wpr; w++)
			memcpy(t->sendbuf + t->wpr * b + w * n, t->grads + w * P + b, n * sizeof(float));
	}
	/* a rank dying here leaves the others blocked in the all-to-all */
	trainer_point(t, t->step, "train.reduce");
	MPI_Alltoallv(t->sendbuf, t->a2a_send_counts, t->a2a_send_displs, MPI_FLOAT,
		      t->recvbuf, t->a2a_recv_counts, t->a2a_recv_displs, MPI_FLOAT, t->comm);
	reftrain_sum_vectors(t->gsum, t->recvbuf, t->cfg.virtual_workers, sh);
}

int reftrain_trainer_step(reftrain_trainer *t, reftrain_step_out *out)
{
	const reftrain_config *c = &t->cfg;
	size_t per = (size_t)c->micro_batch * c->accum, sh = t->shard.end - t->shard.begin;
	size_t global_batch = per * c->virtual_workers;
	uint64_t step = ++t->step;
	uint32_t A = c->accum_steps, micro = (uint32_t)((step - 1) % A);

	trainer_point(t, step, "train.step");
	float scale = t->scaler.scale;
	int local_overflow = 0, overflow = 0;

	out->step = step;
	out->micro = A > 1 ? (int32_t)micro : -1;
	out->warmup = reftrain_sched_in_warmup(&c->sched, t->sched.count);
	out->lr = reftrain_sched_step(&t->sched, &c->sched);
	out->loss_scale = scale;
	reftrain_sampler_next(&t->sampler, (uint32_t)per, t->batch);
	out->epoch = t->sampler.st.epoch;

	local_gradients(t, step, scale / ((float)global_batch * (float)A), micro == 0);
	if (micro + 1 < A) {
		/* inside an accumulation window: the loss of this step's batch, no update */
		MPI_Allgather(t->losses, (int)t->wpr, MPI_FLOAT, t->losses_all, (int)t->wpr, MPI_FLOAT, t->comm);
		out->loss = reftrain_sum_f32(t->losses_all, c->virtual_workers) / (float)global_batch;
		out->skipped = false;
		out->grad_norm = 0.0f;
		goto hook;
	}
	reduce_gradients(t);

	for (size_t i = 0; i < sh; i++)
		if (!(fabsf(t->gsum[i]) <= FP16_MAX))     /* also catches NaN */
			local_overflow = 1;
	MPI_Allreduce(&local_overflow, &overflow, 1, MPI_INT, MPI_MAX, t->comm);
	MPI_Allgather(t->losses, (int)t->wpr, MPI_FLOAT, t->losses_all, (int)t->wpr, MPI_FLOAT, t->comm);
	out->loss = reftrain_sum_f32(t->losses_all, c->virtual_workers) / (float)global_batch;

	out->skipped = reftrain_scaler_update(&t->scaler, &c->scaler, overflow != 0);
	if (out->skipped) {
		out->grad_norm = INFINITY;
	} else {
		for (size_t i = 0; i < sh; i++)
			t->gsum[i] /= scale;
		reftrain_chunk_sumsq(t->gsum, sh, reftrain_chunk_size(t->nparams), t->chunk_sq);
		MPI_Allgatherv(t->chunk_sq, t->chunk_counts[t->rank], MPI_DOUBLE, t->chunk_all,
			       t->chunk_counts, t->chunk_displs, MPI_DOUBLE, t->comm);
		double norm = sqrt(reftrain_sum_f64(t->chunk_all, reftrain_chunk_count(t->nparams)));
		float clip = norm > (double)c->clip_norm ? (float)((double)c->clip_norm / (norm + 1e-6)) : 1.0f;

		out->grad_norm = (float)norm;
		if (t->before_update)
			t->before_update(t->before_update_arg);
		t->adam_step++;
		/* frozen parameters (fine-tuning): the first ones of the vector are never updated */
		size_t frozen_end = (size_t)((uint64_t)t->nparams * c->frozen_pct / 100u);
		size_t from = frozen_end <= t->shard.begin ? 0 : frozen_end - t->shard.begin < sh ? frozen_end - t->shard.begin : sh;
		reftrain_adamw_update(&c->adamw, t->adam_step, out->lr, clip, t->master + from, t->exp_avg + from,
				      t->exp_avg_sq + from, t->gsum + from, sh - from);
		for (size_t i = from; i < sh; i++)
			t->params[t->shard.begin + i] = reftrain_f32_to_bf16(t->master[i]);
		MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, t->params, t->elem_counts,
			       t->elem_displs, MPI_UINT16_T, t->comm);
		for (size_t i = 0; i < t->nparams; i++)
			t->wf[i] = reftrain_bf16_to_f32(t->params[i]);
	}

hook:
	/* a training hook's own state: an EMA of the loss and the best step */
	t->user.ema_loss = step == 1 ? out->loss : 0.9f * t->user.ema_loss + 0.1f * out->loss;
	if (out->loss < t->user.best_loss) {
		t->user.best_loss = out->loss;
		t->user.best_step = step;
	}
	return 0;
}

/* Bytes per message when streaming a tensor to rank 0. */
#define DIGEST_PIECE (8u << 20)

uint64_t reftrain_component_digest(reftrain_trainer *t, const reftrain_component *c)
{
	XXH3_state_t *st = NULL;
	uint64_t d = 0;
	char *buf = NULL;

	if (t->rank == 0) {
		st = XXH3_createState();
		buf = malloc(DIGEST_PIECE);
		if (!st || !buf)
			MPI_Abort(t->comm, 1);
		XXH3_64bits_reset(st);
	}
	for (int i = 0; i < c->ntensors; i++) {
		const reftrain_tensor *x = &c->tensors[i];
		size_t bytes = x->local_elems * reftrain_dtype_size(x->dtype);

		if (x->layout == REFTRAIN_REPLICATED) {
			if (t->rank == 0)
				XXH3_64bits_update(st, x->data, bytes);
			continue;
		}
		if (t->rank == 0) {
			XXH3_64bits_update(st, x->data, bytes);
			for (int r = 1; r < t->world; r++) {
				uint64_t left;
				MPI_Recv(&left, 1, MPI_UINT64_T, r, 0, t->comm, MPI_STATUS_IGNORE);
				while (left > 0) {
					int n = (int)(left < DIGEST_PIECE ? left : DIGEST_PIECE);
					MPI_Recv(buf, n, MPI_BYTE, r, 1, t->comm, MPI_STATUS_IGNORE);
					XXH3_64bits_update(st, buf, (size_t)n);
					left -= (uint64_t)n;
				}
			}
		} else {
			uint64_t total = bytes;
			MPI_Send(&total, 1, MPI_UINT64_T, 0, 0, t->comm);
			for (size_t off = 0; off < bytes; off += DIGEST_PIECE) {
				size_t n = bytes - off < DIGEST_PIECE ? bytes - off : DIGEST_PIECE;
				MPI_Send((const char *)x->data + off, (int)n, MPI_BYTE, 0, 1, t->comm);
			}
		}
	}
	if (t->rank == 0) {
		d = XXH3_64bits_digest(st);
		XXH3_freeState(st);
		free(buf);
	}
	return d;
}
