/*
 * Save anomaly alerts: rank 0 keeps, per rank, a robust baseline (median and
 * median absolute deviation, MAD) of the last `window` committed saves'
 * duration and throughput, and raises an alert when a save is an outlier or
 * when saves keep failing. An alert is a journal record (rank 0's journal,
 * event "alert") and is returned by ckpt_last_save_alerts.
 *
 * Duration is the rank's own work in the save: its wall time minus the time
 * it waited in the save's collectives (barrier, gather, broadcast), so a slow
 * rank does not make the ranks waiting for it look slow too. Throughput is
 * the rank's shard bytes over that duration.
 *
 * An outlier alert needs at least `warmup` earlier samples of that rank, and
 *   duration:   value > median + max(k * MAD, floor_seconds, (floor_ratio - 1) * median)
 *   throughput: value < median - k * MAD, value < median / floor_ratio, and the
 *               save took at least floor_seconds longer than it would have at
 *               the median throughput (bytes / value - bytes / median).
 * The floors keep scheduler and fsync jitter from ever alerting: a tiny
 * save's MAD is microseconds and its median milliseconds, so k * MAD alone
 * would alert on any hiccup. Failed saves are not samples; each one is
 * attributed to the rank its error names, and fail_streak of them in a row on
 * a rank (no committed save between) raise a "failures" alert, again at every
 * further multiple of fail_streak. The baseline lives in memory: a restarted
 * job warms up again.
 */
#ifndef CKPT_ALERT_H
#define CKPT_ALERT_H

#include <stdint.h>

/* Zero fields take the defaults below. */
typedef struct ckpt_alert_config {
	int off;                    /* 1: no detection at all */
	uint32_t window;            /* saves in the baseline, 3 to 1024 (default 20) */
	uint32_t warmup;            /* samples needed before the first outlier alert, 2 to window (default 5) */
	double k;                   /* MADs above the median (default 6) */
	double floor_seconds;       /* an outlier is at least this much slower than the median (default 2.0) */
	double floor_ratio;         /* ... and at least this many times the median (default 1.5) */
	uint32_t fail_streak;       /* failed saves in a row, attributed to a rank, that alert (default 3) */
} ckpt_alert_config;

#define CKPT_ALERT_DEFAULT_WINDOW 20
#define CKPT_ALERT_DEFAULT_WARMUP 5
#define CKPT_ALERT_DEFAULT_K 6.0
#define CKPT_ALERT_DEFAULT_FLOOR_SECONDS 2.0
#define CKPT_ALERT_DEFAULT_FLOOR_RATIO 1.5
#define CKPT_ALERT_DEFAULT_FAIL_STREAK 3

typedef enum ckpt_alert_metric { CKPT_ALERT_DURATION, CKPT_ALERT_THROUGHPUT, CKPT_ALERT_FAILURES } ckpt_alert_metric;

typedef struct ckpt_alert {
	uint64_t step;
	int rank;
	ckpt_alert_metric metric;
	double value;               /* seconds, MiB/s, or failures in a row */
	double median;              /* of the baseline (failures: 0) */
	double mad;
	double threshold;           /* the bound value crossed */
	uint32_t samples;           /* in the baseline */
} ckpt_alert;

/* "duration", "throughput", "failures" */
const char *ckpt_alert_metric_name(ckpt_alert_metric m);

#endif
