/*
 * ckpt-tool stats ROOT: per-generation and per-rank save times and
 * throughput, and the alerts raised, from libckpt's journal
 * (ROOT/journal/rank-R.jsonl and its rotated .1). The journal is read as
 * untrusted: only regular files directly in journal/ (never a link, never a
 * FIFO or device: opened O_NOFOLLOW | O_NONBLOCK, then fstat), at most
 * STATS_FILE_MAX bytes each, lines of at most STATS_LINE_MAX, and at most
 * STATS_RECORDS_MAX save records; what does not parse is counted and skipped.
 */
#include "stats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#define STATS_FILE_MAX ((off_t)64 << 20)
#define STATS_LINE_MAX 65536
#define STATS_RECORDS_MAX 1000000
#define STATS_RANK_MAX 100000

typedef struct save_rec {
	uint64_t step;
	int rank;
	int ok;
	uint64_t bytes;
	double seconds;             /* own seconds when the journal has them (not waiting for peers) */
	long seq_order;             /* file order: later records of a step supersede earlier ones */
} save_rec;

typedef struct stats {
	save_rec *s;
	size_t n, cap;
	json_t *alerts;             /* array of the alert records */
	size_t malformed, skipped_files;
	long order;
} stats;

static void add_save(stats *st, int rank, json_t *r)
{
	json_t *own = json_object_get(r, "own_seconds");
	if (st->n == st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 256;
		save_rec *p = st->n >= STATS_RECORDS_MAX ? NULL : realloc(st->s, cap * sizeof *p);
		if (!p) {
			st->malformed++;
			return;
		}
		st->s = p;
		st->cap = cap;
	}
	st->s[st->n++] = (save_rec){
		.step = (uint64_t)json_integer_value(json_object_get(r, "step")), .rank = rank,
		.ok = json_integer_value(json_object_get(r, "result")) == 0,
		.bytes = (uint64_t)json_integer_value(json_object_get(r, "bytes")),
		.seconds = json_number_value(own ? own : json_object_get(r, "seconds")), .seq_order = st->order++ };
}

static void add_line(stats *st, int rank, const char *line, size_t len)
{
	json_t *r = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
	const char *ev = json_string_value(json_object_get(r, "event"));

	if (!r) {
		st->malformed++;
	} else if (!ev) {
		/* an I/O operation's record */
	} else if (strcmp(ev, "save") == 0) {
		if (json_is_integer(json_object_get(r, "step")) && json_is_integer(json_object_get(r, "result")))
			add_save(st, rank, r);
		else
			st->malformed++;
	} else if (strcmp(ev, "alert") == 0 && json_is_integer(json_object_get(r, "rank"))) {
		json_object_del(r, "seq");
		json_object_del(r, "time");
		json_object_del(r, "event");
		json_array_append(st->alerts, r);
	}
	json_decref(r);
}

/* One journal file, relative to the journal directory: bounded, regular, no links. */
static void read_file(stats *st, int dirfd, const char *name, int rank)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	struct stat sb;
	char *buf = NULL;

	if (fd < 0 || fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size > STATS_FILE_MAX ||
	    !(buf = malloc((size_t)sb.st_size + 1))) {
		st->skipped_files++;
		goto out;
	}
	size_t len = 0;
	for (ssize_t k; len < (size_t)sb.st_size && (k = read(fd, buf + len, (size_t)sb.st_size - len)) > 0;)
		len += (size_t)k;
	for (size_t a = 0; a < len;) {
		char *nl = memchr(buf + a, '\n', len - a);
		size_t e = nl ? (size_t)(nl - buf) : len;
		if (e - a > STATS_LINE_MAX)
			st->malformed++;
		else if (e > a)
			add_line(st, rank, buf + a, e - a);
		a = e + 1;
	}
out:
	free(buf);
	if (fd >= 0)
		close(fd);
}

static int parse_name(const char *name, int *rank, int *rotated)
{
	char tail[8] = "";
	int r, n = 0;
	if (sscanf(name, "rank-%5d.jsonl%n", &r, &n) != 1 || n != 16 || r < 0 || r >= STATS_RANK_MAX)
		return -1;
	snprintf(tail, sizeof tail, "%s", name + n);
	if (strcmp(tail, "") && strcmp(tail, ".1"))
		return -1;
	*rank = r;
	*rotated = tail[0] != '\0';
	return 0;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load(stats *st, const char *root)
{
	int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC), dirfd = -1, rc = 0;
	DIR *d = NULL;
	char **names = NULL;
	size_t nn = 0;

	if (rootfd < 0)
		return -errno;
	if ((dirfd = openat(rootfd, "journal", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		rc = errno == ENOTDIR ? -ELOOP : -errno;      /* a link is never followed */
		goto out;
	}
	if (!(d = fdopendir(dup(dirfd)))) {
		rc = -errno;
		goto out;
	}
	for (struct dirent *de; (de = readdir(d)) && nn < 2 * STATS_RANK_MAX;) {
		int r, rot;
		char **p;
		if (parse_name(de->d_name, &r, &rot) < 0 || !(p = realloc(names, (nn + 1) * sizeof *names)))
			continue;
		names = p;
		if ((names[nn] = strdup(de->d_name)))
			nn++;
	}
	/* per rank, the rotated (older) file before the current one: "rank-R.jsonl" < "rank-R.jsonl.1" */
	qsort(names, nn, sizeof *names, cmp_name);
	for (size_t i = 0; i < nn; i++) {
		int r, rot;
		parse_name(names[i], &r, &rot);
		if (!rot && i + 1 < nn && strncmp(names[i + 1], names[i], 16) == 0)
			read_file(st, dirfd, names[i + 1], r);
		if (!rot || i == 0 || strncmp(names[i - 1], names[i], 16) != 0)
			read_file(st, dirfd, names[i], r);
	}
out:
	for (size_t i = 0; i < nn; i++)
		free(names[i]);
	free(names);
	if (d)
		closedir(d);
	if (dirfd >= 0)
		close(dirfd);
	close(rootfd);
	return rc;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof *v, cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int cmp_rec(const void *a, const void *b)
{
	const save_rec *x = a, *y = b;
	if (x->step != y->step)
		return x->step < y->step ? -1 : 1;
	if (x->rank != y->rank)
		return x->rank - y->rank;
	return (x->seq_order > y->seq_order) - (x->seq_order < y->seq_order);
}

static double mibps(uint64_t bytes, double s)
{
	return s > 0 ? (double)bytes / 1048576.0 / s : 0;
}

/* Per generation: each rank's last save of that step (a retry or a resave supersedes). */
static json_t *generations(stats *st)
{
	json_t *out = json_array();
	qsort(st->s, st->n, sizeof *st->s, cmp_rec);
	for (size_t i = 0; i < st->n;) {
		size_t j = i;
		uint64_t bytes = 0;
		int ranks = 0, ok = 1, slowest = -1;
		double max = 0;
		unsigned tries = 0;
		while (j < st->n && st->s[j].step == st->s[i].step) {
			size_t k = j;
			while (k + 1 < st->n && st->s[k + 1].step == st->s[j].step && st->s[k + 1].rank == st->s[j].rank)
				k++;
			const save_rec *r = &st->s[k];      /* the last of this rank's saves of the step */
			tries += (unsigned)(k - j + 1);
			ranks++;
			ok &= r->ok;
			bytes += r->bytes;
			if (slowest < 0 || r->seconds > max) {
				max = r->seconds;
				slowest = r->rank;
			}
			j = k + 1;
		}
		json_array_append_new(out, json_pack("{sI si ss sI sf si sf si}", "step", (json_int_t)st->s[i].step,
						     "ranks", ranks, "result", ok ? "ok" : "failed", "bytes",
						     (json_int_t)bytes, "seconds", max, "slowest_rank", slowest, "mib_per_s",
						     mibps(bytes, max), "saves", (int)tries));
		i = j;
	}
	return out;
}

static json_t *ranks(stats *st)
{
	json_t *out = json_array();
	int maxr = -1;
	double *v = calloc(st->n + 1, sizeof *v), *w = calloc(st->n + 1, sizeof *w);
	for (size_t i = 0; i < st->n; i++)
		if (st->s[i].rank > maxr)
			maxr = st->s[i].rank;
	for (int r = 0; v && w && r <= maxr; r++) {
		size_t n = 0, failed = 0, alerts = 0;
		double max = 0;
		for (size_t i = 0; i < st->n; i++) {
			if (st->s[i].rank != r)
				continue;
			if (!st->s[i].ok) {
				failed++;
				continue;
			}
			v[n] = st->s[i].seconds;
			w[n++] = mibps(st->s[i].bytes, st->s[i].seconds);
			if (st->s[i].seconds > max)
				max = st->s[i].seconds;
		}
		size_t ai;
		json_t *a;
		json_array_foreach(st->alerts, ai, a)
			alerts += json_integer_value(json_object_get(a, "rank")) == r;
		if (!n && !failed)
			continue;
		json_array_append_new(out, json_pack("{si sI sI sf sf sf sI}", "rank", r, "saves", (json_int_t)n,
						     "failed", (json_int_t)failed, "median_seconds", median(v, n),
						     "max_seconds", max, "median_mib_per_s", median(w, n), "alerts",
						     (json_int_t)alerts));
	}
	free(v);
	free(w);
	return out;
}

static void print_table(json_t *gens, json_t *rks, json_t *alerts)
{
	size_t i;
	json_t *g;

	printf("%-10s %5s %-7s %12s %10s %8s %10s %5s\n", "step", "ranks", "result", "bytes", "seconds", "slowest",
	       "MiB/s", "saves");
	json_array_foreach(gens, i, g)
		printf("%-10" JSON_INTEGER_FORMAT " %5" JSON_INTEGER_FORMAT " %-7s %12" JSON_INTEGER_FORMAT " %10.6f %8"
		       JSON_INTEGER_FORMAT " %10.1f %5" JSON_INTEGER_FORMAT "\n",
		       json_integer_value(json_object_get(g, "step")), json_integer_value(json_object_get(g, "ranks")),
		       json_string_value(json_object_get(g, "result")), json_integer_value(json_object_get(g, "bytes")),
		       json_real_value(json_object_get(g, "seconds")), json_integer_value(json_object_get(g, "slowest_rank")),
		       json_real_value(json_object_get(g, "mib_per_s")), json_integer_value(json_object_get(g, "saves")));
	printf("\n%-6s %6s %6s %14s %12s %12s %6s\n", "rank", "saves", "failed", "median_seconds", "max_seconds",
	       "median_MiB/s", "alerts");
	json_array_foreach(rks, i, g)
		printf("%-6" JSON_INTEGER_FORMAT " %6" JSON_INTEGER_FORMAT " %6" JSON_INTEGER_FORMAT " %14.6f %12.6f %12.1f %6"
		       JSON_INTEGER_FORMAT "\n", json_integer_value(json_object_get(g, "rank")),
		       json_integer_value(json_object_get(g, "saves")), json_integer_value(json_object_get(g, "failed")),
		       json_real_value(json_object_get(g, "median_seconds")), json_real_value(json_object_get(g, "max_seconds")),
		       json_real_value(json_object_get(g, "median_mib_per_s")), json_integer_value(json_object_get(g, "alerts")));
	printf("\n%zu alert%s\n", json_array_size(alerts), json_array_size(alerts) == 1 ? "" : "s");
	json_array_foreach(alerts, i, g) {
		const char *m = json_string_value(json_object_get(g, "metric"));
		char metric[16];
		snprintf(metric, sizeof metric, "%s", m ? m : "?");
		for (char *p = metric; *p; p++)       /* from disk: printable only */
			if (*p < 0x20 || *p > 0x7e)
				*p = '?';
		printf("  step %" JSON_INTEGER_FORMAT " rank %" JSON_INTEGER_FORMAT " %s: %.6f (median %.6f, threshold %.6f)\n",
		       json_integer_value(json_object_get(g, "step")), json_integer_value(json_object_get(g, "rank")), metric,
		       json_number_value(json_object_get(g, "value")), json_number_value(json_object_get(g, "median")),
		       json_number_value(json_object_get(g, "threshold")));
	}
}

int ckpt_tool_stats(const char *root, int as_json, char *err, size_t len)
{
	stats st = { .alerts = json_array() };
	int rc = load(&st, root);

	if (rc < 0) {
		snprintf(err, len, "%s", rc == -ELOOP ? "journal/ is not a directory (a link is never followed)"
			 : rc == -ENOENT ? "no journal/ under it (not a libckpt root, or nothing saved yet)" : strerror(-rc));
		json_decref(st.alerts);
		return rc;
	}
	json_t *gens = generations(&st), *rks = ranks(&st);
	if (as_json) {
		json_t *doc = json_pack("{so so sO sI sI}", "generations", gens, "ranks", rks, "alerts", st.alerts,
					"malformed_lines", (json_int_t)st.malformed, "skipped_files",
					(json_int_t)st.skipped_files);
		json_dumpf(doc, stdout, JSON_INDENT(1) | JSON_ENSURE_ASCII);
		putchar('\n');
		json_decref(doc);
	} else {
		print_table(gens, rks, st.alerts);
		if (st.malformed || st.skipped_files)
			printf("(%zu malformed line%s, %zu file%s skipped)\n", st.malformed, st.malformed == 1 ? "" : "s",
			       st.skipped_files, st.skipped_files == 1 ? "" : "s");
		json_decref(gens);
		json_decref(rks);
	}
	json_decref(st.alerts);
	free(st.s);
	return 0;
}
