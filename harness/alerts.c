/* The oracle's check of libckpt's save alerts (alerts.h). */
#include "alerts.h"
#include "scenario.h"

#include <stdio.h>
#include <string.h>

const char *const harness_alert_metrics[] = { "duration", "throughput", "failures", NULL };

static int metric_of(const json_t *r)
{
	const char *m = json_string_value(json_object_get(r, "metric"));
	for (int i = 0; m && harness_alert_metrics[i]; i++)
		if (strcmp(m, harness_alert_metrics[i]) == 0)
			return i;
	return -2;
}

static int is_alert(const json_t *r)
{
	const char *ev = json_string_value(json_object_get(r, "event"));
	return ev && strcmp(ev, "alert") == 0 && json_is_integer(json_object_get(r, "rank"));
}

static void describe(const json_t *r, char *buf, size_t len)
{
	snprintf(buf, len, "rank %d, %s, step %lld (%.3f against a median of %.3f)",
		 (int)json_integer_value(json_object_get(r, "rank")),
		 json_string_value(json_object_get(r, "metric")) ? json_string_value(json_object_get(r, "metric")) : "?",
		 (long long)json_integer_value(json_object_get(r, "step")), json_number_value(json_object_get(r, "value")),
		 json_number_value(json_object_get(r, "median")));
}

int harness_alerts_judge(const harness_expect *exp, json_t *const *recs, int n, char *why, size_t len)
{
	char what[256];

	if (exp->alerts_mode == HARNESS_ALERTS_UNCHECKED)
		return 0;
	for (int i = 0; i < n; i++) {
		if (!is_alert(recs[i]))
			continue;
		int rank = (int)json_integer_value(json_object_get(recs[i], "rank")), listed = 0;
		for (int k = 0; k < exp->nalerts; k++)
			listed |= exp->alerts[k].rank == rank;
		if (listed)
			continue;
		describe(recs[i], what, sizeof what);
		snprintf(why, len, "libckpt raised a save alert (%s) %s", what,
			 exp->alerts_mode == HARNESS_ALERTS_NONE ? "in a run that must raise none (no delay or errno "
			 "fault slowed or failed a save): a false alarm" : "naming a rank the scenario does not expect");
		return 1;
	}
	for (int k = 0; k < exp->nalerts; k++) {
		int found = 0;
		for (int i = 0; i < n && !found; i++)
			found = is_alert(recs[i]) && json_integer_value(json_object_get(recs[i], "rank")) == exp->alerts[k].rank &&
				(exp->alerts[k].metric < 0 || metric_of(recs[i]) == exp->alerts[k].metric);
		if (!found) {
			snprintf(why, len, "the scenario expects a save alert for rank %d%s%s, but none was raised",
				 exp->alerts[k].rank, exp->alerts[k].metric >= 0 ? " on " : "",
				 exp->alerts[k].metric >= 0 ? harness_alert_metrics[exp->alerts[k].metric] : "");
			return 1;
		}
	}
	return 0;
}

void harness_alerts_write(FILE *out, const harness_scenario *s)
{
	const harness_expect *e = &s->expect;
	int timing = 0;

	for (int i = 0; i < s->nfaults; i++)
		timing |= s->faults[i].action == HARNESS_DELAY || s->faults[i].action == HARNESS_ERRNO;
	if (e->alerts_mode == HARNESS_ALERTS_NONE && timing)
		fputs(", alerts: []", out);
	if (e->alerts_mode != HARNESS_ALERTS_LISTED)
		return;
	fputs(", alerts: [", out);
	for (int k = 0; k < e->nalerts; k++) {
		fprintf(out, "%s{rank: %d", k ? ", " : "", e->alerts[k].rank);
		if (e->alerts[k].metric >= 0)
			fprintf(out, ", metric: %s", harness_alert_metrics[e->alerts[k].metric]);
		fputs("}", out);
	}
	fputs("]", out);
}
