/*
 * Save and restore: the commit protocol.
 *
 * Save (collective):
 *   rank 0   save.prepare     remove a stale ROOT/step-N.tmp, mkdir it, fsync ROOT
 *   all      save.shard_write write rank-R.safetensors into it (hashing as it goes)
 *   all      save.shard_sync  fsync and close the shard
 *   all      save.barrier     barrier; rank 0 gathers every rank's outcome, size, hash
 *   rank 0   save.manifest_write, save.manifest_sync (file, then the directory)
 *   rank 0   save.commit      rename step-N.tmp -> step-N (a damaged step-N aside first)
 *   rank 0   save.dir_sync    fsync ROOT: from here the generation survives power loss
 *   rank 0   save.latest      replace LATEST atomically
 *   rank 0   save.retention   delete generations the policy no longer keeps
 *   all      the outcome is broadcast: the first error anywhere fails every rank
 *
 * A generation is visible only under its final name, which it gets complete
 * and synced, so a crash at any point leaves the earlier generations as they
 * were and, at worst, a .tmp directory that the next start-up removes.
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "internal.h"
#include "chunks.h"
#include "alert.h"
#include "seal.h"
#include "reshard.h"

/* Bytes per write of a tensor: the hash of a piece runs while it is in cache. */
#define WRITE_PIECE (8u << 20)

static const char *const save_phases[] = {
	"save.prepare", "save.shard_write", "save.shard_sync", "save.barrier", "save.manifest_write",
	"save.manifest_sync", "save.commit", "save.dir_sync", "save.latest", "save.retention",
};
enum { PH_PREPARE, PH_SHARD_WRITE, PH_SHARD_SYNC, PH_BARRIER, PH_MANIFEST_WRITE, PH_MANIFEST_SYNC,
       PH_COMMIT, PH_DIR_SYNC, PH_LATEST, PH_RETENTION, PH_COUNT };

const char *const *ckpt_save_phase_names(void)
{
	return save_phases;
}

struct ckpt {
	ckpt_config cfg;
	char root[CKPT_PATH_MAX];
	int rootfd;                 /* every access is relative to it, with O_NOFOLLOW */
	ckpt_comm *comm;
	ckpt_state *state;
	ckpt_io io;
	ckpt_error err;
	ckpt_journal journal;
	ckpt_save_stats stats;
	int *order;                 /* state entries in file order */
	ckpt_tensor_entry *te;      /* this rank's tensor entries, file order */
	ckpt_entry **dst;           /* state entry of each te */
	double phase_t0;
	int phase;
	/* retention runs on rank 0 in the background, joined before the next operation */
	pthread_t retention_thread;
	int retention_running;
	uint64_t retention_step;
	ckpt_chunks *chunks;        /* incremental checkpoints (chunks.c); NULL: off */
	struct ckpt_async *async;   /* async.c; NULL until the first ckpt_save_async */
	double wait;                /* this save's time in collectives (alert.c: not the rank's own work) */
	ckpt_detector *detector;    /* rank 0; NULL with alerts off */
	ckpt_alert alerts[CKPT_ALERTS_MAX];
	char experiment[CKPT_LABEL_MAX], code_version[CKPT_LABEL_MAX];     /* the caller's labels, copied */
	int nalerts;
	ckpt_seal_key *seal;        /* seal.c: sealed files; NULL: plain */
	ckpt_tier *tier;            /* tiered storage (tier.c); NULL: one tier */
#ifdef CKPT_MUTANT_COMMIT_WITHOUT_BARRIER
	int deferred_fd;
	char deferred_path[CKPT_PATH_MAX];
#endif
};

/* What each rank reports to rank 0 at the save barrier. */
typedef struct shard_report {
	ckpt_error err;
	ckpt_file_entry file;
	double phase_seconds[PH_COUNT];
	double own_seconds;         /* up to the gather: the rank's work is done by then */
} shard_report;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A collective of the save began at t: the time since was spent waiting for peers. */
/* Is there a chunk store under the root (an incremental save made one)? For the reach probes only. */
static bool chunk_store(const ckpt *c)
{
	struct stat st;
	return fstatat(c->rootfd, "chunks", &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static void waited(ckpt *c, double t)
{
	ckpt_mutant_reached("alert_counts_wait");
#ifndef CKPT_MUTANT_ALERT_COUNTS_WAIT
	c->wait += now() - t;
#else
	(void)c;      /* mutant: a rank waiting for a slow peer looks slow itself */
	(void)t;
#endif
}

/* Enter phase ph: closes the timing of the previous one, evaluates the point. */
static int enter(ckpt *c, int ph)
{
	double t = now();

	if (c->phase >= 0 && c->phase < PH_COUNT)
		c->stats.phase_seconds[c->phase] += t - c->phase_t0;
	c->phase = ph < PH_COUNT ? ph : -1;      /* PH_COUNT: no phase running */
	c->phase_t0 = t;
	return ph < PH_COUNT ? ckpt__io_phase(&c->io, save_phases[ph]) : 0;
}

/* A path relative to the root: dir "." is the root itself. */
static int path_in(char *buf, size_t len, const char *dir, const char *name)
{
	int n = strcmp(dir, ".") == 0 ? snprintf(buf, len, "%s", name) : snprintf(buf, len, "%s/%s", dir, name);
	return n >= (int)len ? -ENAMETOOLONG : 0;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && strcmp(s + n - k, suffix) == 0;
}

static void retention_start(ckpt *c, uint64_t step);
static void retention_join(ckpt *c);

/* ---- open / close ------------------------------------------------------- */

/* Rank 0: remove what an interrupted save or retention left behind. */
static int cleanup_abandoned(ckpt *c)
{
	DIR *d;
	struct dirent *de;
	int rc;

	/* a phase of its own, so that scenarios can target start-up cleanup */
	if ((rc = ckpt__io_phase(&c->io, "open.cleanup")) < 0)
		return rc;
	if ((rc = ckpt__io_opendir(&c->io, ".", &d)) < 0)
		return rc;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, "step-", 5) != 0 && strcmp(de->d_name, "LATEST.tmp") != 0)
			continue;
		if (!ends_with(de->d_name, ".tmp") && !ends_with(de->d_name, ".replaced") &&
		    !ends_with(de->d_name, ".trash")) {
			ckpt_mutant_reached("cleanup_deletes_committed");
#ifndef CKPT_MUTANT_CLEANUP_DELETES_COMMITTED
			continue;
#else
			if (strcmp(de->d_name, "LATEST.tmp") == 0)   /* mutant: committed generations go too */
				continue;
#endif
		}
		if ((rc = ckpt__io_rmtree(&c->io, de->d_name)) < 0)
			break;
		ckpt__journal_add(&c->journal, "\"event\":\"cleanup\",\"removed\":\"%s\"", de->d_name);
	}
	closedir(d);
	return rc;
}

/* Create the root (paths as given: the root descriptor does not exist yet). */
static int mkdir_p(ckpt_io *io, const char *path, mode_t mode)
{
	char buf[CKPT_PATH_MAX];
	struct stat st;

	if (stat(path, &st) == 0)
		return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (stat(buf, &st) < 0) {
			int rc = ckpt__io_mkdir(io, buf, mode);
			if (rc < 0 && rc != -EEXIST)
				return rc;
		}
		*p = '/';
	}
	int rc = ckpt__io_mkdir(io, buf, mode);
	if (rc < 0 && rc != -EEXIST)
		return rc;
	char parent[CKPT_PATH_MAX];
	snprintf(parent, sizeof parent, "%s/..", buf);
	return ckpt__io_fsync_dir(io, parent);
}

/*
 * A root another user can write to is one where links and files can be
 * planted or swapped under us: refused unless the configuration allows it.
 */
static int check_root(ckpt *c)
{
	struct stat st;

	if (fstat(c->rootfd, &st) < 0)
		return ckpt__io_fail(&c->io, -errno, c->root, "cannot stat checkpoint root %s: %s", c->root, strerror(errno));
	if (c->cfg.allow_shared_root)
		return 0;
	if (st.st_uid != geteuid())
		return ckpt__io_fail(&c->io, -EPERM, c->root,
				     "checkpoint root %s is owned by uid %u, not by this user (uid %u): another user "
				     "could plant links or replace files there; use a root of your own, or set "
				     "ckpt_config.allow_shared_root to accept it", c->root, (unsigned)st.st_uid,
				     (unsigned)geteuid());
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return ckpt__io_fail(&c->io, -EPERM, c->root,
				     "checkpoint root %s is writable by %s (mode %04o): another user could plant links "
				     "or replace files there; make it private (chmod go-w %s), or set "
				     "ckpt_config.allow_shared_root to accept it", c->root,
				     st.st_mode & S_IWOTH ? "others" : "its group", (unsigned)(st.st_mode & 07777), c->root);
	return 0;
}

static int open_root(ckpt *c)
{
	int fd = open(c->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return ckpt__io_fail(&c->io, -errno, c->root, "cannot open checkpoint root %s: %s", c->root,
				     strerror(errno));
	c->rootfd = fd;
	c->io.rootfd = fd;
	c->io.root = c->root;
	return 0;
}

int ckpt_open(ckpt **out, const ckpt_config *cfg, ckpt_comm *comm, ckpt_state *state, ckpt_error *err)
{
	ckpt *c;
	ckpt_error agreed;
	int rc, n;

	*out = NULL;
	ckpt__error_clear(&agreed);
	if (err)
		ckpt__error_clear(err);       /* a refused configuration leaves no stale message */
	if (!cfg->root || !*cfg->root || strlen(cfg->root) >= CKPT_PATH_MAX - 256 || cfg->keep_last == 0 ||
	    (cfg->file_mode & ~07777u) || (cfg->dir_mode & ~07777u) ||
	    (cfg->fast_root && (!*cfg->fast_root || strlen(cfg->fast_root) >= CKPT_PATH_MAX - 256 || cfg->incremental)))
		return -EINVAL;
	if (!(c = calloc(1, sizeof *c)))
		return -ENOMEM;
	c->cfg = *cfg;
	if (!c->cfg.file_mode)
		c->cfg.file_mode = CKPT_DEFAULT_FILE_MODE;
	if (!c->cfg.dir_mode)
		c->cfg.dir_mode = CKPT_DEFAULT_DIR_MODE;
	snprintf(c->root, sizeof c->root, "%s", cfg->root);
	c->cfg.root = c->root;
	c->comm = comm;
	c->state = state;
	c->phase = -1;
	c->rootfd = -1;
	c->journal.fd = -1;
	c->journal.dirfd = -1;
#ifdef CKPT_MUTANT_COMMIT_WITHOUT_BARRIER
	c->deferred_fd = -1;
#endif
	c->io = (ckpt_io){ .rootfd = -1, .rank = comm->rank, .step = 0, .phase = "open", .err = &c->err, .journal = NULL };
	n = state->n;
	c->te = calloc((size_t)n + 1, sizeof *c->te);
	c->dst = calloc((size_t)n + 1, sizeof *c->dst);
	if (!c->te || !c->dst || (rc = ckpt__state_order(state, &c->order)) < 0) {
		ckpt_close(c);
		return -ENOMEM;
	}
	if (cfg->incremental && (rc = ckpt__chunks_new(&c->chunks, cfg->chunk_bytes, cfg->full_every,
						       (mode_t)c->cfg.file_mode, (mode_t)c->cfg.dir_mode)) < 0) {
		ckpt_close(c);
		return rc;
	}
	for (int k = 0; k < n; k++)
		c->dst[k] = &state->e[c->order[k]];
	char why[160] = "";
	if ((rc = ckpt__alert_config_resolve(&cfg->alert, &c->cfg.alert, why, sizeof why)) < 0 ||
	    (rc = ckpt__labels_check(cfg)) < 0 ||
	    (comm->rank == 0 && !c->cfg.alert.off && (rc = ckpt__detector_new(&c->detector, &c->cfg.alert, comm->size)) < 0)) {
		if (err)
			ckpt__error_set(err, rc, "%s", why[0] ? why : rc == -EINVAL ? "experiment and code_version labels "
					"must be printable ASCII, at most 127 bytes" : "out of memory");
		ckpt_close(c);
		return rc;
	}
	snprintf(c->experiment, sizeof c->experiment, "%s", cfg->experiment ? cfg->experiment : "");
	snprintf(c->code_version, sizeof c->code_version, "%s", cfg->code_version ? cfg->code_version : "");
	c->cfg.experiment = c->experiment;
	c->cfg.code_version = c->code_version;
	if (ckpt__seal_setup(&c->io, cfg, &c->seal) == 0)     /* a refusal is agreed below, like the root's */
		c->io.seal = c->seal;
	if (c->seal) {
		uint64_t bytes = 0;
		for (int k = 0; k < state->n; k++)
			bytes += (uint64_t)state->e[k].local_elems * ckpt__dtype_size(state->e[k].dtype);
		ckpt__seal_prepare(c->seal, bytes);
	}

	if (comm->rank == 0 && c->err.code == 0) {
		if ((rc = mkdir_p(&c->io, c->root, c->cfg.dir_mode)) == 0 && (rc = open_root(c)) == 0 &&
		    (rc = check_root(c)) == 0 &&
		    (rc = ckpt__journal_open(&c->journal, c->rootfd, c->root, 0, cfg->journal_max_bytes,
					     c->cfg.file_mode, c->cfg.dir_mode)) == 0) {
			c->io.journal = &c->journal;
			rc = cleanup_abandoned(c);
			if (rc == 0) {
				/* chunks no committed generation references (a crashed save's); journaled, never fatal */
				ckpt_error warn;
				ckpt__error_clear(&warn);
				c->io.err = &warn;
				ckpt__chunks_gc(&c->io, &c->journal, "open.gc");
				c->io.err = &c->err;
			}
		}
		if (rc < 0)
			ckpt__io_fail(&c->io, rc, c->root, "cannot open checkpoint root %s: %s", c->root,
				      rc == -ELOOP ? "journal/ is a symbolic link (never followed)" :
				      rc == -EINVAL ? "a journal file is not a regular file" : ckpt_describe(rc));
	}
	/* the same state layout on every rank: compare entry counts */
	int counts_ok = 1;
	int *counts = comm->rank == 0 ? calloc((size_t)comm->size, sizeof *counts) : NULL;
	comm->gather(comm->ctx, &n, sizeof n, counts, 0);
	for (int r = 0; counts && r < comm->size; r++)
		counts_ok &= counts[r] == n;
	free(counts);
	if (comm->rank == 0 && !counts_ok && c->err.code == 0)
		ckpt__io_fail(&c->io, -CKPT_ECONFIG, NULL, "ranks registered different numbers of tensors");
	if ((rc = ckpt__agree(comm, &c->err, &agreed)) == 0)
		rc = agreed.code;
	if (rc == 0 && comm->rank != 0 && (rc = open_root(c)) == 0 &&
	    (rc = ckpt__journal_open(&c->journal, c->rootfd, c->root, comm->rank, cfg->journal_max_bytes,
				     c->cfg.file_mode, c->cfg.dir_mode)) == 0)
		c->io.journal = &c->journal;
	if (rc == 0 && cfg->fast_root &&      /* tiered: saves go to the fast root from here */
	    (rc = ckpt__tier_open(&c->tier, &c->cfg, comm, &c->journal, &c->rootfd, c->root, &c->io)) < 0)
		agreed = c->err;
	if (rc < 0) {
		if (err)
			*err = agreed.code ? agreed : c->err;
		ckpt_close(c);
		return rc;
	}
	ckpt__journal_add(&c->journal, "\"event\":\"open\",\"rank\":%d,\"world_size\":%d,\"pid\":%d",
			  comm->rank, comm->size, (int)getpid());
	*out = c;
	return 0;
}

void ckpt_close(ckpt *c)
{
	if (!c)
		return;
	ckpt__async_free(c);
	ckpt__tier_drain_finish(c->tier);
	retention_join(c);
	ckpt__tier_free(c->tier, &c->rootfd);
	ckpt__journal_close(&c->journal);
	if (c->rootfd >= 0)
		close(c->rootfd);
	free(c->order);
	free(c->te);
	free(c->dst);
	ckpt__chunks_free(c->chunks);
	ckpt__detector_free(c->detector);
	ckpt__seal_key_free(c->seal);
	free(c);
}

const ckpt_error *ckpt_last_error(const ckpt *c)
{
	return &c->err;
}

const ckpt_save_stats *ckpt_last_save_stats(const ckpt *c)
{
	return &c->stats;
}

int ckpt_last_save_alerts(const ckpt *c, const ckpt_alert **out)
{
	*out = c->alerts;
	return c->nalerts;
}

/* ---- save --------------------------------------------------------------- */

static int prepare(ckpt *c, const char *tmp)
{
	int rc;

	if ((rc = enter(c, PH_PREPARE)) < 0)
		return rc;
	if ((rc = ckpt__io_rmtree(&c->io, tmp)) < 0)        /* a failed earlier try */
		return rc;
	if ((rc = ckpt__io_mkdir(&c->io, tmp, (mode_t)c->cfg.dir_mode)) < 0)
		return rc;
	return ckpt__io_fsync_dir(&c->io, ".");
}

/* A piece of the shard: sealed (seal.c), or hashed and written as it is. */
static int shard_out(ckpt_sealw *w, XXH3_state_t *st, ckpt_wstream *ws, const void *p, size_t n)
{
	if (w)
		return ckpt__sealw_write(w, p, n);
	XXH3_64bits_update(st, p, n);
	return ckpt__wstream_write(ws, p, n);
}

static int write_shard(ckpt *c, const char *tmp, uint64_t step, ckpt_file_entry *fe)
{
	char path[CKPT_PATH_MAX], *hdr = NULL;
	ckpt_sealw *sw = NULL;
	ckpt_wstream *ws = NULL;
	size_t hdr_len;
	XXH3_state_t *st = XXH3_createState();
	int fd = -1, rc;
	uint64_t size;

	if (c->chunks)      /* incremental: the chunks first, then the recipe in the shard's place */
		ckpt__recipe_name(fe->name, sizeof fe->name, c->comm->rank);
	else
		ckpt__shard_name(fe->name, sizeof fe->name, c->comm->rank);
	fe->rank = c->comm->rank;
	if (!st) {
		rc = ckpt__io_fail(&c->io, -ENOMEM, NULL, "out of memory");
		goto out;
	}

	if ((rc = enter(c, PH_SHARD_WRITE)) < 0 || (rc = path_in(path, sizeof path, tmp, fe->name)) < 0)
		goto out;
	if (c->chunks) {
		if ((rc = ckpt__chunks_save(c->chunks, &c->io, c->dst, c->state->n)) < 0)
			goto out;
		c->io.phase = save_phases[PH_SHARD_WRITE];    /* the recipe is this rank's shard */
	}
	if ((rc = ckpt__shard_header(c->state, c->order, c->comm->rank, c->comm->size, step, c->te, &hdr,
				     &hdr_len)) < 0) {
		ckpt__io_fail(&c->io, rc, path, "cannot build the shard header");
		goto out;
	}
	if ((fd = ckpt__io_open(&c->io, path, O_WRONLY | O_CREAT | O_EXCL, (mode_t)c->cfg.file_mode)) < 0) {
		rc = fd;
		goto out;
	}
	XXH3_64bits_reset(st);
	uint64_t plain_bytes = hdr_len;
	for (int k = 0; !c->chunks && k < c->state->n; k++)
		plain_bytes += c->te[k].nbytes;
	if ((rc = ckpt__wstream_open(&ws, &c->io, fd, path, plain_bytes)) < 0)
		goto out;
	if (c->seal && (rc = ckpt__sealw_begin(&sw, c->seal, &c->io, ws, path, step, c->comm->rank, fe->name,
					       plain_bytes)) < 0)
		goto out;
	if (sw)
		ckpt__sealw_stable(sw);     /* the header and the state's tensors stay put until sealw_end */
	if ((rc = shard_out(sw, st, ws, hdr, hdr_len)) < 0)
		goto out;
	size = hdr_len;
	if (c->chunks) {
		size_t tlen;
		const unsigned char *tab = ckpt__chunks_table(c->chunks, &tlen);
		XXH3_64bits_update(st, tab, tlen);
		if ((rc = ckpt__wstream_write(ws, tab, tlen)) < 0)
			goto out;
		size += tlen;
	}
	for (int k = 0; !c->chunks && k < c->state->n; k++) {
		const char *d = c->dst[k]->data;
		for (uint64_t off = 0; off < c->te[k].nbytes;) {
			size_t n = c->te[k].nbytes - off < WRITE_PIECE ? (size_t)(c->te[k].nbytes - off) : WRITE_PIECE;
			if ((rc = shard_out(sw, st, ws, d + off, n)) < 0)
				goto out;
			off += n;
		}
		size += c->te[k].nbytes;
	}
	fe->hash = XXH3_64bits_digest(st);
	if (sw) {      /* with a key the manifest lists the sealed file's size and stream identity */
		rc = ckpt__sealw_end(sw, &size, &fe->hash);
		sw = NULL;
		if (rc < 0)
			goto out;
	}
	if ((rc = ckpt__wstream_finish(ws)) < 0)
		goto out;
	if (c->comm->rank != 0) {    /* also covers save_now's deferred sync, which only follows this */
		/*
		 * A durability bug: what the mutant changes is the shard_sync phase
		 * (its phase point, fsync and close, skipped here) and an fsync and
		 * close later in the save, in whatever phase runs then.
		 */
		ckpt_fault_ctx skipped[3] = {
			{ .rank = c->io.rank, .step = c->io.step, .phase = save_phases[PH_SHARD_SYNC], .fd = -1 },
			{ .rank = c->io.rank, .step = c->io.step, .op = "fsync", .fd = -1 },
			{ .rank = c->io.rank, .step = c->io.step, .op = "close", .fd = -1 },
		};
		ckpt_mutant_reached_durability("commit_without_barrier", skipped, 3);
	}
#ifdef CKPT_MUTANT_COMMIT_WITHOUT_BARRIER
	if (c->comm->rank != 0) {      /* mutant: rank 0 commits before the others' shards are durable */
		c->deferred_fd = fd;
		snprintf(c->deferred_path, sizeof c->deferred_path, "%s", path);
		fd = -1;
		rc = 0;
	} else
#endif
	if ((rc = enter(c, PH_SHARD_SYNC)) < 0 || (rc = ckpt__io_fsync(&c->io, fd, path)) < 0)
		goto out;
	if (fd >= 0)
		rc = ckpt__io_close(&c->io, &fd, path);
	fe->size = size;
	c->stats.bytes = size;
out:
	ckpt__sealw_free(sw);
	ckpt__wstream_close(ws);
	if (fd >= 0)
		ckpt__io_close(&c->io, &fd, path);
	XXH3_freeState(st);
	free(hdr);
	return rc;
}

/*
 * The manifest's telemetry covers what happened before it was written: the
 * bytes and, per phase up to the barrier, the slowest rank's time. The
 * journal's save record has every phase of each rank.
 */
static void telemetry_json(ckpt *c, const shard_report *reps, char **out)
{
	char buf[1024];
	int n = 0;
	uint64_t total = 0;
	double slowest[PH_COUNT] = { 0 };

	for (int r = 0; r < c->comm->size; r++) {
		total += reps[r].file.size;
		for (int p = 0; p <= PH_BARRIER; p++)
			if (reps[r].phase_seconds[p] > slowest[p])
				slowest[p] = reps[r].phase_seconds[p];
	}
	c->stats.total_bytes = total;
	n += snprintf(buf + n, sizeof buf - (size_t)n, "{\"bytes\":%" PRIu64 ",\"phase_seconds\":{", total);
	for (int p = 0; p <= PH_BARRIER; p++)
		n += snprintf(buf + n, sizeof buf - (size_t)n, "%s\"%s\":%.6f", p ? "," : "", save_phases[p], slowest[p]);
	double w = slowest[PH_SHARD_WRITE] + slowest[PH_SHARD_SYNC];
	snprintf(buf + n, sizeof buf - (size_t)n, "},\"shard_write_mib_per_s\":%.1f}",
		 w > 0 ? (double)total / 1048576.0 / w : 0.0);
	*out = strdup(buf);
}

/* The manifest, sealed: bound to this step, to no rank (-1) and to its name. */
static int write_sealed(ckpt *c, int fd, const char *path, uint64_t step, const char *text, size_t len)
{
	ckpt_sealw *w;
	ckpt_wstream *ws;
	uint64_t size, ident;
	int rc;

	if ((rc = ckpt__wstream_open(&ws, &c->io, fd, path, len)) < 0)
		return rc;
	if ((rc = ckpt__sealw_begin(&w, c->seal, &c->io, ws, path, step, -1, "manifest.json", len)) == 0) {
		if ((rc = ckpt__sealw_write(w, text, len)) < 0)
			ckpt__sealw_free(w);
		else if ((rc = ckpt__sealw_end(w, &size, &ident)) == 0)
			rc = ckpt__wstream_finish(ws);
	}
	ckpt__wstream_close(ws);
	return rc;
}

/* Rank 0, once every shard is on disk: manifest, commit, LATEST, retention. */

static int commit(ckpt *c, uint64_t step, unsigned tags, const char *tmp, const shard_report *reps,
		  const ckpt_tensor_entry *all_te)
{
	char gen[CKPT_PATH_MAX], path[CKPT_PATH_MAX], aside[CKPT_PATH_MAX + 16], name[32], *text = NULL;
	ckpt_manifest m = { .schema_version = CKPT_SCHEMA_VERSION, .step = step, .world_size = c->comm->size,
			    .config_hash = c->cfg.config_hash, .tags = tags, .all = all_te };
	ckpt_file_entry *files = calloc((size_t)c->comm->size, sizeof *files);
	size_t len;
	int fd = -1, rc, replaced = 0;
	struct stat sb;
	ckpt_error warn;

	ckpt__error_clear(&warn);
	if (!files)
		return ckpt__io_fail(&c->io, -ENOMEM, NULL, "out of memory");
	for (int r = 0; r < c->comm->size; r++)
		files[r] = reps[r].file;
	m.files = files;
	m.nfiles = c->comm->size;
	m.ntensors = c->state->n;
	if (c->chunks) {      /* version 3: a chunked generation (every rank has the same depth) */
		m.chunk_size = ckpt__chunks_size(c->chunks);
		m.chain_depth = ckpt__chunks_depth(c->chunks);
		m.chain_base = ckpt__chunks_chain(c->chunks);
	}
	if (ckpt_mutant_recording()) {
		/*
		 * The mutant scans the root and sweeps the chunk store here: with no
		 * chunk store (a run never incremental) that finds nothing to delete,
		 * and only its calls, all in this phase, differ
		 */
		ckpt_fault_ctx sweep = { .rank = c->io.rank, .step = c->io.step, .phase = c->io.phase, .fd = -1 };
		ckpt_mutant_reached_points("gc_before_commit", c->chunks || chunk_store(c), &sweep, 1);
	}
#ifdef CKPT_MUTANT_GC_BEFORE_COMMIT
	{       /*
		 * mutant: once retention has something to do, it "makes room" before the
		 * commit: the sweep runs before this generation's manifest exists, so its
		 * new chunks look dead
		 */
		uint64_t *gs = NULL;
		int ng = 0;
		ckpt_error ignored;
		ckpt__error_clear(&ignored);
		c->io.err = &ignored;
		if (ckpt__scan(&c->io, &gs, &ng) == 0 && ng >= (int)c->cfg.keep_last)
			ckpt__chunks_gc(&c->io, &c->journal, "save.gc");
		free(gs);
		c->io.err = &c->err;
	}
#endif
	ckpt__gen_name(name, sizeof name, step);

	if ((rc = enter(c, PH_MANIFEST_WRITE)) < 0 || (rc = path_in(path, sizeof path, tmp, "manifest.json")) < 0 ||
	    (rc = path_in(gen, sizeof gen, ".", name)) < 0)
		goto out;
	telemetry_json(c, reps, &m.telemetry_json);
	memcpy(m.experiment, c->experiment, sizeof m.experiment);
	memcpy(m.code_version, c->code_version, sizeof m.code_version);
	if ((rc = ckpt__manifest_render(&m, &text, &len)) < 0) {
		ckpt__io_fail(&c->io, rc, path, rc == -CKPT_ECONFIG ? "cannot render the manifest: ranks registered "
			      "different tensors (names, dtypes or global sizes)" : "cannot render the manifest");
		goto out;
	}
	if ((fd = ckpt__io_open(&c->io, path, O_WRONLY | O_CREAT | O_EXCL, (mode_t)c->cfg.file_mode)) < 0) {
		rc = fd;
		goto out;
	}
	if ((rc = c->seal ? write_sealed(c, fd, path, step, text, len) : ckpt__io_write_all(&c->io, fd, text, len, path)) < 0)
		goto out;
	if ((rc = enter(c, PH_MANIFEST_SYNC)) < 0 || (rc = ckpt__io_fsync(&c->io, fd, path)) < 0 ||
	    (rc = ckpt__io_close(&c->io, &fd, path)) < 0 || (rc = ckpt__io_fsync_dir(&c->io, tmp)) < 0)
		goto out;

	if ((rc = enter(c, PH_COMMIT)) < 0)
		goto out;
	/* a damaged or stale generation of this step is replaced, never merged */
	snprintf(aside, sizeof aside, "%s.replaced", gen);
	if (ckpt__io_lstat(&c->io, gen, &sb) == 0) {
		if ((rc = ckpt__io_rmtree(&c->io, aside)) < 0 || (rc = ckpt__io_rename(&c->io, gen, aside)) < 0)
			goto out;
		replaced = 1;
	}
	if ((rc = ckpt__io_rename(&c->io, tmp, gen)) < 0)
		goto out;
	if ((rc = enter(c, PH_DIR_SYNC)) < 0 || (rc = ckpt__io_fsync_dir(&c->io, ".")) < 0) {
		/* not known durable: take it out of sight again rather than half-commit */
		ckpt_error ignored;
		c->io.err = &ignored;
		ckpt__io_rename(&c->io, gen, tmp);
		c->io.err = &c->err;
		goto out;
	}
	/* committed: what follows is housekeeping, journaled but never failing the save */
	c->io.err = &warn;
	if (replaced)
		ckpt__io_rmtree(&c->io, aside);
	char latest[40];
	int n = snprintf(latest, sizeof latest, "%s\n", name);
	/*
	 * A durability bug: the mutant writes the same bytes to LATEST by other
	 * calls (open, write, fsync, close in place, against a temporary file,
	 * rename and directory sync), all in the latest phase.
	 */
	ckpt_fault_ctx latest_points = { .rank = c->io.rank, .step = c->io.step, .phase = save_phases[PH_LATEST],
					 .fd = -1 };
	ckpt_mutant_reached_durability("latest_in_place", &latest_points, 1);
#ifndef CKPT_MUTANT_LATEST_IN_PLACE
	if (enter(c, PH_LATEST) == 0)
		ckpt__io_replace_file(&c->io, ".", "LATEST", latest, (size_t)n, (mode_t)c->cfg.file_mode);
#else
	if (enter(c, PH_LATEST) == 0) {      /* mutant: LATEST rewritten in place, not replaced */
		const char *lp = "LATEST";
		int lfd = ckpt__io_open(&c->io, lp, O_WRONLY | O_CREAT | O_TRUNC, (mode_t)c->cfg.file_mode);
		if (lfd >= 0) {
			ckpt__io_write_all(&c->io, lfd, latest, (size_t)n, lp);
			ckpt__io_fsync(&c->io, lfd, lp);
			ckpt__io_close(&c->io, &lfd, lp);
		}
	}
#endif
	if (warn.code != 0)
		ckpt__journal_add(&c->journal, "\"event\":\"warning\",\"phase\":\"save.latest\",\"error\":\"%s\"",
				  ckpt_strerror(warn.code));
	c->io.err = &c->err;
	retention_start(c, step);
	rc = 0;
out:
	if (fd >= 0)
		ckpt__io_close(&c->io, &fd, path);
	free(m.telemetry_json);
	free(text);
	free(files);
	return rc;
}

/* Rank 0: every rank's save against its baseline (alert.c); reps is NULL or gathered (committed). */
static void judge(ckpt *c, uint64_t step, const shard_report *reps, int failed_rank)
{
	int W = c->comm->size;
	double *secs = calloc((size_t)W, sizeof *secs);
	uint64_t *bytes = calloc((size_t)W, sizeof *bytes);

	for (int r = 0; secs && bytes && reps && r < W; r++) {
		secs[r] = r == 0 ? c->stats.own_seconds : reps[r].own_seconds;
		bytes[r] = reps[r].file.size;
	}
	if (secs && bytes)
		c->nalerts = ckpt__alerts_after_save(c->detector, &c->journal, step, W, secs, bytes, failed_rank, c->alerts,
						     CKPT_ALERTS_MAX);
	free(secs);
	free(bytes);
}

static int save_now(ckpt *c, uint64_t step, unsigned tags, const ckpt_error *pre)
{
	ckpt_comm *comm = c->comm;
	char tmp[CKPT_PATH_MAX], name[32];
	shard_report rep, *reps = NULL;
	ckpt_tensor_entry *all_te = NULL;
	ckpt_error final;
	double t0 = now(), tw;
	int rc;

	retention_join(c);
	ckpt__tier_drain_finish(c->tier);     /* the previous save's drain commits before this save begins */
	c->wait = 0;
	c->nalerts = 0;
	ckpt__error_clear(&c->err);
	memset(&c->stats, 0, sizeof c->stats);
	memset(&rep, 0, sizeof rep);
	c->io.step = step;
	c->phase = -1;
	ckpt__gen_name(name, sizeof name, step);
	snprintf(tmp, sizeof tmp, "%s.tmp", name);

	if (comm->rank == 0) {
		reps = calloc((size_t)comm->size, sizeof *reps);
		all_te = calloc((size_t)comm->size * (size_t)c->state->n + 1, sizeof *all_te);
		if (!reps || !all_te)
			ckpt__io_fail(&c->io, -ENOMEM, NULL, "out of memory");
		else
			prepare(c, tmp);
	} else if (ckpt__tier_leader(c->tier)) {
		prepare(c, tmp);      /* tiered: each fast root shared by a group of ranks gets its own */
	}
	/* nobody writes into a directory rank 0 (or its group's leader) failed to make */
	final = c->err;
	tw = now();
	rc = c->tier ? ckpt__agree(comm, &c->err, &final) : comm->bcast(comm->ctx, &final, sizeof final, 0);
	waited(c, tw);
	if (rc < 0 || final.code != 0)
		goto out;

	if (pre && pre->code != 0)
		c->err = *pre;          /* the writer's copy failed: this rank's error at the barrier, as a write's */
	else
		write_shard(c, tmp, step, &rep.file);
	if (c->err.code == 0)
		enter(c, PH_BARRIER);
	tw = now();
	rc = comm->barrier(comm->ctx);
	waited(c, tw);
	if (rc < 0)
		goto out;
	enter(c, PH_COUNT);   /* close the timing of the barrier */
	rep.err = c->err;
	memcpy(rep.phase_seconds, c->stats.phase_seconds, sizeof rep.phase_seconds);
	rep.own_seconds = now() - t0 - c->wait;
	tw = now();
	rc = comm->gather(comm->ctx, &rep, sizeof rep, reps, 0);
	if (rc == 0)
		rc = comm->gather(comm->ctx, c->te, sizeof *c->te * (size_t)c->state->n, all_te, 0);
	waited(c, tw);
	if (rc < 0)
		goto out;

	if (comm->rank == 0) {
		final = c->err;
		for (int r = 0; r < comm->size && final.code == 0; r++)
			if (reps[r].err.code != 0)
				final = reps[r].err;
		if (final.code == 0) {
			commit(c, step, tags, tmp, reps, all_te);
			enter(c, PH_COUNT);
			final = c->err;
		}
	}
	tw = now();
	rc = comm->bcast(comm->ctx, &final, sizeof final, 0);
	waited(c, tw);
	if (rc < 0)
		goto out;
	if (c->tier) {      /* the other fast roots commit the same generation; then its drain starts */
		if ((rc = ckpt__tier_replicate(c->tier, &c->io, step, tmp, &final)) < 0 && final.code == 0)
			goto out;
		rc = 0;
		if (final.code == 0 && comm->rank != 0 && ckpt__tier_leader(c->tier))
			retention_start(c, step);
	}
#ifdef CKPT_MUTANT_COMMIT_WITHOUT_BARRIER
	if (c->deferred_fd >= 0) {     /* the shard, renamed into place already; its path moved with it */
		ckpt__io_fsync(&c->io, c->deferred_fd, c->deferred_path);
		ckpt__io_close(&c->io, &c->deferred_fd, c->deferred_path);
	}
#endif
out:
	if (rc < 0) {
		ckpt__io_fail(&c->io, rc, NULL, "communicator failed during save: %s", ckpt_describe(rc));
		final = c->err;
	}
	c->err = final;
	c->stats.seconds = now() - t0;
	c->stats.own_seconds = c->stats.seconds - c->wait;
	if (c->detector)
		judge(c, step, reps, final.code ? final.rank : -1);
	if (c->chunks) {
		ckpt__chunks_bytes(c->chunks, &c->stats.chunk_bytes_written, &c->stats.chunk_bytes_shared);
		ckpt__chunks_settle(c->chunks, final.code == 0);     /* the base of the next save: only a committed one */
	}
	if (final.code != 0 && comm->rank == 0) {
		/* best effort: the next start-up removes it anyway */
		ckpt_error ignored;
		c->io.err = &ignored;
		ckpt__error_clear(&ignored);
		ckpt__io_rmtree(&c->io, tmp);
		c->io.err = &c->err;
	}
	char phases[512];
	int pn = 0;
	for (int p = 0; p < PH_COUNT; p++)
		pn += snprintf(phases + pn, sizeof phases - (size_t)pn, "%s\"%s\":%.6f", p ? "," : "", save_phases[p],
			       c->stats.phase_seconds[p]);
	ckpt__journal_add(&c->journal,
			  "\"event\":\"save\",\"step\":%" PRIu64 ",\"result\":%d,\"error\":\"%s\",\"bytes\":%" PRIu64
			  ",\"total_bytes\":%" PRIu64 ",\"chunk_bytes_written\":%" PRIu64 ",\"chunk_bytes_shared\":%" PRIu64
			  ",\"seconds\":%.6f,\"own_seconds\":%.6f,\"mib_per_s\":%.1f,\"phase_seconds\":{%s}",
			  step, final.code, ckpt_strerror(final.code), c->stats.bytes, c->stats.total_bytes,
			  c->stats.chunk_bytes_written, c->stats.chunk_bytes_shared,
			  c->stats.seconds, c->stats.own_seconds,
			  c->stats.seconds > 0 ? (double)c->stats.bytes / 1048576.0 / c->stats.seconds : 0.0,
			  phases);
	if (final.code == 0)
		ckpt__tier_drain_start(c->tier, step);      /* tiered: the copy to the durable tier, in the background */
	free(reps);
	free(all_te);
	return final.code;
}

int ckpt_save(ckpt *c, uint64_t step, unsigned tags)
{
	ckpt__async_drain(c);
	return save_now(c, step, tags, NULL);
}

/* async.c's writer thread: the same save, on the staged copy, over its proxy communicator. */
int ckpt__save_staged(ckpt *c, ckpt_comm *comm, ckpt_entry **dst, uint64_t step, unsigned tags,
		      const ckpt_error *pre)
{
	ckpt_comm *comm0 = c->comm;
	ckpt_entry **dst0 = c->dst;
	int rc;

	if (c->tier)      /* the drain's collectives run on the job's communicator: not from the writer thread */
		return ckpt__io_fail(&c->io, -EINVAL, NULL, "background saves (ckpt_save_async) do not support tiered "
				     "storage (ckpt_config.fast_root) yet");
	c->comm = comm;
	c->dst = dst;
	rc = save_now(c, step, tags, pre);
	c->comm = comm0;
	c->dst = dst0;
	return rc;
}

void ckpt__parts(ckpt *c, ckpt_parts *p)
{
	*p = (ckpt_parts){ .comm = c->comm, .state = c->state, .dst = c->dst, .journal = &c->journal,
			   .err = &c->err, .root = c->root, .async = &c->async };
}

struct ckpt_async **ckpt__async_of(ckpt *c)
{
	return &c->async;
}

/* ---- generations and retention ------------------------------------------ */

static bool tagged_best(ckpt *c, ckpt_io *io, uint64_t step)
{
	char path[CKPT_PATH_MAX], name[32], *text, why[64];
	size_t len;
	ckpt_manifest m;
	bool best = false;

	ckpt__gen_name(name, sizeof name, step);
	snprintf(path, sizeof path, "%s/manifest.json", name);
	(void)c;
	int sealed;
	uint64_t ident;
	if (ckpt__read_small_file(io, path, &text, &len, CKPT_MANIFEST_MAX) < 0)
		return false;
	if (ckpt__seal_manifest_open(io, name, path, &text, &len, &sealed, &ident) == 0 &&
	    ckpt__manifest_parse(text, len, &m, why, sizeof why) == 0) {
		best = (m.tags & CKPT_TAG_BEST) != 0;
		ckpt__manifest_free(&m);
	}
	free(text);
	return best;
}

/*
 * Keep the keep_last newest, multiples of keep_every, the newest tagged best,
 * the generation just committed, and the generation LATEST names. LATEST is
 * only a hint, but a hint that names a deleted generation misleads every
 * reader that trusts it: when replacing LATEST keeps failing (its rename
 * fails from one save on), LATEST goes stale, and retention then never
 * deletes what it names (one generation more is kept until a save manages to
 * replace it). A deleted generation is first renamed to .trash (it leaves the
 * scan atomically), then removed; a crash in between leaves a .trash that
 * start-up cleans. It runs in the background on rank 0, off the save's
 * critical path (deleting a large generation costs as much as a fifth of a
 * save); failures are journaled, never failing a save that is already durable.
 */
static void *retention(void *arg)
{
	ckpt *c = arg;
	uint64_t step = c->retention_step, *steps = NULL, latest_step = 0;
	ckpt_error warn;
	ckpt_io io = { .rootfd = c->rootfd, .root = c->root, .rank = c->io.rank, .step = step, .err = &warn,
		       .journal = &c->journal, .seal = c->seal };
	int n = 0, rc = 0, best_found = 0;
	char latest[CKPT_LATEST_MAX];
	bool have_latest;
	double t0 = now();

	ckpt__error_clear(&warn);
	if (ckpt__io_phase(&io, save_phases[PH_RETENTION]) < 0)
		return NULL;
	if (c->tier)
		ckpt__tier_retention_begin(c->tier, &io);
	have_latest = ckpt__latest_read(c->rootfd, latest, sizeof latest) == 0 && ckpt__gen_parse(latest, &latest_step);
	rc = ckpt__scan(&io, &steps, &n);
	for (int i = 0; rc == 0 && i < n; i++) {
		char name[32], trash[48];
		ckpt_mutant_reached("retention_deletes_newest");
#ifdef CKPT_MUTANT_RETENTION_DELETES_NEWEST
		bool keep = (i > 0 && i <= (int)c->cfg.keep_last) ||   /* mutant: the newest is "old" */
#else
		bool keep = steps[i] == step || i < (int)c->cfg.keep_last ||
#endif
			    (c->cfg.keep_every && !c->tier && steps[i] % c->cfg.keep_every == 0) ||
			    (have_latest && steps[i] == latest_step) ||
			    ckpt__tier_keep_fast(c->tier, steps[i]);      /* tiered: not drained yet */
		if (c->cfg.keep_best && !c->tier && !best_found && tagged_best(c, &io, steps[i])) {
			best_found = 1;
			keep = true;
		}
		if (keep)
			continue;
		ckpt__gen_name(name, sizeof name, steps[i]);
		snprintf(trash, sizeof trash, "%s.trash", name);
		if (ckpt_mutant_recording()) {
			/*
			 * The mutant reads the generation's manifest and deletes the chunks
			 * it lists: with no chunk store nothing is listed, and only its
			 * reads, in the retention phase, differ
			 */
			ckpt_fault_ctx load = { .rank = io.rank, .step = io.step, .phase = io.phase, .fd = -1 };
			ckpt_mutant_reached_points("base_deleted_with_gen", c->chunks || chunk_store(c), &load, 1);
		}
#ifdef CKPT_MUTANT_BASE_DELETED_WITH_GEN
		ckpt__chunks_mutant_drop(&io, name);   /* mutant: a generation's chunks go with it, shared or not */
#endif
		if ((rc = ckpt__io_rename(&io, name, trash)) < 0 || (rc = ckpt__io_fsync_dir(&io, ".")) < 0 ||
		    (rc = ckpt__io_rmtree(&io, trash)) < 0)
			break;
		ckpt__journal_add(&c->journal, "\"event\":\"retention\",\"deleted\":\"%s\"", name);
	}
	if (rc < 0)
		ckpt__journal_add(&c->journal, "\"event\":\"retention_failed\",\"error\":\"%s\"", ckpt_strerror(warn.code));
	else      /* after the deleted generations left the scan durably: chunks nothing references */
		ckpt__chunks_gc(&io, &c->journal, "save.gc");
	ckpt__journal_add(&c->journal, "\"event\":\"retention_done\",\"step\":%" PRIu64 ",\"seconds\":%.6f", step,
			  now() - t0);
	free(steps);
	return NULL;
}

static void retention_start(ckpt *c, uint64_t step)
{
	c->retention_step = step;
	if (pthread_create(&c->retention_thread, NULL, retention, c) == 0)
		c->retention_running = 1;
	else
		retention(c);
}

static void retention_join(ckpt *c)
{
	if (c->retention_running) {
		pthread_join(c->retention_thread, NULL);
		c->retention_running = 0;
	}
}

void ckpt_wait(ckpt *c)
{
	ckpt__async_drain(c);
	retention_join(c);
	ckpt__tier_drain_finish(c->tier);
}

uint64_t ckpt_drained_step(const ckpt *c)
{
	return ckpt__tier_drained(c->tier);
}

/* ---- restore ------------------------------------------------------------ */

/*
 * This rank's part of generation `step`: the shared verification (manifest,
 * then this rank's shard, read into the state), the job's shape and layout,
 * and the caller's validation of the restored values. Every failure is
 * recorded in c->err with its reason; nothing is dropped.
 */
static int load_generation(ckpt *c, uint64_t step, int *saved_world)
{
	char name[32], path[CKPT_PATH_MAX];
	ckpt_manifest m = { 0 };
	int rc, me = c->comm->rank;
	bool reshard;

	ckpt__gen_name(name, sizeof name, step);
	snprintf(path, sizeof path, "%s/manifest.json", name);
	if ((rc = ckpt__gen_load(&c->io, name, &step, &m, true)) < 0)
		goto out;
	/* saved by another world size: elastic restore (reshard.c) instead of this rank's own shard */
	reshard = m.world_size != c->comm->size;
	*saved_world = m.world_size;
	if (m.config_hash != c->cfg.config_hash) {
		rc = ckpt__io_fail(&c->io, -CKPT_ECONFIG, path,
				   "%s was saved with config hash %016" PRIx64 " and this job's is %016" PRIx64
				   ": another model or training configuration", name, m.config_hash, c->cfg.config_hash);
		goto out;
	}
	if (m.ntensors != c->state->n) {
		rc = ckpt__io_fail(&c->io, -CKPT_ECONFIG, path, "%s has %d tensors per rank, this job's state has %d",
				   name, m.ntensors, c->state->n);
		goto out;
	}
	for (int k = 0; !reshard && k < m.ntensors; k++) {
		const ckpt_layout_entry *t = &m.layout[k];
		const ckpt_entry *e = c->dst[k];
		if (strcmp(e->name, t->name) != 0 || e->dtype != t->dtype || e->local_elems != ckpt__layout_local(&m, k, me) ||
		    e->global_elems != t->global_elems || e->global_offset != ckpt__layout_goff(&m, k, me)) {
			char esc[CKPT_NAME_MAX * 4];
			ckpt__escape(esc, sizeof esc, t->name);
			rc = ckpt__io_fail(&c->io, -CKPT_ECONFIG, path,
					   "%s: tensor %s (%s x %" PRIu64 " at %" PRIu64 " of %" PRIu64 ") does not match this "
					   "job's state layout (%s: %s x %" PRIu64 " at %" PRIu64 " of %" PRIu64 ")", name, esc,
					   ckpt__dtype_name(t->dtype), ckpt__layout_local(&m, k, me), ckpt__layout_goff(&m, k, me),
					   t->global_elems, e->name, ckpt__dtype_name(e->dtype), (uint64_t)e->local_elems,
					   (uint64_t)e->global_offset, (uint64_t)e->global_elems);
			goto out;
		}
	}
	if ((rc = ckpt__io_phase(&c->io, "restore.read")) < 0 ||
	    (rc = reshard      ? ckpt__reshard_read(&c->io, name, &m, c->dst)
		  : m.chunk_size ? ckpt__chunks_verify(&c->io, name, &m, me, c->dst, c->chunks)
				 : ckpt__shard_verify(&c->io, name, &m, me, c->dst)) < 0)
		goto out;
	if (c->cfg.validate) {
		char why[400] = "";
		if (c->cfg.validate(c->cfg.validate_arg, step, why, sizeof why) < 0)
			rc = ckpt__io_fail(&c->io, -CKPT_EREFUSED, path, "%s: restored state refused on rank %d: %s", name,
					   me, why[0] ? why : "(no reason given)");
	}
out:
	if (rc < 0 && c->err.code == 0)      /* never a failure without its reason */
		ckpt__io_fail(&c->io, rc, path, "%s: %s", name, ckpt_describe(rc));
	ckpt__manifest_free(&m);
	return rc;
}

int ckpt_restore(ckpt *c, ckpt_restore_info *info)
{
	ckpt_comm *comm = c->comm;
	uint64_t *steps = NULL;
	ckpt_error agreed;
	int n = 0, rc, saved_world = comm->size;

	ckpt__error_clear(&agreed);
	ckpt__async_drain(c);
	retention_join(c);
	ckpt__tier_drain_finish(c->tier);
	memset(info, 0, sizeof *info);
	ckpt__error_clear(&c->err);
	c->io.step = 0;
	if (comm->rank == 0 && (rc = ckpt__io_phase(&c->io, "restore.scan")) == 0 && ckpt__scan(&c->io, &steps, &n) == 0)
		ckpt__tier_candidates(c->tier, &c->io, &steps, &n);     /* tiered: both tiers, newest first */
	if ((rc = ckpt__agree(comm, &c->err, &agreed)) < 0 || (rc = agreed.code) < 0 ||
	    (rc = comm->bcast(comm->ctx, &n, sizeof n, 0)) < 0) {
		c->err = agreed;
		goto out;
	}
	if (comm->rank != 0 && n > 0 && !(steps = calloc((size_t)n, sizeof *steps)))
		ckpt__io_fail(&c->io, -ENOMEM, NULL, "out of memory");
	if ((rc = ckpt__agree(comm, &c->err, &agreed)) < 0 || (rc = agreed.code) < 0 ||
	    (n > 0 && (rc = comm->bcast(comm->ctx, steps, sizeof *steps * (size_t)n, 0)) < 0)) {
		c->err = agreed;
		goto out;
	}
	rc = -CKPT_ENOGEN;
	if (n == 0) {
		ckpt__io_fail(&c->io, rc, c->root, "no checkpoint generation in %s", c->root);
		goto out;
	}
	for (int i = 0; i < n; i++) {
		char name[32];
		const char *tier = ckpt__tier_name(c->tier, steps[i]);

		ckpt__error_clear(&c->err);
		uint64_t cand = steps[i];
		steps[i] = ckpt__tier_pick(c->tier, &c->io, cand);
		c->io.step = steps[i];
		ckpt__chunks_settle(c->chunks, false);     /* only the generation restored becomes the base */
		load_generation(c, steps[i], &saved_world);
		if ((rc = ckpt__agree(comm, &c->err, &agreed)) < 0)
			goto out;
		c->err = agreed;
		ckpt__gen_name(name, sizeof name, steps[i]);
		if (agreed.code == 0) {
			ckpt__chunks_settle(c->chunks, true);
			info->step = steps[i];
			snprintf(info->name, sizeof info->name, "%s", name);
			ckpt__journal_add(&c->journal, "\"event\":\"restore\",\"checkpoint\":\"%s\",\"fallbacks\":%d%s%s%s",
					  name, info->nfallbacks, *tier ? ",\"tier\":\"" : "", tier, *tier ? "\"" : "");
			if (saved_world != comm->size)
				ckpt__journal_add(&c->journal, "\"event\":\"reshard\",\"checkpoint\":\"%s\",\"from\":%d,"
						  "\"to\":%d", name, saved_world, comm->size);
			steps[i] = cand;
			ckpt__tier_pick(c->tier, &c->io, 0);
			rc = ckpt__tier_restored(c->tier, steps, n, i);      /* only on the fast tier: drain it */
			goto out;
		}
		ckpt_mutant_reached("no_fallback");      /* here agreed.code != 0: the mutant stops */
#ifdef CKPT_MUTANT_NO_FALLBACK
		if (agreed.code != 0) {           /* mutant: the first damaged generation ends the search */
			rc = -CKPT_ENOVALID;
			goto out;
		}
#endif
		if (agreed.code == -CKPT_EWORLD || agreed.code == -CKPT_ECONFIG) {
			rc = agreed.code;
			goto out;
		}
		ckpt__journal_add(&c->journal, "\"event\":\"fallback\",\"checkpoint\":\"%s\",\"error\":\"%s\"%s%s%s", name,
				  ckpt_strerror(agreed.code), *tier ? ",\"tier\":\"" : "", tier, *tier ? "\"" : "");
		if (info->nfallbacks < CKPT_MAX_FALLBACKS) {
			snprintf(info->fallbacks[info->nfallbacks].name, sizeof info->fallbacks[0].name, "%s%s%s", name,
				 *tier ? "@" : "", tier);
			snprintf(info->fallbacks[info->nfallbacks].why, sizeof info->fallbacks[0].why, "%s", agreed.msg);
			info->nfallbacks++;
		}
	}
	ckpt__error_clear(&c->err);
	rc = ckpt__io_fail(&c->io, -CKPT_ENOVALID, c->root, "none of the %d generations in %s is valid (newest: %s)",
			   n, c->root, info->nfallbacks ? info->fallbacks[0].why : "?");
out:
	if (rc < 0 && c->err.code == 0)
		ckpt__io_fail(&c->io, rc, c->root, "restore failed: %s (the communicator failed)", ckpt_describe(rc));
	ckpt__tier_pick(c->tier, &c->io, 0);      /* saves go to the fast tier again */
	free(steps);
	return rc;
}
