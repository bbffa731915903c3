/*
 * Reports: a terminal table, a JSON report (schema in scenarios/README.md)
 * and JUnit XML with one testcase per scenario.
 */
#ifndef HARNESS_REPORT_H
#define HARNESS_REPORT_H

#include <stdio.h>

#include "run.h"

const char *harness_verdict_name(enum harness_verdict v);
void harness_report_table(FILE *out, const harness_result *r, int n, double seconds);
int harness_report_json(const char *path, const harness_result *r, int n, double seconds);
int harness_report_junit(const char *path, const harness_result *r, int n, double seconds);
/* 0 all passed, 1 a scenario failed, 3 the harness could not do its job. */
int harness_exit_code(const harness_result *r, int n);

#endif
