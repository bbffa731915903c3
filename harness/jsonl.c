#include "jsonl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int harness_jsonl_each(const char *path, int (*fn)(json_t *obj, void *arg), void *arg)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int stop = 0;

	if (!f)
		return -errno;
	while (!stop && (len = getline(&line, &cap, f)) > 0) {
		json_t *j = json_loadb(line, (size_t)len, 0, NULL);
		if (j && json_is_object(j))
			stop = fn(j, arg);
		json_decref(j);
	}
	free(line);
	fclose(f);
	return 0;
}
