/*
 * Guards against: an undo record from disk steering the power-loss rollback
 * outside the checkpoint root ("..", another absolute path, a kept copy from
 * anywhere), and malformed records silently skipped into a wrong rollback.
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

#include "powerloss.h"

static char work[64], root[128], prefix[128];

static int setup(void **state)
{
	(void)state;
	snprintf(work, sizeof work, "/tmp/test-undo.XXXXXX");
	if (!mkdtemp(work))
		return -1;
	snprintf(root, sizeof root, "%s/ckpt", work);
	snprintf(prefix, sizeof prefix, "%s/undo-1", work);
	return mkdir(root, 0755);
}

static int teardown(void **state)
{
	char cmd[256];
	(void)state;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", work);
	return system(cmd) == 0 ? 0 : -1;
}

/* Write rank 0's record: the lines, with ROOT and PREFIX replaced. */
static void records(const char *text)
{
	char path[256];
	snprintf(path, sizeof path, "%s.rank-0.jsonl", prefix);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	for (const char *p = text; *p; p++) {
		if (strncmp(p, "ROOT", 4) == 0) {
			fputs(root, f);
			p += 3;
		} else if (strncmp(p, "PREFIX", 6) == 0) {
			fputs(prefix, f);
			p += 5;
		} else {
			fputc(*p, f);
		}
	}
	fclose(f);
}

static int load(char *err, size_t len)
{
	harness_undo u;
	int rc = harness_undo_load(&u, prefix, 2, root, err, len);
	if (rc == 0)
		harness_undo_free(&u);
	return rc;
}

static void refused(const char *text, const char *where, const char *what)
{
	char err[2048], want[256];
	records(text);
	assert_int_equal(load(err, sizeof err), -EINVAL);
	snprintf(want, sizeof want, "%s.rank-0.jsonl:%s: undo record refused", prefix, where);
	if (!strstr(err, want) || !strstr(err, what))
		fail_msg("got: %s\nwanted: %s ... %s", err, want, what);
}

#define HDR "\"seq\":1,\"t\":1,\"step\":10,\"phase\":\"save.shard_write\",\"call\":\"open\","

static void test_undo__real_records_load_in_time_order(void **state)
{
	harness_undo u;
	char err[512];
	(void)state;
	records("{\"seq\":7,\"t\":3,\"step\":0,\"phase\":\"open\",\"call\":\"mkdir\",\"op\":\"mkdir\","
		"\"path\":\"ROOT\",\"parent\":2}\n"
		"{\"seq\":1,\"t\":5,\"step\":10,\"phase\":\"save.prepare\",\"call\":\"mkdir\",\"op\":\"mkdir\","
		"\"path\":\"ROOT/.tmp-step-00000010\",\"parent\":7}\n"
		"{\"seq\":2,\"t\":6,\"step\":10,\"phase\":\"save.shard_write\",\"call\":\"write\",\"op\":\"write\","
		"\"path\":\"ROOT/.tmp-step-00000010/rank-00000.safetensors\",\"ino\":9,\"off\":0,\"len\":100,"
		"\"old_size\":0,\"saved\":\"\",\"saved_off\":0}\n"
		"{\"seq\":3,\"t\":7,\"step\":10,\"phase\":\"save.commit\",\"call\":\"rename\",\"op\":\"rename\","
		"\"from\":\"ROOT/.tmp-step-00000010\",\"to\":\"ROOT/step-00000010\",\"from_parent\":7,\"to_parent\":7,"
		"\"ino\":8,\"saved\":\"\"}\n"
		"{\"seq\":4,\"t\":8,\"step\":10,\"phase\":\"save.latest\",\"call\":\"unlink\",\"op\":\"unlink\","
		"\"path\":\"ROOT/LATEST\",\"parent\":7,\"ino\":11,\"saved\":\"PREFIX.keep/123-1\"}\n"
		"{\"op\":\"failed\",\"ref\":4}\n"
		"{\"seq\":5,\"t\":9,\"step\":10,\"phase\":\"save.dir_sync\",\"call\":\"fsync\",\"op\":\"fsync\","
		"\"path\":\"ROOT\",\"ino\":7}\n"
		"{\"seq\":6,\"t\":4,\"step\":0,\"phase\":\"open\",\"call\":\"fsync\",\"op\":\"fsync\",\"path\":\"\",\"ino\":3}\n");
	assert_int_equal(harness_undo_load(&u, prefix, 2, root, err, sizeof err), 0);
	assert_int_equal(u.n, 7);
	assert_int_equal(u.v[0].seq, 7);       /* t = 3: libckpt creating the root itself */
	assert_int_equal(u.v[1].seq, 6);       /* t = 4 */
	assert_string_equal(u.v[2].op, "mkdir");
	assert_non_null(strstr(u.v[4].to, "/ckpt/step-00000010"));
	assert_int_equal(u.v[5].failed, 1);    /* the unlink that failed */
	assert_int_equal(u.v[3].len, 100);
	harness_undo_free(&u);
	/* a root given with a trailing slash is the same root */
	strcat(root, "/");
	assert_int_equal(harness_undo_load(&u, prefix, 2, root, err, sizeof err), 0);
	root[strlen(root) - 1] = '\0';
	assert_int_equal(u.n, 7);
	harness_undo_free(&u);
}

/*
 * A checkpoint writer that forks (the shim records any program): parent and
 * child both continue the counter they had at fork, so seq 2 exists twice;
 * the child's "failed" must void the child's change, not the parent's.
 */
static void test_undo__failed_voids_the_change_of_its_own_process(void **state)
{
	harness_undo u;
	char err[512];
	(void)state;
	records("{\"seq\":1,\"pid\":100,\"t\":1,\"step\":10,\"call\":\"open\",\"op\":\"create\","
		"\"path\":\"ROOT/a\",\"parent\":7}\n"
		"{\"seq\":2,\"pid\":100,\"t\":2,\"step\":10,\"call\":\"open\",\"op\":\"create\","
		"\"path\":\"ROOT/parent\",\"parent\":7}\n"
		"{\"seq\":2,\"pid\":200,\"t\":3,\"step\":10,\"call\":\"open\",\"op\":\"create\","
		"\"path\":\"ROOT/child\",\"parent\":7}\n"
		"{\"seq\":3,\"pid\":200,\"t\":4,\"op\":\"failed\",\"ref\":2}\n");
	assert_int_equal(harness_undo_load(&u, prefix, 1, root, err, sizeof err), 0);
	assert_int_equal(u.n, 3);
	assert_non_null(strstr(u.v[1].path, "/parent"));
	assert_int_equal(u.v[1].failed, 0);
	assert_non_null(strstr(u.v[2].path, "/child"));
	assert_int_equal(u.v[2].failed, 1);
	harness_undo_free(&u);
	/* a "failed" naming a process that recorded nothing is refused, not applied to another */
	records("{\"seq\":1,\"pid\":100,\"t\":1,\"step\":10,\"call\":\"open\",\"op\":\"create\","
		"\"path\":\"ROOT/a\",\"parent\":7}\n"
		"{\"seq\":2,\"pid\":300,\"t\":2,\"op\":\"failed\",\"ref\":1}\n");
	assert_int_equal(harness_undo_load(&u, prefix, 1, root, err, sizeof err), -EINVAL);
	assert_non_null(strstr(err, "seq 1 of pid 300"));
}

static void test_undo__dotdot_is_refused(void **state)
{
	(void)state;
	refused("{" HDR "\"op\":\"create\",\"path\":\"ROOT/..\",\"parent\":7}\n", "1", "not inside the checkpoint root");
	refused("{" HDR "\"op\":\"mkdir\",\"path\":\"ROOT/a/../../x\",\"parent\":7}\n", "1", "not inside");
	refused("{" HDR "\"op\":\"rmdir\",\"path\":\"ROOT/./a\",\"parent\":7,\"ino\":3}\n", "1", "not inside");
	refused("{" HDR "\"op\":\"rename\",\"from\":\"ROOT/a\",\"to\":\"ROOT/a/..\",\"from_parent\":7,\"to_parent\":7,"
		"\"ino\":8,\"saved\":\"\"}\n", "1", "rename to");
}

static void test_undo__paths_outside_the_root_are_refused(void **state)
{
	(void)state;
	refused("{" HDR "\"op\":\"unlink\",\"path\":\"/etc/passwd\",\"parent\":7,\"ino\":3,\"saved\":\"\"}\n", "1",
		"'/etc/passwd' is not inside the checkpoint root");
	refused("{" HDR "\"op\":\"create\",\"path\":\"ROOTx/a\",\"parent\":7}\n", "1", "not inside");
	refused("{" HDR "\"op\":\"rename\",\"from\":\"ROOT\",\"to\":\"ROOT/a\",\"from_parent\":7,\"to_parent\":7,"
		"\"ino\":8,\"saved\":\"\"}\n", "1", "not inside");
	refused("{" HDR "\"op\":\"create\",\"path\":\"ROOT//a\",\"parent\":7}\n", "1", "not inside");
	refused("{" HDR "\"op\":\"create\",\"path\":\"a\",\"parent\":7}\n", "1", "not inside");
	refused("{" HDR "\"op\":\"write\",\"path\":\"ROOT/a\",\"ino\":9,\"off\":0,\"len\":1,\"old_size\":0,"
		"\"saved\":\"/etc/shadow\",\"saved_off\":0}\n", "1", "saved '/etc/shadow' is not a file in");
	refused("{" HDR "\"op\":\"unlink\",\"path\":\"ROOT/a\",\"parent\":7,\"ino\":3,\"saved\":\"PREFIX.keep/../x\"}\n",
		"1", "is not a file in");
}

static void test_undo__malformed_records_are_errors_with_the_line(void **state)
{
	char line[20000];
	(void)state;
	const char *ok = "{" HDR "\"op\":\"create\",\"path\":\"ROOT/a\",\"parent\":7}\n";
	char two[1024];
	snprintf(two, sizeof two, "%s%s", ok, "{\"seq\":2,\"t\":1,\"op\":\"create\",\"path\":\"ROOT/b\"\n");
	refused(two, "2", "not JSON");
	snprintf(two, sizeof two, "%s%s", ok, "[1,2]\n");
	refused(two, "2", "not a JSON object");
	snprintf(two, sizeof two, "%s%s", ok, "{" HDR "\"op\":\"chmod\",\"path\":\"ROOT/a\"}\n");
	refused(two, "2", "unknown op 'chmod'; valid: write");
	snprintf(two, sizeof two, "%s%s", ok, "{" HDR "\"op\":\"create\",\"path\":\"ROOT/a\"}\n");
	refused(two, "2", "no \"parent\"");
	snprintf(two, sizeof two, "%s%s", ok, "{" HDR "\"op\":\"create\",\"path\":\"ROOT/a\",\"parent\":-1}\n");
	refused(two, "2", "\"parent\" is not a whole number");
	snprintf(two, sizeof two, "%s%s", ok, "{\"op\":\"failed\",\"ref\":9}\n");
	refused(two, "2", "refers to seq 9");
	snprintf(two, sizeof two, "%s%s", ok, "{" HDR "\"op\":\"create\",\"op\":\"mkdir\",\"path\":\"ROOT/a\",\"parent\":7}\n");
	refused(two, "2", "not JSON");
	snprintf(two, sizeof two, "%s%.*s", ok, (int)strlen(ok) - 1, ok);
	refused(two, "2", "cut short");
	memset(line, 'a', sizeof line);
	snprintf(line, sizeof line, "{" HDR "\"op\":\"create\",\"path\":\"ROOT/%0*d\",\"parent\":7}\n", 17000, 0);
	refused(line, "1", "longer than 16384 bytes");
	snprintf(line, sizeof line, "{" HDR "\"op\":\"create\",\"path\":\"ROOT/%0*d\",\"parent\":7}\n", 1100, 0);
	refused(line, "1", "\"path\" is longer than 1023 bytes");
}

/* The rollback itself: a refused record deletes nothing beside the root. */
static void test_undo__powerloss_with_a_dotdot_record_deletes_nothing(void **state)
{
	char victim[256], err[64];
	struct stat st;
	(void)state;
	snprintf(victim, sizeof victim, "%s/victim", work);
	FILE *f = fopen(victim, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(stat(root, &st), 0);
	char rec[512];
	snprintf(rec, sizeof rec, "{" HDR "\"op\":\"create\",\"path\":\"ROOT/..\",\"parent\":%llu}\n",
		 (unsigned long long)st.st_ino);
	records(rec);
	FILE *log = tmpfile();
	const char *prefixes[] = { prefix };
	assert_true(harness_powerloss_apply(prefixes, 1, 1, root, log) < 0);
	assert_int_equal(stat(victim, &st), 0);
	assert_int_equal(stat(root, &st), 0);
	rewind(log);
	assert_non_null(fgets(err, sizeof err, log));
	assert_non_null(strstr(err, "power loss: nothing rolled back"));
	fclose(log);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_undo__real_records_load_in_time_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undo__failed_voids_the_change_of_its_own_process, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undo__dotdot_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undo__paths_outside_the_root_are_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undo__malformed_records_are_errors_with_the_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undo__powerloss_with_a_dotdot_record_deletes_nothing, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
