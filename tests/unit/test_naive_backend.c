/*
 * The naive backend (reftrain-backend-naive.so) and its file format.
 *
 * Guards against: a restore that trusts sizes read from disk (reads or
 * allocates past what this rank's tensors need, crashes on garbage), a
 * truncated or foreign file restored as if it were whole, and a save that
 * is not what the negative control claims (in place, one file per rank).
 * Single rank, with a fake communicator: the backend interface needs no MPI.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "solo_comm.h"
#include "naive_format.h"
#include "reftrain/backend.h"

const reftrain_backend *reftrain_backend_v1(void);

/* ---- a small state: four tensors of every dtype ---- */

typedef struct fx {
	float w[5];
	uint16_t b[3];
	uint64_t step;
	unsigned char blob[7];
	reftrain_backend_tensor t[4];
	char root[256];
	solo_comm solo;
	reftrain_backend_config cfg;
} fx;

static void fill(fx *f, int seed)
{
	for (int i = 0; i < 5; i++)
		f->w[i] = (float)(seed * 10 + i) * 0.5f;
	for (int i = 0; i < 3; i++)
		f->b[i] = (uint16_t)(seed * 100 + i);
	f->step = (uint64_t)seed * 1000;
	for (int i = 0; i < 7; i++)
		f->blob[i] = (unsigned char)(seed + i);
}

static int setup(void **state)
{
	fx *f = calloc(1, sizeof *f);

	f->t[0] = (reftrain_backend_tensor){ "w.f32", "master", REFTRAIN_BACKEND_F32, REFTRAIN_BACKEND_PER_RANK,
					     f->w, 5, 5, 0 };
	f->t[1] = (reftrain_backend_tensor){ "b.bf16", "params", REFTRAIN_BACKEND_BF16, REFTRAIN_BACKEND_REPLICATED,
					     f->b, 3, 3, 0 };
	f->t[2] = (reftrain_backend_tensor){ "opt.step", "opt", REFTRAIN_BACKEND_U64, REFTRAIN_BACKEND_REPLICATED,
					     &f->step, 1, 1, 0 };
	f->t[3] = (reftrain_backend_tensor){ "user.blob", "user", REFTRAIN_BACKEND_U8, REFTRAIN_BACKEND_REPLICATED,
					     f->blob, 7, 7, 0 };
	snprintf(f->root, sizeof f->root, "/tmp/test_naive_backend.XXXXXX");
	assert_non_null(mkdtemp(f->root));
	solo_comm_init(&f->solo);
	f->cfg = (reftrain_backend_config){ .root = f->root, .rank = 0, .world_size = 1, .keep = 3,
					    .tensors = f->t, .ntensors = 4, .comm = &f->solo.comm };
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	char path[300];

	snprintf(path, sizeof path, "%s/rank-0.ckpt", f->root);
	unlink(path);
	rmdir(f->root);
	free(f);
	return 0;
}

/* The bytes a save of the fixture at `step` writes, built by the format's own writer. */
static unsigned char *image(fx *f, uint64_t step, size_t *len)
{
	size_t isz = reftrain_naive_index_size(f->t, 4), off;
	unsigned char *buf;

	*len = reftrain_naive_file_size(f->t, 4);
	buf = malloc(*len);
	reftrain_naive_write_index(buf, step, 0, 1, f->t, 4);
	off = isz;
	for (int i = 0; i < 4; i++) {
		size_t n = f->t[i].local_elems * reftrain_naive_dtype_size(f->t[i].dtype);
		memcpy(buf + off, f->t[i].data, n);
		off += n;
	}
	return buf;
}

static int parse(fx *f, const unsigned char *buf, size_t len, uint64_t *step, char *why)
{
	const unsigned char *data;
	return reftrain_naive_parse(buf, len, 0, 1, f->t, 4, step, &data, why, 256);
}

/* ---- the format ---- */

static void test_naive_format__whole_file_parses(void **state)
{
	fx *f = *state;
	size_t len;
	uint64_t step = 0;
	char why[256];
	unsigned char *buf;
	const unsigned char *data;

	fill(f, 1);
	buf = image(f, 40, &len);
	assert_int_equal(reftrain_naive_parse(buf, len, 0, 1, f->t, 4, &step, &data, why, sizeof why), 0);
	assert_int_equal(step, 40);
	assert_memory_equal(data, f->w, sizeof f->w);
	assert_ptr_equal(data, buf + reftrain_naive_index_size(f->t, 4));
	free(buf);
}

static void test_naive_format__every_truncation_is_refused(void **state)
{
	fx *f = *state;
	size_t len;
	uint64_t step;
	char why[256];
	unsigned char *buf;

	fill(f, 1);
	buf = image(f, 40, &len);
	for (size_t n = 0; n < len; n++) {
		/* a copy of exactly n bytes, so ASan sees any read past them */
		unsigned char *cut = malloc(n ? n : 1);
		memcpy(cut, buf, n);
		why[0] = '\0';
		assert_int_equal(parse(f, cut, n, &step, why), -EBADMSG);
		assert_true(strstr(why, n ? "truncated" : "empty") != NULL);
		free(cut);
	}
	free(buf);
}

static void test_naive_format__oversize_is_refused(void **state)
{
	fx *f = *state;
	size_t len;
	uint64_t step;
	char why[256];
	unsigned char *buf, *big;

	fill(f, 1);
	buf = image(f, 40, &len);
	big = calloc(1, len + 100);
	memcpy(big, buf, len);
	assert_int_equal(parse(f, big, len + 100, &step, why), -EBADMSG);
	assert_non_null(strstr(why, "100 more than the tensors need"));
	free(big);
	free(buf);
}

static void test_naive_format__garbage_is_refused(void **state)
{
	fx *f = *state;
	unsigned char junk[4096];
	uint64_t step;
	char why[256];

	for (size_t i = 0; i < sizeof junk; i++)
		junk[i] = (unsigned char)(i * 131 + 7);
	assert_int_equal(parse(f, junk, sizeof junk, &step, why), -EBADMSG);
	assert_non_null(strstr(why, "not a naive checkpoint"));
}

/* Each field of the header and index, broken in turn: refused, with the field named. */
static void test_naive_format__broken_fields_are_named(void **state)
{
	fx *f = *state;
	static const struct { size_t off; unsigned char value; const char *why; } cases[] = {
		{ 16, 1, "written by rank 1 of 1" },           /* rank */
		{ 20, 2, "this is rank 0 of 1" },              /* world size */
		{ 24, 9, "holds 9 tensors" },                  /* tensor count */
		{ 33, 0xff, "name length 65285 is not in 1..255" }, /* 1st name length, high byte */
		{ 32, 4, "is not w.f32" },                     /* 1st name length: 4 */
		{ 34, 3, "w.f32: dtype 3, expected 0" },       /* 1st dtype */
		{ 40, 6, "w.f32: 6 elements, this rank has 5" },
		{ 47, 0x80, "elements, this rank has 5" },     /* 1st count: 2^63 + 5 */
		{ 48, 'x', "is not w.f32" },                   /* 1st name's bytes */
	};
	size_t len;
	uint64_t step;
	char why[256];

	fill(f, 1);
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		unsigned char *buf = image(f, 40, &len);
		buf[cases[i].off] = cases[i].value;
		why[0] = '\0';
		assert_int_equal(parse(f, buf, len, &step, why), -EBADMSG);
		if (!strstr(why, cases[i].why))
			fail_msg("offset %zu: \"%s\" does not say \"%s\"", cases[i].off, why, cases[i].why);
		free(buf);
	}
}

static void test_naive_format__a_name_too_long_cannot_be_stored(void **state)
{
	fx *f = *state;
	char name[300];

	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	f->t[2].name = name;
	assert_int_equal(reftrain_naive_index_size(f->t, 4), 0);
	assert_int_equal(reftrain_naive_file_size(f->t, 4), 0);
	f->t[2].name = "";
	assert_int_equal(reftrain_naive_file_size(f->t, 4), 0);
	f->t[2].name = "opt.step";
}

/* ---- the backend ---- */

static void *open_backend(fx *f)
{
	const reftrain_backend *b = reftrain_backend_v1();
	char err[256];
	void *h = NULL;

	assert_int_equal(b->abi, REFTRAIN_BACKEND_ABI);
	assert_int_equal(b->open(&h, &f->cfg, err, sizeof err), 0);
	return h;
}

static void path_of(fx *f, char *buf, size_t len)
{
	snprintf(buf, len, "%s/rank-0.ckpt", f->root);
}

static void test_naive_backend__save_then_restore_gives_the_state_back(void **state)
{
	fx *f = *state;
	const reftrain_backend *b = reftrain_backend_v1();
	reftrain_backend_restored info;
	void *h = open_backend(f);

	assert_int_equal(b->restore(h, &info), REFTRAIN_BACKEND_NOTHING);
	fill(f, 3);
	assert_int_equal(b->save(h, 30, 0), 0);
	assert_int_equal(f->solo.barriers, 1);
	fill(f, 4);
	assert_int_equal(b->restore(h, &info), 0);
	assert_int_equal(info.step, 30);
	assert_string_equal(info.name, "rank-0.ckpt@step-00000030");
	fx want;
	fill(&want, 3);
	assert_memory_equal(f->w, want.w, sizeof want.w);
	assert_memory_equal(f->b, want.b, sizeof want.b);
	assert_int_equal(f->step, want.step);
	assert_memory_equal(f->blob, want.blob, sizeof want.blob);
	b->close(h);
}

/* In place: the one file is overwritten, with nothing else left beside it. */
static void test_naive_backend__save_overwrites_one_file_in_place(void **state)
{
	fx *f = *state;
	const reftrain_backend *b = reftrain_backend_v1();
	reftrain_backend_generation g[2];
	char path[300];
	struct stat st1, st2;
	void *h = open_backend(f);

	path_of(f, path, sizeof path);
	fill(f, 1);
	assert_int_equal(b->save(h, 10, 0), 0);
	assert_int_equal(stat(path, &st1), 0);
	assert_int_equal(b->save(h, 20, 0), 0);
	assert_int_equal(stat(path, &st2), 0);
	assert_int_equal(st1.st_ino, st2.st_ino);      /* the same inode: no temp name, no rename */
	assert_int_equal((size_t)st2.st_size, reftrain_naive_file_size(f->t, 4));
	assert_int_equal(b->list(h, g, 2), 1);
	assert_int_equal(g[0].step, 20);
	assert_true(g[0].valid);
	b->close(h);
}

static void test_naive_backend__truncated_file_fails_restore_and_list_says_why(void **state)
{
	fx *f = *state;
	const reftrain_backend *b = reftrain_backend_v1();
	reftrain_backend_restored info;
	reftrain_backend_generation g;
	char path[300];
	void *h = open_backend(f);

	path_of(f, path, sizeof path);
	fill(f, 1);
	assert_int_equal(b->save(h, 10, 0), 0);
	assert_int_equal(truncate(path, 50), 0);
	assert_int_equal(b->restore(h, &info), -EBADMSG);
	assert_non_null(strstr(b->last_error(h), "rank-0.ckpt: truncated: 50 bytes"));
	assert_int_equal(b->list(h, &g, 1), 1);
	assert_false(g.valid);
	assert_non_null(strstr(g.why, "truncated"));
	b->close(h);
}

/* A file larger than the state is refused before anything is allocated by its size. */
static void test_naive_backend__oversize_file_is_refused_by_its_size(void **state)
{
	fx *f = *state;
	const reftrain_backend *b = reftrain_backend_v1();
	reftrain_backend_restored info;
	char path[300];
	void *h = open_backend(f);

	path_of(f, path, sizeof path);
	fill(f, 1);
	assert_int_equal(b->save(h, 10, 0), 0);
	assert_int_equal(truncate(path, 1ll << 40), 0);      /* sparse: a terabyte claimed, nothing used */
	assert_int_equal(b->restore(h, &info), -EBADMSG);
	assert_non_null(strstr(b->last_error(h), "1099511627776 bytes, more than the"));
	b->close(h);
}

/* The negative control: a flipped data bit is restored as it is. */
static void test_naive_backend__flipped_data_bit_is_restored_unnoticed(void **state)
{
	fx *f = *state;
	const reftrain_backend *b = reftrain_backend_v1();
	reftrain_backend_restored info;
	char path[300];
	unsigned char byte;
	void *h = open_backend(f);

	path_of(f, path, sizeof path);
	fill(f, 1);
	assert_int_equal(b->save(h, 10, 0), 0);
	int fd = open(path, O_RDWR);
	off_t off = (off_t)reftrain_naive_index_size(f->t, 4);   /* the first byte of w.f32 */
	assert_int_equal(pread(fd, &byte, 1, off), 1);
	byte ^= 1;
	assert_int_equal(pwrite(fd, &byte, 1, off), 1);
	close(fd);
	assert_int_equal(b->restore(h, &info), 0);
	fx want;
	fill(&want, 1);
	assert_memory_not_equal(f->w, want.w, sizeof want.w);
	b->close(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_naive_format__whole_file_parses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_naive_format__every_truncation_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_naive_format__oversize_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_naive_format__garbage_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_naive_format__broken_fields_are_named, setup, teardown),
		cmocka_unit_test_setup_teardown(test_naive_format__a_name_too_long_cannot_be_stored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_naive_backend__save_then_restore_gives_the_state_back, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_naive_backend__save_overwrites_one_file_in_place, setup, teardown),
		cmocka_unit_test_setup_teardown(test_naive_backend__truncated_file_fails_restore_and_list_says_why, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_naive_backend__oversize_file_is_refused_by_its_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_naive_backend__flipped_data_bit_is_restored_unnoticed, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
