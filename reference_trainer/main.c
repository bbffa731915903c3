/* reftrain: command line, MPI set-up, resume, the step loop, saves, the trajectory. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backends/builtin.h"
#include "checkpoint.h"
#include "ckpt/fault.h"
#include "ckpt_async.h"
#include "ckpt_version.h"
#include "elastic.h"
#include "inject.h"
#include "config.h"
#include "train.h"
#include "traj.h"

/* Under mpirun every rank parses the same argv: only the first one speaks. */
static int is_first_rank(void)
{
	const char *r = getenv("OMPI_COMM_WORLD_RANK");
	return !r || strcmp(r, "0") == 0;
}

/*
 * Bad usage: the first rank says why, every rank exits 2. Under mpirun the
 * ranks first meet in MPI_Init and leave through MPI_Finalize: a rank that
 * exited before MPI_Init would make mpirun kill the others, the first one
 * possibly before its message was out.
 */
static int bad_usage(int *argc, char ***argv, const char *err)
{
	int under_mpirun = getenv("OMPI_COMM_WORLD_SIZE") != NULL;
	if (under_mpirun)
		MPI_Init(argc, argv);
	if (is_first_rank())
		fprintf(stderr, "reftrain: %s\n", err);
	if (under_mpirun) {
		MPI_Barrier(MPI_COMM_WORLD);
		MPI_Finalize();
	}
	return 2;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A JSON string body: the messages we embed may hold quotes or paths. */
static void add_json_value(reftrain_line *l, const char *s)
{
	reftrain_line_add(l, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			reftrain_line_add(l, "\\%c", c);
		else if (c < 0x20)
			reftrain_line_add(l, "\\u%04x", c);
		else
			reftrain_line_add(l, "%c", c);
	}
	reftrain_line_add(l, "\"");
}

static void add_json_string(reftrain_line *l, const char *key, const char *s)
{
	reftrain_line_add(l, ",\"%s\":", key);
	add_json_value(l, s);
}

/* Collective (digests of the restored state); rank 0 writes. */
static int write_start(int fd, reftrain_trainer *t, const reftrain_backend_restored *info)
{
	reftrain_line l;
	const reftrain_config *c = &t->cfg;
	uint64_t digests[REFTRAIN_MAX_COMPONENTS];

	for (int i = 0; info && i < t->reg.ncomps; i++)
		digests[i] = reftrain_component_digest(t, &t->reg.comps[i]);
	if (t->rank != 0)
		return 0;
	reftrain_line_reset(&l);
	reftrain_line_add(&l, "{\"event\":\"start\",\"attempt\":%u,\"world_size\":%d", c->attempt, t->world);
	if (info) {
		reftrain_line_add(&l, ",\"restored_from\":%" PRIu64, info->step);
		add_json_string(&l, "checkpoint", info->name);     /* a plugged backend's name may hold anything */
	} else
		reftrain_line_add(&l, ",\"restored_from\":null,\"checkpoint\":null");
	reftrain_line_add(&l, ",\"preset\":\"%s\",\"seed\":%" PRIu64 ",\"steps\":%" PRIu64
			  ",\"virtual_workers\":%u,\"params\":%zu",
			  c->preset, c->seed, c->steps, c->virtual_workers, t->nparams);
	reftrain_line_digest(&l, "config_hash", reftrain_config_hash(c));
	if (info) {
		reftrain_line_add(&l, ",\"restored\":{");
		for (int i = 0; i < t->reg.ncomps; i++)
			reftrain_line_add(&l, "%s\"%s\":\"%016" PRIx64 "\"", i ? "," : "", t->reg.comps[i].name,
					  digests[i]);
		reftrain_line_add(&l, "},\"fallbacks\":[");
		for (int i = 0; i < info->nfallbacks; i++) {
			reftrain_line_add(&l, "%s{\"checkpoint\":", i ? "," : "");
			add_json_value(&l, info->fallbacks[i].name);
			add_json_string(&l, "why", info->fallbacks[i].why);
			reftrain_line_add(&l, "}");
		}
		reftrain_line_add(&l, "]");
	}
	reftrain_line_add(&l, "}");
	return reftrain_traj_write(fd, &l);
}

/* Collective: every rank computes digests, rank 0 writes the record. */
static int write_step(int fd, reftrain_trainer *t, const reftrain_step_out *o)
{
	reftrain_line l;
	uint64_t K = t->cfg.digest_every;
	int digests = K > 0 && o->step % K == 0;

	reftrain_line_reset(&l);
	reftrain_line_add(&l, "{\"step\":%" PRIu64, o->step);
	reftrain_line_f32(&l, "loss", o->loss);
	reftrain_line_f32(&l, "lr", o->lr);
	reftrain_line_f32(&l, "grad_norm", o->grad_norm);
	reftrain_line_f32(&l, "loss_scale", o->loss_scale);
	reftrain_line_add(&l, ",\"skipped\":%s", o->skipped ? "true" : "false");
	/* where the trainer's state changes regime: the harness's transition report reads these */
	reftrain_line_add(&l, ",\"epoch\":%" PRIu64 ",\"warmup\":%s", o->epoch, o->warmup ? "true" : "false");
	if (o->micro >= 0)
		reftrain_line_add(&l, ",\"micro\":%d", (int)o->micro);
	for (int i = 0; digests && i < t->reg.ncomps; i++) {
		uint64_t d = reftrain_component_digest(t, &t->reg.comps[i]);
		reftrain_line_digest(&l, t->reg.comps[i].name, d);
	}
	reftrain_line_add(&l, "}");
	return t->rank == 0 ? reftrain_traj_write(fd, &l) : 0;
}

/* Rank 0: an event record with an optional error sentence. */
static int write_event(int fd, const char *event, const char *key, uint64_t value, const char *extra_key,
		       const char *extra)
{
	reftrain_line l;

	reftrain_line_reset(&l);
	reftrain_line_add(&l, "{\"event\":\"%s\",\"%s\":%" PRIu64, event, key, value);
	if (extra_key && strcmp(extra_key, "checkpoint") == 0)
		reftrain_line_add(&l, ",\"checkpoint\":\"%s\"", extra);
	else if (extra_key)
		add_json_string(&l, extra_key, extra);
	reftrain_line_add(&l, "}");
	return reftrain_traj_write(fd, &l);
}

/*
 * --ckpt-fast-dir: a committed record says "tier":"fast" (durable against a
 * crash or power loss, not against the loss of the node), and a drained
 * record follows once the durable tier has the generation committed (durable
 * against the loss of a node's fast tier too). The oracle reads both.
 */
static int ack_tier;
static uint64_t drained_seen;

static int report_drained(reftrain_ckpt *k, int fd, int rank, int wait)
{
	uint64_t d = ack_tier ? reftrain_libckpt_drained(k->h, wait) : 0;     /* agreed: the same on every rank */

	if (d <= drained_seen)
		return 0;
	drained_seen = d;
	return rank == 0 ? write_event(fd, "drained", "step", d, NULL, NULL) : 0;
}

/* Rank 0: the acknowledgement, then its time on the ack clock (crashstates orders it among the save's operations). */
static int acknowledge(int fd, uint64_t step, const char *name)
{
	int rc;
	if (ack_tier) {
		reftrain_line l;
		reftrain_line_reset(&l);
		reftrain_line_add(&l, "{\"event\":\"committed\",\"step\":%" PRIu64 ",\"checkpoint\":\"%s\",\"tier\":\"fast\"}",
				  step, name);
		rc = reftrain_traj_write(fd, &l);
	} else {
		rc = write_event(fd, "committed", "step", step, "checkpoint", name);
	}
	if (rc == 0)
		reftrain_ack_note(step);
	return rc;
}

/*
 * --ckpt-async: a background save's outcome, reported at a step boundary:
 * the acknowledgement once it is durable, or save_failed, as a synchronous
 * save's. After the acknowledgement, the trainer phase save.acked (faults
 * "right after the acknowledgement"). < 0: stop (--ckpt-fatal), err says why.
 */
static int async_outcome(reftrain_ckpt *k, int fd, int rank, const reftrain_config *cfg, const reftrain_async_done *d,
			 char *err, size_t len)
{
	char name[32];

	if (!d->completed)
		return 0;
	snprintf(name, sizeof name, "step-%08" PRIu64, d->step);
	if (rank == 0 && reftrain_ckpt_write_async_alerts(k, fd) < 0)     /* before the acknowledgement or failure */
		MPI_Abort(MPI_COMM_WORLD, 1);
	if (d->code == 0) {
		ckpt_mutant_reached("ack_before_save");
#ifndef CKPT_MUTANT_ACK_BEFORE_SAVE
		if (rank == 0 && acknowledge(fd, d->step, name) < 0)
			MPI_Abort(MPI_COMM_WORLD, 1);
#endif
		ckpt_fault_phase(rank, d->step, "save.acked");
		return 0;
	}
	if (rank == 0) {
		fprintf(stderr, "reftrain: checkpoint at step %" PRIu64 " failed in the background: %s\n", d->step, d->err);
		write_event(fd, "save_failed", "step", d->step, "error", d->err);
	}
	if (!cfg->ckpt_fatal)
		return 0;
	snprintf(err, len, "%s", d->err);
	return -EIO;
}

/* Before the optimizer update: the save in flight has copied the model and optimizer (train.h). */
static void async_fence(void *h)
{
	reftrain_libckpt_async_fence(h);
}

/* --ckpt-async at a save step: snapshot and go on (a failed snapshot is reported like a failed save). */
static int async_save(reftrain_ckpt *k, reftrain_trainer *t, int fd, int rank, const reftrain_config *cfg, char *err,
		      size_t len)
{
	reftrain_async_done d;
	char name[32];
	int rc;

	snprintf(name, sizeof name, "step-%08" PRIu64, t->step);
	ckpt_mutant_reached("ack_before_save");
#ifdef CKPT_MUTANT_ACK_BEFORE_SAVE
	/* mutant: the acknowledgement goes out before the save has made anything durable */
	if (rank == 0 && acknowledge(fd, t->step, name) < 0)
		MPI_Abort(MPI_COMM_WORLD, 1);
#endif
	rc = reftrain_ckpt_save_async(k, t, &d, err, len);
	if (async_outcome(k, fd, rank, cfg, &d, err, len) < 0)      /* the save waited for */
		return -EIO;
	if (rc == 1 && rank == 0)
		fprintf(stderr, "reftrain: checkpoint at step %" PRIu64 " skipped: a save is in flight\n", t->step);
	if (rc >= 0)
		return 0;
	if (rank == 0) {
		fprintf(stderr, "reftrain: checkpoint at step %" PRIu64 " failed: %s\n", t->step, err);
		write_event(fd, "save_failed", "step", t->step, "error", err);
	}
	return cfg->ckpt_fatal ? -EIO : 0;
}

static int write_end_failed(int fd, uint64_t steps, const char *error)
{
	reftrain_line l;

	reftrain_line_reset(&l);
	reftrain_line_add(&l, "{\"event\":\"end\",\"status\":\"failed\",\"steps\":%" PRIu64, steps);
	add_json_string(&l, "error", error);
	reftrain_line_add(&l, "}");
	return reftrain_traj_write(fd, &l);
}

int main(int argc, char **argv)
{
	reftrain_config cfg;
	reftrain_trainer t;
	static reftrain_ckpt k;
	static reftrain_backend_restored info;
	char err[1024];
	int rc, fd = -1, status = 0, have_ckpt = 0;

	rc = reftrain_config_parse(&cfg, argc, argv, err, sizeof err);
	if (rc == REFTRAIN_PARSE_VERSION) {
		if (is_first_rank())
			printf("reftrain %s (git %s)\n", CKPT_VERSION, CKPT_COMMIT);
		return 0;
	}
	if (rc == REFTRAIN_PARSE_HELP) {
		if (is_first_rank())
			fputs(reftrain_config_usage(), stdout);
		return 0;
	}
	if (rc < 0)
		return bad_usage(&argc, &argv, err);

	/* the checkpoint code: a backend .so that cannot be used is bad usage, found before training starts */
	if (cfg.ckpt_dir && reftrain_ckpt_load(&k, cfg.ckpt_backend, err, sizeof err) < 0)
		return bad_usage(&argc, &argv, err);

	MPI_Init(&argc, &argv);
	int rank, world;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &world);
	if (cfg.virtual_workers % (uint32_t)world != 0)
		return reftrain_elastic_refuse(&cfg, world, rank);

	/* the harness's fault plan, if any, for this rank and attempt */
	if ((rc = harness_inject_arm_from_env(rank, (int)cfg.attempt)) < 0) {
		fprintf(stderr, "reftrain: rank %d: cannot arm the fault plan in $CKPT_FAULT_PLAN: %s\n", rank,
			strerror(-rc));
		MPI_Abort(MPI_COMM_WORLD, 2);
	}

	rc = reftrain_trainer_init(&t, &cfg, MPI_COMM_WORLD);
	int ok = rc == 0, all_ok;
	MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
	if (!all_ok) {
		if (rank == 0)
			fprintf(stderr, "reftrain: cannot set up the trainer: %s\n",
				rc == -EFBIG ? "model too large for MPI message counts; use more ranks"
					     : strerror(-rc));
		MPI_Finalize();
		return 1;
	}

	if (rank == 0) {
		fd = reftrain_traj_open(cfg.trajectory);
		if (fd < 0)
			fprintf(stderr, "reftrain: %s: %s\n", cfg.trajectory, strerror(-fd));
		ok = fd >= 0;
	}
	MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
	if (!ok) {
		status = 1;
		goto out;
	}

	/* libckpt's outcomes are agreed across ranks: every rank takes the same branch */
	reftrain_backend_restored *restored = NULL;
	if (cfg.ckpt_dir) {
		if ((rc = reftrain_ckpt_open(&k, &t, err, sizeof err)) < 0)
			goto failed;
		have_ckpt = 1;
		ack_tier = cfg.ckpt_fast_dir != NULL;
		if (cfg.ckpt_async) {      /* the staging copy now, not in the first background save */
			int mine = reftrain_libckpt_async_prepare(k.h) == 0, all;
			MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
			if (!all) {
				snprintf(err, sizeof err, "cannot allocate the staging copy for background saves (out of "
					 "memory on some rank)");
				rc = -ENOMEM;
				goto failed;
			}
			t.before_update = async_fence;
			t.before_update_arg = k.h;
		}
		if (cfg.resume == REFTRAIN_RESUME_AUTO) {
			rc = reftrain_ckpt_restore(&k, &t, &info, err, sizeof err);
			if (rc == 0)
				restored = &info;
			else if (rc != REFTRAIN_BACKEND_NOTHING)
				goto failed;
		}
	}
	if ((rc = write_start(fd, &t, restored)) < 0) {
		fprintf(stderr, "reftrain: %s: %s\n", cfg.trajectory, strerror(-rc));
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	if (rank == 0 && restored)
		fprintf(stderr, "reftrain: resumed from %s (%d newer generation%s passed over)\n", info.name,
			info.nfallbacks, info.nfallbacks == 1 ? "" : "s");

	double t0 = now();
	uint64_t first = t.step + 1;
	uint64_t last = cfg.stop_after && cfg.stop_after < cfg.steps ? cfg.stop_after : cfg.steps;
	while (t.step < last) {
		reftrain_step_out o;
		if (have_ckpt && cfg.ckpt_async) {      /* a step boundary: the background save progresses */
			reftrain_async_done d;
			if ((rc = reftrain_ckpt_async_poll(&k, &d, err, sizeof err)) < 0 ||
			    (rc = async_outcome(&k, fd, rank, &cfg, &d, err, sizeof err)) < 0)
				goto failed;
		}
		reftrain_trainer_step(&t, &o);
		if ((rc = write_step(fd, &t, &o)) < 0) {
			fprintf(stderr, "reftrain: %s: %s\n", cfg.trajectory, strerror(-rc));
			MPI_Abort(MPI_COMM_WORLD, 1);
		}
		if (!have_ckpt || t.step % cfg.ckpt_every != 0)
			continue;
		if (cfg.ckpt_async) {
			if ((rc = async_save(&k, &t, fd, rank, &cfg, err, sizeof err)) < 0)
				goto failed;
			continue;
		}
		char name[32];
		snprintf(name, sizeof name, "step-%08" PRIu64, t.step);
		ckpt_mutant_reached("ack_before_save");
#ifdef CKPT_MUTANT_ACK_BEFORE_SAVE
		/* mutant: the acknowledgement goes out before the save has made anything durable */
		if (rank == 0 && acknowledge(fd, t.step, name) < 0)
			MPI_Abort(MPI_COMM_WORLD, 1);
		if (reftrain_ckpt_save(&k, &t, err, sizeof err) == 0)
			continue;
#else
		rc = reftrain_ckpt_save(&k, &t, err, sizeof err);
		if (rank == 0 && reftrain_ckpt_write_alerts(&k, fd) < 0)     /* before the acknowledgement or failure */
			MPI_Abort(MPI_COMM_WORLD, 1);
		if (rc == 0) {
			/* the acknowledgement: written only once every rank has it committed */
			if (rank == 0 && acknowledge(fd, t.step, name) < 0)
				MPI_Abort(MPI_COMM_WORLD, 1);
			if (report_drained(&k, fd, rank, 0) < 0)      /* the previous save's drain, finished by this one */
				MPI_Abort(MPI_COMM_WORLD, 1);
			continue;
		}
		if (report_drained(&k, fd, rank, 0) < 0)
			MPI_Abort(MPI_COMM_WORLD, 1);
#endif
		if (rank == 0) {
			fprintf(stderr, "reftrain: checkpoint at step %" PRIu64 " failed: %s\n", t.step, err);
			write_event(fd, "save_failed", "step", t.step, "error", err);
		}
		if (cfg.ckpt_fatal) {
			rc = -EIO;
			goto failed;
		}
	}
	if (have_ckpt && cfg.ckpt_async) {      /* the last save is reported before the end record */
		reftrain_async_done d;
		if ((rc = reftrain_ckpt_async_wait(&k, &d, err, sizeof err)) < 0 ||
		    (rc = async_outcome(&k, fd, rank, &cfg, &d, err, sizeof err)) < 0)
			goto failed;
	}
	if (have_ckpt && report_drained(&k, fd, rank, 1) < 0)    /* the last save's drain, before the end record */
		MPI_Abort(MPI_COMM_WORLD, 1);
	double elapsed = now() - t0;

	if (rank == 0) {
		reftrain_line l;
		reftrain_line_reset(&l);
		reftrain_line_add(&l, "{\"event\":\"end\",\"status\":\"%s\",\"steps\":%" PRIu64 "}",
				  t.step == cfg.steps ? "done" : "stopped", t.step);
		if ((rc = reftrain_traj_write(fd, &l)) < 0 || fsync(fd) < 0) {
			fprintf(stderr, "reftrain: %s: %s\n", cfg.trajectory, strerror(rc < 0 ? -rc : errno));
			status = 1;
		}
		if (cfg.stats)
			fprintf(stderr, "reftrain: preset=%s world=%d params=%zu steps=%" PRIu64
				" seconds=%.6f steps_per_second=%.3f\n", cfg.preset, world, t.nparams,
				t.step - first + 1, elapsed, (double)(t.step - first + 1) / elapsed);
	}
	goto out;

failed:
	if (rank == 0) {
		fprintf(stderr, "reftrain: %s\n", err);
		write_end_failed(fd, t.step, err);
		fsync(fd);
	}
	status = 1;
out:
	if (have_ckpt)
		reftrain_ckpt_close(&k);
	if (fd >= 0)
		close(fd);
	reftrain_trainer_free(&t);
	MPI_Finalize();
	return status;
}
