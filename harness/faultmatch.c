#include "faultmatch.h"

#include <fnmatch.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *base(const char *p)
{
	const char *s = p ? strrchr(p, '/') : NULL;
	return s ? s + 1 : p ? p : "";
}

/* Does f match c? With wild, a NULL phase, op or path in c matches any. */
static bool match(const harness_fault *f, const ckpt_fault_ctx *c, int attempt, bool wild)
{
	const char *op = c->op ? c->op : "";

	if (f->attempt != -1 && f->attempt != attempt)
		return false;
	if (f->rank != -1 && f->rank != c->rank)
		return false;
	if (f->rpn > 0 && c->rank / f->rpn != f->node)
		return false;
	if (f->step != -1 && (uint64_t)f->step != c->step)
		return false;
	if (f->phase[0] && !(wild && !c->phase) && (!c->phase || strcmp(f->phase, c->phase) != 0))
		return false;
	if (wild && !c->op) {
		/* any op: "any" still leaves out the phase point, but some other op matches */
	} else if (strcmp(f->op, "any") == 0) {           /* any I/O call, not a phase point */
		if (strcmp(op, "phase") == 0)
			return false;
	} else if (f->op[0] && strcmp(f->op, op) != 0) {
		return false;
	}
	if (f->path[0] && !(wild && !c->path) && fnmatch(f->path, base(c->path), 0) != 0)
		return false;
	return true;
}

bool harness_fault_matches(const harness_fault *f, const ckpt_fault_ctx *c, int attempt)
{
	return match(f, c, attempt, false);
}

bool harness_fault_may_act(const harness_fault *f, int seen, const ckpt_fault_ctx *c, int attempt)
{
	int times = harness_fault_times(f);

	if (times && seen >= f->nth + times - 1)
		return false;   /* fired its last time: more matches change nothing */
	return match(f, c, attempt, true);
}

void harness_fault_resolve_node(harness_fault *plan, int n, int node)
{
	for (int i = 0; node >= 0 && i < n; i++) {
		if (plan[i].rpn <= 0)
			continue;
		if (plan[i].node != node)
			plan[i].attempt = -2;      /* another node's fault: no attempt of this process matches it */
		plan[i].rpn = 0;
	}
}

int harness_fault_times(const harness_fault *f)
{
	return f->times ? f->times : (f->action == HARNESS_ERRNO ? 0 : 1);
}

int harness_fault_decide(const harness_fault *plan, int n, atomic_int *seen, const ckpt_fault_ctx *c, int attempt,
			 int *nth)
{
	for (int i = 0; i < n; i++) {
		const harness_fault *f = &plan[i];
		if (!harness_fault_matches(f, c, attempt))
			continue;
		int k = atomic_fetch_add(&seen[i], 1) + 1, times = harness_fault_times(f);
		if (k < f->nth || (times && k >= f->nth + times))
			continue;
		*nth = k;
		return i;
	}
	return -1;
}

/* JSON string body of s: quotes, backslashes and control characters escaped. */
static void json_escape(char *dst, size_t len, const char *s)
{
	size_t o = 0;

	for (; s && *s && o + 7 < len; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			dst[o++] = '\\';
			dst[o++] = (char)ch;
		} else if (ch < 0x20) {
			o += (size_t)snprintf(dst + o, len - o, "\\u%04x", ch);
		} else {
			dst[o++] = (char)ch;
		}
	}
	dst[o] = '\0';
}

/* Make buf[0..n) a line that fits len: clamp, end with '\n'. */
static int as_line(char *buf, size_t len, int n)
{
	if (len < 2)
		return 0;
	if (n < 0)
		n = 0;
	if ((size_t)n > len - 2)
		n = (int)(len - 2);
	if (n == 0 || buf[n - 1] != '\n')
		buf[n++] = '\n';
	buf[n] = '\0';
	return n;
}

int harness_fault_log_line(char *buf, size_t len, int index, const harness_fault *f, const ckpt_fault_ctx *c,
			   int attempt, int nth)
{
	char desc[64], path[1024], phase[96], op[48];

	harness_fault_describe(f, desc, sizeof desc);
	json_escape(path, sizeof path, c->path);
	json_escape(phase, sizeof phase, c->phase);
	json_escape(op, sizeof op, c->op);
	int n = snprintf(buf, len,
			 "{\"fault\":%d,\"attempt\":%d,\"rank\":%d,\"step\":%" PRIu64 ",\"phase\":\"%s\",\"op\":\"%s\","
			 "\"path\":\"%s\",\"nth\":%d,\"action\":\"%s\"}\n",
			 index, attempt, c->rank, c->step, phase, op, path, nth, desc);
	return as_line(buf, len, n);
}

int harness_fault_echo_line(char *buf, size_t len, const harness_fault *f, const ckpt_fault_ctx *c, int nth)
{
	char desc[64];
	const char *op = c->op ? c->op : "";

	harness_fault_describe(f, desc, sizeof desc);
	int n = snprintf(buf, len, "FAULT %s rank=%d step=%" PRIu64 " phase=%s op=%s nth=%d -> %s\n",
			 strcmp(op, "phase") == 0 ? "phase" : "io", c->rank, c->step, c->phase ? c->phase : "-", op,
			 nth, desc);
	return as_line(buf, len, n);
}

int harness_fault_log_path(char *buf, size_t len, const char *prefix, int rank)
{
	return snprintf(buf, len, "%s.rank-%d.jsonl", prefix, rank);
}

void harness_fault_log(int log_fd, int echo_fd, ssize_t (*wr)(int, const void *, size_t), int index,
		       const harness_fault *f, const ckpt_fault_ctx *c, int attempt, int nth)
{
	char line[1400];
	int n;

	if (!wr)
		wr = write;
	if (log_fd >= 0) {
		n = harness_fault_log_line(line, sizeof line, index, f, c, attempt, nth);
		if (wr(log_fd, line, (size_t)n) < 0)
			(void)0;   /* best effort: a fault that fired unlogged is reported as never fired */
	}
	if (echo_fd >= 0) {
		n = harness_fault_echo_line(line, sizeof line, f, c, nth);
		if (wr(echo_fd, line, (size_t)n) < 0)
			(void)0;
	}
}
