#include "checkpoint.h"
#include "traj.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backends/builtin.h"
#include "ckpt/fault.h"

/* ---- the backend's communicator over MPI ---- */

static int mpi_rc(int rc)
{
	return rc == MPI_SUCCESS ? 0 : -EIO;
}

static int mpi_barrier(void *ctx)
{
	return mpi_rc(MPI_Barrier(*(MPI_Comm *)ctx));
}

static int mpi_allreduce_i64(void *ctx, int64_t *value, int max)
{
	return mpi_rc(MPI_Allreduce(MPI_IN_PLACE, value, 1, MPI_INT64_T, max ? MPI_MAX : MPI_MIN, *(MPI_Comm *)ctx));
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

/*
 * Nonblocking collectives for background saves: channel 0 is the trainer's
 * communicator, channel 1 its duplicate (see ckpt/comm.h). ctx is &k->mpi.
 */
static int mpi_istart(void *ctx, int chan, int op, const void *send, void *recv, size_t bytes, int root, void **req)
{
	const reftrain_ckpt *k = (const reftrain_ckpt *)((const char *)ctx - offsetof(reftrain_ckpt, mpi));
	MPI_Comm comm = chan == 0 ? k->mpi : k->bg;
	MPI_Request *r;
	int n = (int)bytes, rc;

	*req = NULL;
	if (bytes > INT32_MAX)
		return -EFBIG;
	if ((chan != 0 && chan != 1) || comm == MPI_COMM_NULL)
		return -EINVAL;
	if (!(r = malloc(sizeof *r)))
		return -ENOMEM;
	switch (op) {
	case 0:
		rc = MPI_Ibarrier(comm, r);
		break;
	case 1:
		rc = MPI_Igather(send, n, MPI_BYTE, recv, n, MPI_BYTE, root, comm, r);
		break;
	case 2:
		rc = MPI_Ibcast(recv, n, MPI_BYTE, root, comm, r);
		break;
	case 3:
		rc = MPI_Iallgather(send, n, MPI_BYTE, recv, n, MPI_BYTE, comm, r);
		break;
	default:
		free(r);
		return -EINVAL;
	}
	if (rc != MPI_SUCCESS) {
		free(r);
		return -EIO;
	}
	*req = r;
	return 0;
}

static int mpi_ifinish(void *ctx, void *req, int block)
{
	MPI_Request *r = req;
	int done = 1, rc;

	(void)ctx;
	rc = block ? MPI_Wait(r, MPI_STATUS_IGNORE) : MPI_Test(r, &done, MPI_STATUS_IGNORE);
	if (rc != MPI_SUCCESS || done) {
		free(r);
		return rc == MPI_SUCCESS ? 1 : -EIO;
	}
	return 0;
}

/*
 * Collective: every rank leaves with the outcome of the lowest rank that
 * failed (rc < 0) and its sentence, so all ranks take the same branch and
 * rank 0 can report a failure another rank saw. Success codes pass as they are.
 */
static int agree(MPI_Comm comm, int rc, char *err, size_t len)
{
	int rank, size, mine, first;

	MPI_Comm_rank(comm, &rank);
	MPI_Comm_size(comm, &size);
	mine = rc < 0 ? rank : size;
	MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
	if (first == size)
		return rc;
	err[len - 1] = '\0';
	MPI_Bcast(&rc, 1, MPI_INT, first, comm);
	MPI_Bcast(err, len > INT32_MAX ? INT32_MAX : (int)len, MPI_CHAR, first, comm);
	return rc;
}

/* ---- choosing and loading the backend ---- */

/* A name (not a path): letters, digits, '-', '_'. */
static int is_name(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
		      *s == '_'))
			return 0;
	return 1;
}

/* Where the backends are, resolved; buf holds PATH_MAX bytes: <dir of this executable>/../lib/ckpt-harness
 * in an installed prefix (README "Install"), else <dir of this executable>/../lib (the build tree) */
static int lib_dir(char *buf, size_t len)
{
	char exe[PATH_MAX + sizeof "/../lib/ckpt-harness"];
	ssize_t n = readlink("/proc/self/exe", exe, PATH_MAX - 1);
	char *slash;

	if (n < 0)
		return -errno;
	exe[n] = '\0';
	if (!(slash = strrchr(exe, '/')))
		return -ENOENT;
	strcpy(slash, "/../lib/ckpt-harness");
	if (realpath(exe, buf))
		return 0;
	slash[sizeof "/../lib" - 1] = '\0';
	if (!realpath(exe, buf))
		return -errno;
	(void)len;      /* buf holds PATH_MAX bytes, realpath's bound */
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "libckpt, naive": the backends installed next to reftrain, for "what is valid". */
static void installed_names(const char *dir, char *buf, size_t len)
{
	static const char pre[] = "reftrain-backend-", suf[] = ".so";
	char found[32][256], *sorted[32];
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	size_t used = 0;

	while (d && n < 32 && (e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l <= sizeof pre - 1 + sizeof suf - 1 || l >= sizeof found[0] ||
		    strncmp(e->d_name, pre, sizeof pre - 1) != 0 || strcmp(e->d_name + l - (sizeof suf - 1), suf) != 0)
			continue;
		snprintf(found[n], sizeof found[n], "%.*s", (int)(l - (sizeof pre - 1) - (sizeof suf - 1)),
			 e->d_name + sizeof pre - 1);
		sorted[n] = found[n];
		n++;
	}
	if (d)
		closedir(d);
	qsort(sorted, (size_t)n, sizeof *sorted, cmp_str);
	buf[0] = '\0';
	for (int i = 0; i < n && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", sorted[i]);
	if (n == 0)
		snprintf(buf, len, "none installed");
}

int reftrain_ckpt_load(reftrain_ckpt *k, const char *spec, char *err, size_t len)
{
	char dir[PATH_MAX], names[512];
	struct stat st;
	size_t sl;

	memset(k, 0, sizeof *k);
	k->bg = MPI_COMM_NULL;
	if (!spec) {
		k->b = reftrain_backend_libckpt();
		snprintf(k->path, sizeof k->path, "built-in libckpt");
		return 0;
	}
	if (lib_dir(dir, sizeof dir) < 0)
		snprintf(dir, sizeof dir, "lib");
	sl = strlen(spec);
	if (strchr(spec, '/') || (sl > 3 && strcmp(spec + sl - 3, ".so") == 0)) {
		/* dlopen searches the library path for a name without '/': a path must say where it is */
		snprintf(k->path, sizeof k->path, "%s%s", strchr(spec, '/') ? "" : "./", spec);
	} else if (is_name(spec)) {
		snprintf(k->path, sizeof k->path, "%s/reftrain-backend-%s.so", dir, spec);
	} else {
		installed_names(dir, names, sizeof names);
		snprintf(err, len, "--ckpt-backend: '%s' is neither a path to a backend .so nor a backend name "
			 "(letters, digits, '-', '_'); installed in %s: %s", spec, dir, names);
		return -EINVAL;
	}
	const char *why = stat(k->path, &st) < 0 ? strerror(errno) : !S_ISREG(st.st_mode) ? "not a regular file" : NULL;
	if (why) {
		installed_names(dir, names, sizeof names);
		snprintf(err, len, "--ckpt-backend %s: %s: %s; give a path to a backend .so or the name of one "
			 "installed in %s: %s", spec, k->path, why, dir, names);
		return -EINVAL;
	}
	if (!(k->dl = dlopen(k->path, RTLD_NOW | RTLD_LOCAL))) {
		snprintf(err, len, "--ckpt-backend %s: cannot load %s: %s", spec, k->path, dlerror());
		return -EINVAL;
	}
	reftrain_backend_entry_fn entry;
	*(void **)&entry = dlsym(k->dl, REFTRAIN_BACKEND_ENTRY);
	if (!entry) {
		snprintf(err, len, "--ckpt-backend %s: %s does not export %s(), so it is not a reftrain checkpoint "
			 "backend (see reference_trainer/include/reftrain/backend.h)", spec, k->path,
			 REFTRAIN_BACKEND_ENTRY);
		goto bad;
	}
	k->b = entry();
	if (!k->b) {
		snprintf(err, len, "--ckpt-backend %s: %s: %s() returned NULL", spec, k->path, REFTRAIN_BACKEND_ENTRY);
		goto bad;
	}
	if (k->b->abi != REFTRAIN_BACKEND_ABI) {
		snprintf(err, len, "--ckpt-backend %s: %s speaks backend ABI %" PRIu32 "; this reftrain speaks ABI %d: "
			 "rebuild it against this reftrain's reftrain/backend.h", spec, k->path, k->b->abi,
			 REFTRAIN_BACKEND_ABI);
		goto bad;
	}
	if (!k->b->open || !k->b->save || !k->b->restore || !k->b->close || !k->b->last_error) {
		snprintf(err, len, "--ckpt-backend %s: %s: the backend table lacks %s, which every backend must have",
			 spec, k->path, !k->b->open ? "open" : !k->b->save ? "save" : !k->b->restore ? "restore"
			 : !k->b->close ? "close" : "last_error");
		goto bad;
	}
	return 0;
bad:
	dlclose(k->dl);
	k->dl = NULL;
	k->b = NULL;
	return -EINVAL;
}

static reftrain_backend_dtype dtype_of(enum reftrain_dtype t)
{
	return t == REFTRAIN_F32 ? REFTRAIN_BACKEND_F32 : t == REFTRAIN_BF16 ? REFTRAIN_BACKEND_BF16
	     : t == REFTRAIN_U64 ? REFTRAIN_BACKEND_U64 : REFTRAIN_BACKEND_U8;
}

/* Mutants (test builds only): a whole component left out of the checkpoint. */
static int mutant_unsaved(const char *component)
{
	ckpt_mutant_reached("rng_not_saved");
	ckpt_mutant_reached("data_cursor_not_saved");
	ckpt_mutant_reached("loss_scaler_not_saved");
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
	int rc;

	k->h = NULL;
	k->mpi = t->comm;
	k->bg = MPI_COMM_NULL;
	if (t->cfg.ckpt_async && MPI_Comm_dup(t->comm, &k->bg) != MPI_SUCCESS) {
		snprintf(err, len, "cannot duplicate the communicator for background saves");
		return -EIO;
	}
	k->comm = (reftrain_backend_comm){ .ctx = &k->mpi, .rank = t->rank, .size = t->world,
					   .barrier = mpi_barrier, .allreduce_i64 = mpi_allreduce_i64,
					   .bcast = mpi_bcast, .gather = mpi_gather,
					   .istart = k->bg != MPI_COMM_NULL ? mpi_istart : NULL,
					   .ifinish = k->bg != MPI_COMM_NULL ? mpi_ifinish : NULL };
	k->ntensors = 0;
	for (int i = 0; i < t->reg.ncomps; i++) {
		const reftrain_component *c = &t->reg.comps[i];
		if (mutant_unsaved(c->name))
			continue;
		for (int j = 0; j < c->ntensors; j++) {
			const reftrain_tensor *x = &c->tensors[j];
			ckpt_mutant_reached("adam_moments_not_saved");
#ifdef CKPT_MUTANT_ADAM_MOMENTS_NOT_SAVED
			if (strncmp(x->name, "opt.exp_avg", 11) == 0)
				continue;      /* mutant: the moments start from zero after a restart */
#endif
			k->tensors[k->ntensors++] = (reftrain_backend_tensor){
				.name = x->name, .component = c->name, .dtype = dtype_of(x->dtype),
				.layout = x->layout == REFTRAIN_REPLICATED ? REFTRAIN_BACKEND_REPLICATED
									   : REFTRAIN_BACKEND_PER_RANK,
				.data = x->data, .local_elems = x->local_elems, .global_elems = x->global_elems,
				.global_offset = x->global_offset,
			};
		}
	}
	k->cfg = (reftrain_backend_config){
		.root = t->cfg.ckpt_dir, .rank = t->rank, .world_size = t->world, .keep = t->cfg.keep,
		.config_hash = reftrain_config_hash(&t->cfg), .tensors = k->tensors, .ntensors = k->ntensors,
		.comm = &k->comm, .validate = validate_restored, .validate_arg = t,
		.incremental = t->cfg.ckpt_incremental, .full_every = t->cfg.ckpt_full_every,
		.chunk_bytes = t->cfg.ckpt_chunk_bytes, .key_file = t->cfg.ckpt_key_file,
		/* the tiny preset's shards are a few KiB: small chunks, so a shard has several */
		.seal_chunk_bytes = strcmp(t->cfg.preset, "tiny") == 0 ? 4096 : 0,
		.fast_root = t->cfg.ckpt_fast_dir,
		.durable_keep_every = t->cfg.ckpt_durable_every,
	};
	err[0] = '\0';
	rc = k->b->open(&k->h, &k->cfg, err, len);
	if (rc < 0 && !err[0])
		snprintf(err, len, "checkpoint backend %s: open %s: %s", k->b->name, t->cfg.ckpt_dir, strerror(-rc));
	if ((rc = agree(k->mpi, rc, err, len)) < 0 && k->h) {
		k->b->close(k->h);     /* another rank failed: every rank ends up without a handle */
		k->h = NULL;
	}
	return rc;
}

void reftrain_ckpt_close(reftrain_ckpt *k)
{
	if (k->b && k->h)
		k->b->close(k->h);
	k->h = NULL;
	if (k->dl)
		dlclose(k->dl);
	k->dl = NULL;
	k->b = NULL;
	if (k->bg != MPI_COMM_NULL)
		MPI_Comm_free(&k->bg);
}

/* The backend's sentence for a failure, or the errno's if it left none. */
static void backend_error(reftrain_ckpt *k, int rc, const char *what, char *err, size_t len)
{
	const char *m = k->b->last_error(k->h);

	if (m && m[0])
		snprintf(err, len, "%s", m);
	else
		snprintf(err, len, "checkpoint backend %s: %s failed: %s", k->b->name, what, strerror(-rc));
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

/*
 * Collective: a restore is one state, so every rank must have restored the
 * same step, or every rank nothing. A backend whose ranks read files that
 * nothing ties together (the naive one) can come back with a mix; train on
 * it and the ranks' step counts part ways, so refuse it here with the steps.
 */
static int agree_on_step(reftrain_ckpt *k, int rc, uint64_t step, char *err, size_t len)
{
	int64_t mine = rc == 0 ? (int64_t)(step & INT64_MAX) : -1, lo = mine, hi = mine;

	mpi_allreduce_i64(&k->mpi, &lo, 0);
	mpi_allreduce_i64(&k->mpi, &hi, 1);
	if (lo == hi)
		return rc;

	int64_t *all = calloc((size_t)k->comm.size, sizeof *all);
	if (!all)
		MPI_Abort(k->mpi, 1);
	MPI_Allgather(&mine, 1, MPI_INT64_T, all, 1, MPI_INT64_T, k->mpi);
	size_t n = (size_t)snprintf(err, len, "checkpoint backend %s restored a mix of states:", k->b->name);
	for (int r = 0; r < k->comm.size && n < len; r++) {
		if (all[r] < 0)
			n += (size_t)snprintf(err + n, len - n, "%s rank %d nothing", r ? "," : "", r);
		else
			n += (size_t)snprintf(err + n, len - n, "%s rank %d step %" PRId64, r ? "," : "", r, all[r]);
	}
	free(all);
	return -EBADMSG;
}

int reftrain_ckpt_restore(reftrain_ckpt *k, reftrain_trainer *t, reftrain_backend_restored *info, char *err,
			  size_t len)
{
	const reftrain_component *skip = NULL;
	void *initial = NULL;
	char why[512];

	for (int i = 0; t->cfg.test_skip_restore && i < t->reg.ncomps; i++)
		if (strcmp(t->reg.comps[i].name, t->cfg.test_skip_restore) == 0)
			skip = &t->reg.comps[i];
	if (skip)
		initial = snapshot(skip);

	memset(info, 0, sizeof *info);
	err[0] = '\0';
	int rc = k->b->restore(k->h, info);
	if (rc < 0) {
		backend_error(k, rc, "restore", err, len);
	} else if (rc == 0 && validate_restored(t, info->step, why, sizeof why) < 0) {
		/* the backend's word is not enough: the trainer checks what it will train on */
		snprintf(err, len, "checkpoint backend %s restored %s, which the trainer refuses: %s", k->b->name,
			 info->name, why);
		rc = -EBADMSG;
	} else if (rc != 0 && rc != REFTRAIN_BACKEND_NOTHING) {
		snprintf(err, len, "checkpoint backend %s: restore returned %d, which is not a documented outcome",
			 k->b->name, rc);
		rc = -EPROTO;
	}
	rc = agree(k->mpi, rc, err, len);
	if (rc >= 0)
		rc = agree_on_step(k, rc, info->step, err, len);

	if (rc == 0 && skip && initial)
		put_back(skip, initial);
	free(initial);
	if (rc == 0) {
		t->step = info->step;
		ckpt_mutant_reached("master_from_bf16");
		if (t->sched.count > 0)
			ckpt_mutant_reached("sched_off_by_one");
#ifdef CKPT_MUTANT_MASTER_FROM_BF16
		for (size_t i = t->shard.begin; i < t->shard.end; i++)      /* mutant: fp32 master from the bf16 copy */
			t->master[i - t->shard.begin] = reftrain_bf16_to_f32(t->params[i]);
#endif
#ifdef CKPT_MUTANT_SCHED_OFF_BY_ONE
		if (t->sched.count > 0)
			t->sched.count--;      /* mutant: the schedule resumes one step behind */
#endif
		reftrain_trainer_rederive(t);
	}
	return rc;
}

int reftrain_ckpt_save(reftrain_ckpt *k, reftrain_trainer *t, char *err, size_t len)
{
	/* "best": the lowest loss so far was reached since the previous save */
	unsigned flags = t->user.best_step + t->cfg.ckpt_every > t->step ? REFTRAIN_BACKEND_SAVE_BEST : 0;
	int rc;

	err[0] = '\0';
	if ((rc = k->b->save(k->h, t->step, flags)) < 0)
		backend_error(k, rc, "save", err, len);
	return agree(k->mpi, rc < 0 ? rc : 0, err, len);
}

static int write_alert_list(int fd, const ckpt_alert *a, int n)
{
	int rc = 0;

	for (int i = 0; i < n && rc == 0; i++) {
		reftrain_line l;
		reftrain_line_reset(&l);
		reftrain_line_add(&l, "{\"event\":\"alert\",\"step\":%" PRIu64 ",\"rank\":%d,\"metric\":\"%s\",\"value\":%.6f,"
				  "\"median\":%.6f,\"mad\":%.6f,\"threshold\":%.6f,\"samples\":%u}", a[i].step, a[i].rank,
				  ckpt_alert_metric_name(a[i].metric), a[i].value, a[i].median, a[i].mad, a[i].threshold,
				  a[i].samples);
		rc = reftrain_traj_write(fd, &l);
	}
	return rc;
}

int reftrain_ckpt_write_alerts(reftrain_ckpt *k, int fd)
{
	const ckpt_alert *a;
	int n = k->b == reftrain_backend_libckpt() ? reftrain_libckpt_alerts(k->h, &a) : 0;

	return write_alert_list(fd, a, n);
}

int reftrain_ckpt_write_async_alerts(reftrain_ckpt *k, int fd)
{
	const ckpt_alert *a;
	int n = k->b == reftrain_backend_libckpt() ? reftrain_libckpt_async_alerts(k->h, &a) : 0;

	return write_alert_list(fd, a, n);
}

int reftrain_ckpt_list(reftrain_ckpt *k, reftrain_backend_generation *gens, int max, char *err, size_t len)
{
	int rc;

	if (!k->b->list) {
		snprintf(err, len, "checkpoint backend %s cannot list its generations", k->b->name);
		return -ENOTSUP;
	}
	if ((rc = k->b->list(k->h, gens, max)) < 0)
		backend_error(k, rc, "list", err, len);
	return rc;
}
