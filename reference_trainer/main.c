/* reftrain: command line, MPI set-up, the step loop and the trajectory. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "train.h"
#include "traj.h"

/* Under mpirun every rank parses the same argv: only the first one speaks. */
static int is_first_rank(void)
{
	const char *r = getenv("OMPI_COMM_WORLD_RANK");
	return !r || strcmp(r, "0") == 0;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int write_start(int fd, const reftrain_trainer *t)
{
	reftrain_line l;
	const reftrain_config *c = &t->cfg;

	reftrain_line_reset(&l);
	reftrain_line_add(&l, "{\"event\":\"start\",\"attempt\":%u,\"world_size\":%d", c->attempt, t->world);
	reftrain_line_add(&l, ",\"restored_from\":null,\"checkpoint\":null");
	reftrain_line_add(&l, ",\"preset\":\"%s\",\"seed\":%" PRIu64 ",\"steps\":%" PRIu64
			  ",\"virtual_workers\":%u,\"params\":%zu",
			  c->preset, c->seed, c->steps, c->virtual_workers, t->nparams);
	reftrain_line_digest(&l, "config_hash", reftrain_config_hash(c));
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
	for (int i = 0; digests && i < t->reg.ncomps; i++) {
		uint64_t d = reftrain_component_digest(t, &t->reg.comps[i]);
		reftrain_line_digest(&l, t->reg.comps[i].name, d);
	}
	reftrain_line_add(&l, "}");
	return t->rank == 0 ? reftrain_traj_write(fd, &l) : 0;
}

int main(int argc, char **argv)
{
	reftrain_config cfg;
	reftrain_trainer t;
	char err[512];
	int rc, fd = -1, status = 0;

	rc = reftrain_config_parse(&cfg, argc, argv, err, sizeof err);
	if (rc == REFTRAIN_PARSE_HELP) {
		if (is_first_rank())
			fputs(reftrain_config_usage(), stdout);
		return 0;
	}
	if (rc < 0) {
		if (is_first_rank())
			fprintf(stderr, "reftrain: %s\n", err);
		return 2;
	}

	MPI_Init(&argc, &argv);
	int rank, world;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &world);
	if (cfg.virtual_workers % (uint32_t)world != 0) {
		if (rank == 0) {
			fprintf(stderr, "reftrain: world size %d does not divide --virtual-workers %u; valid world sizes:",
				world, cfg.virtual_workers);
			for (uint32_t d = 1; d <= cfg.virtual_workers; d++)
				if (cfg.virtual_workers % d == 0)
					fprintf(stderr, " %u", d);
			fputc('\n', stderr);
		}
		MPI_Finalize();
		return 2;
	}
	if (cfg.ckpt_dir) {
		if (rank == 0)
			fprintf(stderr, "reftrain: --ckpt-dir: checkpointing is not built into this reftrain yet\n");
		MPI_Finalize();
		return 2;
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
		else if ((rc = write_start(fd, &t)) < 0)
			fprintf(stderr, "reftrain: %s: %s\n", cfg.trajectory, strerror(-rc));
		ok = fd >= 0 && rc == 0;
	}
	MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
	if (!ok) {
		status = 1;
		goto out;
	}

	double t0 = now();
	uint64_t first = reftrain_trainer_steps_done(&t) + 1;
	while (reftrain_trainer_steps_done(&t) < cfg.steps) {
		reftrain_step_out o;
		reftrain_trainer_step(&t, &o);
		if ((rc = write_step(fd, &t, &o)) < 0) {
			fprintf(stderr, "reftrain: %s: %s\n", cfg.trajectory, strerror(-rc));
			MPI_Abort(MPI_COMM_WORLD, 1);
		}
	}
	double elapsed = now() - t0;

	if (rank == 0) {
		reftrain_line l;
		reftrain_line_reset(&l);
		reftrain_line_add(&l, "{\"event\":\"end\",\"status\":\"done\",\"steps\":%" PRIu64 "}", cfg.steps);
		if ((rc = reftrain_traj_write(fd, &l)) < 0 || fsync(fd) < 0) {
			fprintf(stderr, "reftrain: %s: %s\n", cfg.trajectory, strerror(rc < 0 ? -rc : errno));
			status = 1;
		}
		if (cfg.stats)
			fprintf(stderr, "reftrain: preset=%s world=%d params=%zu steps=%" PRIu64
				" seconds=%.6f steps_per_second=%.3f\n", cfg.preset, world, t.nparams,
				cfg.steps - first + 1, elapsed, (double)(cfg.steps - first + 1) / elapsed);
	}
out:
	if (fd >= 0)
		close(fd);
	reftrain_trainer_free(&t);
	MPI_Finalize();
	return status;
}
