/*
 * Save anomaly alerts (ckpt/alert.h states the rules). Rank 0 holds one
 * detector for the job: per rank, a ring of the last `window` committed
 * saves' own seconds and MiB/s, and the failure streak. Nothing here reads a
 * clock: the caller feeds measured values, so tests feed values directly.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert.h"
#include "internal.h"

typedef struct rank_baseline {
	double *secs, *mibs;        /* rings of window samples */
	uint32_t n, next;           /* samples held, where the next one goes */
	uint32_t streak;            /* failed saves in a row attributed to this rank */
} rank_baseline;

struct ckpt_detector {
	ckpt_alert_config cfg;
	int nranks;
	rank_baseline *r;
	double *tmp;                /* window values, for the median */
	double *pool;
};

static const char *const metric_names[] = { "duration", "throughput", "failures" };

const char *ckpt_alert_metric_name(ckpt_alert_metric m)
{
	return (unsigned)m < 3 ? metric_names[m] : "unknown";
}

int ckpt__alert_config_resolve(const ckpt_alert_config *in, ckpt_alert_config *out, char *why, size_t len)
{
	ckpt_alert_config c = in ? *in : (ckpt_alert_config){ 0 };

	if (!c.window)
		c.window = CKPT_ALERT_DEFAULT_WINDOW;
	if (!c.warmup)
		c.warmup = c.window < CKPT_ALERT_DEFAULT_WARMUP ? c.window : CKPT_ALERT_DEFAULT_WARMUP;
	if (c.k == 0)
		c.k = CKPT_ALERT_DEFAULT_K;
	if (c.floor_seconds == 0)
		c.floor_seconds = CKPT_ALERT_DEFAULT_FLOOR_SECONDS;
	if (c.floor_ratio == 0)
		c.floor_ratio = CKPT_ALERT_DEFAULT_FLOOR_RATIO;
	if (!c.fail_streak)
		c.fail_streak = CKPT_ALERT_DEFAULT_FAIL_STREAK;
	const char *bad = c.window < 3 || c.window > 1024 ? "window must be 3 to 1024"
		: c.warmup < 2 || c.warmup > c.window ? "warmup must be 2 to window"
		: !(c.k > 0 && c.k <= 1000) ? "k must be above 0, at most 1000"
		: !(c.floor_seconds > 0 && c.floor_seconds <= 86400) ? "floor_seconds must be above 0, at most 86400"
		: !(c.floor_ratio >= 1 && c.floor_ratio <= 1000) ? "floor_ratio must be 1 to 1000"
		: c.fail_streak > 1000000 ? "fail_streak must be at most 1000000" : NULL;
	if (bad) {
		if (why)
			snprintf(why, len, "alert configuration: %s", bad);
		return -EINVAL;
	}
	*out = c;
	return 0;
}

int ckpt__detector_new(ckpt_detector **out, const ckpt_alert_config *cfg, int nranks)
{
	ckpt_detector *d = calloc(1, sizeof *d);
	size_t w = cfg->window;

	*out = NULL;
	if (!d || nranks < 1)
		goto fail;
	d->cfg = *cfg;
	d->nranks = nranks;
	d->r = calloc((size_t)nranks, sizeof *d->r);
	d->pool = calloc((size_t)nranks * 2 * w, sizeof *d->pool);
	d->tmp = calloc(w, sizeof *d->tmp);
	if (!d->r || !d->pool || !d->tmp)
		goto fail;
	for (int i = 0; i < nranks; i++) {
		d->r[i].secs = d->pool + (size_t)i * 2 * w;
		d->r[i].mibs = d->r[i].secs + w;
	}
	*out = d;
	return 0;
fail:
	ckpt__detector_free(d);
	return -ENOMEM;
}

void ckpt__detector_free(ckpt_detector *d)
{
	if (!d)
		return;
	free(d->r);
	free(d->pool);
	free(d->tmp);
	free(d);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median_sorted(const double *s, int n)
{
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

void ckpt__median_mad(const double *v, int n, double *tmp, double *median, double *mad)
{
	memcpy(tmp, v, (size_t)n * sizeof *tmp);
	qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
	*median = median_sorted(tmp, n);
	for (int i = 0; i < n; i++)
		tmp[i] = fabs(v[i] - *median);
	qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
	*mad = median_sorted(tmp, n);
}

static int emit(ckpt_alert *out, int cap, int n, const ckpt_alert *a)
{
	if (n < cap)
		out[n] = *a;
	return n < cap ? n + 1 : n;
}

int ckpt__detector_ok(ckpt_detector *d, uint64_t step, int rank, double seconds, uint64_t bytes, ckpt_alert *out,
		      int cap)
{
	int n = 0;

	if (!d || rank < 0 || rank >= d->nranks || !(seconds >= 0))
		return 0;
	rank_baseline *b = &d->r[rank];
	const ckpt_alert_config *c = &d->cfg;
	double mib = (double)bytes / 1048576.0;
	double rate = seconds > 0 ? mib / seconds : 0;
	b->streak = 0;
	if (b->n >= c->warmup) {
		double med, mad;
		ckpt__median_mad(b->secs, (int)b->n, d->tmp, &med, &mad);
		double margin = fmax(fmax(c->k * mad, c->floor_seconds), (c->floor_ratio - 1) * med);
		/* not only when this alert is raised: whether it is depends on timing, which two runs do not share */
		ckpt_mutant_reached("alert_never_raised");
#ifdef CKPT_MUTANT_ALERT_NEVER_RAISED
		margin = INFINITY;      /* mutant: the duration bound can never be crossed */
#endif
		if (seconds > med + margin)
			n = emit(out, cap, n, &(ckpt_alert){ .step = step, .rank = rank, .metric = CKPT_ALERT_DURATION,
				 .value = seconds, .median = med, .mad = mad, .threshold = med + margin, .samples = b->n });
		ckpt__median_mad(b->mibs, (int)b->n, d->tmp, &med, &mad);
		double bound = fmin(med - c->k * mad, med / c->floor_ratio);
		/* the time lost against the median rate: a tiny shard's rate is noise, its lost time is not */
		double lost = med > 0 ? seconds - mib / med : 0;
		if (bytes > 0 && rate < bound && lost >= c->floor_seconds)
			n = emit(out, cap, n, &(ckpt_alert){ .step = step, .rank = rank, .metric = CKPT_ALERT_THROUGHPUT,
				 .value = rate, .median = med, .mad = mad, .threshold = bound, .samples = b->n });
	}
	b->secs[b->next] = seconds;
	b->mibs[b->next] = rate;
	b->next = (b->next + 1) % c->window;
	if (b->n < c->window)
		b->n++;
	return n;
}

int ckpt__detector_failed(ckpt_detector *d, uint64_t step, int rank, ckpt_alert *out, int cap)
{
	if (!d || rank < 0 || rank >= d->nranks)
		return 0;
	rank_baseline *b = &d->r[rank];
	b->streak++;
	if (b->streak % d->cfg.fail_streak != 0)
		return 0;
	return emit(out, cap, 0, &(ckpt_alert){ .step = step, .rank = rank, .metric = CKPT_ALERT_FAILURES,
		    .value = b->streak, .threshold = d->cfg.fail_streak, .samples = b->n });
}

static void journal_alert(ckpt_journal *j, const ckpt_alert *a)
{
	ckpt__journal_add(j, "\"event\":\"alert\",\"step\":%" PRIu64 ",\"rank\":%d,\"metric\":\"%s\",\"value\":%.6f,"
			  "\"median\":%.6f,\"mad\":%.6f,\"threshold\":%.6f,\"samples\":%u", a->step, a->rank,
			  ckpt_alert_metric_name(a->metric), a->value, a->median, a->mad, a->threshold, a->samples);
}

int ckpt__alerts_after_save(ckpt_detector *d, struct ckpt_journal *j, uint64_t step, int nranks, const double *secs,
			    const uint64_t *bytes, int failed_rank, ckpt_alert *out, int cap)
{
	int n = 0;

	if (!d)
		return 0;
	if (failed_rank >= 0)
		n = ckpt__detector_failed(d, step, failed_rank < d->nranks ? failed_rank : 0, out, cap);
	for (int r = 0; failed_rank < 0 && r < nranks; r++)
		n += ckpt__detector_ok(d, step, r, secs[r], bytes[r], out + n, cap - n);
	for (int i = 0; i < n; i++)
		journal_alert(j, &out[i]);
	return n;
}
