/*
 * A fake slow storage tier for unit tests and benchmarks: a directory whose
 * files are real, but every read and write libckpt makes under it costs a
 * fixed time per operation plus a time per MiB moved (a throttled shared
 * file system). It hooks libckpt's libfiu I/O points (fiu_enable_external on
 * the ckpt/io points), so it needs a FIU_ENABLE build and replaces any other external
 * callback on those points while enabled. Nothing is failed: it only delays.
 */
#ifndef FAKE_SLOW_TIER_H
#define FAKE_SLOW_TIER_H

#include <stdint.h>

/* Slow down reads and writes under dir (a prefix of the paths libckpt builds: its root). 0 or -errno. */
int fake_slow_tier_enable(const char *dir, unsigned usec_per_op, unsigned usec_per_mib);
void fake_slow_tier_disable(void);
/* Operations delayed since enable, and the time slept (microseconds). */
uint64_t fake_slow_tier_ops(void);
uint64_t fake_slow_tier_slept_us(void);

#endif
