/* ckpt-harness: the command line; each command is a few calls into the modules. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chaos.h"
#include "ckpt_version.h"
#include "from_journal.h"
#include "crashstate.h"
#include "html.h"
#include "replay.h"
#include "sweep.h"
#include "workdir.h"
#include "launch.h"
#include "oracle.h"
#include "order.h"
#include "plan.h"
#include "pool.h"
#include "report.h"
#include "run.h"
#include "scenario.h"
#include "nodes.h"

static const char usage[] =
"usage: ckpt-harness run SCENARIO.yaml [--work DIR] [--json FILE] [--junit FILE] [--keep] [--inject fiu|shim]\n"
"                        [--ckpt-backend NAME|PATH.so] [--html FILE] [--launcher mpirun|srun] [--hostfile FILE]\n"
"                        [--nodes N] [--reach DIR]\n"
"       ckpt-harness suite DIR|FILE... [-j N] [--fail-fast] [--json FILE] [--junit FILE] [--keep] [--inject fiu|shim]\n"
"                          [--ckpt-backend NAME|PATH.so] [--html FILE] [--launcher mpirun|srun] [--hostfile FILE]\n"
"                          [--nodes N] [--reach DIR] [--golden-from CACHE:MUTANT]\n"
"       ckpt-harness oracle GOLDEN.jsonl ATTEMPT.jsonl... [--restored-from [A:]STEP] [--max-lost-steps [A:]N]\n"
"                           [--keep K] [--damaged STEP@A] [--restore-faulted A] [--clean-failure WORDS]\n"
"       ckpt-harness validate SCENARIO.yaml...\n"
"       ckpt-harness crashstates [--preset P] [--world-size N] [--step S] [-j N] [--incremental | --async]\n"
"                                [--json FILE] [--out DIR] [--keep]\n"
"                                [--inject fiu|shim]\n"
"       ckpt-harness crashstates --scenario FILE [--step S] [--max-states N] [--json FILE] [--out DIR] [--keep]\n"
"                                [--inject fiu|shim] [--ckpt-backend NAME|PATH.so] [--cache DIR]\n"
"       ckpt-harness sweep [--preset P] [--world-size N] [--step S] [--errno E] [--rank R] [--json FILE] [--out DIR]\n"
"                          [--inject fiu|shim]\n"
"       ckpt-harness sweep --scenario FILE [--errno E] [--step S] [--max-states N] [--json FILE] [--out DIR] [--keep]\n"
"                          [--inject fiu|shim] [--ckpt-backend NAME|PATH.so] [--cache DIR]\n"
"       ckpt-harness chaos [--seed S] (--runs N | --budget DURATION | --run I) [-j N] [--faults KINDS] ...\n"
"                          (ckpt-harness chaos --help)\n"
"       ckpt-harness from-journal ROOT [-o FILE] [--rank R] [--attempt N] [--scenario BASE.yaml]\n"
"       ckpt-harness --version\n"
"\n"
"Runs reftrain under the faults a scenario describes, restarts it until it\n"
"finishes, and compares the resumed trajectory bit for bit with an\n"
"uninterrupted run (cached in --cache DIR, default $XDG_CACHE_HOME/ckpt-harness,\n"
"else ~/.cache/ckpt-harness).\n"
"--inject: how faults reach reftrain: its libfiu points (fiu, the default when\n"
"built with them) or the LD_PRELOAD fault shim (shim: libc calls under the\n"
"checkpoint root, as for any program; a scenario naming a libckpt phase is\n"
"then SKIP, never a pass). A trainer.command program always gets the shim.\n"
"--ckpt-backend: reftrain checkpoints through that backend (reftrain\n"
"--ckpt-backend) in every scenario; one other than libckpt gets the shim.\n"
"--launcher srun: MPI jobs start with srun --mpi=pmix inside the Slurm\n"
"allocation (default mpirun). --hostfile FILE: mpirun places node K of a\n"
"scenario's trainer.nodes on the K-th host of FILE (default: simulated nodes on\n"
"this machine). --nodes N: every scenario that does not set trainer.nodes runs\n"
"on N nodes (N divides its world_size). --reach DIR: each scenario's processes\n"
"record the seeded bugs' sites they reach in DIR/NAME.reach (scripts/mutants).\n"
"\n"
"Exit status: 0 every scenario met its expectation; 1 at least one did not;\n"
"2 bad input; 3 the harness could not do its job (launch, a nondeterministic\n"
"trainer); 130 after SIGINT, 143 after SIGTERM. A job that hangs is stopped\n"
"by a watchdog sized from the uninterrupted run and is a FAIL (1).\n";

typedef struct cli {
	const char *json, *junit, *work, *cache;
	const char *html;          /* --html FILE: the page people look at (html.h) */
	const char *reach;         /* --reach DIR: the mutation gate's reach records (run.h) */
	const char *golden_from;   /* --golden-from CACHE:MUTANT: the baseline's goldens (run.h) */
	char golden_cache[PATH_MAX];
	int keep, jobs, fail_fast;
	enum harness_inject inject;
	const char *ckpt_backend;
	const char *hostfile;
	enum harness_launch_kind launcher;
	int nodes;
	char **files;
	int nfiles;
} cli;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bad_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "ckpt-harness: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(see ckpt-harness --help)\n");
	return 2;
}

/* --inject fiu|shim: 0, or 2 (bad usage, said). */
static int parse_inject(const char *v, enum harness_inject *out)
{
	if (strcmp(v, "fiu") == 0)
		*out = HARNESS_INJECT_FIU;
	else if (strcmp(v, "shim") == 0)
		*out = HARNESS_INJECT_SHIM;
	else
		return bad_usage("--inject: '%s' is not valid; expected fiu or shim", v);
#ifndef HARNESS_HAVE_FIU
	if (*out == HARNESS_INJECT_FIU)
		return bad_usage("--inject %s: this build has no libfiu points (FIU_ENABLE=OFF); expected shim", v);
#endif
	return 0;
}

static int parse_cli(int argc, char **argv, cli *c, int allow_jobs)
{
	memset(c, 0, sizeof *c);
	c->jobs = 1;
	c->files = calloc((size_t)argc, sizeof *c->files);
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--keep") == 0) {
			c->keep = 1;
		} else if (allow_jobs && strcmp(a, "--fail-fast") == 0) {
			c->fail_fast = 1;
		} else if (strcmp(a, "--html") == 0) {
			if (!v)
				return bad_usage("%s needs a value", a);
			c->html = argv[++i];
		} else if (strcmp(a, "--reach") == 0) {
			struct stat rs;
			if (!v)
				return bad_usage("%s needs a value", a);
			if (stat(v, &rs) < 0 || !S_ISDIR(rs.st_mode))
				return bad_usage("--reach: '%s' is not a directory; expected an existing directory for "
						 "the reach records", v);
			c->reach = argv[++i];
		} else if (strcmp(a, "--golden-from") == 0) {
			const char *colon = v ? strrchr(v, ':') : NULL;
			struct stat gs;
			if (!v)
				return bad_usage("%s needs a value", a);
			if (!colon || colon == v || !colon[1] || (size_t)(colon - v) >= sizeof c->golden_cache)
				return bad_usage("--golden-from: '%s' is not valid; expected CACHE:MUTANT (the baseline's "
						 "golden cache, made with --reach, and the seeded bug's name)", v);
			snprintf(c->golden_cache, sizeof c->golden_cache, "%.*s", (int)(colon - v), v);
			if (stat(c->golden_cache, &gs) < 0 || !S_ISDIR(gs.st_mode))
				return bad_usage("--golden-from: '%s' is not a directory; expected the baseline's golden "
						 "cache", c->golden_cache);
			c->golden_from = colon + 1;
			i++;
		} else if (strcmp(a, "--json") == 0 || strcmp(a, "--junit") == 0 || strcmp(a, "--work") == 0 ||
			   strcmp(a, "--cache") == 0 || strcmp(a, "--inject") == 0 || strcmp(a, "--ckpt-backend") == 0 ||
			   strcmp(a, "--launcher") == 0 || strcmp(a, "--hostfile") == 0 || strcmp(a, "--nodes") == 0 ||
			   (allow_jobs && strcmp(a, "-j") == 0)) {
			if (!v)
				return bad_usage("%s needs a value", a);
			if (strcmp(a, "--launcher") == 0) {
				if (harness_launch_kind_parse(v, &c->launcher) < 0)
					return bad_usage("--launcher: '%s' is not valid; expected mpirun or srun", v);
			} else if (strcmp(a, "--hostfile") == 0) {
				struct stat hs;
				if (stat(v, &hs) < 0 || !S_ISREG(hs.st_mode))
					return bad_usage("--hostfile: '%s' is not a readable file; expected an Open MPI hostfile", v);
				c->hostfile = v;
			} else if (strcmp(a, "--nodes") == 0) {
				char *end;
				long nn = strtol(v, &end, 10);
				if (*end || !*v || nn < 1 || nn > HARNESS_NODES_MAX)
					return bad_usage("--nodes: '%s' is not valid; expected a whole number from 1 to 64", v);
				c->nodes = (int)nn;
			} else if (strcmp(a, "--ckpt-backend") == 0) {
				if (!*v || strlen(v) >= 512)
					return bad_usage("--ckpt-backend: '%s' is not valid; expected a backend name (libckpt, "
							 "naive) or the path of its .so", v);
				c->ckpt_backend = v;
			} else if (strcmp(a, "--inject") == 0) {
				if (parse_inject(v, &c->inject))
					return 2;
			} else if (strcmp(a, "-j") == 0) {
				char *end;
				long j = strtol(v, &end, 10);
				if (*end || j < 1 || j > 64)
					return bad_usage("-j: '%s' is not valid; expected a whole number from 1 to 64", v);
				c->jobs = (int)j;
			} else if (strcmp(a, "--json") == 0) {
				c->json = v;
			} else if (strcmp(a, "--junit") == 0) {
				c->junit = v;
			} else if (strcmp(a, "--work") == 0) {
				c->work = v;
			} else {
				c->cache = v;
			}
			i++;
		} else if (a[0] == '-') {
			return bad_usage("unknown option '%s'", a);
		} else {
			c->files[c->nfiles++] = argv[i];
		}
	}
	return 0;
}

/*
 * The golden cache when --cache is not given: the user's cache directory
 * (XDG: $XDG_CACHE_HOME if absolute, else ~/.cache), never the build tree,
 * so an installed harness works from any directory. Its parent is created
 * (0700, as XDG asks); the cache itself is made where it is first used.
 */
static void default_cache(char *cache, size_t clen)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	char parent[PATH_MAX];

	if (xdg && xdg[0] == '/') {
		snprintf(parent, sizeof parent, "%s", xdg);
	} else {
		if (!home || home[0] != '/') {
			struct passwd *pw = getpwuid(getuid());
			home = pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : "/tmp";
		}
		snprintf(parent, sizeof parent, "%s/.cache", home);
	}
	mkdir(parent, 0700);
	snprintf(cache, clen, "%s/ckpt-harness", parent);
}

static void locate(char *bindir, size_t len, char *cache, size_t clen, const cli *c)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);

	exe[n > 0 ? n : 0] = '\0';
	char *slash = strrchr(exe, '/');
	if (slash)
		*slash = '\0';
	snprintf(bindir, len, "%s", n > 0 ? exe : ".");
	if (c->cache)
		snprintf(cache, clen, "%s", c->cache);
	else
		default_cache(cache, clen);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Append a copy of path to *list; -ENOMEM (list intact) if memory runs out. */
static int push(char ***list, int *cnt, char *path)
{
	char **l = path ? realloc(*list, sizeof **list * (size_t)(*cnt + 1)) : NULL;

	if (!l) {
		free(path);
		return -ENOMEM;
	}
	*list = l;
	l[(*cnt)++] = path;
	return 0;
}

/* Expand directories into their *.yaml files, sorted. On failure *out holds what was listed. */
static int expand(cli *c, char ***out, int *n)
{
	char **list = NULL, *path;
	int cnt = 0, rc = 0;

	for (int i = 0; i < c->nfiles && rc == 0; i++) {
		struct stat st;
		if (stat(c->files[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			DIR *d = opendir(c->files[i]);
			struct dirent *de;
			int first = cnt;
			while (rc == 0 && d && (de = readdir(d)) != NULL) {
				size_t l = strlen(de->d_name);
				if (l < 6 || strcmp(de->d_name + l - 5, ".yaml") != 0)
					continue;
				rc = push(&list, &cnt, asprintf(&path, "%s/%s", c->files[i], de->d_name) < 0 ? NULL : path);
			}
			if (d)
				closedir(d);
			if (cnt > first)
				qsort(list + first, (size_t)(cnt - first), sizeof *list, cmp_str);
		} else {
			rc = push(&list, &cnt, strdup(c->files[i]));
		}
	}
	*out = list;
	*n = cnt;
	return rc;
}

static void free_files(cli *c, char **files, int n)
{
	for (int i = 0; i < n; i++)
		free(files[i]);
	free(files);
	free(c->files);
	c->files = NULL;
}

/* Load and validate; a suite also needs unique names (they are its test ids). */
static int load_all(char **files, int n, harness_scenario *s, int unique)
{
	char err[2048];
	int bad = 0;

	for (int i = 0; i < n; i++)
		if (harness_scenario_load(files[i], &s[i], err, sizeof err) < 0) {
			fprintf(stderr, "%s\n", err);
			bad++;
		}
	for (int i = 0; i < n && !bad && unique; i++)
		for (int k = 0; k < i; k++)
			if (strcmp(s[i].name, s[k].name) == 0) {
				fprintf(stderr, "%s:1:1: scenario name '%s' is also used by %s\n", files[i], s[i].name, files[k]);
				bad++;
			}
	return bad;
}

static int write_reports(const cli *c, const harness_result *r, int n, double secs)
{
	int rc = 0;
	if (c->json && harness_report_json(c->json, r, n, secs) < 0) {
		fprintf(stderr, "ckpt-harness: cannot write %s\n", c->json);
		rc = 3;
	}
	if (c->junit && harness_report_junit(c->junit, r, n, secs) < 0) {
		fprintf(stderr, "ckpt-harness: cannot write %s\n", c->junit);
		rc = 3;
	}
	int e;
	if (c->html && (e = harness_report_html(c->html, r, n, secs)) < 0) {
		fprintf(stderr, "ckpt-harness: cannot write %s: %s\n", c->html, strerror(-e));
		rc = 3;
	}
	return rc;
}

/* A suite's scenarios through the pool, in order; the results land at their index. */
typedef struct suite_run {
	const harness_scenario *s;
	harness_result *r;
	char *ran;
	int *order;             /* the k-th to start is s[order[k]] (order.h) */
	int n, fail_fast, stop, done, tty;
} suite_run;

static int suite_next(void *arg, long idx, harness_scenario *s)
{
	suite_run *u = arg;

	if (u->stop || idx >= u->n)
		return 1;
	*s = u->s[u->order[idx]];
	return 0;
}

static void suite_done(void *arg, long idx, const harness_scenario *s, const harness_result *r, harness_fired fired)
{
	suite_run *u = arg;

	(void)s;
	(void)fired;
	idx = u->order[idx];
	u->r[idx] = *r;
	u->ran[idx] = 1;
	u->done++;
	fprintf(stderr, "%s[%d/%d] %-40s %-5s %5.1fs%s", u->tty ? "\r" : "", u->done, u->n, r->name,
		harness_verdict_name(r->verdict), r->seconds, u->tty ? "\033[K\n" : "\n");
	if (u->fail_fast && r->verdict == HARNESS_FAIL)
		u->stop = 1;
}

static void not_run(harness_result *r, const harness_scenario *s, const char *why, ...)
{
	va_list ap;

	memset(r, 0, sizeof *r);
	snprintf(r->name, sizeof r->name, "%s", s->name);
	snprintf(r->file, sizeof r->file, "%s", s->file);
	r->verdict = HARNESS_ERROR;
	r->harness_error = 1;
	va_start(ap, why);
	vsnprintf(r->sentence, sizeof r->sentence, why, ap);
	va_end(ap);
}

/*
 * Run scenarios, up to jobs at a time, each in a child process of its own.
 * With fail_fast, nothing new starts after the first scenario that FAILs (a
 * regression found); an ERROR (the scenario could not test this build, e.g.
 * its fault never fired) does not stop the suite. Returns how many ran (and,
 * if interrupted, those that did not, as errors); their results are first in
 * r, in order.
 */
static int run_many(const harness_scenario *s, int n, const harness_opts *o, int jobs, int fail_fast, harness_result *r)
{
	suite_run u = { .s = s, .r = r, .n = n, .fail_fast = fail_fast, .tty = isatty(2) };
	char dir[PATH_MAX];
	long rc;
	int k = 0;

	if ((rc = harness_workdir_create(dir, sizeof dir, harness_workdir_tmp(), "ckpt-harness-suite")) < 0 ||
	    !(u.ran = calloc((size_t)n + 1, 1)) || !(u.order = calloc((size_t)n + 1, sizeof *u.order))) {
		/* nothing can run: every scenario is an infrastructure error (exit 3), not a silent pass */
		for (int i = 0; i < n; i++)
			not_run(&r[i], &s[i], "cannot create the suite directory %s: %s", dir,
				strerror(rc < 0 ? (int)-rc : ENOMEM));
		if (rc == 0)
			rmdir(dir);
		free(u.ran);
		return n;
	}
	/* longest first, from the last run's times; with --fail-fast the file's order (the likely catchers first) */
	if (fail_fast)
		for (int i = 0; i < n; i++)
			u.order[i] = i;
	else
		harness_order_plan(o->cache, s, n, u.order);
	harness_pool p = { .o = o, .root = dir, .jobs = jobs, .own_workdir = 1, .next = suite_next, .done = suite_done,
			   .arg = &u };
	rc = harness_pool_run(&p);
	rmdir(dir);
	for (int i = 0; i < n; i++) {
		if (!u.ran[i]) {
			if (rc >= 0 && !harness_interrupted())
				continue;       /* after a FAIL with fail_fast: not run, not reported */
			not_run(&r[i], &s[i], rc < 0 ? "not run: out of memory" : "not run: interrupted");
		}
		r[k++] = r[i];
	}
	free(u.ran);
	free(u.order);
	return k;
}

static int cmd_run(int argc, char **argv, int suite)
{
	cli c;
	char bindir[PATH_MAX], cache[PATH_MAX];
	char **files;
	int n, rc;

	if ((rc = parse_cli(argc, argv, &c, suite)) != 0)
		return rc;
	if (c.nfiles == 0 || (!suite && c.nfiles != 1))
		return bad_usage("%s", suite ? "suite needs scenario files or directories" : "run needs one scenario file");
	if (expand(&c, &files, &n) < 0) {
		fprintf(stderr, "ckpt-harness: out of memory listing the scenarios\n");
		free_files(&c, files, n);
		return 3;
	}
	if (n == 0) {
		free_files(&c, files, n);
		return bad_usage("%s", "no *.yaml scenario files found");
	}
	harness_scenario *s = calloc((size_t)n, sizeof *s);
	harness_result *r = calloc((size_t)n, sizeof *r);
	if (!s || !r || load_all(files, n, s, 1)) {
		free(s);
		free(r);
		free_files(&c, files, n);
		return !s || !r ? 3 : 2;
	}
	if (c.hostfile && c.launcher == HARNESS_LAUNCH_SRUN) {
		free(s);
		free(r);
		free_files(&c, files, n);
		return bad_usage("%s", "--hostfile goes with --launcher mpirun (srun places ranks on the allocation's nodes)");
	}
	for (int i = 0; i < n && c.nodes; i++) {
		char nerr[1024];
		if (harness_nodes_override(&s[i], c.nodes, nerr, sizeof nerr) < 0) {
			fprintf(stderr, "%s\n", nerr);
			free(s);
			free(r);
			free_files(&c, files, n);
			return 2;
		}
	}
	harness_nodes_configure(c.launcher, c.hostfile);
	locate(bindir, sizeof bindir, cache, sizeof cache, &c);
	harness_opts o = { .work = suite ? NULL : c.work, .keep = c.keep, .bindir = bindir, .cache = cache,
			   .inject = c.inject, .ckpt_backend = c.ckpt_backend, .reach = c.reach,
			   .golden_from = c.golden_from ? c.golden_cache : NULL, .golden_mutant = c.golden_from };

	harness_launch_init();
	/* what killed harness processes left behind: their work, suite and golden directories */
	harness_workdir_sweep(harness_workdir_tmp(), "ckpt-harness-");
	harness_launch_sweep();
	harness_workdir_sweep(cache, "golden");
	double t0 = now();
	if (suite) {
		n = run_many(s, n, &o, c.jobs, c.fail_fast, r);
		if (!harness_interrupted())
			harness_order_record(cache, r, n);
	}
	else
		harness_run_scenario(&s[0], &o, &r[0]);
	double secs = now() - t0;
	harness_report_table(stdout, r, n, secs);
	if (suite) {
		/* coverage of the gate: which (phase, op) pairs the faults really hit */
		printf("coverage:");
		int shown = 0;
		for (int i = 0; i < n; i++)
			for (int k = 0; k < r[i].ncoverage; k++) {
				int seen = 0;
				for (int j = 0; j < i && !seen; j++)
					for (int m = 0; m < r[j].ncoverage; m++)
						seen |= strcmp(r[j].coverage[m], r[i].coverage[k]) == 0;
				for (int m = 0; m < k; m++)
					seen |= strcmp(r[i].coverage[m], r[i].coverage[k]) == 0;
				if (!seen) {
					printf("%s %s", shown ? "," : "", r[i].coverage[k]);
					shown++;
				}
			}
		printf("%s(%d phase/op pairs hit)\n", shown ? " " : " none ", shown);
	}
	rc = write_reports(&c, r, n, secs);
	if (harness_interrupted())
		return 128 + harness_interrupted();       /* 130 for SIGINT, 143 for SIGTERM */
	int code = harness_exit_code(r, n);
	free(s);
	free(r);
	free_files(&c, files, n);
	return rc > code ? rc : code;
}

static int cmd_validate(int argc, char **argv)
{
	cli c;
	char **files;
	int n, rc;

	if ((rc = parse_cli(argc, argv, &c, 0)) != 0)
		return rc;
	if (c.nfiles == 0)
		return bad_usage("%s", "validate needs scenario files or directories");
	if (expand(&c, &files, &n) < 0) {
		fprintf(stderr, "ckpt-harness: out of memory listing the scenarios\n");
		free_files(&c, files, n);
		return 3;
	}
	harness_scenario *s = calloc((size_t)n + 1, sizeof *s);
	int bad = !s || load_all(files, n, s, 0);
	if (!bad)
		printf("%d scenario%s valid\n", n, n == 1 ? "" : "s");
	free(s);
	free_files(&c, files, n);
	return !s ? 3 : bad ? 2 : 0;
}

/*
 * The options crashstates and sweep share: which save to explore. Returns 1
 * if a was one of them (consumed), 0 if not, or 2 (bad usage, said).
 */
static int parse_save_option(const char *a, const char *v, const char **preset, int *world, long *step)
{
	char *end = NULL;

	if (strcmp(a, "--preset") == 0) {
		if (strcmp(v, "tiny") && strcmp(v, "small"))
			return bad_usage("--preset: '%s' is not valid; expected tiny or small", v);
		*preset = v;
	} else if (strcmp(a, "--world-size") == 0) {
		*world = (int)strtol(v, &end, 10);
		if (*end || (*world != 1 && *world != 2 && *world != 4 && *world != 8))
			return bad_usage("--world-size: '%s' is not valid; expected 1, 2, 4 or 8", v);
	} else if (strcmp(a, "--step") == 0) {
		*step = strtol(v, &end, 10);
		if (*end || *step < 2 || *step % 2 || *step > 100000)
			return bad_usage("--step: '%s' is not valid; expected an even number from 2 (the save before it is at step/2)", v);
	} else {
		return 0;
	}
	return 1;
}

/*
 * The options of an exploration by replay (crashstates and sweep with
 * --scenario FILE; ro->scenario is known before the options are read).
 * Returns 1 if a (with its value v) was one of them, 0 if not, or 2 (bad
 * usage, said).
 */
static int parse_replay_option(const char *a, const char *v, harness_replay_opts *ro, cli *c)
{
	char *end;

	if (ro->scenario && (strcmp(a, "--preset") == 0 || strcmp(a, "--world-size") == 0))
		return bad_usage("%s: with --scenario the scenario's trainer is explored", a);
	if (strcmp(a, "--scenario") == 0)
		return 1;
	if (ro->scenario && strcmp(a, "--step") == 0) {
		ro->step = strtol(v, &end, 10);
		if (*end || ro->step < 1)
			return bad_usage("--step: '%s' is not valid; expected a step number from 1", v);
		return 1;
	}
	if (strcmp(a, "--max-states") != 0 && strcmp(a, "--ckpt-backend") != 0)
		return 0;
	if (!ro->scenario)
		return bad_usage("%s goes with --scenario FILE", a);
	if (strcmp(a, "--ckpt-backend") == 0) {
		c->ckpt_backend = v;
		return 1;
	}
	ro->max_states = (int)strtol(v, &end, 10);
	if (*end || ro->max_states < 1)
		return bad_usage("--max-states: '%s' is not valid; expected a whole number from 1", v);
	return 1;
}

static int cmd_crashstates(int argc, char **argv)
{
	harness_cs_opts o = { .preset = "tiny", .world = 4, .step = 20, .out_dir = "crashstates-found" };
	harness_replay_opts ro = { .out_dir = "crashstates-found" };
	char bindir[PATH_MAX], cache[PATH_MAX];
	cli c;

	memset(&c, 0, sizeof c);
	for (int i = 2; i + 1 < argc; i++)
		if (strcmp(argv[i], "--scenario") == 0)
			ro.scenario = argv[i + 1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--keep") == 0) {
			o.keep = ro.keep = 1;
			continue;
		}
		if (strcmp(a, "--incremental") == 0) {       /* an incremental save (chunks), half the model frozen */
			if (ro.scenario)
				return bad_usage("%s: with --scenario the scenario's trainer is explored "
						 "(trainer.checkpoint.incremental)", a);
			o.incremental = 1;
			continue;
		}
		if (strcmp(a, "--async") == 0) {      /* the recorded save is a background one (reftrain --ckpt-async) */
			if (ro.scenario)
				return bad_usage("%s goes without --scenario (a scenario says checkpoint: {async: true})", a);
			o.async = 1;
			continue;
		}
		if (!v)
			return bad_usage("%s needs a value", a);
		int rused = parse_replay_option(a, v, &ro, &c);
		if (rused == 2)
			return 2;
		if (rused) {
			i++;
			continue;
		}
		if (strcmp(a, "--cache") == 0) {
			if (!ro.scenario)
				return bad_usage("%s goes with --scenario FILE", a);
			c.cache = v;
			i++;
			continue;
		}
		int used = parse_save_option(a, v, &o.preset, &o.world, &o.step);
		if (used == 2)
			return 2;
		if (used) {
			/* consumed */
		} else if (strcmp(a, "--json") == 0) {
			o.json = ro.json = v;
		} else if (strcmp(a, "--out") == 0) {
			o.out_dir = ro.out_dir = v;
		} else if (strcmp(a, "--inject") == 0) {
			if (parse_inject(v, &c.inject))
				return 2;
		} else if (strcmp(a, "-j") == 0 && !ro.scenario) {
			char *end;
			long j = strtol(v, &end, 10);
			if (*end || end == v || j < 1 || j > 64)
				return bad_usage("-j: '%s' is not valid; expected a whole number from 1 to 64", v);
			o.jobs = (int)j;
		} else {
			return bad_usage("unknown option '%s'", a);
		}
		i++;
	}
	locate(bindir, sizeof bindir, cache, sizeof cache, &c);
	o.bindir = bindir;
	if (ro.scenario) {
		harness_opts so = { .bindir = bindir, .cache = cache, .inject = c.inject, .ckpt_backend = c.ckpt_backend };
		harness_launch_init();
		return harness_crashstates_replay(&ro, &so);
	}
	harness_opts ho = { .inject = c.inject };
	o.shim = harness_inject_mode(&ho) == HARNESS_INJECT_SHIM;
	return harness_crashstates(&o);
}

static int cmd_sweep(int argc, char **argv)
{
	harness_sweep_opts so = { .preset = "tiny", .world = 4, .step = 20, .err = EIO, .only_rank = -1,
				  .out_dir = "sweep-found" };
	harness_replay_opts ro = { .out_dir = "sweep-found" };
	char bindir[PATH_MAX], cache[PATH_MAX];
	cli c;

	memset(&c, 0, sizeof c);
	for (int i = 2; i + 1 < argc; i++)
		if (strcmp(argv[i], "--scenario") == 0)
			ro.scenario = argv[i + 1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end = NULL;
		if (strcmp(a, "--keep") == 0 && ro.scenario) {
			ro.keep = 1;
			continue;
		}
		if (!v)
			return bad_usage("%s needs a value", a);
		if (ro.scenario && strcmp(a, "--rank") == 0)
			return bad_usage("%s: with --scenario every rank of the scenario's trainer is swept", a);
		int rused = parse_replay_option(a, v, &ro, &c);
		if (rused == 2)
			return 2;
		if (rused) {
			i++;
			continue;
		}
		int used = parse_save_option(a, v, &so.preset, &so.world, &so.step);
		if (used == 2)
			return 2;
		if (used) {
			/* consumed */
		} else if (strcmp(a, "--errno") == 0) {
			if (!(so.err = harness_errno_parse(v)) || so.err == EINTR)
				return bad_usage("--errno: '%s' is not valid; expected one of EIO, ENOSPC, EDQUOT, EACCES, EROFS, ...", v);
		} else if (strcmp(a, "--rank") == 0) {
			so.only_rank = (int)strtol(v, &end, 10);
			if (*end || so.only_rank < 0)
				return bad_usage("--rank: '%s' is not valid; expected a rank number", v);
		} else if (strcmp(a, "--json") == 0) {
			so.json = ro.json = v;
		} else if (strcmp(a, "--out") == 0) {
			so.out_dir = ro.out_dir = v;
		} else if (strcmp(a, "--cache") == 0) {
			c.cache = v;
		} else if (strcmp(a, "--inject") == 0) {
			if (parse_inject(v, &c.inject))
				return 2;
		} else {
			return bad_usage("unknown option '%s'", a);
		}
		i++;
	}
	if (ro.scenario) {
		locate(bindir, sizeof bindir, cache, sizeof cache, &c);
		harness_opts o = { .bindir = bindir, .cache = cache, .inject = c.inject, .ckpt_backend = c.ckpt_backend };
		ro.err = so.err;
		harness_launch_init();
		return harness_crashstates_replay(&ro, &o);
	}
	if (so.only_rank >= so.world)
		return bad_usage("--rank: the job has ranks 0 to %s only", so.world == 1 ? "0" : "world-size - 1");
	locate(bindir, sizeof bindir, cache, sizeof cache, &c);
	harness_opts o = { .bindir = bindir, .cache = cache, .inject = c.inject };
	harness_launch_init();
	return harness_sweep(&so, &o);
}

/* "N" or "A:N" (attempt A, 2..HARNESS_MAX_ATTEMPTS); N a step, or `none` where allowed. */
static int parse_attempt_value(const char *opt, const char *v, int allow_none, int *attempt, int64_t *value)
{
	char *end;
	const char *colon = strchr(v, ':');

	*attempt = 0;
	if (colon) {
		long a = strtol(v, &end, 10);
		if (end != colon || a < 2 || a > HARNESS_MAX_ATTEMPTS) {
			fprintf(stderr, "ckpt-harness: %s '%s': the attempt before ':' must be 2 to %d\n", opt, v,
				HARNESS_MAX_ATTEMPTS);
			return -1;
		}
		*attempt = (int)a;
		v = colon + 1;
	}
	if (allow_none && *attempt && strcmp(v, "none") == 0) {
		*value = HARNESS_EXPECT_FRESH;
		return 0;
	}
	long long n = strtoll(v, &end, 10);
	if (!*v || *end || n < 0) {
		fprintf(stderr, "ckpt-harness: %s '%s': expected STEP or ATTEMPT:STEP%s (a whole number >= 0)\n", opt, v,
			allow_none ? " or ATTEMPT:none" : "");
		return -1;
	}
	*value = n;
	return 0;
}

static const char oracle_usage[] =
"ckpt-harness oracle GOLDEN.jsonl ATTEMPT.jsonl... [--restored-from [A:]STEP|A:none]\n"
"       [--max-lost-steps [A:]N] [--keep K] [--damaged STEP@A] [--restore-faulted A] [--clean-failure WORDS]";

static int cmd_oracle(int argc, char **argv)
{
	harness_expect exp;
	harness_oracle_result o;
	int64_t steps = 0;
	const char *files[HARNESS_MAX_ATTEMPTS + 1];
	int nfiles = 0;

	harness_expect_init(&exp);
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int att;
		int64_t n;
		if (a[0] != '-') {
			if (nfiles == HARNESS_MAX_ATTEMPTS + 1)
				return bad_usage("oracle takes at most %s attempts", "16");
			files[nfiles++] = a;
			continue;
		}
		if (!v)
			return bad_usage("%s needs a value", a);
		i++;
		if (strcmp(a, "--restored-from") == 0) {
			if (parse_attempt_value(a, v, 1, &att, &n) < 0)
				return 2;
			*(att ? &exp.restored_from_at[att] : &exp.restored_from) = n;
		} else if (strcmp(a, "--max-lost-steps") == 0) {
			if (parse_attempt_value(a, v, 0, &att, &n) < 0)
				return 2;
			*(att ? &exp.max_lost_at[att] : &exp.max_lost_steps) = n;
		} else if (strcmp(a, "--keep") == 0) {
			char *end;
			long k = strtol(v, &end, 10);
			if (!*v || *end || k < 1 || k > 1000000)
				return bad_usage("--keep '%s': expected the number of generations retention keeps (>= 1)", v);
			exp.keep = (int)k;
		} else if (strcmp(a, "--damaged") == 0) {
			char *end;
			long long st = strtoll(v, &end, 10);
			long at = *end == '@' ? strtol(end + 1, &end, 10) : -1;
			if (!*v || *end || st < 0 || at < 2 || at > HARNESS_MAX_ATTEMPTS)
				return bad_usage("--damaged '%s': expected STEP@ATTEMPT (the generation damaged at rest, and the "
						 "first attempt that saw it, 2 to 16)", v);
			if (exp.ndamaged == HARNESS_MAX_DAMAGED)
				return bad_usage("--damaged '%s': too many", v);
			exp.damaged_step[exp.ndamaged] = st;
			exp.damaged_from_attempt[exp.ndamaged++] = (int)at;
		} else if (strcmp(a, "--restore-faulted") == 0) {
			char *end;
			long at = strtol(v, &end, 10);
			if (!*v || *end || at < 2 || at > HARNESS_MAX_ATTEMPTS)
				return bad_usage("--restore-faulted '%s': expected the attempt (2 to 16) whose restore met "
						 "injected faults", v);
			exp.restore_faulted[at] = 1;
		} else if (strcmp(a, "--clean-failure") == 0) {
			exp.outcome = HARNESS_CLEAN_FAILURE;
			snprintf(exp.error, sizeof exp.error, "%s", v);
		} else {
			fprintf(stderr, "ckpt-harness: unknown option '%s'\nusage: %s\n", a, oracle_usage);
			return 2;
		}
	}
	if (nfiles < 2) {
		fprintf(stderr, "ckpt-harness: oracle needs GOLDEN.jsonl and at least one ATTEMPT.jsonl\nusage: %s\n",
			oracle_usage);
		return 2;
	}
	/* the number of steps is the golden run's */
	FILE *g = fopen(files[0], "r");
	char line[8192];
	if (!g) {
		fprintf(stderr, "ckpt-harness: %s: %s\n", files[0], strerror(errno));
		return 2;
	}
	while (fgets(line, sizeof line, g)) {
		const char *p = strstr(line, "{\"step\":");
		if (p == line)
			steps = strtoll(line + 8, NULL, 10);
	}
	fclose(g);
	if (harness_oracle_compare(files[0], files + 1, nfiles - 1, steps, &exp, &o) < 0) {
		fprintf(stderr, "ckpt-harness: %s\n", o.sentence);
		return 2;
	}
	printf("%s: %s\n", harness_verdict_name(o.verdict), o.sentence);
	return o.verdict == HARNESS_PASS ? 0 : 1;
}

/* chaos: seeded random fault plans (chaos.c parses its options). */
static int cmd_chaos(int argc, char **argv)
{
	harness_chaos_opts *co = malloc(sizeof *co);
	char bindir[PATH_MAX], cache[PATH_MAX];
	cli c;
	int rc;

	memset(&c, 0, sizeof c);
	if (argc == 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
		printf("usage: %s\n", harness_chaos_usage);
		free(co);
		return 0;
	}
	if (!co)
		return 3;
	if ((rc = harness_chaos_parse_args(argc, argv, co, &c.cache, &c.inject)) != 0) {
		free(co);
		return rc;
	}
	locate(bindir, sizeof bindir, cache, sizeof cache, &c);
	harness_opts o = { .bindir = bindir, .cache = cache, .inject = c.inject };
	harness_launch_init();
	harness_workdir_sweep(harness_workdir_tmp(), "ckpt-harness-");
	harness_launch_sweep();
	rc = harness_chaos(co, &o);
	free(co);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		fputs(usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("ckpt-harness %s (git %s)\n", CKPT_VERSION, CKPT_COMMIT);
		return 0;
	}
	if (strcmp(argv[1], "run") == 0)
		return cmd_run(argc, argv, 0);
	if (strcmp(argv[1], "suite") == 0)
		return cmd_run(argc, argv, 1);
	if (strcmp(argv[1], "validate") == 0)
		return cmd_validate(argc, argv);
	if (strcmp(argv[1], "oracle") == 0)
		return cmd_oracle(argc, argv);
	if (strcmp(argv[1], "crashstates") == 0)
		return cmd_crashstates(argc, argv);
	if (strcmp(argv[1], "sweep") == 0)
		return cmd_sweep(argc, argv);
	if (strcmp(argv[1], "chaos") == 0)
		return cmd_chaos(argc, argv);
	if (strcmp(argv[1], "from-journal") == 0)
		return harness_from_journal_main(argc, argv);
	return bad_usage("unknown command '%s'; valid: run, suite, oracle, validate, crashstates, sweep, chaos, "
			 "from-journal", argv[1]);
}
