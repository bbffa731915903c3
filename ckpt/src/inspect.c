#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/inspect.h"
#include "internal.h"
#include "seal.h"
#include "chunks.h"

static void problem(ckpt_gen_report *rep, const char *file, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void problem(ckpt_gen_report *rep, const char *file, const char *fmt, ...)
{
	va_list ap;
	char raw[600];

	rep->valid = 0;
	if (rep->nproblems == CKPT_MAX_PROBLEMS)
		return;
	ckpt__escape(rep->problems[rep->nproblems].file, sizeof rep->problems[0].file, file);
	va_start(ap, fmt);
	vsnprintf(raw, sizeof raw, fmt, ap);
	va_end(ap);
	ckpt__escape(rep->problems[rep->nproblems].why, sizeof rep->problems[0].why, raw);
	rep->nproblems++;
}

/* The error's sentence without the path it starts with (the report names the file). */
static void problem_from(ckpt_gen_report *rep, const char *file, const ckpt_error *e, const char *disp)
{
	const char *msg = e->msg;
	size_t n = strlen(disp);

	if (e->code == -ENOENT) {
		if (e->path[0] && strcmp(e->path, disp) != 0)      /* another file it needs (a chunk) */
			problem(rep, file, "missing: %s: %s", e->path, strerror(ENOENT));
		else
			problem(rep, file, "missing: %s", strerror(ENOENT));
		return;
	}
	if (strncmp(msg, disp, n) == 0 && strncmp(msg + n, ": ", 2) == 0)
		msg += n + 2;
	problem(rep, file, "%s", msg);
}

/* Split "DIR/NAME" into the directory (opened, links followed: the user named it) and NAME. */
static int open_parent(const char *gen_dir, char *root, size_t rlen, char *name, size_t nlen)
{
	char buf[CKPT_PATH_MAX];
	size_t n = strlen(gen_dir);

	if (n == 0 || n >= sizeof buf)
		return -ENAMETOOLONG;
	memcpy(buf, gen_dir, n + 1);
	while (n > 1 && buf[n - 1] == '/')
		buf[--n] = '\0';
	char *slash = strrchr(buf, '/');
	if (!slash) {
		snprintf(root, rlen, ".");
		snprintf(name, nlen, "%s", buf);
	} else {
		*slash = '\0';
		snprintf(root, rlen, "%s", slash == buf ? "/" : buf);
		snprintf(name, nlen, "%s", slash + 1);
	}
	if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EINVAL;
	int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/*
 * The one verification: restore's manifest checks and, for every rank, the
 * same shard check restore runs on that rank.
 */
static int verify_at(int rootfd, const char *root, const char *name, ckpt_gen_report *rep)
{
	ckpt_error err;
	ckpt_io io = { .rootfd = rootfd, .root = root, .rank = -1, .phase = "inspect", .err = &err, .seal = ckpt__seal_key_env() };
	ckpt_manifest m;
	uint64_t step;
	bool canonical = ckpt__gen_parse(name, &step);
	char disp[CKPT_PATH_MAX], path[CKPT_PATH_MAX];
	struct stat st;
	int rc;

	memset(rep, 0, sizeof *rep);
	ckpt__escape(rep->name, sizeof rep->name, name);
	rep->valid = 1;
	if (canonical)
		rep->step = step;
	if ((rc = ckpt__io_lstat(&io, name, &st)) < 0)
		return rc;
	if (!canonical)
		problem(rep, name, "not a generation name restore takes (step-NNNNNNNN, as libckpt writes it)");
	ckpt__error_clear(&err);
	snprintf(path, sizeof path, "%s/manifest.json", name);
	if (ckpt__gen_load(&io, name, canonical ? &step : NULL, &m, false) < 0) {
		if (!S_ISDIR(st.st_mode))
			problem(rep, name, "%s", S_ISLNK(st.st_mode) ? "a symbolic link, not a generation directory (never "
				"followed)" : "not a directory");
		else
			problem_from(rep, "manifest.json", &err, ckpt__io_display(&io, path, disp, sizeof disp));
		return 1;
	}
	rep->step = m.step;
	rep->world_size = m.world_size;
	rep->tags = m.tags;
	rep->config_hash = m.config_hash;
	snprintf(rep->experiment, sizeof rep->experiment, "%s", m.experiment);
	snprintf(rep->code_version, sizeof rep->code_version, "%s", m.code_version);
	for (int i = 0; i < m.nfiles; i++)
		rep->bytes += m.files[i].size;
	for (int r = 0; r < m.world_size; r++) {
		char shard[CKPT_NAME_MAX];
		if (m.chunk_size)
			ckpt__recipe_name(shard, sizeof shard, r);
		else
			ckpt__shard_name(shard, sizeof shard, r);
		snprintf(path, sizeof path, "%s/%s", name, shard);
		ckpt__error_clear(&err);
		if (ckpt__shard_verify(&io, name, &m, r, NULL) < 0)
			problem_from(rep, shard, &err, ckpt__io_display(&io, path, disp, sizeof disp));
	}
	ckpt__manifest_free(&m);
	return rep->valid ? 0 : 1;
}

int ckpt_inspect_verify(const char *gen_dir, ckpt_gen_report *rep)
{
	char root[CKPT_PATH_MAX], name[CKPT_PATH_MAX];
	int fd = open_parent(gen_dir, root, sizeof root, name, sizeof name), rc;

	memset(rep, 0, sizeof *rep);
	if (fd < 0)
		return fd;
	rc = verify_at(fd, root, name, rep);
	close(fd);
	return rc;
}

int ckpt_inspect_list(const char *root, ckpt_gen_report **out, int *n)
{
	ckpt_error err;
	int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc, k;
	ckpt_io io = { .rootfd = fd, .root = root, .rank = -1, .phase = "inspect", .err = &err, .seal = ckpt__seal_key_env() };
	uint64_t *steps = NULL;
	ckpt_gen_report *reps = NULL;

	*out = NULL;
	*n = 0;
	if (fd < 0)
		return -errno;
	ckpt__error_clear(&err);
	if ((rc = ckpt__scan(&io, &steps, &k)) < 0)
		goto out;
	if (k > 0 && !(reps = calloc((size_t)k, sizeof *reps))) {
		rc = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < k; i++) {
		char name[32];
		ckpt__gen_name(name, sizeof name, steps[i]);
		if (verify_at(fd, root, name, &reps[i]) < 0) {
			reps[i].valid = 0;
			problem(&reps[i], name, "disappeared while listing");
		}
		reps[i].step = steps[i];
	}
	/* own and shared bytes: chunks count once per generation, shared if another one references them */
	uint64_t *use = k > 0 ? calloc((size_t)k * 3, sizeof *use) : NULL;
	if (k > 0 && (!use || (rc = ckpt__chunks_usage(&io, steps, k, use, use + k, use + 2 * k)) < 0)) {
		free(use);
		rc = rc < 0 ? rc : -ENOMEM;
		goto out;
	}
	for (int i = 0; i < k; i++) {
		reps[i].own_bytes = reps[i].bytes + use[k + i];
		reps[i].shared_bytes = use[2 * k + i];
		reps[i].bytes += use[i];
	}
	free(use);
	*out = reps;
	*n = k;
	reps = NULL;
out:
	free(reps);
	free(steps);
	close(fd);
	return rc;
}

int ckpt_inspect_latest(const char *root, char *buf, size_t len)
{
	char raw[CKPT_LATEST_MAX];
	int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc;

	if (len)
		buf[0] = '\0';
	if (fd < 0)
		return -errno;
	rc = ckpt__latest_read(fd, raw, sizeof raw);
	close(fd);
	if (rc == 0)
		ckpt__escape(buf, len, raw);
	return rc;
}

int ckpt_inspect_show(const char *gen_dir, FILE *out)
{
	char root[CKPT_PATH_MAX], name[CKPT_PATH_MAX], a[CKPT_NAME_MAX * 4], b[CKPT_COMPONENT_MAX * 4];
	ckpt_manifest m;
	ckpt_error err;
	int fd = open_parent(gen_dir, root, sizeof root, name, sizeof name);
	ckpt_io io = { .rootfd = fd, .root = root, .rank = -1, .phase = "inspect", .err = &err, .seal = ckpt__seal_key_env() };

	if (fd < 0)
		return fd;
	ckpt__error_clear(&err);
	if (ckpt__gen_load(&io, name, NULL, &m, false) < 0) {
		char msg[sizeof err.msg * 4];
		ckpt__escape(msg, sizeof msg, err.msg);
		fprintf(out, "%s\n", msg);
		close(fd);
		return err.code == -ENOENT && strstr(err.msg, "manifest.json") == NULL ? -ENOENT : -CKPT_ECORRUPT;
	}
	close(fd);
	ckpt__escape(a, sizeof a, name);
	fprintf(out, "generation     %s\nstep           %" PRIu64 "\nworld_size     %d\nschema         %d\n"
		"config_hash    %016" PRIx64 "\ntags           latest%s%s\n", a, m.step, m.world_size, m.schema_version,
		m.config_hash, m.tags & CKPT_TAG_BEST ? ", best" : "", m.tags & CKPT_TAG_INTERIM ? ", interim" : "");
	if (m.chunk_size)      /* incremental: where its chain starts and how deep it is */
		fprintf(out, "chunks         %" PRIu32 " bytes each, chain of step %" PRIu64 ", depth %" PRIu32 "%s\n",
			m.chunk_size, m.chain_base, m.chain_depth, m.chain_depth ? "" : " (full)");
	if (*m.experiment || *m.code_version)      /* catalog labels: printable ASCII once parsed */
		fprintf(out, "experiment     %s\ncode_version   %s\n", *m.experiment ? m.experiment : "-",
			*m.code_version ? m.code_version : "-");
	if (m.telemetry_json) {
		char tel[4096 * 4];
		ckpt__escape(tel, sizeof tel, m.telemetry_json);
		fprintf(out, "telemetry      %s\n", tel);
	}
	fprintf(out, "\nfiles\n  %-28s %5s %14s  %s\n", "name", "rank", "bytes", "xxh3");
	for (int i = 0; i < m.nfiles; i++) {
		ckpt__escape(a, sizeof a, m.files[i].name);
		fprintf(out, "  %-28s %5d %14" PRIu64 "  %016" PRIx64 "\n", a, m.files[i].rank, m.files[i].size,
			m.files[i].hash);
	}
	fprintf(out, "\ntensors (per rank: elements at offset of global)\n  %-20s %-10s %5s %-5s %12s\n", "name",
		"component", "stage", "dtype", "global");
	for (int k = 0; k < m.ntensors; k++) {
		const ckpt_layout_entry *t = &m.layout[k];
		ckpt__escape(a, sizeof a, t->name);
		ckpt__escape(b, sizeof b, t->component);
		fprintf(out, "  %-20s %-10s %5d %-5s %12" PRIu64 "  ", a, b, t->stage, ckpt__dtype_name(t->dtype),
			t->global_elems);
		if (t->local_at == SIZE_MAX && t->goff_at == SIZE_MAX) {
			fprintf(out, "every rank: %" PRIu64 " at %" PRIu64 "\n", t->local_elems, t->global_offset);
			continue;
		}
		for (int r = 0; r < m.world_size && r < 8; r++)
			fprintf(out, "%s%d: %" PRIu64 "@%" PRIu64, r ? ", " : "", r, ckpt__layout_local(&m, k, r),
				ckpt__layout_goff(&m, k, r));
		fprintf(out, "%s\n", m.world_size > 8 ? ", ..." : "");
	}
	ckpt__manifest_free(&m);
	return 0;
}

int ckpt_inspect_layout(const char *gen_dir, ckpt_inspect_tensor **out, int *n, int *world_size,
			uint64_t *config_hash)
{
	char root[CKPT_PATH_MAX], name[CKPT_PATH_MAX];
	ckpt_manifest m;
	ckpt_error err;
	int fd = open_parent(gen_dir, root, sizeof root, name, sizeof name), rc;
	ckpt_io io = { .rootfd = fd, .root = root, .rank = -1, .phase = "inspect", .err = &err, .seal = ckpt__seal_key_env() };

	*out = NULL;
	*n = 0;
	if (fd < 0)
		return fd;
	ckpt__error_clear(&err);
	rc = ckpt__gen_load(&io, name, NULL, &m, false);
	close(fd);
	if (rc < 0)
		return rc;
	size_t total = (size_t)m.world_size * (size_t)m.ntensors;
	if (total > ((size_t)1 << 24)) {      /* 16 M rank-tensor pairs: a layout, not a crafted bomb */
		ckpt__manifest_free(&m);
		return -EFBIG;
	}
	ckpt_inspect_tensor *v = calloc(total + 1, sizeof *v);
	if (!v) {
		ckpt__manifest_free(&m);
		return -ENOMEM;
	}
	for (int r = 0; r < m.world_size; r++)
		for (int k = 0; k < m.ntensors; k++) {
			ckpt_inspect_tensor *t = &v[(size_t)r * (size_t)m.ntensors + (size_t)k];
			const ckpt_layout_entry *e = &m.layout[k];
			snprintf(t->name, sizeof t->name, "%s", e->name);
			snprintf(t->component, sizeof t->component, "%s", e->component);
			t->rank = r;
			t->stage = e->stage;
			t->dtype = (int)e->dtype;
			t->local_elems = ckpt__layout_local(&m, k, r);
			t->global_elems = e->global_elems;
			t->global_offset = ckpt__layout_goff(&m, k, r);
		}
	*out = v;
	*n = (int)total;
	*world_size = m.world_size;
	*config_hash = m.config_hash;
	ckpt__manifest_free(&m);
	return 0;
}
