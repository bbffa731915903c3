#include "inject.h"

#include <errno.h>
#include <fcntl.h>
#include <fiu-control.h>
#include <fiu.h>
#include <fnmatch.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "ckpt/fault.h"
#include "damage.h"
#include "faultmatch.h"
#include "plan.h"

static harness_fault *plan;
static int nplan;
static atomic_int *seen;          /* matching calls per fault */
static int log_fd = -1;
static int my_attempt;
static _Thread_local ckpt_fault_action action;
static harness_trail *trail;      /* mapped CKPT_FAULT_TRAIL.rank-R, or NULL */
static atomic_flag trail_busy = ATOMIC_FLAG_INIT;

static const char *base(const char *p)
{
	const char *s = p ? strrchr(p, '/') : NULL;
	return s ? s + 1 : p ? p : "";
}

static void copy_field(char *dst, size_t len, const char *src)
{
	size_t n = src ? strnlen(src, len - 1) : 0;
	memcpy(dst, src ? src : "", n);
	memset(dst + n, 0, len - n);
}

/* Record the point reached in the trail. No system call. */
static void trail_mark(const ckpt_fault_ctx *c)
{
	static const char *ops[] = { "phase", "open", "write", "fsync", "fdatasync", "rename", "mkdir", "unlink",
				     "rmdir", "ftruncate", "close", "read", "opendir" };
	static uint64_t counts[sizeof ops / sizeof *ops], other, last_step = UINT64_MAX;
	static char last_phase[32];
	struct timespec ts;

	if (!trail)
		return;
	while (atomic_flag_test_and_set_explicit(&trail_busy, memory_order_acquire))
		;     /* a background thread (retention) may pass a point at the same time */
	if (c->step != last_step || strncmp(last_phase, c->phase ? c->phase : "", sizeof last_phase) != 0) {
		memset(counts, 0, sizeof counts);
		other = 0;
		last_step = c->step;
		copy_field(last_phase, sizeof last_phase, c->phase);
	}
	uint64_t *count = &other;
	for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
		if (c->op && strcmp(c->op, ops[i]) == 0)
			count = &counts[i];
	clock_gettime(CLOCK_MONOTONIC, &ts);     /* the vDSO: no system call */
	atomic_store_explicit((_Atomic uint32_t *)&trail->seq, trail->seq + 1, memory_order_release);
	trail->delay_ms = 0;
	trail->points++;
	trail->step = c->step;
	trail->nth = ++*count;
	trail->t_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	copy_field(trail->phase, sizeof trail->phase, c->phase);
	copy_field(trail->op, sizeof trail->op, c->op);
	copy_field(trail->path, sizeof trail->path, base(c->path));
	atomic_store_explicit((_Atomic uint32_t *)&trail->seq, trail->seq + 1, memory_order_release);
	atomic_flag_clear_explicit(&trail_busy, memory_order_release);
}

/* The point just marked is about to sleep delay_ms. */
static void trail_delay(unsigned delay_ms)
{
	if (!trail)
		return;
	while (atomic_flag_test_and_set_explicit(&trail_busy, memory_order_acquire))
		;
	atomic_store_explicit((_Atomic uint32_t *)&trail->seq, trail->seq + 1, memory_order_release);
	trail->delay_ms = delay_ms;
	atomic_store_explicit((_Atomic uint32_t *)&trail->seq, trail->seq + 1, memory_order_release);
	atomic_flag_clear_explicit(&trail_busy, memory_order_release);
}

static int on_point(const char *name, int *failnum, void **failinfo, unsigned *flags)
{
	const ckpt_fault_ctx *c = ckpt_fault_current();
	(void)name;
	(void)failnum;
	(void)flags;

	trail_mark(c);
	int nth, i = harness_fault_decide(plan, nplan, seen, c, my_attempt, &nth);
	if (i >= 0) {
		const harness_fault *f = &plan[i];
		harness_fault_log(log_fd, 2, NULL, i, f, c, my_attempt, nth);
		if (f->action == HARNESS_DAMAGE) {
			/* damage at rest while the job runs (libckpt's generations); the point itself passes */
			harness_damage_apply_fault(f, getenv("CKPT_FAULT_ROOT"), NULL, stderr);
			return 0;
		}
		switch (f->action) {
		case HARNESS_KILL:
		case HARNESS_NODE_LOSS:      /* each rank of the node dies; the harness wipes the node's directory */
		case HARNESS_POWER_LOSS:     /* the harness rolls back what was not durable afterwards */
			action = (ckpt_fault_action){ .kind = CKPT_FAULT_KILL };
			break;
		case HARNESS_ERRNO: action = (ckpt_fault_action){ .kind = CKPT_FAULT_ERRNO, .err = f->err }; break;
		case HARNESS_SHORT: action = (ckpt_fault_action){ .kind = CKPT_FAULT_SHORT, .bytes = (size_t)f->arg }; break;
		case HARNESS_TORN: action = (ckpt_fault_action){ .kind = CKPT_FAULT_TORN, .bytes = (size_t)f->arg }; break;
		default:
			action = (ckpt_fault_action){ .kind = CKPT_FAULT_DELAY, .delay_ms = (unsigned)f->arg };
			trail_delay(action.delay_ms);
			break;
		}
		*failinfo = &action;
		return 1;
	}
	return 0;
}

/* For libckpt's durability probes (ckpt_fault_set_watch): could a rule still act on a point like c? */
static int watch(const ckpt_fault_ctx *c)
{
	for (int i = 0; i < nplan; i++)
		if (harness_fault_may_act(&plan[i], atomic_load(&seen[i]), c, my_attempt))
			return 1;
	return 0;
}

/* Map PREFIX.rank-R; the trail is diagnostic, so a failure only means no trail. */
static void trail_open(const char *prefix, int rank, int attempt)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof path, "%s.rank-%d", prefix, rank);
	if ((fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644)) < 0)
		return;
	if (ftruncate(fd, sizeof *trail) == 0) {
		void *m = mmap(NULL, sizeof *trail, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (m != MAP_FAILED) {
			trail = m;
			memcpy(trail->magic, HARNESS_TRAIL_MAGIC, sizeof trail->magic);
			trail->rank = rank;
			trail->attempt = attempt;
		}
	}
	close(fd);
}

int harness_inject_arm_from_env(int rank, int attempt)
{
	const char *plan_path = getenv("CKPT_FAULT_PLAN"), *log = getenv("CKPT_FAULT_LOG");
	const char *trail_prefix = getenv("CKPT_FAULT_TRAIL");
	int rc;

	if ((!plan_path || !*plan_path) && (!trail_prefix || !*trail_prefix))
		return 0;
#ifndef FIU_ENABLE
	(void)log;
	(void)rc;
	(void)on_point;
	(void)watch;
	(void)rank;
	(void)attempt;
	(void)trail_open;
	/* built with -DFIU_ENABLE=OFF: no points to arm (a trail alone is not worth failing for) */
	return plan_path && *plan_path ? -ENOTSUP : 0;
#else
	if (plan_path && *plan_path && (rc = harness_plan_read(plan_path, &plan, &nplan)) < 0)
		return rc;
	if (getenv("CKPT_HARNESS_NODE"))
		harness_fault_resolve_node(plan, nplan, atoi(getenv("CKPT_HARNESS_NODE")));
	if (trail_prefix && *trail_prefix)
		trail_open(trail_prefix, rank, attempt);
	my_attempt = attempt;
	seen = calloc((size_t)nplan + 1, sizeof *seen);
	if (!seen)
		return -ENOMEM;
	if (log && *log) {
		char path[4096];
		harness_fault_log_path(path, sizeof path, log, rank);
		log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	}
	fiu_init(0);
	ckpt_fault_set_watch(watch);
	if (fiu_enable_external("ckpt/io/*", 1, NULL, 0, on_point) < 0 ||
	    fiu_enable_external("ckpt/phase/*", 1, NULL, 0, on_point) < 0)
		return -EIO;
	return 0;
#endif
}
