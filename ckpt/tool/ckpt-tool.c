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
#include "stats.h"

#include <jansson.h>

static const char usage[] =
"usage: ckpt-tool ls ROOT [--json]  generations: step, tags, size (own, shared), valid or why not\n"
"                                    (--json: the catalog, with world size, config hash and labels)\n"
"       ckpt-tool stats ROOT [--json] save times and throughput per generation and per rank, and\n"
"                                    the alerts raised, from ROOT/journal\n"
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

/* The tags ls shows: restore (the generation restore would take), LATEST, best, interim. */
static void tag_list(const ckpt_gen_report *r, int is_restore, const char *latest, char *tags, size_t len)
{
	snprintf(tags, len, "%s%s%s%s", is_restore ? "restore," : "", strcmp(latest, r->name) == 0 ? "LATEST," : "",
		 r->tags & CKPT_TAG_BEST ? "best," : "", r->tags & CKPT_TAG_INTERIM ? "interim," : "");
	if (*tags)
		tags[strlen(tags) - 1] = '\0';
}

/* ls --json: every generation, newest first; names and labels are printable ASCII already. */
static void ls_json(const ckpt_gen_report *reps, int n, int newest_valid, const char *latest)
{
	json_t *gens = json_array();
	for (int i = 0; i < n; i++) {
		char tags[64], hash[20];
		const ckpt_gen_report *r = &reps[i];
		json_t *t = json_array(), *labels = json_object();
		tag_list(r, i == newest_valid, latest, tags, sizeof tags);
		for (char *p = strtok(tags, ","); p; p = strtok(NULL, ","))
			json_array_append_new(t, json_string(p));
		if (*r->experiment)
			json_object_set_new(labels, "experiment", json_string(r->experiment));
		if (*r->code_version)
			json_object_set_new(labels, "code_version", json_string(r->code_version));
		snprintf(hash, sizeof hash, "%016" PRIx64, r->config_hash);
		json_t *g = json_pack("{ss sI si sI sI sI so so ss}", "name", r->name, "step", (json_int_t)r->step,
				      "world_size", r->world_size, "bytes", (json_int_t)r->bytes, "own_bytes",
				      (json_int_t)r->own_bytes, "shared_bytes", (json_int_t)r->shared_bytes, "tags", t,
				      "labels", labels, "status", r->valid ? "valid" : "invalid");
		if (r->valid || r->world_size)
			json_object_set_new(g, "config_hash", json_string(hash));
		if (!r->valid && r->nproblems)
			json_object_set_new(g, "why", json_pack("{ss ss}", "file", r->problems[0].file, "why",
							       r->problems[0].why));
		json_array_append_new(gens, g);
	}
	json_t *doc = json_pack("{so}", "generations", gens);
	json_dumpf(doc, stdout, JSON_INDENT(1) | JSON_ENSURE_ASCII);
	putchar('\n');
	json_decref(doc);
}

static int cmd_ls(const char *root, int as_json)
{
	ckpt_gen_report *reps;
	char latest[256] = "";
	int n, rc = ckpt_inspect_list(root, &reps, &n);

	if (rc < 0) {
		fail_path(root, "", rc);
		return 2;
	}
	ckpt_inspect_latest(root, latest, sizeof latest);
	int newest_valid = -1;
	for (int i = 0; i < n; i++)
		if (reps[i].valid && newest_valid < 0)
			newest_valid = i;
	if (as_json) {
		ls_json(reps, n, newest_valid, latest);
		free(reps);
		return 0;
	}
	printf("%-16s %10s %-20s %14s %14s %14s  %s\n", "generation", "step", "tags", "bytes", "own", "shared", "status");
	for (int i = 0; i < n; i++) {
		char tags[64];
		tag_list(&reps[i], i == newest_valid, latest, tags, sizeof tags);
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
	int as_json = argc == 4 && strcmp(argv[3], "--json") == 0;
	if (argc != 3 && !(as_json && (strcmp(argv[1], "ls") == 0 || strcmp(argv[1], "stats") == 0))) {
		fprintf(stderr, "ckpt-tool: expected a command and one path (ls and stats also take --json)\n%s", usage);
		return 2;
	}
	if (strcmp(argv[1], "ls") == 0)
		return cmd_ls(argv[2], as_json);
	if (strcmp(argv[1], "stats") == 0) {
		char err[256];
		if (ckpt_tool_stats(argv[2], as_json, err, sizeof err) == 0)
			return 0;
		fputs("ckpt-tool: ", stderr);
		print_escaped(stderr, argv[2]);
		fprintf(stderr, ": %s\n", err);
		return 2;
	}
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
	fprintf(stderr, "'; valid: ls, stats, verify, show\n%s", usage);
	return 2;
}
