#include "ckpt_fixture.h"

#include <stdarg.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <fiu-control.h>
#include <fiu.h>
#include <ftw.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "fake_comm.h"

char *fx_tmpdir(void)
{
	char *t = strdup("/tmp/ckpt-unit-XXXXXX");
	if (!mkdtemp(t))
		abort();
	return t;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

void fx_rmrf(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void fx_job_init(fx_job *j, const char *root, int world)
{
	memset(j, 0, sizeof *j);
	j->root = root;
	j->world = world;
	j->keep_last = 3;
	j->config_hash = 0x1234abcd5678ef00ull;
}

/* The per-rank state: a sharded fp32 tensor, a bf16 copy, a counter, a blob. */
typedef struct fx_state {
	float w[FX_ELEMS];
	uint16_t h[FX_ELEMS];
	uint64_t counter;
	char blob[37];
} fx_state;

static void fill(fx_state *s, int rank, uint64_t step)
{
	for (int i = 0; i < FX_ELEMS; i++) {
		s->w[i] = (float)(step * 1000003u + (uint64_t)rank * 7919u + (uint64_t)i) * 0.25f;
		s->h[i] = (uint16_t)(step * 31u + (uint64_t)rank * 17u + (uint64_t)i);
	}
	s->counter = step * 100u + (uint64_t)rank;
	snprintf(s->blob, sizeof s->blob, "rank %d at step %llu", rank, (unsigned long long)step);
}

static int build_state(ckpt_state **st, fx_state *s, int rank, int world)
{
	int rc = ckpt_state_new(st);
	size_t g = (size_t)FX_ELEMS * (size_t)world, off = (size_t)FX_ELEMS * (size_t)rank;
	if (rc)
		return rc;
	/* registered out of stage order on purpose: the file is in stage order */
	if ((rc = ckpt_state_add_blob(*st, "user.blob", "user", CKPT_STAGE_DATA, s->blob, sizeof s->blob)) ||
	    (rc = ckpt_state_add_tensor(*st, "master", "master", CKPT_STAGE_MODEL, CKPT_F32, s->w, FX_ELEMS, g, off)) ||
	    (rc = ckpt_state_add_tensor(*st, "opt.step", "opt", CKPT_STAGE_OPTIMIZER, CKPT_U64, &s->counter, 1, 1, 0)) ||
	    (rc = ckpt_state_add_tensor(*st, "params", "params", CKPT_STAGE_MODEL, CKPT_BF16, s->h, FX_ELEMS, g, off)))
		return rc;
	return 0;
}

typedef struct rank_arg {
	fx_job *job;
	int restore;
} rank_arg;

static void rank_main(ckpt_comm *comm, void *p)
{
	rank_arg *a = p;
	fx_job *j = a->job;
	fx_rank_result *res = &j->r[comm->rank];
	fx_state *s = calloc(1, sizeof *s);
	ckpt_state *st = NULL;
	ckpt *c = NULL;
	ckpt_config cfg = { .root = j->root, .keep_last = j->keep_last, .keep_every = j->keep_every,
			    .keep_best = j->keep_best, .config_hash = j->config_hash, .file_mode = j->file_mode,
			    .dir_mode = j->dir_mode, .allow_shared_root = j->allow_shared_root,
			    .validate = j->validate, .validate_arg = &comm->rank, .key_file = j->key_file,
			    .allow_unsealed = j->allow_unsealed, .seal_chunk_bytes = j->seal_chunk_bytes };

	if (!a->restore)
		fill(s, comm->rank, j->step);
	res->rc = build_state(&st, s, comm->rank, comm->size);
	if (res->rc == 0)
		res->rc = ckpt_open(&c, &cfg, comm, st, &res->err);
	if (res->rc == 0) {
		res->rc = a->restore ? ckpt_restore(c, &res->info) : ckpt_save(c, j->step, j->tags);
		res->err = *ckpt_last_error(c);
	}
	if (a->restore && res->rc == 0) {
		fx_state *want = calloc(1, sizeof *want);
		fill(want, comm->rank, res->info.step);
		res->content_ok = memcmp(s, want, sizeof *s) == 0;
		free(want);
	}
	ckpt_close(c);
	ckpt_state_free(st);
	free(s);
}

static int run(fx_job *j, int restore)
{
	rank_arg args[FX_MAX_RANKS];
	void *ptrs[FX_MAX_RANKS];

	for (int r = 0; r < j->world; r++) {
		args[r] = (rank_arg){ .job = j, .restore = restore };
		ptrs[r] = &args[r];
		memset(&j->r[r], 0, sizeof j->r[r]);
	}
	fake_comm_run(j->world, rank_main, ptrs);
	/* every rank must report the same outcome */
	for (int r = 1; r < j->world; r++)
		if (j->r[r].rc != j->r[0].rc) {
			fprintf(stderr, "ranks disagree: rank 0 rc=%d, rank %d rc=%d\n", j->r[0].rc, r, j->r[r].rc);
			return 9999;
		}
	return j->r[0].rc;
}

int fx_save(fx_job *j)
{
	return run(j, 0);
}

int fx_restore(fx_job *j)
{
	int rc = run(j, 1);
	for (int r = 0; rc == 0 && r < j->world; r++)
		if (!j->r[r].content_ok || j->r[r].info.step != j->r[0].info.step) {
			fprintf(stderr, "rank %d restored wrong contents\n", r);
			return 9998;
		}
	return rc;
}

/* ---- injector ---- */

static fx_fault armed;
static atomic_int seen, fired;
static _Thread_local ckpt_fault_action action;

static int on_point(const char *name, int *failnum, void **failinfo, unsigned *flags)
{
	const ckpt_fault_ctx *ctx = ckpt_fault_current();
	(void)name;
	(void)failnum;
	(void)flags;

	if (armed.rank >= 0 && ctx->rank != armed.rank)
		return 0;
	if ((armed.op && strcmp(ctx->op, armed.op) != 0) || (armed.phase && strcmp(ctx->phase, armed.phase) != 0))
		return 0;
	int n = atomic_fetch_add(&seen, 1) + 1;
	if (n < armed.nth || (armed.times && n >= armed.nth + armed.times))
		return 0;
	atomic_fetch_add(&fired, 1);
	action = armed.action;
	*failinfo = &action;
	return 1;
}

void fx_arm(const fx_fault *f)
{
	static int inited;
	if (!inited++)
		fiu_init(0);
	armed = *f;
	if (armed.nth < 1)
		armed.nth = 1;
	atomic_store(&seen, 0);
	atomic_store(&fired, 0);
	fiu_enable_external(f->op && strcmp(f->op, "phase") == 0 ? "ckpt/phase/*" : "ckpt/io/*", 1, NULL, 0, on_point);
}

void fx_disarm(void)
{
	fiu_disable("ckpt/phase/*");
	fiu_disable("ckpt/io/*");
}

int fx_fired(void)
{
	return atomic_load(&fired);
}

int fx_seen(void)
{
	return atomic_load(&seen);
}

void fx_flip(const char *path, long offset)
{
	int fd = open(path, O_RDWR);
	struct stat st;
	unsigned char b;

	if (fd < 0 || fstat(fd, &st) < 0)
		abort();
	off_t at = offset >= 0 ? offset : st.st_size + offset;
	if (pread(fd, &b, 1, at) != 1)
		abort();
	b ^= 0x10;
	if (pwrite(fd, &b, 1, at) != 1)
		abort();
	close(fd);
}

void fx_truncate(const char *path, long size)
{
	if (truncate(path, size) < 0)
		abort();
}

bool fx_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f || fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0)
		abort();
	buf = malloc((size_t)n + 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
		abort();
	fclose(f);
	buf[n] = '\0';
	*len = (size_t)n;
	return buf;
}

void fx_copy(const char *from, const char *to)
{
	size_t n;
	char *buf = slurp(from, &n);
	FILE *f = fopen(to, "wb");
	if (!f || fwrite(buf, 1, n, f) != n || fclose(f) != 0)
		abort();
	free(buf);
}

void fx_reseal(const char *gen_dir)
{
	char path[1024], hex[17];
	size_t len;
	json_t *m, *f;
	size_t i;

	snprintf(path, sizeof path, "%s/manifest.json", gen_dir);
	char *text = slurp(path, &len);
	if (!(m = json_loadb(text, len, 0, NULL)))
		abort();
	free(text);
	json_array_foreach(json_object_get(m, "files"), i, f) {
		char shard[1024];
		size_t n;
		snprintf(shard, sizeof shard, "%s/%s", gen_dir, json_string_value(json_object_get(f, "name")));
		char *data = slurp(shard, &n);
		snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH3_64bits(data, n));
		free(data);
		json_object_set_new(f, "size", json_integer((json_int_t)n));
		json_object_set_new(f, "xxh3", json_string(hex));
	}
	json_object_del(m, "checksum");
	char *body = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
	size_t n = strlen(body);
	body[n - 1] = ',';          /* drop the closing brace: ,"checksum":"..."} follows */
	snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH3_64bits(body, n));
	FILE *out = fopen(path, "wb");
	if (!out || fprintf(out, "%s\"checksum\":\"%s\"}\n", body, hex) < 0 || fclose(out) != 0)
		abort();
	free(body);
	json_decref(m);
}

void fx_save_ok(fx_job *j, uint64_t step)
{
	j->step = step;
	assert_int_equal(fx_save(j), 0);
}

char *fx_path(const char *root, const char *fmt, ...)
{
	static char buf[4][1024];
	static int k;
	char rel[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rel, sizeof rel, fmt, ap);
	va_end(ap);
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof buf[k], "%s/%s", root, rel);
	return buf[k];
}
