/* The save anomaly detector (alert.c): per rank, median and MAD over a window. */
#ifndef CKPT_SRC_ALERT_H
#define CKPT_SRC_ALERT_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt/alert.h"

typedef struct ckpt_detector ckpt_detector;

/* Defaults filled in, ranges checked: 0 or -EINVAL with what is wrong in why. */
int ckpt__alert_config_resolve(const ckpt_alert_config *in, ckpt_alert_config *out, char *why, size_t len);
/* A detector for nranks ranks over a resolved configuration. 0 or -ENOMEM. */
int ckpt__detector_new(ckpt_detector **out, const ckpt_alert_config *cfg, int nranks);
void ckpt__detector_free(ckpt_detector *d);
/*
 * A committed save of rank `rank`: its own seconds and bytes. Judged against
 * the baseline before it, then added to it; the rank's failure streak ends.
 * Alerts raised are appended to out (room for cap); returns how many.
 */
int ckpt__detector_ok(ckpt_detector *d, uint64_t step, int rank, double seconds, uint64_t bytes, ckpt_alert *out,
		      int cap);
/* A failed save attributed to `rank`. Returns the alerts raised (0 or 1). */
int ckpt__detector_failed(ckpt_detector *d, uint64_t step, int rank, ckpt_alert *out, int cap);
struct ckpt_journal;
/*
 * Rank 0, after a save: feed every rank's own seconds and bytes (committed,
 * failed_rank < 0) or the failure of failed_rank, journal each alert raised
 * (event "alert") and keep up to cap of them in out. Returns how many.
 */
int ckpt__alerts_after_save(ckpt_detector *d, struct ckpt_journal *j, uint64_t step, int nranks, const double *secs,
			    const uint64_t *bytes, int failed_rank, ckpt_alert *out, int cap);
/* The median and MAD of n values (n > 0); tmp has room for n. */
void ckpt__median_mad(const double *v, int n, double *tmp, double *median, double *mad);

#endif
