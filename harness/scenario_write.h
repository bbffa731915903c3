/*
 * A scenario back to YAML: what chaos, shrinking and from-journal write.
 * The text reads back through harness_scenario_load into the same
 * harness_scenario (but for file and the line numbers): tests/unit
 * test_scenario_write checks that round trip on every shipped scenario.
 */
#ifndef HARNESS_SCENARIO_WRITE_H
#define HARNESS_SCENARIO_WRITE_H

#include <stddef.h>
#include <stdio.h>

#include "scenario.h"

/*
 * Write s to out. comment (may be NULL or hold several lines) opens the file
 * as '#' lines. scenario_dir: the folder {scenario_dir} in trainer.command
 * stood for (the original file's), spelled out so the text works from any
 * folder; NULL keeps the placeholder. 0, or -EIO if out failed.
 */
int harness_scenario_write(FILE *out, const harness_scenario *s, const char *comment, const char *scenario_dir);

/* The same into a malloc'ed string (*len its length). 0 or -ENOMEM. */
int harness_scenario_to_text(const harness_scenario *s, const char *comment, const char *scenario_dir, char **text,
			     size_t *len);

/*
 * Write s to path atomically (a temporary file, fsync, rename), then load
 * it back and check it parses: 0, or -errno / -EINVAL (err says why).
 */
int harness_scenario_save(const char *path, const harness_scenario *s, const char *comment, const char *scenario_dir,
			  char *err, size_t errlen);

/* A YAML double-quoted string of s. */
void harness_yaml_string(FILE *out, const char *s);

#endif
