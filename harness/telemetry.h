/*
 * A run's save telemetry for the HTML report: every rank's save time (its
 * own work, libckpt's journal "own_seconds") per saved step, and the alerts
 * rank 0 raised, read from the checkpoint root's journal after the run, and
 * drawn as an inline SVG (no script).
 */
#ifndef HARNESS_TELEMETRY_H
#define HARNESS_TELEMETRY_H

#include <stdint.h>
#include <stdio.h>

#define HARNESS_TELE_POINTS 512
#define HARNESS_TELE_ALERTS 32

typedef struct harness_telemetry {
	int npoints;
	int dropped;                /* saves beyond HARNESS_TELE_POINTS */
	int nranks;                 /* highest rank seen + 1 */
	int32_t step[HARNESS_TELE_POINTS];
	int32_t rank[HARNESS_TELE_POINTS];
	float seconds[HARNESS_TELE_POINTS];
	uint8_t failed[HARNESS_TELE_POINTS];
	int nalerts;
	int32_t alert_step[HARNESS_TELE_ALERTS];
	int32_t alert_rank[HARNESS_TELE_ALERTS];
	float alert_value[HARNESS_TELE_ALERTS];
	char alert_metric[HARNESS_TELE_ALERTS][12];
} harness_telemetry;

/*
 * Read ROOT/journal/rank-R.jsonl (and its rotated .1): regular files only,
 * never through a link, never blocking. Nothing found leaves t empty.
 */
void harness_telemetry_collect(harness_telemetry *t, const char *ckpt_root);

/* The plot (save seconds by step, a colour per rank, alerts ringed), or nothing if t is empty. */
void harness_telemetry_svg(FILE *f, const harness_telemetry *t);

#endif
