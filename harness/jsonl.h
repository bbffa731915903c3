/* JSON Lines, as every trajectory, fault log and undo record here is written. */
#ifndef HARNESS_JSONL_H
#define HARNESS_JSONL_H

#include <stdio.h>
#include <jansson.h>

/* A longer line is not a record (skipped unread, memory stays bounded). */
#define HARNESS_JSONL_LINE_MAX (1 << 20)

/*
 * Call fn for each line of path that is a JSON object, in order; other lines
 * (a torn last line after a kill, a line over HARNESS_JSONL_LINE_MAX) are
 * skipped. fn returns non-zero to stop.
 * Returns 0, or -errno if the file cannot be opened (-EIO if reading fails).
 */
int harness_jsonl_each(const char *path, int (*fn)(json_t *obj, void *arg), void *arg);
/* The same from an open stream. */
int harness_jsonl_each_stream(FILE *f, int (*fn)(json_t *obj, void *arg), void *arg);
/*
 * Only the lines that contain needle are parsed and handed to fn: a reader
 * that wants one kind of record (libckpt's journal: its events among
 * thousands of I/O operations) skips the rest unparsed.
 */
int harness_jsonl_each_with(const char *path, const char *needle, int (*fn)(json_t *obj, void *arg), void *arg);
int harness_jsonl_each_stream_with(FILE *f, const char *needle, int (*fn)(json_t *obj, void *arg), void *arg);

#endif
