/*
 * libckpt's on-disk formats through its internals: the manifest (version 2
 * written, versions 1 and 2 read) and the safetensors header of a shard.
 * Guards against: a manifest that grows with ranks x tensors to tens of MB, a
 * shard table whose entries overlap, leave holes, lie past the end or do not
 * match dtype x shape, dimensions that overflow, and names that are not the
 * writer's (non-canonical generation names, shard names with a path).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>
#include <xxhash.h>

#include "internal.h"

/* ---- the manifest at scale ---- */

#define BIG_W 64
#define BIG_T 4500

/* 64 ranks x 4,500 tensors with 63-byte names, as a large transformer's save: half sharded, half replicated. */
static ckpt_tensor_entry *big_layout(void)
{
	ckpt_tensor_entry *all = calloc((size_t)BIG_W * BIG_T, sizeof *all);
	assert_non_null(all);
	for (int r = 0; r < BIG_W; r++)
		for (int k = 0; k < BIG_T; k++) {
			ckpt_tensor_entry *t = &all[(size_t)r * BIG_T + k];
			int sharded = k % 2 == 0;
			uint64_t g = 4096u * 1024u + (uint64_t)k;
			snprintf(t->name, sizeof t->name, "model.decoder.layers.%04d.self_attention.query_key_value.weight.%02d",
				 k, k % 100);
			snprintf(t->component, sizeof t->component, "%s", sharded ? "master" : "params");
			t->rank = r;
			t->stage = sharded ? 0 : 1;
			t->dtype = sharded ? CKPT_F32 : CKPT_BF16;
			t->global_elems = g;
			t->local_elems = sharded ? g / BIG_W + (r < (int)(g % BIG_W)) : g;
			t->global_offset = sharded ? (uint64_t)r * (g / BIG_W) + (r < (int)(g % BIG_W) ? (uint64_t)r : g % BIG_W) : 0;
			t->nbytes = t->local_elems * ckpt__dtype_size(t->dtype);
		}
	return all;
}

static void test_manifest__v2_stays_small_for_64_ranks_and_4500_long_names(void **state)
{
	(void)state;
	ckpt_tensor_entry *all = big_layout();
	ckpt_file_entry files[BIG_W];
	ckpt_manifest m = { .schema_version = CKPT_SCHEMA_VERSION, .step = 1000, .world_size = BIG_W,
			    .config_hash = 42, .nfiles = BIG_W, .files = files, .ntensors = BIG_T, .all = all };
	ckpt_manifest back;
	char *text, why[300];
	size_t len;

	for (int r = 0; r < BIG_W; r++) {
		ckpt__shard_name(files[r].name, sizeof files[r].name, r);
		files[r].rank = r;
		files[r].size = 1000 + (uint64_t)r;
		files[r].hash = 7 * (uint64_t)r + 1;
	}
	assert_int_equal(ckpt__manifest_render(&m, &text, &len), 0);
	print_message("manifest v2, %d ranks x %d tensors, 63-byte names: %zu bytes\n", BIG_W, BIG_T, len);
	/* version 1 wrote ~70 MB for this; version 2 must not grow with ranks x tensors like that */
	assert_true(len < (6u << 20));
	assert_int_equal(ckpt__manifest_parse(text, len, &back, why, sizeof why), 0);
	assert_int_equal(back.schema_version, 2);
	assert_int_equal(back.world_size, BIG_W);
	assert_int_equal(back.ntensors, BIG_T);
	for (int k = 0; k < BIG_T; k += 499)
		for (int r = 0; r < BIG_W; r += 21) {
			const ckpt_tensor_entry *t = &all[(size_t)r * BIG_T + k];
			assert_string_equal(back.layout[k].name, t->name);
			assert_int_equal(ckpt__layout_local(&back, k, r), t->local_elems);
			assert_int_equal(ckpt__layout_goff(&back, k, r), t->global_offset);
		}
	ckpt__manifest_free(&back);
	free(text);
	free(all);
}

/* ---- crafted manifests: sealed with a valid checksum so that only the crafted part is wrong ---- */

static char *seal(const char *fmt, ...)
{
	va_list ap;
	char body[8192], *out = malloc(8192 + 64);
	va_start(ap, fmt);
	vsnprintf(body, sizeof body, fmt, ap);
	va_end(ap);
	snprintf(out, 8192 + 64, "%s\"checksum\":\"%016" PRIx64 "\"}\n", body, (uint64_t)XXH3_64bits(body, strlen(body)));
	return out;
}

#define HEAD "{\"schema_version\":%d,\"step\":10,\"world_size\":2,\"config_hash\":\"00000000000000ff\",\"tags\":[\"latest\"],"
#define FILES "\"files\":[{\"name\":\"rank-00000.safetensors\",\"rank\":0,\"size\":100,\"xxh3\":\"0000000000000001\"}," \
	      "{\"name\":\"%s\",\"rank\":1,\"size\":100,\"xxh3\":\"0000000000000002\"}],"

static int parse(const char *text, char *why, size_t wl)
{
	ckpt_manifest m;
	int rc = ckpt__manifest_parse(text, strlen(text), &m, why, wl);
	if (rc == 0)
		ckpt__manifest_free(&m);
	return rc;
}

static void expect_bad(char *text, const char *why_contains)
{
	char why[400] = "";
	int rc = parse(text, why, sizeof why);
	if (rc != -CKPT_ECORRUPT || !strstr(why, why_contains))
		fail_msg("rc %d, why \"%s\", expected \"%s\"", rc, why, why_contains);
	free(text);
}

static void test_manifest__v2_good_one_parses(void **state)
{
	(void)state;
	char why[300], *t = seal(HEAD FILES "\"tensors\":[{\"name\":\"w\",\"component\":\"master\",\"stage\":0,"
				 "\"dtype\":\"F32\",\"global_elems\":10,\"local_elems\":[6,4],\"global_offset\":[0,6]}],",
				 2, "rank-00001.safetensors");
	assert_int_equal(parse(t, why, sizeof why), 0);
	free(t);
}

static void test_manifest__crafted_ones_are_refused(void **state)
{
	(void)state;
	/* a newer version than this library reads */
	expect_bad(seal(HEAD FILES "\"tensors\":[],", 4, "rank-00001.safetensors"), "schema_version 4");
	/* a shard name with a path in it */
	expect_bad(seal(HEAD FILES "\"tensors\":[],", 2, "../../etc/passwd"), "not rank-00001.safetensors");
	/* per-rank values of the wrong count, out of range, overflowing */
	expect_bad(seal(HEAD FILES "\"tensors\":[{\"name\":\"w\",\"component\":\"c\",\"stage\":0,\"dtype\":\"F32\","
			"\"global_elems\":10,\"local_elems\":[6,4,1],\"global_offset\":0}],", 2, "rank-00001.safetensors"),
		   "world_size");
	expect_bad(seal(HEAD FILES "\"tensors\":[{\"name\":\"w\",\"component\":\"c\",\"stage\":0,\"dtype\":\"F32\","
			"\"global_elems\":10,\"local_elems\":[6,5],\"global_offset\":[0,6]}],", 2, "rank-00001.safetensors"),
		   "do not fit");
	expect_bad(seal(HEAD FILES "\"tensors\":[{\"name\":\"w\",\"component\":\"c\",\"stage\":0,\"dtype\":\"F32\","
			"\"global_elems\":18446744073709551615,\"local_elems\":18446744073709551615,\"global_offset\":0}],",
			2, "rank-00001.safetensors"), "overflow");
	expect_bad(seal(HEAD FILES "\"tensors\":[{\"name\":\"w\",\"component\":\"c\",\"stage\":0,\"dtype\":\"F32\","
			"\"global_elems\":18446744073709551616,\"local_elems\":1,\"global_offset\":0}],",
			2, "rank-00001.safetensors"), "out of range");
	/* the same name twice */
	expect_bad(seal(HEAD FILES "\"tensors\":[{\"name\":\"w\",\"component\":\"c\",\"stage\":0,\"dtype\":\"U8\","
			"\"global_elems\":1,\"local_elems\":1,\"global_offset\":0},{\"name\":\"w\",\"component\":\"c\","
			"\"stage\":0,\"dtype\":\"U8\",\"global_elems\":1,\"local_elems\":1,\"global_offset\":0}],",
			2, "rank-00001.safetensors"), "twice");
	/* version 1: rank 1 lists other tensors than rank 0 */
	expect_bad(seal(HEAD FILES "\"tensors\":[{\"name\":\"a\",\"component\":\"c\",\"rank\":0,\"stage\":0,\"dtype\":\"U8\","
			"\"local_elems\":1,\"global_elems\":1,\"global_offset\":0,\"file_offset\":64,\"nbytes\":1},"
			"{\"name\":\"b\",\"component\":\"c\",\"rank\":1,\"stage\":0,\"dtype\":\"U8\",\"local_elems\":1,"
			"\"global_elems\":1,\"global_offset\":0,\"file_offset\":64,\"nbytes\":1}],", 1, "rank-00001.safetensors"),
		   "same layout");
	/* version 1: nbytes that is not dtype x elements */
	expect_bad(seal(HEAD FILES "\"tensors\":[{\"name\":\"a\",\"component\":\"c\",\"rank\":0,\"stage\":0,\"dtype\":\"F32\","
			"\"local_elems\":2,\"global_elems\":2,\"global_offset\":0,\"file_offset\":64,\"nbytes\":4},"
			"{\"name\":\"a\",\"component\":\"c\",\"rank\":1,\"stage\":0,\"dtype\":\"F32\",\"local_elems\":2,"
			"\"global_elems\":2,\"global_offset\":0,\"file_offset\":64,\"nbytes\":8}],", 1, "rank-00001.safetensors"),
		   "nbytes");
	/* altered after sealing */
	char *t = seal(HEAD FILES "\"tensors\":[],", 2, "rank-00001.safetensors");
	t[30] ^= 1;
	expect_bad(t, "checksum mismatch");
}

/* ---- the safetensors header ---- */

static int st(const char *json, uint64_t data_len, char *why, size_t wl)
{
	ckpt_st_header h;
	int rc = ckpt__st_parse(json, strlen(json), data_len, &h, why, wl);
	if (rc == 0)
		ckpt__st_free(&h);
	return rc;
}

static void st_bad(const char *json, uint64_t data_len, const char *why_contains)
{
	char why[400] = "";
	int rc = st(json, data_len, why, sizeof why);
	if (rc != -CKPT_ECORRUPT || !strstr(why, why_contains))
		fail_msg("rc %d, why \"%s\", expected \"%s\" for %s", rc, why, why_contains, json);
}

static void test_safetensors__tables_must_cover_the_data_exactly(void **state)
{
	(void)state;
	char why[300];
	const char *good = "{\"__metadata__\":{\"rank\":\"0\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
			   "\"b\":{\"dtype\":\"U8\",\"shape\":[5],\"data_offsets\":[24,29]}}";

	assert_int_equal(st(good, 29, why, sizeof why), 0);
	st_bad(good, 28, "past the");                              /* the last tensor past the end of the file */
	st_bad(good, 30, "describes 29 data bytes");               /* bytes nobody owns */
	st_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
	       "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}", 12, "overlaps");
	st_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	       "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]}}", 12, "hole");
	st_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,15]}}", 15, "dtype x shape");
	st_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0, "overflows");
	st_bad("{\"a\":{\"dtype\":\"U64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]}}", 0, "dtype x shape");
	st_bad("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "dtype F64");
	st_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "lacks");
	st_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}", 1, "begin <= end");
	st_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}", 1, "not valid");
	st_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} x", 1, "trailing");
	st_bad("{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}", 0, "not valid");
}

/* ---- names ---- */

static void test_names__only_canonical_generation_names(void **state)
{
	(void)state;
	uint64_t s;

	assert_true(ckpt__gen_parse("step-00000030", &s) && s == 30);
	assert_true(ckpt__gen_parse("step-123456789", &s) && s == 123456789);
	assert_false(ckpt__gen_parse("step-000000030", &s));       /* restore would look for step-00000030 */
	assert_false(ckpt__gen_parse("step-0000030", &s));
	assert_false(ckpt__gen_parse("step-00000030.tmp", &s));
	assert_false(ckpt__gen_parse("step-99999999999999999999", &s));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_manifest__v2_stays_small_for_64_ranks_and_4500_long_names),
		cmocka_unit_test(test_manifest__v2_good_one_parses),
		cmocka_unit_test(test_manifest__crafted_ones_are_refused),
		cmocka_unit_test(test_safetensors__tables_must_cover_the_data_exactly),
		cmocka_unit_test(test_names__only_canonical_generation_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
