#include "crashstate.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "ckpt/ckpt.h"
#include "ckpt/inspect.h"
#include "fake_comm.h"
#include "jsonl.h"
#include "launch.h"
#include "parts.h"
#include "powerloss.h"
#include "workdir.h"

#define MAX_T 64

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the layout of a generation, from its manifest ----------------------- */

typedef struct cs_tensor {
	char name[64], comp[32];
	int rank, stage;
	ckpt_dtype dt;
	size_t local, global, off;
} cs_tensor;

typedef struct cs_layout {
	cs_tensor t[MAX_T * 8];
	int n;
	int world;
	uint64_t config_hash;
} cs_layout;

static size_t dt_size(ckpt_dtype d)
{
	return d == CKPT_F32 ? 4 : d == CKPT_BF16 ? 2 : d == CKPT_U64 ? 8 : 1;
}

/*
 * The layout through libckpt (ckpt_inspect_layout), which reads every
 * manifest version it wrote: version 2 no longer lists each rank's tensors.
 */
static int load_layout(const char *manifest, cs_layout *L)
{
	char gen[4096];
	ckpt_inspect_tensor *v;
	int n, rc;

	snprintf(gen, sizeof gen, "%s", manifest);
	char *slash = strrchr(gen, '/');
	if (slash)
		*slash = '\0';
	if ((rc = ckpt_inspect_layout(gen, &v, &n, &L->world, &L->config_hash)) < 0)
		return rc;
	L->n = 0;
	for (int i = 0; i < n && L->n < MAX_T * 8; i++) {
		cs_tensor *x = &L->t[L->n++];
		snprintf(x->name, sizeof x->name, "%s", v[i].name);
		snprintf(x->comp, sizeof x->comp, "%s", v[i].component);
		x->rank = v[i].rank;
		x->stage = v[i].stage;
		x->dt = (ckpt_dtype)v[i].dtype;
		x->local = (size_t)v[i].local_elems;
		x->global = (size_t)v[i].global_elems;
		x->off = (size_t)v[i].global_offset;
	}
	free(v);
	return 0;
}

/* ---- a restore-only check: threads as ranks ------------------------------- */

typedef struct cs_check {
	const char *root;
	const cs_layout *L;
	void *buf[MAX_T * 8];
	int rc[8];
	uint64_t step[8];
	char err[512];
} cs_check;

typedef struct rank_arg {
	cs_check *c;
} rank_arg;

static void rank_restore(ckpt_comm *comm, void *p)
{
	cs_check *c = ((rank_arg *)p)->c;
	ckpt_state *st;
	ckpt *ck = NULL;
	ckpt_error e;
	ckpt_restore_info info;
	ckpt_config cfg = { .root = c->root, .keep_last = 1000, .config_hash = c->L->config_hash };

	ckpt_state_new(&st);
	for (int i = 0; i < c->L->n; i++) {
		const cs_tensor *x = &c->L->t[i];
		if (x->rank == comm->rank)
			ckpt_state_add_tensor(st, x->name, x->comp, (ckpt_stage)x->stage, x->dt, c->buf[i], x->local, x->global,
					      x->off);
	}
	int rc = ckpt_open(&ck, &cfg, comm, st, &e);
	if (rc == 0) {
		rc = ckpt_restore(ck, &info);
		if (rc < 0 && comm->rank == 0)
			snprintf(c->err, sizeof c->err, "%s", ckpt_last_error(ck)->msg);
		c->step[comm->rank] = info.step;
	} else if (comm->rank == 0) {
		snprintf(c->err, sizeof c->err, "%s", e.msg);
	}
	c->rc[comm->rank] = rc;
	ckpt_close(ck);
	ckpt_state_free(st);
}

static const char *const comps[] = { "params", "master", "opt", "rng", "data", "sched", "scaler", "user" };

/* The trainer's digest: per tensor, rank 0's copy if replicated, else every rank's part in rank order. */
static uint64_t digest(const cs_check *c, const char *comp)
{
	XXH3_state_t *st = XXH3_createState();
	const cs_layout *L = c->L;

	XXH3_64bits_reset(st);
	for (int i = 0; i < L->n; i++) {
		const cs_tensor *x = &L->t[i];
		if (x->rank != 0 || strcmp(x->comp, comp) != 0)
			continue;
		int replicated = 1;
		for (int k = 0; k < L->n; k++)
			if (strcmp(L->t[k].name, x->name) == 0 && (L->t[k].local != L->t[k].global || L->t[k].off != 0))
				replicated = 0;
		for (int r = 0; r < (replicated ? 1 : L->world); r++)
			for (int k = 0; k < L->n; k++)
				if (L->t[k].rank == r && strcmp(L->t[k].name, x->name) == 0)
					XXH3_64bits_update(st, c->buf[k], L->t[k].local * dt_size(L->t[k].dt));
	}
	uint64_t d = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return d;
}

/* ---- copying a tree (files copied, never linked: states get modified) --- */

static const char *copy_src, *copy_dst;

static int copy_visit(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	char dst[2048], buf[1 << 16];
	const char *rel = p + strlen(copy_src);
	(void)ftw;
	if (strstr(rel, "/journal") == rel)
		return 0;
	snprintf(dst, sizeof dst, "%s%s", copy_dst, rel);
	if (flag == FTW_D)
		return mkdir(dst, sb->st_mode & 0777) < 0 && errno != EEXIST ? -1 : 0;
	if (flag != FTW_F)
		return 0;
	int in = open(p, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;
	while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof buf)) > 0)
		if (write(out, buf, (size_t)n) != n)
			break;
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	return 0;
}

/* ---- golden digests ------------------------------------------------------ */

typedef struct digest_ctx {
	long step;
	uint64_t *out;
	int found;
} digest_ctx;

static int take_digests(json_t *j, void *arg)
{
	digest_ctx *d = arg;
	json_t *s = json_object_get(j, "step");
	if (!s || json_object_get(j, "event") || json_integer_value(s) != d->step)
		return 0;
	for (int c = 0; c < 8; c++)
		d->out[c] = strtoull(json_string_value(json_object_get(j, comps[c])), NULL, 16);
	d->found = 1;
	return 1;
}

static int golden_digests(const char *traj, long step, uint64_t out[8])
{
	digest_ctx d = { step, out, 0 };
	harness_jsonl_each(traj, take_digests, &d);
	return d.found ? 0 : -ENOENT;
}

/* ---- the trainer's acknowledgement, on the undo record's clock ---------- */

typedef struct ack_ctx {
	long step;
	uint64_t t;
	int found;
} ack_ctx;

static int take_ack(json_t *j, void *arg)
{
	ack_ctx *a = arg;
	json_t *s = json_object_get(j, "step"), *t = json_object_get(j, "t");
	if (json_is_integer(s) && json_is_integer(t) && json_integer_value(s) == a->step && !a->found) {
		a->t = (uint64_t)json_integer_value(t);
		a->found = 1;
	}
	return a->found;
}

/*
 * Where the trainer acknowledged step S among the recorded operations: the
 * number of operations that began before its `committed` record was out
 * (the ack clock, $CKPT_ACK_LOG: CLOCK_MONOTONIC, as the undo record). A
 * crash state that has all of them could have happened after the
 * acknowledgement. -1 if the trainer's acknowledgement was not recorded.
 */
static int trainer_ack_index(const char *ack_log, const harness_undo *u, int i0, long S)
{
	ack_ctx a = { S, 0, 0 };
	int i = i0;

	harness_jsonl_each(ack_log, take_ack, &a);
	if (!a.found)
		return -1;
	while (i < u->n && u->v[i].t < a.t)
		i++;
	return i;
}

/* ---- exploration --------------------------------------------------------- */

typedef struct state {
	const char *kind;
	int k;                  /* operations of the save applied */
	int drop;               /* single dropped operation, or -1 */
	int torn;               /* torn bytes, or 0 */
	unsigned char *sel;
} state;

static void write_scenario(const harness_cs_opts *o, const harness_undo *u, int i0, const state *s, int idx,
			   const char *why, char *path, size_t len)
{
	long S = o->step, E = o->step / 2;
	int h = u->n > 0 ? (s->k + i0 < u->n ? s->k + i0 : -1) : -1;
	FILE *f;

	snprintf(path, len, "%s/crashstate-%03d.yaml", o->out_dir, idx);
	if (!(f = fopen(path, "w")))
		return;
	fprintf(f, "# Found by ckpt-harness crashstates: %s\n# %s\n", s->kind, why);
	fprintf(f, "name: crashstate-%03d\n", idx);
	fprintf(f, "description: A crash state of the save of step %ld that violates the checkpoint contract.\n", S);
	fprintf(f, "trainer: {preset: %s, world_size: %d, steps: %ld, checkpoint: {every: %ld, keep: 3%s}}\nfaults:\n",
		o->preset, o->world, S + E, E, o->async ? ", async: true" : "");
	const char *action = strcmp(s->kind, "crash") == 0 ? "kill" : "power_loss";
	if (s->torn)
		fprintf(f, "# the last write torn at %d bytes\n", s->torn);
	if (h >= 0) {
		const harness_undo_rec *x = &u->v[h];
		char base[1024];
		int nth = 0;
		snprintf(base, sizeof base, "%s", x->path);
		const char *b = basename(base);
		for (int j = i0; j <= h; j++) {
			char bb[1024];
			snprintf(bb, sizeof bb, "%s", u->v[j].path);
			nth += u->v[j].rank == x->rank && strcmp(u->v[j].call, x->call) == 0 && strcmp(basename(bb), b) == 0;
		}
		fprintf(f, "  - when: {rank: %d, step: %ld, op: %s, path: \"%s\", nth: %d}\n    do: %s\n", x->rank, S,
			x->call, b, nth, action);
	} else {
		fprintf(f, "  - when: {rank: 0, step: %ld, phase: train.step}\n    do: %s\n", S + 1, action);
	}
	fprintf(f, "expect: {outcome: resume_bitwise}\n");
	fclose(f);
}

/* ---- the states, enumerated once, checked in parallel --------------------- */

typedef struct cs_item {
	state s;
	int h;                  /* index of the first operation not applied */
} cs_item;

/* One state's verdict, in memory shared with the checking processes. */
typedef struct cs_verdict {
	int done;
	char why[1020];
} cs_verdict;

typedef struct cs_ctx {
	const harness_cs_opts *o;
	const harness_undo *u;
	const cs_layout *L;
	const char *root;       /* the recording's final checkpoint root */
	int i0, ack, tack;
	long S, E;
	uint64_t gold_new[8], gold_old[8];
} cs_ctx;

static int add_item(cs_item **items, unsigned char **sels, int *n, int *cap, size_t nsel, const state *s, int h,
		    const unsigned char *sel)
{
	if (*n == *cap) {
		int c = *cap ? *cap * 2 : 256;
		cs_item *ni = realloc(*items, sizeof *ni * (size_t)c);
		if (!ni)
			return -ENOMEM;
		*items = ni;
		unsigned char *ns = realloc(*sels, nsel * (size_t)c);
		if (!ns)
			return -ENOMEM;
		*sels = ns;
		*cap = c;
	}
	memcpy(*sels + nsel * (size_t)*n, sel, nsel);
	(*items)[*n].s = *s;
	(*items)[*n].h = h;
	(*n)++;
	return 0;
}

/*
 * Every distinct crash state of the save whose operations start at i0, in
 * a fixed order (crash point, then variant). Each item's sel (the
 * operations undone) points into *sels once the list is complete.
 */
static int enumerate_states(const harness_undo *u, int i0, cs_item **items, unsigned char **sels)
{
	int ops = u->n - i0, n = 0, cap = 0;
	size_t nsel = (size_t)u->n + 1;
	uint64_t *seen = calloc((size_t)(ops + 1) * (size_t)(ops + 8) * 2 + 16, sizeof *seen);
	unsigned char *sel = calloc(nsel, 1);
	int nseen = 0, rc = 0;

	*items = NULL;
	*sels = NULL;
	if (!seen || !sel)
		rc = -ENOMEM;
	for (int k = 0; rc == 0 && k <= ops; k++) {
		int h = i0 + k;
		for (int v = 0; rc == 0 && v < 6 + ops; v++) {
			state s = { .k = k, .drop = -1 };
			memset(sel, 0, nsel);
			for (int j = h; j < u->n; j++)
				sel[j] = 1;
			if (v == 0) {
				s.kind = "crash";
			} else if (v <= 3) {
				s.kind = v == 1 ? "power loss" : v == 2 ? "power loss, unsynced data only" : "power loss, unsynced names only";
				for (int j = 0; j < h; j++)
					if (!harness_undo_durable(u, j, h) &&
					    (v == 1 || (v == 2) == !harness_undo_is_entry_op(&u->v[j])))
						sel[j] = 1;
			} else if (v <= 5) {
				int B = v == 4 ? 512 : 4096;
				if (k == 0 || strcmp(u->v[h - 1].op, "write") != 0 || u->v[h - 1].len <= B)
					continue;
				s.kind = v == 4 ? "crash, last write torn at 512 bytes" : "crash, last write torn at 4096 bytes";
				s.torn = B;
			} else {
				/* one non-durable operation dropped, at sync points and at the end */
				int j = i0 + (v - 6);
				if (j >= h || (k != ops && strcmp(u->v[h - 1].op, "fsync") != 0) || harness_undo_durable(u, j, h))
					continue;
				s.kind = "power loss of one non-durable operation";
				s.drop = j;
				sel[j] = 1;
			}
			/* the same state twice is checked once */
			XXH3_state_t *hs = XXH3_createState();
			XXH3_64bits_reset(hs);
			XXH3_64bits_update(hs, sel, (size_t)u->n);
			XXH3_64bits_update(hs, &s.torn, sizeof s.torn);
			if (s.torn)
				XXH3_64bits_update(hs, &h, sizeof h);
			uint64_t key = XXH3_64bits_digest(hs);
			XXH3_freeState(hs);
			int dup = 0;
			for (int q = 0; q < nseen && !dup; q++)
				dup = seen[q] == key;
			if (dup)
				continue;
			seen[nseen++] = key;
			rc = add_item(items, sels, &n, &cap, nsel, &s, h, sel);
		}
	}
	free(seen);
	free(sel);
	if (rc < 0) {
		free(*items);
		free(*sels);
		*items = NULL;
		*sels = NULL;
		return rc;
	}
	for (int i = 0; i < n; i++)
		(*items)[i].s.sel = *sels + nsel * (size_t)i;
	return n;
}

/* Materialize one state in scratch, restore it with threads as ranks, judge it: why is "" if it holds. */
static void check_one(const cs_ctx *x, cs_check *c, const cs_item *it, const char *scratch, char *why, size_t len)
{
	const harness_undo *u = x->u;
	const state *s = &it->s;
	int h = it->h;

	harness_workdir_remove(scratch);
	copy_src = x->root;
	copy_dst = scratch;
	nftw(x->root, copy_visit, 16, FTW_PHYS);
	harness_undo_apply(u, x->root, scratch, s->sel, s->torn ? h - 1 : -1, s->torn, NULL);
	memset(c->err, 0, sizeof c->err);
	memset(c->step, 0, sizeof c->step);
	rank_arg ra = { c };
	void *args[8];
	for (int r = 0; r < x->o->world; r++)
		args[r] = &ra;
	fake_comm_run(x->o->world, rank_restore, args);

	long S = x->S, E = x->E;
	uint64_t R = c->step[0];
	why[0] = '\0';
	if (c->rc[0] < 0) {
		snprintf(why, len, "restore refused although step %ld was valid: %s", E, c->err);
	} else if (R != (uint64_t)S && R != (uint64_t)E) {
		snprintf(why, len, "restored step %" PRIu64 ", neither the new generation (%ld) nor the previous (%ld)", R, S, E);
	} else if (x->tack >= 0 && h >= x->tack && R != (uint64_t)S) {
		snprintf(why, len, "the trainer acknowledged step %ld before it was durable: %s after the "
			 "acknowledgement restored step %" PRIu64, S,
			 strncmp(s->kind, "power loss", 10) == 0 ? "a power cut" : "a crash", R);
	} else if (h >= x->ack && R != (uint64_t)S) {
		snprintf(why, len, "the save of step %ld had been acknowledged but step %" PRIu64 " was restored", S, R);
	} else {
		const uint64_t *g = R == (uint64_t)S ? x->gold_new : x->gold_old;
		for (int q = 0; q < 8; q++)
			if (digest(c, comps[q]) != g[q]) {
				snprintf(why, len, "restored step %" PRIu64 " but its %s differ from the uninterrupted run's", R, comps[q]);
				break;
			}
	}
}

/* Check items w, w+nw, w+2nw, ... in scratch-directory base/w. */
static void check_share(const cs_ctx *x, const cs_item *items, int n, int w, int nw, const char *base, cs_verdict *res)
{
	cs_check c = { .L = x->L };
	char scratch[700];

	snprintf(scratch, sizeof scratch, "%s/%d", base, w);
	c.root = scratch;
	for (int i = 0; i < x->L->n; i++)
		c.buf[i] = calloc(x->L->t[i].local + 1, dt_size(x->L->t[i].dt));
	for (int i = w; i < n; i += nw) {
		check_one(x, &c, &items[i], scratch, res[i].why, sizeof res[i].why);
		res[i].done = 1;
	}
	harness_workdir_remove(scratch);
	for (int i = 0; i < x->L->n; i++)
		free(c.buf[i]);
}

/*
 * Where states are materialized: a fresh directory in /dev/shm when it is a
 * tmpfs with room for a few copies of the root (creating and deleting small
 * files there costs a fraction of what it costs on a disk file system, and
 * the restore-only check does not depend on the file system: what a power
 * cut keeps comes from the undo record), else under work. $CKPT_HARNESS_SCRATCH
 * names the parent instead. Returns out.
 */
static uint64_t tree_bytes;

static int size_visit(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)p, (void)ftw;
	if (flag == FTW_F)
		tree_bytes += (uint64_t)sb->st_size + 4096;
	return 0;
}

static const char *scratch_base(const char *root, const char *work, char *out, size_t len)
{
	const char *parent = getenv("CKPT_HARNESS_SCRATCH");
	struct statvfs vf;

	tree_bytes = 0;
	nftw(root, size_visit, 16, FTW_PHYS);
	if (!parent || !*parent) {
		parent = "/dev/shm";
		if (access(parent, W_OK) != 0 || statvfs(parent, &vf) != 0 ||
		    (uint64_t)vf.f_bavail * vf.f_frsize < tree_bytes * 16 + (64u << 20))
			parent = NULL;
	}
	if (parent) {
		snprintf(out, len, "%s/ckpt-crashstates.XXXXXX", parent);
		if (mkdtemp(out))
			return out;
	}
	snprintf(out, len, "%s/states", work);
	mkdir(out, 0700);
	return out;
}

/*
 * Check every item, in jobs processes (0: two per online CPU), each with its
 * own scratch directory under base. The verdicts land in shared memory, in
 * item order, so the report does not depend on who checked what. NULL with
 * errno set if they could not run.
 */
static cs_verdict *check_states(const cs_ctx *x, const cs_item *items, int n, const char *base, int jobs)
{
	size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(cs_verdict);
	cs_verdict *res = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pids[64];
	/*
	 * Default: two per online CPU. A check is mostly its ranks' threads
	 * handing over to each other at the restore's collectives, so one
	 * process per CPU leaves the CPUs idle much of the time (measured with
	 * bench/bench_crashstates.sh on 2 CPUs: 1 process 730-790 states/s,
	 * 2: 825-867, 4: 1064-1700, 6 and 8 no better).
	 */
	int nw = jobs > 0 ? jobs : 2 * (int)sysconf(_SC_NPROCESSORS_ONLN);

	if (res == MAP_FAILED)
		return NULL;
	if (nw < 1)
		nw = 1;
	if (nw > 64)
		nw = 64;
	if (nw > n)
		nw = n > 0 ? n : 1;
	if (nw == 1) {
		check_share(x, items, n, 0, 1, base, res);
		return res;
	}
	fflush(NULL);
	for (int w = 0; w < nw; w++) {
		pids[w] = fork();
		if (pids[w] == 0) {
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() == 1)
				_exit(3);
			check_share(x, items, n, w, nw, base, res);
			_exit(0);
		}
		if (pids[w] < 0) {
			/* the shares of the processes not forked are checked here */
			for (int v = w; v < nw; v++)
				check_share(x, items, n, v, nw, base, res);
			nw = w;
			break;
		}
	}
	for (int w = 0; w < nw; w++)
		while (waitpid(pids[w], NULL, 0) < 0 && errno == EINTR)
			;
	for (int i = 0; i < n; i++)
		if (!res[i].done) {
			munmap(res, bytes);
			errno = ECHILD;
			return NULL;
		}
	return res;
}

int harness_crashstates(const harness_cs_opts *o)
{
	char work[] = "/tmp/ckpt-crashstates.XXXXXX", root[600], scratch[600], undo[600], traj[600], keep[700];
	char steps[32], every[32], log[600], manifest[700], env[700], ack_env[700], ack_log[600], *argv[32];
	harness_job_result jr;
	harness_undo u = { 0 };
	cs_layout *L = calloc(1, sizeof *L);
	uint64_t gold_new[8], gold_old[8];
	long S = o->step, E = o->step / 2;
	int states = 0, violations = 0, rc = 3;
	double t_run0 = now(), t_run, t0;
	json_t *vlist = json_array();

	if (S < 2 || S % 2) {
		fprintf(stderr, "ckpt-harness: crashstates: --step must be even and at least 2 (the save before it is at step/2)\n");
		return 2;
	}
	if (!mkdtemp(work))
		return 3;
	snprintf(root, sizeof root, "%s/ckpt", work);
	snprintf(undo, sizeof undo, "%s/undo", work);
	snprintf(keep, sizeof keep, "%s.keep", undo);
	snprintf(traj, sizeof traj, "%s/run.jsonl", work);
	snprintf(log, sizeof log, "%s/run.log", work);
	snprintf(steps, sizeof steps, "%ld", S);
	snprintf(every, sizeof every, "%ld", E);
	snprintf(env, sizeof env, "%s=%s", o->shim ? "CKPT_UNDO_LOG_SHIM" : "CKPT_UNDO_LOG", undo);
	snprintf(ack_log, sizeof ack_log, "%s/ack.jsonl", work);
	snprintf(ack_env, sizeof ack_env, "CKPT_ACK_LOG=%s", ack_log);
	mkdir(keep, 0755);

	char prog[1024];
	snprintf(prog, sizeof prog, "%s/reftrain", o->bindir);
	int n = 0;
	argv[n++] = prog;
	argv[n++] = "--preset"; argv[n++] = (char *)o->preset;
	argv[n++] = "--steps"; argv[n++] = steps;
	argv[n++] = "--trajectory"; argv[n++] = traj;
	argv[n++] = "--ckpt-dir"; argv[n++] = root;
	argv[n++] = "--ckpt-every"; argv[n++] = every;
	argv[n++] = "--keep"; argv[n++] = "3";
	if (o->incremental) {
		/* the save at S is a delta of the one at S/2: new chunks, reused ones, a recipe per rank */
		argv[n++] = "--ckpt-incremental";
		argv[n++] = "--frozen"; argv[n++] = "50";
	}
	if (o->async)
		argv[n++] = "--ckpt-async";
	argv[n] = NULL;
	char preload[PATH_MAX + 32], shim_root[sizeof root + 32];
	char shim_so[PATH_MAX];
	harness_part_path(shim_so, sizeof shim_so, o->bindir, "libckpt-fault-shim.so");
	snprintf(preload, sizeof preload, "LD_PRELOAD=%s", shim_so);
	snprintf(shim_root, sizeof shim_root, "CKPT_HARNESS_CKPT_DIR=%s", root);
	const char *envv[5] = { env, ack_env, NULL };
	if (o->shim) {
		envv[2] = preload;
		envv[3] = shim_root;
	}
	harness_launch_init();
	if (harness_launch_run(&harness_local_mpirun, o->world, work, 600, envv, (const char *const *)argv, log, &jr) < 0 ||
	    !jr.exited || jr.status != 0) {
		fprintf(stderr, "ckpt-harness: crashstates: the recording run failed; see %s\n", log);
		goto out;
	}
	t_run = now() - t_run0;
	snprintf(manifest, sizeof manifest, "%s/step-%08ld/manifest.json", root, S);
	if (load_layout(manifest, L) < 0 || golden_digests(traj, S, gold_new) < 0 || golden_digests(traj, E, gold_old) < 0) {
		fprintf(stderr, "ckpt-harness: crashstates: cannot read %s or %s\n", manifest, traj);
		goto out;
	}
	char uerr[1600];
	if (harness_undo_load(&u, undo, o->world, root, uerr, sizeof uerr) < 0) {
		fprintf(stderr, "ckpt-harness: crashstates: %s\n", uerr);
		goto out;
	}
	int i0 = 0, ack = u.n;
	while (i0 < u.n && u.v[i0].step != (uint64_t)S)
		i0++;
	for (int i = i0; i < u.n; i++)        /* libckpt's view: acknowledged once LATEST is in place */
		if (strcmp(u.v[i].phase, "save.latest") == 0)
			ack = i + 1;
	/* the trainer's view: from where it said so; whichever comes first binds */
	int tack = trainer_ack_index(ack_log, &u, i0, S);
	if (tack < 0)
		fprintf(stderr, "ckpt-harness: crashstates: the trainer's acknowledgement of step %ld was not recorded "
			"(nothing in $CKPT_ACK_LOG); only libckpt's LATEST marks the save as acknowledged\n", S);
	int ops = u.n - i0;

	cs_ctx x = { .o = o, .u = &u, .L = L, .root = root, .i0 = i0, .ack = ack, .tack = tack, .S = S, .E = E };
	memcpy(x.gold_new, gold_new, sizeof gold_new);
	memcpy(x.gold_old, gold_old, sizeof gold_old);
	cs_item *items = NULL;
	unsigned char *sels = NULL;
	int nitems = enumerate_states(&u, i0, &items, &sels);
	if (nitems < 0) {
		fprintf(stderr, "ckpt-harness: crashstates: out of memory\n");
		goto out;
	}
	mkdir(o->out_dir, 0755);
	t0 = now();
	cs_verdict *res = check_states(&x, items, nitems, scratch_base(root, work, scratch, sizeof scratch), o->jobs);
	if (!res) {
		fprintf(stderr, "ckpt-harness: crashstates: the checks could not run: %s\n", strerror(errno));
		harness_workdir_remove(scratch);
		free(items);
		free(sels);
		goto out;
	}
	states = nitems;
	for (int i = 0; i < nitems; i++) {
		const state *s = &items[i].s;
		const char *why = res[i].why;
		if (!why[0])
			continue;
		char spath[800] = "";
		if (violations < 20)
			write_scenario(o, &u, i0, s, violations + 1, why, spath, sizeof spath);
		violations++;
		json_array_append_new(vlist, json_pack("{s:s,s:i,s:i,s:s,s:s}", "state", s->kind, "after_ops", s->k,
						      "dropped", s->drop >= 0 ? s->drop - i0 : -1, "why", why,
						      "scenario", spath));
		fprintf(stderr, "VIOLATION after %d of %d operations (%s): %s%s%s\n", s->k, ops, s->kind, why,
			spath[0] ? " -> " : "", spath);
	}
	munmap(res, (size_t)nitems * sizeof *res);
	harness_workdir_remove(scratch);
	double secs = now() - t0;
	printf("crash states of the save of step %ld (%s, %d ranks, %d operations): %d checked, %d violation%s, "
	       "%.1f states/s\n", S, o->preset, o->world, ops, states, violations, violations == 1 ? "" : "s",
	       states / secs);
	if (tack >= 0)
		printf("the trainer acknowledged step %ld after %d of the %d operations\n", S, tack - i0, ops);
	if (o->json) {
		json_t *j = json_pack("{s:i,s:i,s:i,s:s,s:i,s:i,s:f,s:f,s:f,s:o,s:o}", "states_checked", states, "violations",
				      violations, "operations", ops, "preset", o->preset, "world_size", o->world, "step", (int)S,
				      "seconds", secs, "states_per_second", states / secs, "recording_seconds", t_run,
				      "violation_list", vlist, "acknowledged_after_ops",
				      tack >= 0 ? json_integer(tack - i0) : json_null());
		vlist = NULL;
		json_dump_file(j, o->json, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
		json_decref(j);
	}
	rc = violations ? 1 : 0;
	free(items);
	free(sels);
out:
	json_decref(vlist);
	harness_undo_free(&u);
	free(L);
	if (!o->keep && rc != 3)
		harness_workdir_remove(work);
	else
		fprintf(stderr, "ckpt-harness: crashstates: evidence kept in %s\n", work);
	return rc;
}
