#include "jsonl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int harness_jsonl_each_stream_with(FILE *f, const char *needle, int (*fn)(json_t *obj, void *arg), void *arg)
{
	size_t cap = 4096;
	char *line = malloc(cap);
	int stop = 0, ch = 0;

	if (!line)
		return -ENOMEM;
	while (!stop && ch != EOF) {
		size_t len = 0;
		int longer = 0;
		while ((ch = getc_unlocked(f)) != EOF && ch != '\n') {
			if (longer)
				continue;          /* read to its end, then skip it */
			if (len == cap) {
				if (cap >= HARNESS_JSONL_LINE_MAX) {
					longer = 1;
					continue;
				}
				char *more = realloc(line, 2 * cap);
				if (!more) {
					free(line);
					return -ENOMEM;
				}
				line = more;
				cap *= 2;
			}
			line[len++] = (char)ch;
		}
		if (longer || len == 0 || (needle && !memmem(line, len, needle, strlen(needle))))
			continue;
		json_t *j = json_loadb(line, len, 0, NULL);
		if (j && json_is_object(j))
			stop = fn(j, arg);
		json_decref(j);
	}
	free(line);
	return ferror(f) ? -EIO : 0;
}

int harness_jsonl_each_stream(FILE *f, int (*fn)(json_t *obj, void *arg), void *arg)
{
	return harness_jsonl_each_stream_with(f, NULL, fn, arg);
}

int harness_jsonl_each_with(const char *path, const char *needle, int (*fn)(json_t *obj, void *arg), void *arg)
{
	FILE *f = fopen(path, "re");
	int rc;

	if (!f)
		return -errno;
	rc = harness_jsonl_each_stream_with(f, needle, fn, arg);
	fclose(f);
	return rc;
}

int harness_jsonl_each(const char *path, int (*fn)(json_t *obj, void *arg), void *arg)
{
	return harness_jsonl_each_with(path, NULL, fn, arg);
}
