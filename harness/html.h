/*
 * The HTML report (`--html FILE` of run, suite and chaos): one
 * self-contained page, inline CSS and SVG, no script, nothing fetched (a
 * Content-Security-Policy forbids it), readable as plain HTML:
 *
 *   - the verdict table, one row per scenario;
 *   - the coverage of (phase, op) pairs by the faults that fired, as a grid;
 *   - per scenario: its sentence, a timeline of its attempts (what each
 *     restored, the steps it wrote, its commits, the faults that fired in it
 *     with rank, step, phase, op and action, how it ended, power cuts and
 *     damage between attempts), as an SVG and as a table, and the
 *     uninterrupted and resumed loss curves with the first difference from
 *     the uninterrupted run marked.
 *
 * Everything that comes from files (scenario names, sentences, paths, the
 * trainer's errors) is escaped. Takes what the report.h writers take, so
 * any command that has harness_result records (run, suite, chaos) can write it.
 */
#ifndef HARNESS_HTML_H
#define HARNESS_HTML_H

#include <stdio.h>

#include "run.h"

/* Write the page to path (through path.tmp, renamed into place): 0, or -errno. */
int harness_report_html(const char *path, const harness_result *r, int n, double seconds);

/* The page to a stream (the unit test's entry). 0, or -EIO. */
int harness_report_html_stream(FILE *f, const harness_result *r, int n, double seconds);

/* Text escaped for HTML (element content and quoted attributes); bytes that are not UTF-8 become \xNN. */
void harness_html_escape(FILE *f, const char *s);

#endif
