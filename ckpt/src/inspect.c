#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt/inspect.h"
#include "internal.h"

static void problem(ckpt_gen_report *rep, const char *file, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void problem(ckpt_gen_report *rep, const char *file, const char *fmt, ...)
{
	va_list ap;

	rep->valid = 0;
	if (rep->nproblems == CKPT_MAX_PROBLEMS)
		return;
	snprintf(rep->problems[rep->nproblems].file, sizeof rep->problems[0].file, "%s", file);
	va_start(ap, fmt);
	vsnprintf(rep->problems[rep->nproblems].why, sizeof rep->problems[0].why, fmt, ap);
	va_end(ap);
	rep->nproblems++;
}

static const char *base_name(const char *path)
{
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	const char *p = path + n;
	while (p > path && p[-1] != '/')
		p--;
	return p;
}

static int read_manifest(const char *gen_dir, ckpt_manifest *m, ckpt_gen_report *rep)
{
	char path[CKPT_PATH_MAX], *text = NULL, why[300];
	ckpt_error err;
	ckpt_io io = { .rank = -1, .phase = "inspect", .err = &err };
	size_t len;
	int rc;

	ckpt__error_clear(&err);
	snprintf(path, sizeof path, "%s/manifest.json", gen_dir);
	rc = ckpt__read_small_file(&io, path, &text, &len, 64u << 20);
	if (rc == -ENOENT) {
		problem(rep, "manifest.json", "missing (the save never committed, or it was deleted)");
		return 1;
	}
	if (rc < 0) {
		problem(rep, "manifest.json", "unreadable: %s", strerror(rc > -1000 ? -rc : EIO));
		return 1;
	}
	rc = ckpt__manifest_parse(text, len, m, why, sizeof why);
	free(text);
	if (rc < 0) {
		problem(rep, "manifest.json", "%s", why);
		return 1;
	}
	return 0;
}

int ckpt_inspect_verify(const char *gen_dir, ckpt_gen_report *rep)
{
	ckpt_manifest m;
	struct stat st;

	memset(rep, 0, sizeof *rep);
	snprintf(rep->name, sizeof rep->name, "%s", base_name(gen_dir));
	rep->valid = 1;
	if (stat(gen_dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return -ENOENT;
	if (read_manifest(gen_dir, &m, rep))
		return 1;
	rep->step = m.step;
	rep->world_size = m.world_size;
	rep->tags = m.tags;
	uint64_t dir_step;
	if (ckpt__gen_parse(rep->name, &dir_step) && dir_step != m.step)
		problem(rep, "manifest.json", "manifest is for step %" PRIu64 " but the directory is %s", m.step,
			rep->name);

	char *seen = calloc((size_t)m.world_size, 1);
	for (int i = 0; i < m.nfiles; i++) {
		const ckpt_file_entry *f = &m.files[i];
		char path[CKPT_PATH_MAX];
		ckpt_error err;
		ckpt_io io = { .rank = -1, .phase = "inspect", .err = &err };
		uint64_t hash;
		int rc;

		rep->bytes += f->size;
		if (f->rank < 0 || f->rank >= m.world_size || (seen && seen[f->rank]++))
			problem(rep, f->name, "manifest lists rank %d twice or out of range", f->rank);
		snprintf(path, sizeof path, "%s/%s", gen_dir, f->name);
		if (stat(path, &st) < 0) {
			problem(rep, f->name, "missing: %s", strerror(errno));
			continue;
		}
		if ((uint64_t)st.st_size != f->size) {
			problem(rep, f->name, "size %lld bytes, manifest says %" PRIu64 " (truncated or overwritten)",
				(long long)st.st_size, f->size);
			continue;
		}
		ckpt__error_clear(&err);
		rc = ckpt__hash_file(&io, path, f->size, &hash, NULL, NULL, 0);
		if (rc < 0)
			problem(rep, f->name, "unreadable: %s", err.msg[0] ? err.msg : strerror(-rc));
		else if (hash != f->hash)
			problem(rep, f->name, "xxh3 %016" PRIx64 ", manifest says %016" PRIx64 " (contents damaged)",
				hash, f->hash);
	}
	for (int r = 0; seen && r < m.world_size; r++)
		if (!seen[r])
			problem(rep, "manifest.json", "lists no shard for rank %d", r);
	free(seen);
	ckpt__manifest_free(&m);
	return rep->valid ? 0 : 1;
}

static int cmp_report(const void *a, const void *b)
{
	const ckpt_gen_report *x = a, *y = b;
	return x->step < y->step ? 1 : x->step > y->step ? -1 : 0;
}

int ckpt_inspect_list(const char *root, ckpt_gen_report **out, int *n)
{
	DIR *d = opendir(root);
	struct dirent *de;
	ckpt_gen_report *reps = NULL;
	int cap = 0;

	*out = NULL;
	*n = 0;
	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		uint64_t step;
		char path[CKPT_PATH_MAX];
		if (!ckpt__gen_parse(de->d_name, &step))
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 16;
			ckpt_gen_report *r = realloc(reps, sizeof *r * (size_t)cap);
			if (!r) {
				free(reps);
				closedir(d);
				return -ENOMEM;
			}
			reps = r;
		}
		snprintf(path, sizeof path, "%s/%s", root, de->d_name);
		ckpt_inspect_verify(path, &reps[*n]);
		reps[*n].step = step;
		(*n)++;
	}
	closedir(d);
	qsort(reps, (size_t)*n, sizeof *reps, cmp_report);
	*out = reps;
	return 0;
}

int ckpt_inspect_show(const char *gen_dir, FILE *out)
{
	ckpt_gen_report rep;
	ckpt_manifest m;
	char path[CKPT_PATH_MAX], *text = NULL;
	ckpt_error err;
	ckpt_io io = { .rank = -1, .phase = "inspect", .err = &err };
	size_t len;

	memset(&rep, 0, sizeof rep);
	ckpt__error_clear(&err);
	if (read_manifest(gen_dir, &m, &rep)) {
		fprintf(out, "%s: %s: %s\n", gen_dir, rep.problems[0].file, rep.problems[0].why);
		return -CKPT_ECORRUPT;
	}
	fprintf(out, "generation     %s\nstep           %" PRIu64 "\nworld_size     %d\nschema         %d\n"
		"config_hash    %016" PRIx64 "\ntags           latest%s%s\n", base_name(gen_dir), m.step,
		m.world_size, m.schema_version, m.config_hash, m.tags & CKPT_TAG_BEST ? ", best" : "",
		m.tags & CKPT_TAG_INTERIM ? ", interim" : "");
	snprintf(path, sizeof path, "%s/manifest.json", gen_dir);
	if (ckpt__read_small_file(&io, path, &text, &len, 64u << 20) == 0) {
		char *tel = strstr(text, "\"telemetry\":");
		char *end = tel ? strstr(tel, "},\"checksum\"") : NULL;
		if (tel && end)
			fprintf(out, "telemetry      %.*s}\n", (int)(end - tel - 12), tel + 12);
		free(text);
	}
	fprintf(out, "\nfiles\n  %-28s %5s %14s  %s\n", "name", "rank", "bytes", "xxh3");
	for (int i = 0; i < m.nfiles; i++)
		fprintf(out, "  %-28s %5d %14" PRIu64 "  %016" PRIx64 "\n", m.files[i].name, m.files[i].rank,
			m.files[i].size, m.files[i].hash);
	fprintf(out, "\ntensors\n  %-20s %-10s %4s %5s %-5s %12s %12s %12s\n", "name", "component", "rank",
		"stage", "dtype", "elements", "of global", "at offset");
	for (int i = 0; i < m.ntensors; i++) {
		const ckpt_tensor_entry *t = &m.tensors[i];
		fprintf(out, "  %-20s %-10s %4d %5d %-5s %12" PRIu64 " %12" PRIu64 " %12" PRIu64 "\n", t->name,
			t->component, t->rank, t->stage, ckpt__dtype_name(t->dtype), t->local_elems, t->global_elems,
			t->global_offset);
	}
	ckpt__manifest_free(&m);
	return 0;
}
