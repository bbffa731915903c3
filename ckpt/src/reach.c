/* The mutation gate's reach record (ckpt/fault.h): seeded bugs' sites reached by this process. */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt/fault.h"
#include "undo.h"

#define SEEN_MAX 64

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const char *log_path;            /* NULL: not recording */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static const char *seen[SEEN_MAX];      /* names written (string literals: compared by content) */
static int nseen;

static void start(void)
{
	const char *p = getenv("CKPT_REACH_LOG");
	log_path = p && *p ? p : NULL;
}

void ckpt_mutant_reached(const char *name)
{
	pthread_once(&once, start);
	if (!log_path)
		return;
	pthread_mutex_lock(&mu);
	for (int i = 0; i < nseen; i++)
		if (strcmp(seen[i], name) == 0)
			goto out;
	if (nseen < SEEN_MAX)
		seen[nseen++] = name;
	char line[96];
	size_t n = strlen(name);
	if (n > sizeof line - 2)
		n = sizeof line - 2;
	memcpy(line, name, n);
	line[n++] = '\n';
	/*
	 * One short write with O_APPEND: lines of concurrent processes never
	 * interleave. A record that cannot be written would let the gate take
	 * a reached scenario for an unreached one: the process stops instead,
	 * and the baseline run fails where everyone sees it.
	 */
	int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0 || write(fd, line, n) != (ssize_t)n)
		abort();
	close(fd);
out:
	pthread_mutex_unlock(&mu);
}

static _Atomic(ckpt_fault_watch_fn) watch_fn;

void ckpt_fault_set_watch(ckpt_fault_watch_fn fn)
{
	watch_fn = fn;
}

int ckpt_mutant_recording(void)
{
	pthread_once(&once, start);
	return log_path != NULL;
}

/* Could a fault tell these points from their absence? */
static int points_watched(const ckpt_fault_ctx *points, int n)
{
	const char *shim_plan = getenv("CKPT_FAULT_PLAN_SHIM"), *plan = getenv("CKPT_FAULT_PLAN");
	ckpt_fault_watch_fn w = watch_fn;

	if (shim_plan && *shim_plan)
		return 1;
	if (!plan || !*plan)
		return 0;
	if (!w)
		return 1;       /* a plan nobody here can be asked about */
	for (int i = 0; i < n; i++)
		if (w(&points[i]))
			return 1;
	return 0;
}

void ckpt_mutant_reached_points(const char *name, int effect, const ckpt_fault_ctx *points, int n)
{
	if (ckpt_mutant_recording() && (effect || points_watched(points, n)))
		ckpt_mutant_reached(name);
}

void ckpt_mutant_reached_durability(const char *name, const ckpt_fault_ctx *points, int n)
{
	const char *shim_undo = getenv("CKPT_UNDO_LOG_SHIM");

	if (ckpt_mutant_recording())
		ckpt_mutant_reached_points(name, ckpt__undo_armed() || (shim_undo && *shim_undo), points, n);
}
