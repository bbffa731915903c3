/* JSON Lines, as every trajectory, fault log and undo record here is written. */
#ifndef HARNESS_JSONL_H
#define HARNESS_JSONL_H

#include <jansson.h>

/*
 * Call fn for each line of path that is a JSON object, in order; other lines
 * (a torn last line after a kill) are skipped. fn returns non-zero to stop.
 * Returns 0, or -errno if the file cannot be opened.
 */
int harness_jsonl_each(const char *path, int (*fn)(json_t *obj, void *arg), void *arg);

#endif
