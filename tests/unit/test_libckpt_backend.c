/*
 * libckpt behind the backend interface (reference_trainer/backends/libckpt.c),
 * one rank, a fake communicator, no MPI.
 *
 * Guards against: glue that loses what libckpt knows on the way to reftrain
 * (the generation's name, the newer generations passed over and why), a
 * list that does not match what restore would take, and a trainer check
 * (validate) that the backend does not use to fall back.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "solo_comm.h"
#include "builtin.h"

typedef struct fx {
	float w[64];
	uint64_t n;
	reftrain_backend_tensor t[2];
	char root[256];
	solo_comm solo;
	reftrain_backend_config cfg;
	uint64_t refuse_step;
} fx;

static int refuse(void *arg, uint64_t step, char *why, size_t len)
{
	fx *f = arg;
	if (step != f->refuse_step)
		return 0;
	snprintf(why, len, "the trainer refuses step %llu", (unsigned long long)step);
	return -1;
}

static void fill(fx *f, int seed)
{
	for (int i = 0; i < 64; i++)
		f->w[i] = (float)(seed * 64 + i);
	f->n = (uint64_t)seed;
}

static int setup(void **state)
{
	fx *f = calloc(1, sizeof *f);

	f->t[0] = (reftrain_backend_tensor){ "w.f32", "master", REFTRAIN_BACKEND_F32, REFTRAIN_BACKEND_PER_RANK,
					     f->w, 64, 64, 0 };
	f->t[1] = (reftrain_backend_tensor){ "opt.step", "opt", REFTRAIN_BACKEND_U64, REFTRAIN_BACKEND_REPLICATED,
					     &f->n, 1, 1, 0 };
	snprintf(f->root, sizeof f->root, "/tmp/test_libckpt_backend.XXXXXX");
	assert_non_null(mkdtemp(f->root));
	solo_comm_init(&f->solo);
	f->cfg = (reftrain_backend_config){ .root = f->root, .rank = 0, .world_size = 1, .keep = 3, .config_hash = 42,
					    .tensors = f->t, .ntensors = 2, .comm = &f->solo.comm, .validate = refuse,
					    .validate_arg = f };
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	char cmd[300];

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->root);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void *open_saved(fx *f, const reftrain_backend *b)
{
	char err[256];
	void *h = NULL;

	assert_int_equal(b->open(&h, &f->cfg, err, sizeof err), 0);
	fill(f, 1);
	assert_int_equal(b->save(h, 10, 0), 0);
	fill(f, 2);
	assert_int_equal(b->save(h, 20, REFTRAIN_BACKEND_SAVE_BEST), 0);
	fill(f, 9);
	return h;
}

static void test_libckpt_backend__restores_the_newest_and_lists_both(void **state)
{
	fx *f = *state;
	const reftrain_backend *b = reftrain_backend_libckpt();
	reftrain_backend_restored info;
	reftrain_backend_generation g[4];
	void *h = open_saved(f, b);

	assert_int_equal(b->list(h, g, 4), 2);
	assert_int_equal(g[0].step, 20);
	assert_string_equal(g[0].name, "step-00000020");
	assert_true(g[0].valid && g[1].valid);
	assert_int_equal(g[1].step, 10);
	assert_int_equal(b->restore(h, &info), 0);
	assert_int_equal(info.step, 20);
	assert_string_equal(info.name, "step-00000020");
	assert_int_equal(info.nfallbacks, 0);
	assert_int_equal(f->n, 2);
	assert_true(f->w[63] == 2 * 64 + 63);
	b->close(h);
}

/* A damaged newest shard: list says so, restore passes it over and says why. */
static void test_libckpt_backend__damaged_newest_is_listed_invalid_and_passed_over(void **state)
{
	fx *f = *state;
	const reftrain_backend *b = reftrain_backend_libckpt();
	reftrain_backend_restored info;
	reftrain_backend_generation g[4];
	char path[400];
	unsigned char byte;
	void *h = open_saved(f, b);

	snprintf(path, sizeof path, "%s/step-00000020/rank-00000.safetensors", f->root);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	off_t end = lseek(fd, 0, SEEK_END);
	assert_int_equal(pread(fd, &byte, 1, end - 3), 1);
	byte ^= 0x10;
	assert_int_equal(pwrite(fd, &byte, 1, end - 3), 1);
	close(fd);

	assert_int_equal(b->list(h, g, 4), 2);
	assert_false(g[0].valid);
	assert_non_null(strstr(g[0].why, "rank-00000.safetensors"));
	assert_int_equal(b->restore(h, &info), 0);
	assert_int_equal(info.step, 10);
	assert_int_equal(info.nfallbacks, 1);
	assert_string_equal(info.fallbacks[0].name, "step-00000020");
	assert_true(info.fallbacks[0].why[0] != '\0');
	assert_int_equal(f->n, 1);
	b->close(h);
}

static void test_libckpt_backend__a_generation_the_trainer_refuses_is_passed_over(void **state)
{
	fx *f = *state;
	const reftrain_backend *b = reftrain_backend_libckpt();
	reftrain_backend_restored info;
	void *h = open_saved(f, b);

	f->refuse_step = 20;
	assert_int_equal(b->restore(h, &info), 0);
	assert_int_equal(info.step, 10);
	assert_int_equal(info.nfallbacks, 1);
	assert_non_null(strstr(info.fallbacks[0].why, "the trainer refuses step 20"));
	b->close(h);
}

static void test_libckpt_backend__empty_root_is_nothing_to_restore(void **state)
{
	fx *f = *state;
	const reftrain_backend *b = reftrain_backend_libckpt();
	reftrain_backend_restored info;
	reftrain_backend_generation g;
	char err[256];
	void *h = NULL;

	assert_int_equal(b->open(&h, &f->cfg, err, sizeof err), 0);
	assert_int_equal(b->restore(h, &info), REFTRAIN_BACKEND_NOTHING);
	assert_int_equal(b->list(h, &g, 1), 0);
	b->close(h);
	b->close(NULL);
}

static void test_libckpt_backend__open_failure_says_why(void **state)
{
	fx *f = *state;
	const reftrain_backend *b = reftrain_backend_libckpt();
	char err[256] = "", path[300];
	void *h = (void *)1;

	snprintf(path, sizeof path, "%s/file", f->root);
	fclose(fopen(path, "w"));
	f->cfg.root = path;          /* a file where the root should be */
	assert_true(b->open(&h, &f->cfg, err, sizeof err) < 0);
	assert_null(h);
	assert_true(err[0] != '\0');
	f->cfg.root = f->root;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_libckpt_backend__restores_the_newest_and_lists_both, setup, teardown),
		cmocka_unit_test_setup_teardown(test_libckpt_backend__damaged_newest_is_listed_invalid_and_passed_over,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_libckpt_backend__a_generation_the_trainer_refuses_is_passed_over,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_libckpt_backend__empty_root_is_nothing_to_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_libckpt_backend__open_failure_says_why, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
