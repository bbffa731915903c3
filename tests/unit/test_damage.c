/*
 * Guards against: damage at rest that reaches only libckpt's layout (a
 * program's own checkpoint names never damaged, so the scenario "passes"
 * having tested nothing), that follows a link out of the root, picks the
 * wrong generation as "newest", or is not traced back to its step (the
 * oracle would then blame the trainer for the loss the harness caused).
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <xxhash.h>

#include "damage.h"

static char work[64], root[128], outside[128], logp[160];

static void put(const char *rel, const char *text)
{
	char p[256];
	snprintf(p, sizeof p, "%s/%s", root, rel);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static off_t size_of(const char *rel)
{
	char p[256];
	struct stat st;
	snprintf(p, sizeof p, "%s/%s", root, rel);
	return stat(p, &st) == 0 ? st.st_size : -1;
}

static int setup(void **state)
{
	(void)state;
	snprintf(work, sizeof work, "/tmp/test-damage.XXXXXX");
	if (!mkdtemp(work))
		return -1;
	snprintf(root, sizeof root, "%s/ckpt", work);
	snprintf(outside, sizeof outside, "%s/precious.bin", work);
	snprintf(logp, sizeof logp, "%s/damage.log", work);
	return mkdir(root, 0700);
}

static int teardown(void **state)
{
	char cmd[256];
	(void)state;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", work);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_generation_step_reads_the_last_number(void **state)
{
	int64_t step;
	(void)state;
	assert_int_equal(harness_generation_step("ckpt-*.bin", "ckpt-00000040.bin", &step), 1);
	assert_int_equal(step, 40);
	assert_int_equal(harness_generation_step("model_v2_step*", "model_v2_step120", &step), 1);
	assert_int_equal(step, 120);
	assert_int_equal(harness_generation_step("ckpt-*.bin", "ckpt-00000040.bin.tmp", &step), 0);
	assert_int_equal(harness_generation_step("ckpt-*", "ckpt-latest", &step), 0);          /* no number */
	assert_int_equal(harness_generation_step("*", ".hidden-10", &step), 0);
	assert_int_equal(harness_generation_step("c*", "c1234567890123456789", &step), 0);     /* too many digits */
	/* libckpt's: step-NNNNNNNN directories only */
	assert_int_equal(harness_generation_step(NULL, "step-00000030", &step), 1);
	assert_int_equal(step, 30);
	assert_int_equal(harness_generation_step(NULL, "step-30", &step), 0);
}

static void test_a_programs_newest_file_is_damaged_and_traced_to_its_step(void **state)
{
	harness_damage g = { .kind = HARNESS_TRUNCATE, .size = 3 };
	int64_t steps[4];
	char link[256];
	(void)state;
	put("ckpt-00000010.bin", "0123456789");
	put("ckpt-00000020.bin", "0123456789");
	put("ckpt-00000030.bin.tmp", "0123456789");       /* a save in flight: not a generation */
	FILE *f = fopen(outside, "w");
	fputs("0123456789", f);
	fclose(f);
	snprintf(link, sizeof link, "%s/ckpt-00000090.bin", root);
	assert_int_equal(symlink(outside, link), 0);      /* a link is never a generation */
	snprintf(g.generation, sizeof g.generation, "newest");
	snprintf(g.file, sizeof g.file, "*");
	FILE *log = fopen(logp, "w");
	assert_int_equal(harness_damage_apply(&g, root, "ckpt-*.bin", log), 1);
	fclose(log);
	assert_int_equal(size_of("ckpt-00000020.bin"), 3);
	assert_int_equal(size_of("ckpt-00000010.bin"), 10);
	assert_int_equal(size_of("ckpt-00000030.bin.tmp"), 10);
	struct stat st;
	assert_int_equal(stat(outside, &st), 0);
	assert_int_equal(st.st_size, 10);
	assert_int_equal(harness_damage_scan_log(logp, root, "ckpt-*.bin", steps, 4), 1);
	assert_int_equal(steps[0], 20);
	/* by step, and a file glob that does not match the generation's name strikes nothing */
	snprintf(g.generation, sizeof g.generation, "step-00000010");
	snprintf(g.file, sizeof g.file, "*.safetensors");
	log = fopen(logp, "w");
	assert_int_equal(harness_damage_apply(&g, root, "ckpt-*.bin", log), 0);
	snprintf(g.file, sizeof g.file, "ckpt-*");
	assert_int_equal(harness_damage_apply(&g, root, "ckpt-*.bin", log), 1);
	fclose(log);
	assert_int_equal(size_of("ckpt-00000010.bin"), 3);
}

static void test_directory_generations_and_libckpts_layout(void **state)
{
	harness_damage g = { .kind = HARNESS_DELETE };
	char p[256];
	int64_t steps[4];
	(void)state;
	/* a program's directories, newest by step number, not by name order */
	snprintf(p, sizeof p, "%s/global_step900", root);
	mkdir(p, 0700);
	snprintf(p, sizeof p, "%s/global_step1000", root);
	mkdir(p, 0700);
	put("global_step900/model.pt", "x");
	put("global_step1000/model.pt", "x");
	snprintf(g.generation, sizeof g.generation, "newest");
	snprintf(g.file, sizeof g.file, "model.pt");
	FILE *log = fopen(logp, "w");
	assert_int_equal(harness_damage_apply(&g, root, "global_step*", log), 1);
	fclose(log);
	assert_int_equal(size_of("global_step1000/model.pt"), -1);
	assert_int_equal(size_of("global_step900/model.pt"), 1);
	assert_int_equal(harness_damage_scan_log(logp, root, "global_step*", steps, 4), 1);
	assert_int_equal(steps[0], 1000);
	/* libckpt's layout ignores them */
	log = fopen(logp, "w");
	assert_int_equal(harness_damage_apply(&g, root, NULL, log), 0);
	snprintf(p, sizeof p, "%s/step-00000020", root);
	mkdir(p, 0700);
	put("step-00000020/model.pt", "x");
	assert_int_equal(harness_damage_apply(&g, root, NULL, log), 1);
	fclose(log);
	assert_int_equal(harness_damage_scan_log(logp, root, NULL, steps, 4), 1);
	assert_int_equal(steps[0], 20);
}

/* A recipe as libckpt writes it: 8-byte header length, the header, 16 bytes per chunk. */
static void put_recipe(const char *rel, const unsigned char (*h)[16], int n)
{
	char p[256];
	unsigned char head[16] = { 8 };      /* header length 8, then an 8-byte header */
	snprintf(p, sizeof p, "%s/%s", root, rel);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fwrite(head, 1, sizeof head, f);
	fwrite(h, 16, (size_t)n, f);
	fclose(f);
}

/* @shared-chunk: the chunk the newest generation shares with the one before, logged against every user. */
static void test_shared_chunk_is_damaged_once_and_traced_to_every_generation(void **state)
{
	static const unsigned char a[2][16] = { { 0xaa, 1 }, { 0x5c, 2 } }, b[2][16] = { { 0xbb, 3 }, { 0x5c, 2 } },
				   c[1][16] = { { 0xcc, 4 } };
	char p[256];
	(void)state;
	for (const char *d = "step-00000010\0step-00000020\0step-00000030\0chunks\0chunks/5c\0"; *d; d += strlen(d) + 1) {
		snprintf(p, sizeof p, "%s/%s", root, d);
		assert_int_equal(mkdir(p, 0700), 0);
	}
	put_recipe("step-00000010/rank-00000.chunks", c, 1);
	put_recipe("step-00000020/rank-00000.chunks", a, 2);
	put_recipe("step-00000030/rank-00000.chunks", b, 2);
	put_recipe("step-00000030/rank-00001.chunks", b, 2);
	put("chunks/5c/5c020000000000000000000000000000", "the shared chunk");
	harness_damage g = { .kind = HARNESS_DELETE, .offset = INT64_MIN, .seed = 1 };
	snprintf(g.generation, sizeof g.generation, "newest");
	snprintf(g.file, sizeof g.file, "@shared-chunk");
	FILE *log = fopen(logp, "w");
	assert_int_equal(harness_damage_apply(&g, root, NULL, log), 1);
	fclose(log);
	assert_int_equal(size_of("chunks/5c/5c020000000000000000000000000000"), -1);
	int64_t steps[8];
	int n = harness_damage_scan_log(logp, root, NULL, steps, 8);
	assert_int_equal(n, 2);          /* 20 and 30 reference it, 10 does not */
	assert_true((steps[0] == 20 && steps[1] == 30) || (steps[0] == 30 && steps[1] == 20));
}

static char *slurp_rel(const char *rel)
{
	char p[256], *buf = calloc(1, 4096);
	snprintf(p, sizeof p, "%s/%s", root, rel);
	FILE *f = fopen(p, "r");
	assert_non_null(f);
	assert_true(fread(buf, 1, 4095, f) > 0);
	fclose(f);
	return buf;
}

/* Tampering: overwrite takes its source from another generation; recompute rewrites the plain manifest's hashes. */
static void test_overwrite_and_recomputed_hashes(void **state)
{
	char p[256];
	int64_t steps[4];
	(void)state;
	for (const char *d = "step-00000010\0step-00000020\0"; *d; d += strlen(d) + 1) {
		snprintf(p, sizeof p, "%s/%s", root, d);
		assert_int_equal(mkdir(p, 0700), 0);
	}
	put("step-00000010/rank-00000.safetensors", "old bytes");
	put("step-00000020/rank-00000.safetensors", "new bytes, longer");
	harness_damage g = { .kind = HARNESS_OVERWRITE };
	snprintf(g.generation, sizeof g.generation, "newest");
	snprintf(g.file, sizeof g.file, "rank-*.safetensors");
	snprintf(g.from, sizeof g.from, "oldest/rank-00000.safetensors");
	FILE *log = fopen(logp, "w");
	assert_int_equal(harness_damage_apply(&g, root, NULL, log), 1);
	fclose(log);
	char *got = slurp_rel("step-00000020/rank-00000.safetensors");
	assert_string_equal(got, "old bytes");
	free(got);
	assert_int_equal(harness_damage_scan_log(logp, root, NULL, steps, 4), 1);
	assert_int_equal(steps[0], 20);
	/* a source that does not exist: nothing fires */
	snprintf(g.from, sizeof g.from, "oldest/rank-00009.safetensors");
	log = fopen(logp, "w");
	assert_int_equal(harness_damage_apply(&g, root, NULL, log), 0);
	fclose(log);

	/* a plain manifest: the flipped file's xxh3 and the checksum recomputed in place */
	put("step-00000020/manifest.json", "{\"files\":[{\"name\":\"rank-00000.safetensors\",\"size\":9,"
	    "\"xxh3\":\"0000000000000000\"}],\"checksum\":\"0000000000000000\"}\n");
	harness_damage f = { .kind = HARNESS_BITFLIP, .offset = 0, .recompute = 1 };
	snprintf(f.generation, sizeof f.generation, "newest");
	snprintf(f.file, sizeof f.file, "rank-00000.safetensors");
	log = fopen(logp, "w");
	assert_int_equal(harness_damage_apply(&f, root, NULL, log), 1);
	fclose(log);
	char *m = slurp_rel("step-00000020/manifest.json"), *shard = slurp_rel("step-00000020/rank-00000.safetensors");
	char want[17];
	snprintf(want, sizeof want, "%016llx", (unsigned long long)XXH3_64bits(shard, strlen(shard)));
	assert_non_null(strstr(m, want));
	char *c = strstr(m, "\"checksum\":\"");
	snprintf(want, sizeof want, "%016llx", (unsigned long long)XXH3_64bits(m, (size_t)(c - m)));
	assert_memory_equal(c + 12, want, 16);
	char *text = slurp_rel("../damage.log");
	assert_non_null(strstr(text, "hashes recomputed"));
	free(text);
	free(m);
	free(shard);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_generation_step_reads_the_last_number),
		cmocka_unit_test_setup_teardown(test_a_programs_newest_file_is_damaged_and_traced_to_its_step, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_directory_generations_and_libckpts_layout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overwrite_and_recomputed_hashes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shared_chunk_is_damaged_once_and_traced_to_every_generation, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
