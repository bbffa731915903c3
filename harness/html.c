#include "html.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_version.h"
#include "report.h"
#include "telemetry.h"

/* The phases and ops of the contract (DESIGN.md), in its order: the coverage grid's rows and columns. */
static const char *const phases[] = {
	"save.prepare", "save.shard_write", "save.shard_sync", "save.barrier", "save.manifest_write",
	"save.manifest_sync", "save.commit", "save.dir_sync", "save.latest", "save.retention", "restore.scan",
	"restore.read", "restore.verify", "train.step", "train.reduce", "open.cleanup",
};
static const char *const ops[] = { "open", "write", "fsync", "fdatasync", "rename", "mkdir", "unlink", "rmdir",
				   "ftruncate", "close", "read", "opendir", "link", "phase" };
#define NPHASES (int)(sizeof phases / sizeof *phases)
#define NOPS (int)(sizeof ops / sizeof *ops)
#define GRID_MAX 64

static const char *const palette[] = { "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
				       "#17becf", "#bcbd22" };
#define COLOR(attempt) palette[((attempt) - 1) % (int)(sizeof palette / sizeof *palette)]

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0 if it is not one. */
static int utf8_len(const unsigned char *s)
{
	int n;
	unsigned min;
	unsigned cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0)
		n = 2, min = 0x80, cp = s[0] & 0x1f;
	else if ((s[0] & 0xf0) == 0xe0)
		n = 3, min = 0x800, cp = s[0] & 0x0f;
	else if ((s[0] & 0xf8) == 0xf0)
		n = 4, min = 0x10000, cp = s[0] & 0x07;
	else
		return 0;
	for (int i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

void harness_html_escape(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		int n;
		switch (*p) {
		case '<': fputs("&lt;", f); p++; continue;
		case '>': fputs("&gt;", f); p++; continue;
		case '&': fputs("&amp;", f); p++; continue;
		case '"': fputs("&quot;", f); p++; continue;
		case '\'': fputs("&#39;", f); p++; continue;
		default: break;
		}
		if (*p < 0x20 && *p != '\n' && *p != '\t') {
			fprintf(f, "\\x%02x", *p++);       /* control bytes shown, never passed through */
			continue;
		}
		if (*p == 0x7f || (n = utf8_len(p)) == 0) {
			fprintf(f, "\\x%02x", *p++);
			continue;
		}
		fwrite(p, 1, (size_t)n, f);
		p += n;
	}
}

#define ESC(s) harness_html_escape(f, (s))

/* printf, then the escaped result: for formatted text with strings from files in it. */
static void escf(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void escf(FILE *f, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	ESC(buf);
}

static const char *css =
	"body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:1.5em auto;max-width:1100px;"
	"padding:0 1em;color:#222}\n"
	"h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.2em;margin:1.6em 0 .4em}h3{font-size:1em;margin:1em 0 .3em}\n"
	"table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left;"
	"vertical-align:top}th{background:#f4f4f4}\n"
	".verdicts td.num{text-align:right;white-space:nowrap}.sentence{max-width:40em}\n"
	".v-PASS .v,.badge.v-PASS{color:#fff;background:#2e7d32}.v-FAIL .v,.badge.v-FAIL{color:#fff;background:#c62828}\n"
	".v-ERROR .v,.badge.v-ERROR{color:#fff;background:#ef6c00}.v-SKIP .v,.badge.v-SKIP{color:#fff;background:#757575}\n"
	".badge{padding:.1em .4em;border-radius:3px;font-size:.8em;vertical-align:middle}\n"
	".scenario{border-top:2px solid #ccc;margin-top:2em}.path{font-family:monospace;font-size:.9em;color:#555;"
	"word-break:break-all}\n"
	".coverage td{text-align:center;min-width:1.6em;font-size:.85em}.coverage th{font-size:.8em}"
	".coverage td.hit{background:#a5d6a7}.coverage td.hit2{background:#66bb6a}.coverage td.miss{color:#bbb}\n"
	".coverage th.op{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap}\n"
	".fires{margin:0;padding-left:1.2em}.fire{color:#b71c1c}.between td{background:#fff8e1}\n"
	".diff{color:#b71c1c;font-weight:600}.note{color:#555}svg{max-width:100%;height:auto;display:block}\n"
	"svg text{font:11px sans-serif;fill:#333}svg .axis{stroke:#999}svg .grid{stroke:#eee}\n"
	"svg .golden{fill:none;stroke:#bbb;stroke-width:5;stroke-linejoin:round}"
	"svg .resumed{fill:none;stroke-width:1.6}\n"
	"svg .first-diff line{stroke:#c62828;stroke-width:1.5;stroke-dasharray:5 3}svg .first-diff text{fill:#c62828}"
	"svg .loss-diff{fill:none;stroke:#c62828;stroke-width:2}\n"
	"svg .fire-mark{fill:#c62828}svg .commit{fill:#2e7d32}svg .bar{stroke-width:8;stroke-linecap:round}\n"
	".legend span{display:inline-block;margin-right:1em}.swatch{display:inline-block;width:1.2em;height:.4em;"
	"vertical-align:middle;margin-right:.3em}\n";

static const char *verdict_of(const harness_result *r)
{
	return harness_verdict_name(r->verdict);
}

static void restored_text(const harness_result *r, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 1; i < r->oracle.attempts && i < HARNESS_MAX_ATTEMPTS && used < len; i++) {
		int64_t R = r->oracle.restored_from[i];
		if (R >= 0)
			used += (size_t)snprintf(buf + used, len - used, "%s%" PRId64, used ? ", " : "", R);
		else
			used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "",
						 R == -1 ? "fresh" : "none");
	}
	if (!buf[0])
		snprintf(buf, len, "-");
}

/*
 * A report of many runs (a chaos run of hundreds) gives a section only to
 * those that did not pass: a passing run's row says all there is, and the
 * page stays a few hundred kilobytes instead of megabytes per hundred runs.
 */
#define HTML_ALL_SECTIONS_MAX 64

static int has_section(const harness_result *x, int n)
{
	return n <= HTML_ALL_SECTIONS_MAX || x->verdict != HARNESS_PASS;
}

static void verdict_table(FILE *f, const harness_result *r, int n)
{
	fprintf(f, "<section id=\"verdicts\"><h2>Verdicts</h2>\n<table class=\"verdicts\"><thead><tr><th>scenario</th>"
		"<th>verdict</th><th>attempts</th><th>faults fired</th><th>restored from</th><th>lost steps</th>"
		"<th>time</th><th>what the oracle says</th></tr></thead><tbody>\n");
	for (int i = 0; i < n; i++) {
		char restored[160];
		restored_text(&r[i], restored, sizeof restored);
		fprintf(f, "<tr class=\"verdict v-%s\" data-scenario=\"", verdict_of(&r[i]));
		ESC(r[i].name);
		fprintf(f, "\" data-verdict=\"%s\"><td class=\"name\">", verdict_of(&r[i]));
		if (has_section(&r[i], n))
			fprintf(f, "<a href=\"#s-%d\">", i);
		ESC(r[i].name);
		fprintf(f, "%s</td><td class=\"v\">%s</td><td class=\"num\">%d</td><td class=\"num\">%d/%d</td>"
			"<td>%s</td><td class=\"num\">%" PRId64 "</td><td class=\"num\">%.1f s</td><td class=\"sentence\">",
			has_section(&r[i], n) ? "</a>" : "", verdict_of(&r[i]), r[i].attempts, r[i].faults_fired,
			r[i].faults_planned, restored, r[i].oracle.max_lost, r[i].seconds);
		ESC(r[i].sentence);
		fprintf(f, "</td></tr>\n");
	}
	fprintf(f, "</tbody></table></section>\n");
}

/* The grid's labels: the contract's, then any other the runs hit, in order of appearance. */
typedef struct labels {
	char v[GRID_MAX][48];
	int n;
} labels;

static int label_index(const labels *l, const char *s)
{
	for (int i = 0; i < l->n; i++)
		if (strcmp(l->v[i], s) == 0)
			return i;
	return -1;
}

static void label_add(labels *l, const char *s)
{
	if (label_index(l, s) < 0 && l->n < GRID_MAX)
		snprintf(l->v[l->n++], sizeof l->v[0], "%s", s);
}

static void split_pair(const char *pair, char *phase, size_t plen, char *op, size_t olen)
{
	const char *slash = strrchr(pair, '/');
	size_t k = slash ? (size_t)(slash - pair) : 0;
	snprintf(phase, plen, "%.*s", (int)(k < plen ? k : plen - 1), pair);
	snprintf(op, olen, "%s", slash ? slash + 1 : pair);
}

static void coverage_grid(FILE *f, const harness_result *r, int n)
{
	labels P = { .n = 0 }, O = { .n = 0 };
	int count[GRID_MAX][GRID_MAX];
	int hit = 0, any_phase_less = 0;

	memset(count, 0, sizeof count);
	for (int i = 0; i < NPHASES; i++)
		label_add(&P, phases[i]);
	for (int i = 0; i < NOPS; i++)
		label_add(&O, ops[i]);
	for (int i = 0; i < n; i++)
		for (int k = 0; k < r[i].ncoverage && k < HARNESS_MAX_COVERAGE; k++) {
			char ph[48], op[48];
			split_pair(r[i].coverage[k], ph, sizeof ph, op, sizeof op);
			any_phase_less |= !ph[0];
			label_add(&P, ph);
			label_add(&O, op);
			int a = label_index(&P, ph), b = label_index(&O, op);
			if (a >= 0 && b >= 0)
				count[a][b]++;
		}
	for (int a = 0; a < P.n; a++)
		for (int b = 0; b < O.n; b++)
			hit += count[a][b] > 0;
	fprintf(f, "<section id=\"coverage\"><h2>Coverage of (phase, op) pairs</h2>\n<p class=\"note\">Each cell: how "
		"many scenarios had a fault fire at that phase and call (<code>phase</code>: the phase's own point). "
		"%d pair%s hit over %d scenario%s.%s</p>\n<table class=\"coverage\"><thead><tr><th>phase \\ op</th>",
		hit, hit == 1 ? "" : "s", n, n == 1 ? "" : "s",
		any_phase_less ? " The row <em>(no phase)</em>: calls seen by the fault shim, which knows no "
				 "libckpt phase." : "");
	for (int b = 0; b < O.n; b++) {
		fprintf(f, "<th class=\"op\">");
		ESC(O.v[b]);
		fprintf(f, "</th>");
	}
	fprintf(f, "</tr></thead><tbody>\n");
	for (int a = 0; a < P.n; a++) {
		fprintf(f, "<tr><th>");
		ESC(P.v[a][0] ? P.v[a] : "(no phase)");
		fprintf(f, "</th>");
		for (int b = 0; b < O.n; b++) {
			int c = count[a][b];
			fprintf(f, "<td class=\"cov %s\" data-phase=\"", c ? (c > 1 ? "hit hit2" : "hit") : "miss");
			ESC(P.v[a]);
			fprintf(f, "\" data-op=\"");
			ESC(O.v[b]);
			fprintf(f, "\" data-count=\"%d\" title=\"", c);
			ESC(P.v[a][0] ? P.v[a] : "(no phase)");
			fprintf(f, " / ");
			ESC(O.v[b]);
			if (c) {
				fprintf(f, ":");
				int shown = 0;
				for (int i = 0; i < n && shown < 8; i++)
					for (int k = 0; k < r[i].ncoverage && k < HARNESS_MAX_COVERAGE; k++) {
						char ph[48], op[48];
						split_pair(r[i].coverage[k], ph, sizeof ph, op, sizeof op);
						if (strcmp(ph, P.v[a]) == 0 && strcmp(op, O.v[b]) == 0) {
							fprintf(f, " ");
							ESC(r[i].name);
							shown++;
							break;
						}
					}
				if (c > shown)
					fprintf(f, " ...");
			}
			fprintf(f, "\">%s", c ? "" : "&middot;");
			if (c)
				fprintf(f, "%d", c);
			fprintf(f, "</td>");
		}
		fprintf(f, "</tr>\n");
	}
	fprintf(f, "</tbody></table></section>\n");
}

/* "rank 1, step 30, save.shard_write / write #2 (rank-00001.safetensors): torn:4096+kill" */
static void fire_text(FILE *f, const harness_story_fire *x)
{
	escf(f, "rank %d, step %" PRId64 ", %s / %s", x->rank, x->step, x->phase[0] ? x->phase : "(no phase)", x->op);
	if (x->nth > 0)
		fprintf(f, " #%d", x->nth);
	if (x->path[0]) {
		fprintf(f, " (");
		ESC(x->path);
		fprintf(f, ")");
	}
	fprintf(f, ": ");
	ESC(x->action);
	if (x->count > 1)
		fprintf(f, ", %d times", x->count);
	if (x->line > 0)
		fprintf(f, " [fault %d, line %d]", x->fault + 1, x->line);
	else
		fprintf(f, " [fault %d]", x->fault + 1);
}

static int kills(const harness_story_fire *x)
{
	return strstr(x->action, "kill") || strstr(x->action, "power_loss");
}

/* How attempt a (1-based) ended, in words. */
static void ended_text(FILE *f, const harness_story *st, int a)
{
	const harness_story_attempt *t = &st->attempt[a - 1];
	if (strcmp(t->end, "done") == 0) {
		fprintf(f, "finished (done)");
	} else if (strcmp(t->end, "failed") == 0) {
		fprintf(f, "stopped with an error: ");
		ESC(t->error[0] ? t->error : "(no reason given)");
	} else if (t->end[0]) {
		ESC(t->end);
	} else {
		for (int i = 0; i < st->nfires; i++)
			if (st->fire[i].attempt == a && kills(&st->fire[i])) {
				const harness_story_fire *x = &st->fire[i];
				escf(f, "%s: rank %d", strstr(x->action, "power_loss") ? "power cut" : "killed", x->rank);
				if (x->step > 0)      /* a program that announces no step: the fault log says 0 */
					fprintf(f, " at step %" PRId64, x->step);
				escf(f, " (%s)", x->phase[0] ? x->phase : x->op);
				return;
			}
		fprintf(f, "no end record: the job died (a crash, or the watchdog)");
	}
}

static int64_t max64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

/* A round step for about `want` ticks over range. */
static double nice_step(double range, int want)
{
	double raw = range / (want > 0 ? want : 1), p = pow(10, floor(log10(raw > 0 ? raw : 1)));
	double m = raw / p;
	return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

#define W 760
#define ML 80      /* left margin: the row labels / y ticks */
#define MR 70
#define PW (W - ML - MR)

static double xpos(int64_t step, int64_t steps)
{
	return ML + (double)PW * (double)step / (double)(steps > 0 ? steps : 1);
}

static void x_axis(FILE *f, int64_t steps, double y0, double y1)
{
	double d = nice_step((double)steps, 8);
	fprintf(f, "<line class=\"axis\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>", ML, y1, ML + PW, y1);
	for (double s = 0; s <= (double)steps + 1e-9 && s / d < 50; s += d) {
		double x = xpos((int64_t)s, steps);
		fprintf(f, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
			"<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>", x, y0, x, y1, x, y1 + 13, s);
	}
	fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">step</text>\n", ML + PW, y1 + 26);
}

static void timeline_svg(FILE *f, const harness_result *r)
{
	const harness_story *st = &r->story;
	int64_t steps = st->steps;
	int rows = st->nattempts, row_h = 26, top = 10, h = top + rows * row_h + 34;

	for (int a = 0; a < st->nattempts; a++)
		steps = max64(steps, st->attempt[a].last_step);
	fprintf(f, "<svg class=\"timeline\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\" "
		"aria-label=\"timeline of the attempts\" xmlns=\"http://www.w3.org/2000/svg\">\n", W, h, W, h);
	x_axis(f, steps, top, top + rows * row_h + 4);
	for (int a = 1; a <= st->nattempts; a++) {
		const harness_story_attempt *t = &st->attempt[a - 1];
		double y = top + (a - 1) * row_h + row_h / 2.0;
		int64_t from = t->restored_from > 0 ? t->restored_from : 0;
		int64_t to = t->last_step >= 0 ? t->last_step : from;
		fprintf(f, "<g class=\"attempt-row\" data-attempt=\"%d\"><text x=\"4\" y=\"%.1f\">attempt %d</text>", a,
			y + 4, a);
		fprintf(f, "<line class=\"bar\" stroke=\"%s\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\">"
			"<title>attempt %d: ", COLOR(a), xpos(from, steps), y, xpos(to, steps) + (to == from ? 0.5 : 0), y, a);
		if (t->restored_from > 0)
			escf(f, "restored step %" PRId64 " (%s)", t->restored_from, t->checkpoint);
		else
			fprintf(f, "%s", t->restored_from == -1 ? "a fresh start" : "no start record");
		if (t->last_step >= 0)
			fprintf(f, ", wrote steps %" PRId64 " to %" PRId64, t->first_step, t->last_step);
		fprintf(f, "</title></line>");
		for (int c = 0; c < t->ncommits && c < HARNESS_STORY_COMMITS; c++) {
			double x = xpos(t->commits[c], steps);
			fprintf(f, "<path class=\"commit\" d=\"M%.1f %.1f l4 4 l-4 4 l-4 -4z\"><title>committed step %"
				PRId64 "</title></path>", x, y - 12, t->commits[c]);
		}
		for (int i = 0; i < st->nfires; i++) {
			const harness_story_fire *x = &st->fire[i];
			if (x->attempt != a)
				continue;
			/* no step known (a program without the beacon): where the attempt ended if it killed, else its start */
			double fx = xpos(x->step > 0 ? x->step : kills(x) ? to : from, steps);
			fprintf(f, "<path class=\"fire-mark\" d=\"M%.1f %.1f l5 9 h-10z\"><title>", fx, y + 2);
			fire_text(f, x);
			fprintf(f, "</title></path>");
		}
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", xpos(to, steps) + 8, y + 4);
		const char *e = t->end;
		for (int i = 0; i < st->nfires && !e[0]; i++)
			if (st->fire[i].attempt == a && kills(&st->fire[i]))
				e = strstr(st->fire[i].action, "power_loss") ? "power cut" : "killed";
		ESC(e[0] ? e : "died");
		fprintf(f, "</text></g>\n");
	}
	fprintf(f, "</svg>\n");
}

static void timeline_table(FILE *f, const harness_result *r)
{
	const harness_story *st = &r->story;

	fprintf(f, "<table class=\"timeline\"><thead><tr><th>attempt</th><th>started from</th><th>steps written</th>"
		"<th>committed</th><th>faults fired</th><th>ended</th></tr></thead><tbody>\n");
	for (int a = 1; a <= st->nattempts; a++) {
		const harness_story_attempt *t = &st->attempt[a - 1];
		fprintf(f, "<tr class=\"attempt\" data-attempt=\"%d\" data-restored-from=\"%" PRId64 "\"><td>%d</td><td>", a,
			t->restored_from, a);
		if (t->restored_from > 0) {
			escf(f, "step %" PRId64, t->restored_from);
			if (t->checkpoint[0]) {
				fprintf(f, " (");
				ESC(t->checkpoint);
				fprintf(f, ")");
			}
		} else {
			fprintf(f, "%s", t->restored_from == -1 ? "a fresh start" : t->restored_from == 0 ? "step 0"
				: "no start record (died in start-up or restore)");
		}
		if (t->world_size > 0)
			fprintf(f, ", %d rank%s", t->world_size, t->world_size == 1 ? "" : "s");
		if (t->fallbacks[0]) {
			fprintf(f, "<br><span class=\"note\">passed over: ");
			ESC(t->fallbacks);
			fprintf(f, "</span>");
		}
		fprintf(f, "</td><td>");
		if (t->last_step >= 0)
			fprintf(f, "%" PRId64 " to %" PRId64, t->first_step, t->last_step);
		else
			fprintf(f, "none");
		fprintf(f, "</td><td class=\"commits\">");
		for (int c = 0; c < t->ncommits && c < HARNESS_STORY_COMMITS; c++)
			fprintf(f, "%s%" PRId64, c ? ", " : "", t->commits[c]);
		if (t->ncommits > HARNESS_STORY_COMMITS)
			fprintf(f, " and %d more", t->ncommits - HARNESS_STORY_COMMITS);
		if (!t->ncommits)
			fprintf(f, "none");
		if (t->save_failed)
			fprintf(f, "<br><span class=\"note\">%d save%s failed</span>", t->save_failed,
				t->save_failed == 1 ? "" : "s");
		fprintf(f, "</td><td><ul class=\"fires\">");
		for (int i = 0; i < st->nfires; i++) {
			const harness_story_fire *x = &st->fire[i];
			if (x->attempt != a)
				continue;
			fprintf(f, "<li class=\"fire\" data-rank=\"%d\" data-step=\"%" PRId64 "\" data-phase=\"", x->rank, x->step);
			ESC(x->phase);
			fprintf(f, "\" data-op=\"");
			ESC(x->op);
			fprintf(f, "\" data-action=\"");
			ESC(x->action);
			fprintf(f, "\">");
			fire_text(f, x);
			fprintf(f, "</li>");
		}
		fprintf(f, "</ul></td><td class=\"ended\">");
		ended_text(f, st, a);
		fprintf(f, "</td></tr>\n");
		/* between this attempt and the next: a power cut, damage at rest */
		int power = 0;
		for (int i = 0; i < st->nfires; i++)
			power |= st->fire[i].attempt == a && strstr(st->fire[i].action, "power_loss") != NULL;
		if (power && a < st->nattempts)
			fprintf(f, "<tr class=\"between\"><td></td><td colspan=\"5\">after attempt %d: the power cut dropped "
				"what was not durable (unsynced data, names in unsynced directories)</td></tr>\n", a);
		for (int d = 0; d < st->ndamage; d++)
			if (st->damage[d].after_attempt == a && a < st->nattempts) {
				fprintf(f, "<tr class=\"between damage\"><td></td><td colspan=\"5\">after attempt %d: damage at "
					"rest, ", a);
				ESC(st->damage[d].what);
				fprintf(f, "</td></tr>\n");
			}
	}
	fprintf(f, "</tbody></table>\n");
	if (st->fires_dropped)
		fprintf(f, "<p class=\"note\">%d more distinct fires are not shown.</p>\n", st->fires_dropped);
}

/* The y range of the loss curves (finite values only). */
static void loss_range(const harness_story *st, double *lo, double *hi)
{
	*lo = INFINITY;
	*hi = -INFINITY;
	for (int i = 0; i < st->ngolden; i++) {
		*lo = fmin(*lo, st->golden_loss[i]);
		*hi = fmax(*hi, st->golden_loss[i]);
	}
	for (int i = 0; i < st->nresumed; i++) {
		*lo = fmin(*lo, st->resumed_loss[i]);
		*hi = fmax(*hi, st->resumed_loss[i]);
	}
	if (*hi - *lo < 1e-12 * fmax(1, fabs(*hi))) {
		*lo -= 0.5;
		*hi += 0.5;
	}
	double pad = (*hi - *lo) * 0.06;
	*lo -= pad;
	*hi += pad;
}

#define PH 220
#define MT 14

static double ypos(double v, double lo, double hi)
{
	return MT + PH * (hi - v) / (hi - lo);
}

static void loss_svg(FILE *f, const harness_result *r)
{
	const harness_story *st = &r->story;
	int64_t steps = st->steps;
	double lo, hi;
	int h = MT + PH + 40;

	for (int a = 0; a < st->nattempts; a++)
		steps = max64(steps, st->attempt[a].last_step);
	loss_range(st, &lo, &hi);
	fprintf(f, "<svg class=\"loss\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\" "
		"aria-label=\"loss curves\" xmlns=\"http://www.w3.org/2000/svg\">\n", W, h, W, h);
	x_axis(f, steps, MT, MT + PH);
	double d = nice_step(hi - lo, 4);
	fprintf(f, "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>", ML, MT, ML, MT + PH);
	int ticks = 0;
	for (double v = ceil(lo / d) * d; v <= hi && ticks++ < 50; v += d)
		fprintf(f, "<line class=\"grid\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/><text x=\"%d\" y=\"%.1f\" "
			"text-anchor=\"end\">%.4g</text>", ML, ypos(v, lo, hi), ML + PW, ypos(v, lo, hi), ML - 4,
			ypos(v, lo, hi) + 4, fabs(v) < d * 1e-6 ? 0.0 : v);
	fprintf(f, "<text x=\"4\" y=\"%d\">loss</text>\n", MT + 4);
	if (st->ngolden) {
		fprintf(f, "<polyline class=\"golden\" points=\"");
		for (int i = 0; i < st->ngolden; i++)
			fprintf(f, "%.1f,%.1f ", xpos(st->golden_step[i], steps), ypos(st->golden_loss[i], lo, hi));
		fprintf(f, "\"><title>the uninterrupted run</title></polyline>\n");
	}
	for (int a = 1; a <= st->nattempts; a++) {
		int any = 0;
		for (int i = 0; i < st->nresumed; i++) {
			if (st->resumed_attempt[i] != a)
				continue;
			if (!any++)
				fprintf(f, "<polyline class=\"resumed\" data-attempt=\"%d\" stroke=\"%s\" points=\"", a, COLOR(a));
			fprintf(f, "%.1f,%.1f ", xpos(st->resumed_step[i], steps), ypos(st->resumed_loss[i], lo, hi));
		}
		if (any)
			fprintf(f, "\"><title>attempt %d</title></polyline>\n", a);
	}
	for (int i = 0; i < st->nfires; i++)
		if (st->fire[i].step > 0) {
			fprintf(f, "<path class=\"fire-mark\" d=\"M%.1f %d l5 9 h-10z\"><title>",
				xpos(st->fire[i].step, steps), MT + PH - 9);
			fire_text(f, &st->fire[i]);
			fprintf(f, "</title></path>");
		}
	if (st->loss_diff_step >= 0)
		for (int i = 0; i < st->nresumed; i++)
			if (st->resumed_step[i] == st->loss_diff_step && st->resumed_attempt[i] == st->loss_diff_attempt) {
				fprintf(f, "<circle class=\"loss-diff\" data-step=\"%" PRId64 "\" cx=\"%.1f\" cy=\"%.1f\" r=\"6\">"
					"<title>the loss first differs at step %" PRId64 " (attempt %d): ", st->loss_diff_step,
					xpos(st->loss_diff_step, steps), ypos(st->resumed_loss[i], lo, hi), st->loss_diff_step,
					st->loss_diff_attempt);
				ESC(st->loss_resumed);
				fprintf(f, " instead of ");
				ESC(st->loss_golden[0] ? st->loss_golden : "(none)");
				fprintf(f, "</title></circle>\n");
				break;
			}
	if (st->diff_step >= 0) {
		double x = xpos(st->diff_step, steps);
		int right = x > ML + PW * 0.7;
		fprintf(f, "<g class=\"first-diff\" data-step=\"%" PRId64 "\" data-attempt=\"%d\"><line x1=\"%.1f\" "
			"y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/><text x=\"%.1f\" y=\"%d\" text-anchor=\"%s\">first difference: "
			"step %" PRId64 "</text><title>", st->diff_step, st->diff_attempt, x, MT, x, MT + PH,
			right ? x - 4 : x + 4, MT + 10, right ? "end" : "start", st->diff_step);
		escf(f, "%s at step %" PRId64 " (attempt %d): %s", st->diff_restore ? "restored state differs" :
		     "differs", st->diff_step, st->diff_attempt, st->diff_keys);
		fprintf(f, "</title></g>\n");
	}
	fprintf(f, "</svg>\n");
}

static void diff_text(FILE *f, const harness_story *st)
{
	fprintf(f, "<p class=\"first-difference\">");
	if (st->diff_step < 0) {
		fprintf(f, "No step of any attempt differs from the uninterrupted run.");
	} else {
		fprintf(f, "<span class=\"diff\">First difference from the uninterrupted run: step <span "
			"class=\"diff-step\">%" PRId64 "</span></span> (attempt %d): ", st->diff_step, st->diff_attempt);
		if (st->diff_restore)
			fprintf(f, "the state it restored differs in ");
		else
			fprintf(f, "the step record differs in ");
		ESC(st->diff_keys);
		fprintf(f, ".");
	}
	if (st->loss_diff_step >= 0) {
		fprintf(f, " The loss first differs at step %" PRId64 " (attempt %d): ", st->loss_diff_step,
			st->loss_diff_attempt);
		ESC(st->loss_resumed);
		fprintf(f, " instead of ");
		ESC(st->loss_golden[0] ? st->loss_golden : "(none)");
		fprintf(f, ".");
	}
	fprintf(f, "</p>\n");
}

static void legend(FILE *f, const harness_story *st)
{
	fprintf(f, "<p class=\"legend\"><span><i class=\"swatch\" style=\"background:#bbb\"></i>uninterrupted run</span>");
	for (int a = 1; a <= st->nattempts; a++)
		fprintf(f, "<span><i class=\"swatch\" style=\"background:%s\"></i>attempt %d</span>", COLOR(a), a);
	fprintf(f, "<span><svg width=\"12\" height=\"10\" style=\"display:inline\"><path class=\"fire-mark\" "
		"d=\"M6 0 l5 9 h-10z\"/></svg> fault fired</span>");
	fprintf(f, "<span><svg width=\"12\" height=\"10\" style=\"display:inline\"><path class=\"commit\" "
		"d=\"M6 1 l4 4 l-4 4 l-4 -4z\"/></svg> committed</span></p>\n");
}

static void scenario_section(FILE *f, const harness_result *r, int i)
{
	const harness_story *st = &r->story;

	fprintf(f, "<section class=\"scenario\" id=\"s-%d\" data-scenario=\"", i);
	ESC(r->name);
	fprintf(f, "\" data-verdict=\"%s\"><h2>", verdict_of(r));
	ESC(r->name);
	fprintf(f, " <span class=\"badge v-%s\">%s</span></h2>\n<p class=\"sentence\">", verdict_of(r), verdict_of(r));
	ESC(r->sentence);
	fprintf(f, "</p>\n<p class=\"path\">");
	ESC(r->file);
	if (r->workdir[0]) {
		fprintf(f, "<br>evidence kept in ");
		ESC(r->workdir);
	}
	fprintf(f, "</p>\n");
	if (!st->collected) {
		fprintf(f, "<p class=\"note\">No attempt ran, so there is no timeline (see the sentence above).</p>"
			"</section>\n");
		return;
	}
	fprintf(f, "<h3>Attempts</h3>\n");
	legend(f, st);
	timeline_svg(f, r);
	timeline_table(f, r);
	fprintf(f, "<h3>Loss: uninterrupted and resumed</h3>\n");
	diff_text(f, st);
	if (st->ngolden || st->nresumed)
		loss_svg(f, r);
	else
		fprintf(f, "<p class=\"note\">The trajectories have no <code>loss</code> field to plot.</p>\n");
	if (st->stride > 1)
		fprintf(f, "<p class=\"note\">Curves drawn from every %d%s step, each attempt's first and last, and the "
			"differences.</p>\n", st->stride, st->stride == 2 ? "nd" : st->stride == 3 ? "rd" : "th");
	if (st->resumed_dropped)
		fprintf(f, "<p class=\"note\">%d points of the resumed curve did not fit and are not drawn.</p>\n",
			st->resumed_dropped);
	if (st->tele.npoints) {     /* libckpt's journal: each rank's save time, alerts ringed */
		fprintf(f, "<h3>Save time per rank</h3>\n");
		harness_telemetry_svg(f, &st->tele);
	}
	fprintf(f, "</section>\n");
}

int harness_report_html_stream(FILE *f, const harness_result *r, int n, double seconds)
{
	int pass = 0, fail = 0, err = 0, skip = 0;

	for (int i = 0; i < n; i++) {
		pass += r[i].verdict == HARNESS_PASS;
		fail += r[i].verdict == HARNESS_FAIL;
		err += r[i].verdict == HARNESS_ERROR;
		skip += r[i].verdict == HARNESS_SKIP;
	}
	fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
		/* nothing is fetched and nothing runs: the page is data */
		"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
		"img-src data:\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
		"<title>ckpt-harness: %d passed, %d failed, %d errors</title>\n<style>\n%s</style></head>\n<body>\n",
		pass, fail, err, css);
	fprintf(f, "<header><h1>ckpt-harness report</h1><p id=\"summary\">%d scenario%s: <b>%d passed</b>, "
		"<b>%d failed</b>, %d error%s, %d skipped, in %.1f s. Judged by ckpt-harness %s (git %s).</p></header>\n",
		n, n == 1 ? "" : "s", pass, fail, err, err == 1 ? "" : "s", skip, seconds, CKPT_VERSION, CKPT_COMMIT);
	if (n > HTML_ALL_SECTIONS_MAX && pass)
		fprintf(f, "<p class=\"note\" id=\"passes-brief\">%d runs: only those that did not pass have a section "
			"below; a passing run's row is all it has.</p>\n", n);
	verdict_table(f, r, n);
	coverage_grid(f, r, n);
	for (int i = 0; i < n; i++)
		if (has_section(&r[i], n))
			scenario_section(f, &r[i], i);
	fprintf(f, "</body></html>\n");
	return ferror(f) ? -EIO : 0;
}

int harness_report_html(const char *path, const harness_result *r, int n, double seconds)
{
	char tmp[PATH_MAX];
	int rc;

	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
		return -ENAMETOOLONG;
	FILE *f = fopen(tmp, "w");
	if (!f)
		return -errno;
	rc = harness_report_html_stream(f, r, n, seconds);
	if (fclose(f) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0)
		unlink(tmp);
	return rc;
}
