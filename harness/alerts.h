/*
 * libckpt's save alerts as the oracle sees them: the {"event":"alert"}
 * records reftrain writes to the trajectory (timing-dependent, so never
 * compared bit for bit), judged against the scenario's expect.alerts.
 */
#ifndef HARNESS_ALERTS_H
#define HARNESS_ALERTS_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "oracle.h"

/* The metric names of ckpt/alert.h, NULL-terminated (a scenario's `metric`). */
extern const char *const harness_alert_metrics[];

/*
 * recs: every record of every attempt (non-alert records are ignored).
 * 0 if the alerts meet exp, 1 with a sentence in why if not.
 */
int harness_alerts_judge(const harness_expect *exp, json_t *const *recs, int n, char *why, size_t len);

struct harness_scenario;
/*
 * The scenario's expect.alerts as YAML (", alerts: [...]"), when loading the
 * text without it would not give the same expectation back.
 */
void harness_alerts_write(FILE *out, const struct harness_scenario *s);

#endif
