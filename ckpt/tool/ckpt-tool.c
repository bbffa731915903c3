/*
 * ckpt-tool: list, verify and show libckpt generations. It applies restore's
 * own rules by calling restore's own code (libckpt's scan and verification):
 * "valid" means restore would take it, "restore" tags the generation restore
 * would choose. Text from disk is printed escaped.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "ckpt/inspect.h"
#include "ckpt_version.h"

static const char usage[] =
"usage: ckpt-tool ls ROOT           generations: step, tags, size (own, shared), valid or why not\n"
"       ckpt-tool verify ROOT/step-N  full integrity check; names each damaged file\n"
"       ckpt-tool show ROOT/step-N    the manifest, readable\n"
"       ckpt-tool --version           the version and the commit built from\n"
"\n"
"Exit status: 0 all good, 1 damage found, 2 bad usage or unreadable path.\n";

/* Paths come from the command line: printed escaped all the same. */
static void print_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c >= 0x7f || c == '\\')
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
}

static void fail_path(const char *path, const char *what, int rc)
{
	fputs("ckpt-tool: ", stderr);
	print_escaped(stderr, path);
	fprintf(stderr, ": %s%s\n", what, ckpt_describe(rc));
}

static int cmd_ls(const char *root)
{
	ckpt_gen_report *reps;
	char latest[256] = "";
	int n, rc = ckpt_inspect_list(root, &reps, &n);

	if (rc < 0) {
		fail_path(root, "", rc);
		return 2;
	}
	ckpt_inspect_latest(root, latest, sizeof latest);
	printf("%-16s %10s %-20s %14s %14s %14s  %s\n", "generation", "step", "tags", "bytes", "own", "shared", "status");
	int newest_valid = -1;
	for (int i = 0; i < n; i++)
		if (reps[i].valid && newest_valid < 0)
			newest_valid = i;
	for (int i = 0; i < n; i++) {
		char tags[64] = "";
		if (i == newest_valid)
			strcat(tags, "restore,");
		if (strcmp(latest, reps[i].name) == 0)
			strcat(tags, "LATEST,");
		if (reps[i].tags & CKPT_TAG_BEST)
			strcat(tags, "best,");
		if (reps[i].tags & CKPT_TAG_INTERIM)
			strcat(tags, "interim,");
		if (*tags)
			tags[strlen(tags) - 1] = '\0';
		printf("%-16s %10" PRIu64 " %-20s %14" PRIu64 " %14" PRIu64 " %14" PRIu64 "  ", reps[i].name, reps[i].step,
		       *tags ? tags : "-", reps[i].bytes, reps[i].own_bytes, reps[i].shared_bytes);
		if (reps[i].valid)
			printf("valid\n");
		else
			printf("INVALID: %s: %s%s\n", reps[i].problems[0].file, reps[i].problems[0].why,
			       reps[i].nproblems > 1 ? " (and more: ckpt-tool verify)" : "");
	}
	if (n == 0) {
		printf("(no generations in ");
		print_escaped(stdout, root);
		printf(")\n");
	}
	free(reps);
	return 0;
}

static int cmd_verify(const char *dir)
{
	ckpt_gen_report rep;
	int rc = ckpt_inspect_verify(dir, &rep);

	if (rc < 0) {
		fail_path(dir, "not a generation directory: ", rc);
		return 2;
	}
	if (rc == 0) {
		printf("%s: valid (step %" PRIu64 ", %d ranks, %" PRIu64 " bytes)\n", rep.name, rep.step,
		       rep.world_size, rep.bytes);
		return 0;
	}
	for (int i = 0; i < rep.nproblems; i++) {
		print_escaped(stdout, dir);
		printf("/%s: %s\n", rep.problems[i].file, rep.problems[i].why);
	}
	printf("%s: DAMAGED, %d problem%s\n", rep.name, rep.nproblems, rep.nproblems == 1 ? "" : "s");
	return 1;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		printf("ckpt-tool %s (git %s)\n", CKPT_VERSION, CKPT_COMMIT);
		return 0;
	}
	if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		fputs(usage, stdout);
		return 0;
	}
	if (argc != 3) {
		fprintf(stderr, "ckpt-tool: expected a command and one path\n%s", usage);
		return 2;
	}
	if (strcmp(argv[1], "ls") == 0)
		return cmd_ls(argv[2]);
	if (strcmp(argv[1], "verify") == 0)
		return cmd_verify(argv[2]);
	if (strcmp(argv[1], "show") == 0) {
		int rc = ckpt_inspect_show(argv[2], stdout);
		if (rc == -CKPT_ECORRUPT)
			return 1;
		if (rc < 0) {
			fail_path(argv[2], "", rc);
			return 2;
		}
		return 0;
	}
	fprintf(stderr, "ckpt-tool: unknown command '");
	print_escaped(stderr, argv[1]);
	fprintf(stderr, "'; valid: ls, verify, show\n%s", usage);
	return 2;
}
