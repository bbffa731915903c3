/* Where ckpt-harness finds its own parts, relative to its executable. */
#ifndef HARNESS_PARTS_H
#define HARNESS_PARTS_H

#include <stddef.h>

/*
 * The path of a private part (libckpt-fault-shim.so, reftrain-backend-NAME.so,
 * ckpt_beacon.py) for the executables in bindir: <bindir>/../lib/ckpt-harness/NAME
 * in an installed prefix (that directory exists), else <bindir>/../lib/NAME
 * (the build tree). Never the source tree.
 */
void harness_part_path(char *out, size_t len, const char *bindir, const char *name);

/*
 * The libckpt.so the trainer runs with: the file this process loaded (reftrain
 * and ckpt-harness resolve it through the same RUNPATH), else <bindir>/../lib/libckpt.so.
 */
void harness_libckpt_path(char *out, size_t len, const char *bindir);

#endif
