/*
 * The naive backend, reftrain-backend-naive.so: checkpointing as much field
 * code does it, to show that the harness fails it (the negative control).
 *
 * Save: every rank overwrites ROOT/rank-<R>.ckpt in place (open O_TRUNC,
 * write, close), then a barrier. No temporary name, no fsync, no manifest,
 * no rename, no checksum, no check of the configuration (config_hash), one
 * generation, and `keep` ignored. What that costs:
 *   - killed mid-save, a rank's file is torn (and the previous state gone);
 *   - killed between ranks' saves, files of different steps are left;
 *   - after a power loss, nothing was ever durable: files may be empty,
 *     short, or absent, though the save was acknowledged;
 *   - a flipped bit at rest is restored as it is.
 * Restore: each rank reads its own file (absent: nothing to restore) and
 * refuses only bytes that make no sense for its tensor table
 * (naive_format.h); it never allocates by a size read from disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "naive_format.h"
#include "reftrain/backend.h"

typedef struct naive {
	const reftrain_backend_config *cfg;
	char path[4096];
	char err[1024];
} naive;

static int fail(naive *k, int rc, const char *what)
{
	snprintf(k->err, sizeof k->err, "%s %s: %s", what, k->path, strerror(-rc));
	return rc;
}

static int naive_open(void **out, const reftrain_backend_config *cfg, char *err, size_t len)
{
	naive *k = calloc(1, sizeof *k);

	*out = NULL;
	if (!k) {
		snprintf(err, len, "naive backend: out of memory");
		return -ENOMEM;
	}
	k->cfg = cfg;
	if ((size_t)snprintf(k->path, sizeof k->path, "%s/rank-%d.ckpt", cfg->root, cfg->rank) >= sizeof k->path) {
		snprintf(err, len, "naive backend: checkpoint root %s: path too long", cfg->root);
		free(k);
		return -ENAMETOOLONG;
	}
	if (reftrain_naive_file_size(cfg->tensors, cfg->ntensors) == 0) {
		snprintf(err, len, "naive backend: this state (%zu tensors) cannot be stored in its format",
			 cfg->ntensors);
		free(k);
		return -EINVAL;
	}
	if (mkdir(cfg->root, 0700) < 0 && errno != EEXIST) {
		snprintf(err, len, "naive backend: mkdir %s: %s", cfg->root, strerror(errno));
		free(k);
		return -errno;
	}
	*out = k;
	return 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int save_file(naive *k, uint64_t step)
{
	const reftrain_backend_config *c = k->cfg;
	size_t isz = reftrain_naive_index_size(c->tensors, c->ntensors);
	unsigned char *index = malloc(isz);
	int fd, rc = 0;

	if (!index)
		return fail(k, -ENOMEM, "write");
	reftrain_naive_write_index(index, step, c->rank, c->world_size, c->tensors, c->ntensors);
	/* in place: from here until the last write, this rank has no checkpoint at all */
	if ((fd = open(k->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
		rc = fail(k, -errno, "open");
		goto out;
	}
	if ((rc = write_all(fd, index, isz)) < 0) {
		fail(k, rc, "write");
		close(fd);
		goto out;
	}
	for (size_t i = 0; i < c->ntensors; i++) {
		const reftrain_backend_tensor *x = &c->tensors[i];
		if ((rc = write_all(fd, x->data, x->local_elems * reftrain_naive_dtype_size(x->dtype))) < 0) {
			fail(k, rc, "write");
			close(fd);
			goto out;
		}
	}
	if (close(fd) < 0)
		rc = fail(k, -errno, "close");
out:
	free(index);
	return rc;
}

static int naive_save(void *h, uint64_t step, unsigned flags)
{
	naive *k = h;
	int rc = save_file(k, step), brc;

	(void)flags;
	/* "everyone has written": what a barrier after torch.save says, and all it says */
	brc = k->cfg->comm->barrier(k->cfg->comm->ctx);
	if (rc == 0 && brc < 0) {
		snprintf(k->err, sizeof k->err, "naive backend: barrier after the save failed: %s", strerror(-brc));
		rc = brc;
	}
	return rc;
}

/* Read this rank's file, bounded by what its tensor table needs: 0, NOTHING, or < 0. */
static int read_file(naive *k, unsigned char **buf, size_t *len)
{
	const reftrain_backend_config *c = k->cfg;
	size_t need = reftrain_naive_file_size(c->tensors, c->ntensors), got = 0;
	struct stat st;
	int fd, rc = 0;

	*buf = NULL;
	if ((fd = open(k->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return errno == ENOENT ? REFTRAIN_BACKEND_NOTHING : fail(k, -errno, "open");
	if (fstat(fd, &st) < 0) {
		rc = fail(k, -errno, "stat");
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(k->err, sizeof k->err, "%s: not a regular file", k->path);
		rc = -EBADMSG;
		goto out;
	}
	if ((uint64_t)st.st_size > need) {
		snprintf(k->err, sizeof k->err, "%s: %" PRIu64 " bytes, more than the %zu this rank's tensors need",
			 k->path, (uint64_t)st.st_size, need);
		rc = -EBADMSG;
		goto out;
	}
	if (!(*buf = malloc(need ? need : 1))) {
		rc = fail(k, -ENOMEM, "read");
		goto out;
	}
	/* up to need bytes whatever fstat said: the file may change under us */
	while (got < need) {
		ssize_t r = read(fd, *buf + got, need - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = fail(k, -errno, "read");
			goto out;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	*len = got;
out:
	close(fd);
	if (rc != 0) {
		free(*buf);
		*buf = NULL;
	}
	return rc;
}

static int naive_restore(void *h, reftrain_backend_restored *out)
{
	naive *k = h;
	const reftrain_backend_config *c = k->cfg;
	unsigned char *buf;
	const unsigned char *data;
	size_t len = 0;
	uint64_t step;
	char why[512];
	int rc = read_file(k, &buf, &len);

	if (rc != 0)
		return rc;
	if ((rc = reftrain_naive_parse(buf, len, c->rank, c->world_size, c->tensors, c->ntensors, &step, &data, why,
				       sizeof why)) < 0) {
		snprintf(k->err, sizeof k->err, "%s: %s", k->path, why);
		free(buf);
		return rc;
	}
	for (size_t i = 0; i < c->ntensors; i++) {
		size_t n = c->tensors[i].local_elems * reftrain_naive_dtype_size(c->tensors[i].dtype);
		memcpy(c->tensors[i].data, data, n);
		data += n;
	}
	free(buf);
	memset(out, 0, sizeof *out);
	out->step = step;
	snprintf(out->name, sizeof out->name, "rank-%d.ckpt@step-%08" PRIu64, c->rank, step);
	return 0;
}

/* This rank's one file, if any. */
static int naive_list(void *h, reftrain_backend_generation *gens, int max)
{
	naive *k = h;
	const reftrain_backend_config *c = k->cfg;
	reftrain_backend_generation g = { 0 };
	unsigned char *buf;
	const unsigned char *data;
	size_t len = 0;
	int rc = read_file(k, &buf, &len);

	if (rc == REFTRAIN_BACKEND_NOTHING)
		return 0;
	if (rc < 0 && rc != -EBADMSG)
		return rc;
	if (rc == 0) {
		g.valid = reftrain_naive_parse(buf, len, c->rank, c->world_size, c->tensors, c->ntensors, &g.step,
					       &data, g.why, sizeof g.why) == 0;
		free(buf);
	} else {
		snprintf(g.why, sizeof g.why, "%s", k->err);
	}
	snprintf(g.name, sizeof g.name, "rank-%d.ckpt", c->rank);
	if (max > 0)
		gens[0] = g;
	return 1;
}

static void naive_close(void *h)
{
	free(h);
}

static const char *naive_last_error(void *h)
{
	return h ? ((naive *)h)->err : "";
}

static const reftrain_backend table = {
	.abi = REFTRAIN_BACKEND_ABI,
	.name = "naive",
	.open = naive_open,
	.save = naive_save,
	.restore = naive_restore,
	.list = naive_list,
	.close = naive_close,
	.last_error = naive_last_error,
};

__attribute__((visibility("default"))) const reftrain_backend *reftrain_backend_v1(void);

const reftrain_backend *reftrain_backend_v1(void)
{
	return &table;
}
