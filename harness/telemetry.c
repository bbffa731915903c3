/* Save telemetry for the HTML report (telemetry.h). */
#include "regfile.h"
#include "telemetry.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "html.h"
#include "jsonl.h"

typedef struct reader {
	harness_telemetry *t;
	int rank;
} reader;

static int on_record(json_t *r, void *arg)
{
	reader *rd = arg;
	harness_telemetry *t = rd->t;
	const char *ev = json_string_value(json_object_get(r, "event"));
	json_t *step = json_object_get(r, "step");

	if (!ev || !json_is_integer(step))
		return 0;
	if (strcmp(ev, "save") == 0) {
		json_t *own = json_object_get(r, "own_seconds");
		if (t->npoints == HARNESS_TELE_POINTS) {
			t->dropped++;
			return 0;
		}
		t->step[t->npoints] = (int32_t)json_integer_value(step);
		t->rank[t->npoints] = rd->rank;
		t->seconds[t->npoints] = (float)json_number_value(own ? own : json_object_get(r, "seconds"));
		t->failed[t->npoints] = json_integer_value(json_object_get(r, "result")) != 0;
		t->npoints++;
		if (rd->rank >= t->nranks)
			t->nranks = rd->rank + 1;
	} else if (strcmp(ev, "alert") == 0 && t->nalerts < HARNESS_TELE_ALERTS &&
		   json_is_integer(json_object_get(r, "rank"))) {
		const char *m = json_string_value(json_object_get(r, "metric"));
		t->alert_step[t->nalerts] = (int32_t)json_integer_value(step);
		t->alert_rank[t->nalerts] = (int32_t)json_integer_value(json_object_get(r, "rank"));
		t->alert_value[t->nalerts] = (float)json_number_value(json_object_get(r, "value"));
		snprintf(t->alert_metric[t->nalerts], sizeof t->alert_metric[0], "%s", m ? m : "?");
		t->nalerts++;
	}
	return 0;
}

static void read_one(harness_telemetry *t, int dirfd, const char *name, int rank)
{
	FILE *f = harness_fopen_regular(dirfd, name);
	reader rd = { t, rank };

	if (!f)
		return;
	harness_jsonl_each_stream_with(f, "\"event\"", on_record, &rd);     /* its events, not its I/O records */
	fclose(f);
}

void harness_telemetry_collect(harness_telemetry *t, const char *ckpt_root)
{
	int rootfd, dirfd;
	char name[32];

	memset(t, 0, sizeof *t);
	if (!ckpt_root || (rootfd = open(ckpt_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return;
	dirfd = openat(rootfd, "journal", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	close(rootfd);
	if (dirfd < 0)
		return;
	/* ranks in order, each one's rotated (older) file first; a gap in the ranks ends the scan */
	for (int r = 0; r < 4096; r++) {
		struct stat sb;
		snprintf(name, sizeof name, "rank-%05d.jsonl", r);
		if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
			break;
		snprintf(name, sizeof name, "rank-%05d.jsonl.1", r);
		read_one(t, dirfd, name, r);
		snprintf(name, sizeof name, "rank-%05d.jsonl", r);
		read_one(t, dirfd, name, r);
	}
	close(dirfd);
}

static const char *const rank_colors[] = { "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
					   "#17becf", "#bcbd22" };
#define RANK_COLOR(r) rank_colors[(r) % (int)(sizeof rank_colors / sizeof *rank_colors)]

void harness_telemetry_svg(FILE *f, const harness_telemetry *t)
{
	enum { W = 760, H = 220, ML = 60, MR = 20, MT = 12, MB = 40 };
	int32_t smax = 1;
	double ymax = 0;

	if (!t->npoints)
		return;
	for (int i = 0; i < t->npoints; i++) {
		smax = t->step[i] > smax ? t->step[i] : smax;
		ymax = t->seconds[i] > ymax ? t->seconds[i] : ymax;
	}
	if (ymax <= 0)
		ymax = 1e-3;
	ymax *= 1.1;
#define X(s) (ML + (double)(W - ML - MR) * (double)(s) / (double)smax)
#define Y(v) (MT + (double)(H - MT - MB) * (1.0 - (double)(v) / ymax))
	fprintf(f, "<svg class=\"save-times\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\" "
		"aria-label=\"save time per rank\" xmlns=\"http://www.w3.org/2000/svg\">\n", W, H, W, H);
	fprintf(f, "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>", ML, H - MB, W - MR, H - MB);
	fprintf(f, "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>", ML, MT, ML, H - MB);
	for (int k = 0; k <= 4; k++) {
		double v = ymax * k / 4;
		fprintf(f, "<line class=\"grid\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/><text x=\"%d\" y=\"%.1f\" "
			"text-anchor=\"end\">%.3g s</text>", ML, Y(v), W - MR, Y(v), ML - 4, Y(v) + 4, v);
	}
	for (int k = 0; k <= 4; k++)
		fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.0f</text>", X(smax * k / 4.0), H - MB + 14,
			smax * k / 4.0);
	fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">step</text>\n", W - MR, H - 8);
	for (int i = 0; i < t->npoints; i++)
		fprintf(f, "<circle class=\"save%s\" data-rank=\"%d\" cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\">"
			"<title>rank %d, step %d: %.6f s%s</title></circle>", t->failed[i] ? " failed" : "", t->rank[i],
			X(t->step[i]), Y(t->seconds[i]), t->failed[i] ? "none" : RANK_COLOR(t->rank[i]), t->rank[i],
			t->step[i], t->seconds[i], t->failed[i] ? " (failed)" : "");
	for (int a = 0; a < t->nalerts; a++) {
		/* ringed at that rank's save of that step */
		double v = 0;
		for (int i = 0; i < t->npoints; i++)
			if (t->step[i] == t->alert_step[a] && t->rank[i] == t->alert_rank[a])
				v = t->seconds[i];
		fprintf(f, "<circle class=\"alert\" data-rank=\"%d\" cx=\"%.1f\" cy=\"%.1f\" r=\"7\" fill=\"none\" "
			"stroke=\"#c62828\" stroke-width=\"2\"><title>alert: rank %d, step %d, ", t->alert_rank[a],
			X(t->alert_step[a]), Y(v), t->alert_rank[a], t->alert_step[a]);
		harness_html_escape(f, t->alert_metric[a]);
		fprintf(f, " %.6g</title></circle>", t->alert_value[a]);
	}
	fprintf(f, "\n</svg>\n<p class=\"legend\">");
	for (int r = 0; r < t->nranks && r < 64; r++)
		fprintf(f, "<span><svg width=\"10\" height=\"10\" style=\"display:inline\"><circle cx=\"5\" cy=\"5\" r=\"4\" "
			"fill=\"%s\"/></svg> rank %d</span> ", RANK_COLOR(r), r);
	fprintf(f, "<span><svg width=\"14\" height=\"14\" style=\"display:inline\"><circle cx=\"7\" cy=\"7\" r=\"5\" "
		"fill=\"none\" stroke=\"#c62828\" stroke-width=\"2\"/></svg> alert</span></p>\n");
	if (t->dropped)
		fprintf(f, "<p class=\"note\">%d more saves are not drawn.</p>\n", t->dropped);
#undef X
#undef Y
}
