/* ckpt-tool stats (stats.c) and ls --json (catalog.c of the tool). */
#ifndef CKPT_TOOL_STATS_H
#define CKPT_TOOL_STATS_H

#include <stddef.h>

/* Print ROOT's save statistics from its journal. 0, or -errno with a sentence in err. */
int ckpt_tool_stats(const char *root, int as_json, char *err, size_t len);

#endif
