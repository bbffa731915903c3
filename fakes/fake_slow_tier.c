#include "fake_slow_tier.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ckpt/fault.h"

#ifdef FIU_ENABLE
#include <fiu-control.h>
#include <fiu.h>

static char prefix[4096];
static size_t prefix_len;
static unsigned per_op, per_mib;
static uint64_t ops, slept;      /* updated atomically: ranks are threads */

static int on_io(const char *name, int *failnum, void **failinfo, unsigned *flags)
{
	const ckpt_fault_ctx *c = ckpt_fault_current();
	(void)name, (void)failnum, (void)failinfo, (void)flags;
	if (!c || !c->path || !c->op || strncmp(c->path, prefix, prefix_len) != 0 ||
	    (c->path[prefix_len] != '/' && c->path[prefix_len] != '\0') ||
	    (strcmp(c->op, "read") != 0 && strcmp(c->op, "write") != 0))
		return 0;
	uint64_t us = per_op + (uint64_t)per_mib * c->bytes / (1u << 20);
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	__atomic_add_fetch(&ops, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&slept, us, __ATOMIC_RELAXED);
	return 0;       /* never fails the operation */
}

int fake_slow_tier_enable(const char *dir, unsigned usec_per_op, unsigned usec_per_mib)
{
	if (snprintf(prefix, sizeof prefix, "%s", dir) >= (int)sizeof prefix)
		return -ENAMETOOLONG;
	prefix_len = strlen(prefix);
	while (prefix_len > 1 && prefix[prefix_len - 1] == '/')
		prefix[--prefix_len] = '\0';
	per_op = usec_per_op;
	per_mib = usec_per_mib;
	ops = slept = 0;
	fiu_init(0);
	return fiu_enable_external("ckpt/io/*", 1, NULL, 0, on_io) == 0 ? 0 : -EINVAL;
}

void fake_slow_tier_disable(void)
{
	fiu_disable("ckpt/io/*");
}

uint64_t fake_slow_tier_ops(void)
{
	return __atomic_load_n(&ops, __ATOMIC_RELAXED);
}

uint64_t fake_slow_tier_slept_us(void)
{
	return __atomic_load_n(&slept, __ATOMIC_RELAXED);
}
#else
int fake_slow_tier_enable(const char *dir, unsigned usec_per_op, unsigned usec_per_mib)
{
	(void)dir, (void)usec_per_op, (void)usec_per_mib;
	return -ENOTSUP;       /* the I/O points compiled away */
}

void fake_slow_tier_disable(void)
{
}

uint64_t fake_slow_tier_ops(void)
{
	return 0;
}

uint64_t fake_slow_tier_slept_us(void)
{
	return 0;
}
#endif
