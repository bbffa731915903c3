/*
 * The catalog's labels: a manifest's optional "labels" member names the
 * experiment and the code version that wrote the generation (ckpt_config's
 * experiment and code_version). Every reader before it skips an unknown
 * member, so adding it changes no schema version.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

static int label_ok(const char *s)
{
	if (!s)
		return 1;
	size_t n = strlen(s);
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return 0;
	return n < CKPT_LABEL_MAX;
}

int ckpt__labels_check(const ckpt_config *cfg)
{
	return label_ok(cfg->experiment) && label_ok(cfg->code_version) ? 0 : -EINVAL;
}

int ckpt__labels_parse(ckpt_jr *j, ckpt_manifest *m)
{
	int first = 1, rc;
	char k[32];

	while ((rc = ckpt__jr_member(j, &first, k, sizeof k)) == 1) {
		char *dst = strcmp(k, "experiment") == 0 ? m->experiment
			: strcmp(k, "code_version") == 0 ? m->code_version : NULL;
		if (!dst) {
			if (ckpt__jr_skip(j) < 0)
				return -1;
		} else if (ckpt__jr_string(j, dst, CKPT_LABEL_MAX) < 0) {
			return -1;
		} else {
			for (char *p = dst; *p; p++)      /* read from disk: shown as printable ASCII only */
				if (*p < 0x20 || *p > 0x7e)
					*p = '?';
		}
	}
	return rc < 0 ? -1 : 0;
}
