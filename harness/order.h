/*
 * The order a suite runs its scenarios in (not the order it reports them).
 *
 * With -j N the suite ends when its last scenario does. A long scenario
 * (one that sleeps through injected delays, say) started last leaves the
 * other workers idle while it finishes, so the suite runs the longest first
 * (LPT scheduling), by the wall time each scenario took the last time a
 * suite ran it with this golden cache: CACHE/suite-seconds, one
 * "SECONDS NAME" line per scenario name. A scenario with no record goes
 * first, in file order (it may be long; the first run of a suite is in file
 * order). The record only orders; no verdict depends on it.
 */
#ifndef HARNESS_ORDER_H
#define HARNESS_ORDER_H

#include "run.h"
#include "scenario.h"

/* order[k] = the index in s of the k-th scenario to start; a missing or damaged record gives file order. */
void harness_order_plan(const char *cache, const harness_scenario *s, int n, int *order);

/* Merge the wall times of these results (those that ran) into CACHE/suite-seconds; best effort. */
void harness_order_record(const char *cache, const harness_result *r, int n);

#endif
