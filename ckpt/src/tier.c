/*
 * Tiered storage: a fast tier (ckpt_config.fast_root, node-local) where saves
 * commit, and the durable tier (ckpt_config.root, shared) that every
 * committed generation is drained to in the background.
 *
 * Roots. With tiers, ckpt.c's root descriptor is the fast root of this rank
 * (saves, fast retention, LATEST); the journal and this file's descriptor
 * stay on the durable root. Ranks whose fast roots are the same directory
 * (same device and inode) form a group; its lowest rank is the group's
 * leader, which makes and commits the generation directory there, as rank 0
 * does on its own root (rank 0 renders the manifest, the other leaders get
 * it broadcast and commit the same bytes: tier_replicate).
 *
 * The drain of generation N (collective start, collective finish):
 *   end of save N (all committed)  a thread per rank starts; nothing else on the training path
 *   the thread                      drain.write mkdir DURABLE/step-N.tmp (whoever is first), copy
 *                                   its shard fast -> durable tmp; drain.sync fsync it; rank 0
 *                                   then copies the manifest the same way; fsync step-N.tmp (rank 0
 *                                   first runs the durable retention the last commit left owed)
 *   next ckpt call (save, restore,  join the thread (blocks only if the copy is slower than the
 *   ckpt_wait, ckpt_close)          save interval); agree; rank 0: drain.commit rename
 *                                   step-N.tmp -> step-N, fsync DURABLE; agreed
 * Only then is N drained: ckpt_drained_step() returns it and the journal has
 * {"event":"drained","step":N}. The on-disk marker that N is complete on a
 * tier is that tier's committed step-N directory (the rename is the commit,
 * as for any generation): no new file. A failed drain is journaled
 * (drain_failed) and never fails a save; the generation stays on the fast
 * tier until a newer one is drained.
 *
 * Retention per tier: the fast tier keeps keep_last generations and every
 * generation newer than the newest one on the durable tier (not drained yet);
 * the durable tier keeps keep_last and the multiples of keep_every.
 *
 * Restore: candidates are every committed generation of either tier, newest
 * step first and, for the same step, the fast tier first; the first one that
 * verifies on every rank is taken.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define COPY_PIECE (4u << 20)

struct ckpt_tier {
	char fast[CKPT_PATH_MAX], durable[CKPT_PATH_MAX];
	int fastfd, durfd;
	int leader, groups;
	mode_t fmode, dmode;
	uint32_t keep_last, keep_every;
	ckpt_comm *comm;
	ckpt_journal *journal;
	/* the drain in flight (the same on every rank: started and finished collectively) */
	int pending;
	uint64_t step;
	pthread_t thread;
	int running;
	ckpt_error terr;            /* the copy thread's outcome */
	uint64_t bytes;
	double t0;
	uint64_t drained;           /* newest step this job drained (0: none) */
	uint64_t retain;            /* rank 0: durable retention owed after the drain of this step (0: none) */
	uint64_t durable_max;       /* fast retention: newest generation on the durable tier */
};

static void durable_retention(ckpt_tier *t, uint64_t step);

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static ckpt_io dur_io(const ckpt_tier *t, ckpt_error *err, uint64_t step, const char *phase)
{
	return (ckpt_io){ .rootfd = t->durfd, .root = t->durable, .rank = t->comm->rank, .step = step,
			  .phase = phase, .err = err, .journal = NULL };
}

static ckpt_io fast_io(const ckpt_tier *t, ckpt_error *err, uint64_t step, const char *phase)
{
	return (ckpt_io){ .rootfd = t->fastfd, .root = t->fast, .rank = t->comm->rank, .step = step,
			  .phase = phase, .err = err, .journal = NULL };
}

/* Remove step-*.tmp / .trash / .replaced left by an interrupted save or drain (a leader's own fast root). */
static int cleanup(ckpt_io *io)
{
	DIR *d;
	struct dirent *de;
	int rc;

	if ((rc = ckpt__io_opendir(io, ".", &d)) < 0)
		return rc;
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);
		if (strncmp(de->d_name, "step-", 5) != 0 ||
		    !((n > 4 && strcmp(de->d_name + n - 4, ".tmp") == 0) || (n > 6 && strcmp(de->d_name + n - 6, ".trash") == 0) ||
		      (n > 9 && strcmp(de->d_name + n - 9, ".replaced") == 0)))
			continue;
		if ((rc = ckpt__io_rmtree(io, de->d_name)) < 0)
			break;
	}
	closedir(d);
	return rc;
}

static int mkdirs(const char *path, mode_t mode)
{
	char buf[CKPT_PATH_MAX];
	struct stat st;

	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
		return -ENAMETOOLONG;
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (stat(buf, &st) < 0 && mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		if (!c)
			break;
		*p = '/';
	}
	return 0;
}

int ckpt__tier_open(ckpt_tier **out, const ckpt_config *cfg, ckpt_comm *comm, ckpt_journal *journal, int *rootfd,
		    char *root, ckpt_io *io)
{
	ckpt_tier *t = calloc(1, sizeof *t);
	struct { dev_t dev; ino_t ino; } me = { 0, 0 }, *all = NULL;
	ckpt_error local, agreed;
	struct stat st;
	int rc;

	*out = NULL;
	ckpt__error_clear(&local);
	ckpt__error_clear(&agreed);
	if (!t || !(all = calloc((size_t)comm->size, sizeof *all))) {
		free(t);
		return -ENOMEM;
	}
	t->fastfd = -1;
	t->comm = comm;
	t->journal = journal;
	t->fmode = (mode_t)cfg->file_mode;
	t->dmode = (mode_t)cfg->dir_mode;
	t->keep_last = cfg->keep_last;
	t->keep_every = cfg->keep_every;
	snprintf(t->fast, sizeof t->fast, "%s", cfg->fast_root);
	snprintf(t->durable, sizeof t->durable, "%s", root);
	t->durfd = *rootfd;
	if ((rc = mkdirs(t->fast, t->dmode)) < 0 ||
	    (t->fastfd = open(t->fast, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || fstat(t->fastfd, &st) < 0)
		ckpt__error_set(&local, rc < 0 ? rc : -errno, "rank %d: cannot open the fast tier %s: %s", comm->rank,
				t->fast, strerror(rc < 0 ? -rc : errno));
	else if (!cfg->allow_shared_root && (st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH))))
		ckpt__error_set(&local, -EPERM, "rank %d: fast tier %s is %s: another user could plant links or replace "
				"files there; use a private directory of your own, or set ckpt_config.allow_shared_root",
				comm->rank, t->fast, st.st_uid != geteuid() ? "owned by another user" :
				"writable by its group or others");
	else
		me.dev = st.st_dev, me.ino = st.st_ino;
	if ((rc = comm->gather(comm->ctx, &me, sizeof me, all, 0)) < 0 ||
	    (rc = comm->bcast(comm->ctx, all, sizeof *all * (size_t)comm->size, 0)) < 0)
		goto out;
	t->leader = 1;
	for (int r = 0; r < comm->size; r++) {
		int first = 1;
		for (int q = 0; q < r; q++)
			first &= all[q].dev != all[r].dev || all[q].ino != all[r].ino;
		t->groups += first;
		if (r == comm->rank)
			t->leader = first;
	}
	if (local.code == 0 && t->leader) {      /* what an interrupted save left on this fast root */
		ckpt_io fio = fast_io(t, &local, 0, "open.cleanup");
		cleanup(&fio);
	}
	if ((rc = ckpt__agree(comm, &local, &agreed)) < 0)
		goto out;
	if ((rc = agreed.code) < 0) {
		*io->err = agreed;
		goto out;
	}
	/* from here ckpt.c works on the fast root; the durable descriptor is ours */
	*rootfd = t->fastfd;
	snprintf(root, CKPT_PATH_MAX, "%s", t->fast);
	io->rootfd = t->fastfd;
	io->root = root;
	ckpt__journal_add(journal, "\"event\":\"tiers\",\"groups\":%d,\"leader\":%d", t->groups, t->leader);
	*out = t;
	t = NULL;
out:
	if (t) {
		if (t->fastfd >= 0)
			close(t->fastfd);
		free(t);
	}
	free(all);
	return rc;
}

void ckpt__tier_free(ckpt_tier *t, int *rootfd)
{
	if (!t)
		return;
	if (t->running)
		pthread_join(t->thread, NULL);
	if (t->retain)
		durable_retention(t, t->retain);
	/* ckpt.c closes *rootfd (the fast root); the durable one is closed here */
	if (t->durfd >= 0 && t->durfd != *rootfd)
		close(t->durfd);
	free(t);
}

int ckpt__tier_leader(const ckpt_tier *t)
{
	return t && t->leader;
}

/* ---- save: the other fast roots get the generation rank 0 committed ------ */

int ckpt__tier_replicate(ckpt_tier *t, ckpt_io *io, uint64_t step, const char *tmp, ckpt_error *final)
{
	char name[32], path[CKPT_PATH_MAX], gen[48], aside[64], *text = NULL;
	size_t len = 0;
	uint64_t n = 0;
	ckpt_error local;
	int rc, fd = -1;
	struct stat sb;

	if (!t || t->groups <= 1 || final->code != 0)
		return 0;
	ckpt__error_clear(&local);
	ckpt__gen_name(name, sizeof name, step);
	if (t->comm->rank == 0) {
		snprintf(path, sizeof path, "%s/manifest.json", name);
		ckpt_error *e0 = io->err;
		io->err = &local;
		if (ckpt__read_small_file(io, path, &text, &len, CKPT_MANIFEST_MAX) == 0)
			n = len;
		io->err = e0;
	}
	if ((rc = t->comm->bcast(t->comm->ctx, &n, sizeof n, 0)) < 0)
		goto out;
	if (t->comm->rank != 0 && n && !(text = malloc(n)))
		n = 0;
	if (n && (rc = t->comm->bcast(t->comm->ctx, text, n, 0)) < 0)
		goto out;
	if (t->comm->rank != 0 && t->leader) {
		ckpt_io fio = fast_io(t, &local, step, "save.commit");
		snprintf(path, sizeof path, "%s/manifest.json", tmp);
		snprintf(gen, sizeof gen, "%s", name);
		snprintf(aside, sizeof aside, "%s.replaced", name);
		if (!n)
			ckpt__error_set(&local, -EIO, "rank 0 could not read back the manifest of %s", name);
		else if ((fd = ckpt__io_open(&fio, path, O_WRONLY | O_CREAT | O_EXCL, t->fmode)) >= 0 &&
			 ckpt__io_write_all(&fio, fd, text, n, path) == 0 && ckpt__io_fsync(&fio, fd, path) == 0 &&
			 ckpt__io_close(&fio, &fd, path) == 0 && ckpt__io_fsync_dir(&fio, tmp) == 0 &&
			 (ckpt__io_lstat(&fio, gen, &sb) < 0 ||
			  (ckpt__io_rmtree(&fio, aside) == 0 && ckpt__io_rename(&fio, gen, aside) == 0)) &&
			 ckpt__io_rename(&fio, tmp, gen) == 0 && ckpt__io_fsync_dir(&fio, ".") == 0) {
			ckpt_error ignored;
			fio.err = &ignored;
			ckpt__io_rmtree(&fio, aside);
		}
		if (fd >= 0)
			ckpt__io_close(&fio, &fd, path);
	}
	rc = ckpt__agree(t->comm, &local, final);
out:
	free(text);
	return rc < 0 ? rc : final->code;
}

/* ---- the drain ------------------------------------------------------------ */

/* Durable retention (rank 0, after a drain committed): keep_last newest, multiples of keep_every, `step`. */
static void durable_retention(ckpt_tier *t, uint64_t step)
{
	ckpt_error warn;
	ckpt_io d = dur_io(t, &warn, step, "drain.retention");
	uint64_t *steps = NULL;
	int n = 0;

	ckpt__error_clear(&warn);
	if (ckpt__scan(&d, &steps, &n) < 0)
		return;
	for (int i = 0; i < n; i++) {
		char name[32], trash[48];
		if (steps[i] == step || i < (int)t->keep_last || (t->keep_every && steps[i] % t->keep_every == 0))
			continue;
		ckpt__gen_name(name, sizeof name, steps[i]);
		snprintf(trash, sizeof trash, "%s.trash", name);
		if (ckpt__io_rename(&d, name, trash) < 0 || ckpt__io_fsync_dir(&d, ".") < 0 || ckpt__io_rmtree(&d, trash) < 0)
			break;
		ckpt__journal_add(t->journal, "\"event\":\"retention\",\"tier\":\"durable\",\"deleted\":\"%s\"", name);
	}
	free(steps);
}

/* The manifest, copied last: rank 0's thread, once its shard is synced. */
static int copy_manifest(ckpt_tier *t, ckpt_io *src, ckpt_io *dst, const char *name)
{
	char from[CKPT_PATH_MAX], to[CKPT_PATH_MAX], *text = NULL;
	size_t len;
	int fd = -1, rc;

	snprintf(from, sizeof from, "%s/manifest.json", name);
	snprintf(to, sizeof to, "%s.tmp/manifest.json", name);
	(void)((rc = ckpt__read_small_file(src, from, &text, &len, CKPT_MANIFEST_MAX)) == 0 &&
	       (fd = rc = ckpt__io_open(dst, to, O_WRONLY | O_CREAT | O_EXCL, t->fmode)) >= 0 &&
	       (rc = ckpt__io_write_all(dst, fd, text, len, to)) == 0 && (rc = ckpt__io_fsync(dst, fd, to)) == 0 &&
	       (rc = ckpt__io_close(dst, &fd, to)) == 0);
	if (fd >= 0)
		ckpt__io_close(dst, &fd, to);
	free(text);
	return rc;
}

static void *copy_shard(void *arg)
{
	ckpt_tier *t = arg;
	char name[32], from[CKPT_PATH_MAX], to[CKPT_PATH_MAX], shard[CKPT_NAME_MAX];
	ckpt_io src = fast_io(t, &t->terr, t->step, "drain.write");
	ckpt_io dst = dur_io(t, &t->terr, t->step, "drain.write");
	int in = -1, out = -1;
	struct stat st;
	char *buf = NULL;

	ckpt__gen_name(name, sizeof name, t->step);
	ckpt__shard_name(shard, sizeof shard, t->comm->rank);
	snprintf(from, sizeof from, "%s/%s", name, shard);
	snprintf(to, sizeof to, "%s.tmp/%s", name, shard);
	if (t->retain) {       /* rank 0: what the last drain's commit made old, off the training path */
		durable_retention(t, t->retain);
		t->retain = 0;
	}
	if (ckpt__io_phase(&dst, "drain.write") < 0)
		goto out;
	/*
	 * Every rank makes the directory, whoever comes first (no collective on
	 * the training path): the rename at the commit makes its entry durable,
	 * and each rank syncs it once its file is in. A stale one cannot be
	 * here: start-up and a failed drain remove it (rank 0), and O_EXCL
	 * below refuses a leftover file.
	 */
	ckpt_error mk;
	char tmp[48];
	ckpt__error_clear(&mk);
	snprintf(tmp, sizeof tmp, "%s.tmp", name);
	dst.err = &mk;
	int rc = ckpt__io_mkdir(&dst, tmp, t->dmode);
	dst.err = &t->terr;
	if (rc < 0 && rc != -EEXIST) {
		t->terr = mk;
		goto out;
	}
	if (!(buf = malloc(COPY_PIECE))) {
		ckpt__error_set(&t->terr, -ENOMEM, "out of memory");
		goto out;
	}
	if ((in = ckpt__io_open(&src, from, O_RDONLY, 0)) < 0)
		goto out;
	if (fstat(in, &st) < 0) {
		ckpt__io_fail(&src, -errno, from, "cannot stat %s/%s: %s", t->fast, from, strerror(errno));
		goto out;
	}
	if ((out = ckpt__io_open(&dst, to, O_WRONLY | O_CREAT | O_EXCL, t->fmode)) < 0)
		goto out;
	for (uint64_t off = 0; off < (uint64_t)st.st_size;) {
		size_t n = (uint64_t)st.st_size - off < COPY_PIECE ? (size_t)((uint64_t)st.st_size - off) : COPY_PIECE;
		if (ckpt__io_read_all(&src, in, buf, n, from) < 0 || ckpt__io_write_all(&dst, out, buf, n, to) < 0)
			goto out;
		off += n;
	}
	t->bytes = (uint64_t)st.st_size;
	dst.phase = "drain.sync";
	if (ckpt__io_phase(&dst, "drain.sync") == 0 && ckpt__io_fsync(&dst, out, to) == 0 &&
	    ckpt__io_close(&dst, &out, to) == 0 && (t->comm->rank != 0 || copy_manifest(t, &src, &dst, name) == 0))
		ckpt__io_fsync_dir(&dst, tmp);
out:
	if (in >= 0)
		ckpt__io_close(&src, &in, from);
	if (out >= 0)
		ckpt__io_close(&dst, &out, to);
	free(buf);
	return NULL;
}

/* After save `step` committed on the fast tier (every rank, so every rank has one in flight): start its drain. */
int ckpt__tier_drain_start(ckpt_tier *t, uint64_t step)
{
	if (!t)
		return 0;
	t->t0 = now();
	t->pending = 1;
	t->step = step;
	t->bytes = 0;
	ckpt__error_clear(&t->terr);
	if (pthread_create(&t->thread, NULL, copy_shard, t) == 0)
		t->running = 1;
	else
		copy_shard(t);
	ckpt_mutant_reached("drain_ack_early");
#ifdef CKPT_MUTANT_DRAIN_ACK_EARLY
	t->drained = step;      /* mutant: reported drained once the copy is under way, before the durable commit */
#endif
	return 0;
}

/* Rank 0, every rank's copy (and its manifest) synced: the commit of DURABLE/step-N. */
static int drain_commit(ckpt_tier *t, ckpt_error *err)
{
	char name[32], tmp[48], aside[64];
	ckpt_io d = dur_io(t, err, t->step, "drain.commit");
	struct stat sb;
	int rc;

	ckpt__gen_name(name, sizeof name, t->step);
	snprintf(tmp, sizeof tmp, "%s.tmp", name);
	snprintf(aside, sizeof aside, "%s.replaced", name);
	if ((rc = ckpt__io_phase(&d, "drain.commit")) < 0)
		goto out;
	if (ckpt__io_lstat(&d, name, &sb) == 0 &&
	    ((rc = ckpt__io_rmtree(&d, aside)) < 0 || (rc = ckpt__io_rename(&d, name, aside)) < 0))
		goto out;
	if ((rc = ckpt__io_rename(&d, tmp, name)) < 0 || (rc = ckpt__io_fsync_dir(&d, ".")) < 0)
		goto out;
	ckpt_error ignored;
	d.err = &ignored;
	ckpt__io_rmtree(&d, aside);
out:
	return rc;
}

/* Finish the drain in flight, if any: join, agree, commit on the durable tier. Collective. */
int ckpt__tier_drain_finish(ckpt_tier *t)
{
	ckpt_error agreed, local;
	uint64_t bytes;
	int rc;

	if (!t || !t->pending)
		return 0;
	if (t->running) {
		pthread_join(t->thread, NULL);
		t->running = 0;
	}
	t->pending = 0;
	bytes = t->bytes;
	if ((rc = ckpt__agree(t->comm, &t->terr, &agreed)) < 0)
		return rc;
	local = agreed;
	if (agreed.code == 0 && t->comm->rank == 0 && drain_commit(t, &local) == 0)
		t->retain = t->step;      /* by the next drain's thread, or at close */
	if (t->comm->rank == 0 && local.code != 0) {
		ckpt_error ignored;
		char tmp[48];
		ckpt_io d = dur_io(t, &ignored, t->step, "drain.commit");
		ckpt__gen_name(tmp, sizeof tmp, t->step);
		strcat(tmp, ".tmp");
		ckpt__io_rmtree(&d, tmp);      /* best effort: start-up removes it anyway */
	}
	if ((rc = t->comm->bcast(t->comm->ctx, &local, sizeof local, 0)) < 0)
		return rc;
	if (local.code == 0) {
		t->drained = t->step;
		ckpt__journal_add(t->journal, "\"event\":\"drained\",\"step\":%" PRIu64 ",\"bytes\":%" PRIu64
				  ",\"seconds\":%.6f", t->step, bytes, now() - t->t0);
	} else {
		ckpt__journal_add(t->journal, "\"event\":\"drain_failed\",\"step\":%" PRIu64 ",\"error\":\"%s\",\"why\":\"%s\"",
				  t->step, ckpt_strerror(local.code), local.code == -ENOSPC ? "durable tier full" : "");
	}
	return 0;
}

uint64_t ckpt__tier_drained(const ckpt_tier *t)
{
	return t ? t->drained : 0;
}

/* ---- fast retention ------------------------------------------------------- */

void ckpt__tier_retention_begin(ckpt_tier *t, ckpt_io *io)
{
	ckpt_io d = *io;
	uint64_t *steps = NULL;
	int n = 0;

	d.rootfd = t->durfd;
	d.root = t->durable;
	t->durable_max = 0;
	if (ckpt__scan(&d, &steps, &n) == 0 && n > 0)
		t->durable_max = steps[0];
	free(steps);
}

bool ckpt__tier_keep_fast(const ckpt_tier *t, uint64_t step)
{
	bool keep = t && step > t->durable_max;     /* not on the durable tier, and no newer one is */

	if (keep)
		ckpt_mutant_reached("fast_retention_undrained");
#ifdef CKPT_MUTANT_FAST_RETENTION_UNDRAINED
	keep = false;       /* mutant: the fast tier keeps K, drained or not */
#endif
	return keep;
}

/* ---- restore -------------------------------------------------------------- */

#define DURABLE_BIT ((uint64_t)1 << 63)

static int by_step_desc(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a & ~DURABLE_BIT, y = *(const uint64_t *)b & ~DURABLE_BIT;
	if (x != y)
		return x < y ? 1 : -1;
	/* the same step: the fast copy (bit clear) first */
	return (int)((*(const uint64_t *)a >> 63) - (*(const uint64_t *)b >> 63));
}

/* Rank 0: add the durable tier's generations to the fast scan; the durable ones carry DURABLE_BIT. */
int ckpt__tier_candidates(ckpt_tier *t, ckpt_io *io, uint64_t **steps, int *n)
{
	ckpt_io d = *io;
	uint64_t *ds = NULL, *v;
	int dn = 0, rc;

	if (!t)
		return 0;
	d.rootfd = t->durfd;
	d.root = t->durable;
	if ((rc = ckpt__scan(&d, &ds, &dn)) < 0)
		return rc;
	if (!(v = realloc(*steps, sizeof *v * (size_t)(*n + dn + 1)))) {
		free(ds);
		return ckpt__io_fail(io, -ENOMEM, NULL, "out of memory");
	}
	for (int i = 0; i < dn; i++)
		v[*n + i] = ds[i] | DURABLE_BIT;
	*steps = v;
	*n += dn;
	free(ds);
	ckpt_mutant_reached("restore_prefers_fast");
#ifdef CKPT_MUTANT_RESTORE_PREFERS_FAST
	(void)by_step_desc;      /* mutant: every fast generation before any durable one */
#else
	qsort(v, (size_t)*n, sizeof *v, by_step_desc);
#endif
	return 0;
}

/*
 * After restoring candidate i: a generation restored from the fast tier that
 * the durable tier lacks (its drain never committed: the job crashed first,
 * or the drain failed) is drained again. Collective (every rank has the same
 * candidates).
 */
int ckpt__tier_restored(ckpt_tier *t, const uint64_t *cands, int n, int i)
{
	if (!t || cands[i] & DURABLE_BIT)
		return 0;
	for (int k = 0; k < n; k++)
		if (cands[k] == (cands[i] | DURABLE_BIT))
			return 0;
	ckpt__journal_add(t->journal, "\"event\":\"drain_again\",\"step\":%" PRIu64, cands[i]);
	return ckpt__tier_drain_start(t, cands[i]);
}

/* Point io at the candidate's tier; the plain step. cand 0: back to the fast tier. */
uint64_t ckpt__tier_pick(const ckpt_tier *t, ckpt_io *io, uint64_t cand)
{
	if (!t)
		return cand;
	io->rootfd = cand & DURABLE_BIT ? t->durfd : t->fastfd;
	io->root = cand & DURABLE_BIT ? t->durable : t->fast;
	return cand & ~DURABLE_BIT;
}

const char *ckpt__tier_name(const ckpt_tier *t, uint64_t cand)
{
	return !t ? "" : cand & DURABLE_BIT ? "durable" : "fast";
}
