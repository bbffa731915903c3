/* The key of a scenario with checkpoint.encrypt (sealed checkpoints, README "Sealed checkpoints"). */
#ifndef HARNESS_SEALKEY_H
#define HARNESS_SEALKEY_H

#include <stddef.h>

/*
 * DIR/ckpt.key: made once per run directory (32 random bytes as 64 hex
 * digits, mode 0600), then reused by every attempt of the run. path gets
 * its name. 0 or -errno.
 */
int harness_seal_key(const char *dir, char *path, size_t len);

#endif
