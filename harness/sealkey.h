/* Scenarios with checkpoint.encrypt (sealed checkpoints, README "Sealed checkpoints"): the key, the nonce audit. */
#ifndef HARNESS_SEALKEY_H
#define HARNESS_SEALKEY_H

#include <stddef.h>

/*
 * DIR/ckpt.key: made once per run directory (32 random bytes as 64 hex
 * digits, mode 0600), then reused by every attempt of the run. path gets
 * its name. 0 or -errno.
 */
int harness_seal_key(const char *dir, char *path, size_t len);

/*
 * Nonce reuse, audited from outside: every sealed file of every committed
 * generation under root must have its own secretstream header (bytes 16 to
 * 40; the same key and header encrypt two files with one keystream). 1 with
 * why naming two files that share one, else 0.
 */
int harness_seal_audit(const char *root, char *why, size_t len);

#endif
