/*
 * Parts found relative to the executable, so that a build tree and an
 * installed prefix both work without any path from the source or build tree
 * compiled in: an installed prefix keeps its private parts in
 * lib/ckpt-harness/ beside bin/ (README "Install").
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt/ckpt.h"
#include "parts.h"

void harness_part_path(char *out, size_t len, const char *bindir, const char *name)
{
	struct stat st;

	snprintf(out, len, "%s/../lib/ckpt-harness", bindir);
	if (stat(out, &st) == 0 && S_ISDIR(st.st_mode))
		snprintf(out, len, "%s/../lib/ckpt-harness/%s", bindir, name);
	else
		snprintf(out, len, "%s/../lib/%s", bindir, name);
}

void harness_libckpt_path(char *out, size_t len, const char *bindir)
{
	Dl_info info;
	const char *base;

	/* the basename check: under a non-PIE link the address could be our own PLT entry */
	if (dladdr((void *)ckpt_open, &info) && info.dli_fname && info.dli_fname[0] == '/' &&
	    (base = strrchr(info.dli_fname, '/')) && strncmp(base + 1, "libckpt.so", 10) == 0)
		snprintf(out, len, "%s", info.dli_fname);
	else
		snprintf(out, len, "%s/../lib/libckpt.so", bindir);
}
