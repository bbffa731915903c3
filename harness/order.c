/* The suite's running order, longest first (order.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "regfile.h"
#include "order.h"

#define RECORD "suite-seconds"
#define MAX_ENTRIES 4096        /* a record is read up to this many lines: it never sizes anything */

typedef struct entry {
	char name[128];
	double seconds;
} entry;

/* Read CACHE/suite-seconds into e[0..MAX_ENTRIES); malformed lines are skipped. Returns the count. */
static int load(const char *cache, entry *e)
{
	char path[PATH_MAX], line[512];
	int n = 0;
	FILE *f;

	if (snprintf(path, sizeof path, "%s/" RECORD, cache) >= (int)sizeof path)
		return 0;
	/* a file of the user's cache, but never a link or a FIFO to block on */
	if (!(f = harness_fopen_regular(AT_FDCWD, path)))
		return 0;
	while (n < MAX_ENTRIES && fgets(line, sizeof line, f)) {
		char *end, *name;
		size_t len = strcspn(line, "\n");
		double s;

		if (line[len] != '\n')
			break;          /* longer than any line this file writes: stop reading */
		line[len] = '\0';
		s = strtod(line, &end);
		if (end == line || *end != ' ' || !isfinite(s) || s < 0)
			continue;
		name = end + 1;
		if (!*name || strlen(name) >= sizeof e[n].name)
			continue;
		memcpy(e[n].name, name, strlen(name) + 1);
		e[n++].seconds = s;
	}
	fclose(f);
	return n;
}

static const entry *find(const entry *e, int n, const char *name)
{
	for (int i = n - 1; i >= 0; i--)        /* the last line for a name wins */
		if (strcmp(e[i].name, name) == 0)
			return &e[i];
	return NULL;
}

/* Unknown (< 0) first, in file order; then longest first; ties in file order. */
static int by_seconds(const void *a, const void *b, void *arg)
{
	const double *secs = arg;
	int i = *(const int *)a, j = *(const int *)b;
	double x = secs[i], y = secs[j];

	if ((x < 0) != (y < 0))
		return x < 0 ? -1 : 1;
	if (x >= 0 && x != y)
		return x < y ? 1 : -1;
	return (i > j) - (i < j);
}

void harness_order_plan(const char *cache, const harness_scenario *s, int n, int *order)
{
	entry *e = malloc(MAX_ENTRIES * sizeof *e);
	double *secs = malloc(((size_t)n + 1) * sizeof *secs);
	int ne = e && secs ? load(cache, e) : 0;

	for (int i = 0; i < n; i++)
		order[i] = i;
	if (ne > 0) {
		/* each scenario's time looked up once, not at every comparison */
		for (int i = 0; i < n; i++) {
			const entry *x = find(e, ne, s[i].name);
			secs[i] = x ? x->seconds : -1;
		}
		qsort_r(order, (size_t)n, sizeof *order, by_seconds, secs);
	}
	free(secs);
	free(e);
}

void harness_order_record(const char *cache, const harness_result *r, int n)
{
	char path[PATH_MAX], part[PATH_MAX];
	entry *e = malloc(MAX_ENTRIES * sizeof *e);
	int ne, fd, written = 0;
	FILE *f;

	if (!e)
		return;
	ne = load(cache, e);
	if (snprintf(path, sizeof path, "%s/" RECORD, cache) >= (int)sizeof path ||
	    snprintf(part, sizeof part, "%s/" RECORD ".XXXXXX", cache) >= (int)sizeof part ||
	    (fd = mkstemp(part)) < 0) {
		free(e);
		return;
	}
	if (!(f = fdopen(fd, "w"))) {
		close(fd);
		unlink(part);
		free(e);
		return;
	}
	/* this run's times, then the older lines of scenarios it did not run, up to MAX_ENTRIES lines */
	for (int i = 0; i < n && written < MAX_ENTRIES; i++)
		if (r[i].name[0] && !strchr(r[i].name, '\n') && r[i].seconds >= 0 && strlen(r[i].name) < sizeof e->name)
			fprintf(f, "%.3f %s\n", r[i].seconds, r[i].name), written++;
	for (int k = 0; k < ne && written < MAX_ENTRIES; k++) {
		int ran = 0;
		for (int i = 0; i < n && !ran; i++)
			ran = strcmp(r[i].name, e[k].name) == 0;
		if (!ran && find(e, ne, e[k].name) == &e[k])
			fprintf(f, "%.3f %s\n", e[k].seconds, e[k].name), written++;
	}
	free(e);
	if (fclose(f) != 0 || rename(part, path) < 0)
		unlink(part);
}
