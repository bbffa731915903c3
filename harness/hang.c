#include "hang.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "inject.h"
#include "jsonl.h"

#define MAX_RANKS 64

typedef struct where {
	int known;              /* 1: from the trail, 2: from the journal, 0: nothing */
	int held;               /* sleeping in an injected delay when the job was stopped */
	char phase[32], op[16], path[192];
	uint64_t step, nth;
	unsigned delay_ms;
	char group[64];         /* phase and step: ranks that were at the same place */
} where;

/* Copy a field read from disk: bounded, printable only. */
static void clean(char *dst, size_t len, const char *src, size_t srclen)
{
	size_t i = 0;
	for (; i + 1 < len && i < srclen && src[i]; i++)
		dst[i] = (src[i] >= 0x20 && src[i] < 0x7f && src[i] != '"') ? src[i] : '?';
	dst[i] = '\0';
}

static int read_trail(const char *prefix, int rank, int attempt, int64_t now_ns, where *w)
{
	char path[4200];
	harness_trail t;
	int fd;

	snprintf(path, sizeof path, "%s.rank-%d", prefix, rank);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return -errno;
	ssize_t n = read(fd, &t, sizeof t);
	close(fd);
	/* untrusted: the right size, magic, rank and attempt, and no record half-written */
	if (n != (ssize_t)sizeof t || memcmp(t.magic, HARNESS_TRAIL_MAGIC, sizeof t.magic) != 0 || t.rank != rank ||
	    t.attempt != attempt || (t.seq & 1) || t.points == 0)
		return -EINVAL;
	clean(w->phase, sizeof w->phase, t.phase, sizeof t.phase);
	clean(w->op, sizeof w->op, t.op, sizeof t.op);
	clean(w->path, sizeof w->path, t.path, sizeof t.path);
	w->step = t.step;
	w->nth = t.nth;
	w->delay_ms = t.delay_ms;
	w->held = t.delay_ms > 0 && t.t_ns + (int64_t)t.delay_ms * 1000000 > now_ns;
	w->known = 1;
	return 0;
}

static int last_io(json_t *j, void *arg)
{
	where *w = arg;
	const char *op = json_string_value(json_object_get(j, "op"));
	const char *phase = json_string_value(json_object_get(j, "phase"));
	const char *path = json_string_value(json_object_get(j, "path"));
	json_t *step = json_object_get(j, "step");

	if (!op || !phase || !json_is_integer(step))
		return 0;
	const char *b = path ? strrchr(path, '/') : NULL;
	b = b ? b + 1 : path ? path : "";
	clean(w->op, sizeof w->op, op, strlen(op));
	clean(w->phase, sizeof w->phase, phase, strlen(phase));
	clean(w->path, sizeof w->path, b, strlen(b));
	w->step = (uint64_t)json_integer_value(step);
	w->nth = 0;
	w->known = 2;
	return 0;
}

static const char *ordinal(uint64_t n)
{
	uint64_t t = n % 100;
	return t >= 11 && t <= 13 ? "th" : n % 10 == 1 ? "st" : n % 10 == 2 ? "nd" : n % 10 == 3 ? "rd" : "th";
}

/* "restore.verify of step 30", "train.step at step 35" */
static void phase_at(const where *w, char *buf, size_t len)
{
	if (!w->phase[0])
		snprintf(buf, len, "no phase");
	else if (w->step == 0)
		snprintf(buf, len, "%s", w->phase);
	else
		snprintf(buf, len, "%s %s step %" PRIu64, w->phase, strncmp(w->phase, "train.", 6) == 0 ? "at" : "of",
			 w->step);
}

/* The call within the phase, "the 2nd write, rank-00001.safetensors", or "" at the phase's own point. */
static void call(const where *w, char *buf, size_t len)
{
	if (!w->op[0] || strcmp(w->op, "phase") == 0)
		snprintf(buf, len, "%s", "");
	else if (w->nth)
		snprintf(buf, len, "the %" PRIu64 "%s %s%s%s", w->nth, ordinal(w->nth), w->op, w->path[0] ? ", " : "",
			 w->path);
	else
		snprintf(buf, len, "%s%s%s", w->op, w->path[0] ? " " : "", w->path);
}

/* phase_at plus the call and a note: "save.shard_write of step 30 (the 2nd write, rank-00001.safetensors; NOTE)" */
static void place(const where *w, const char *note, char *buf, size_t len)
{
	char at[96], c[256];
	phase_at(w, at, sizeof at);
	call(w, c, sizeof c);
	if (c[0] || note[0])
		snprintf(buf, len, "%s (%s%s%s)", at, c, c[0] && note[0] ? "; " : "", note);
	else
		snprintf(buf, len, "%s", at);
}

typedef struct text {
	char *buf;
	size_t len, used;
} text;

static void add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(text *t, const char *fmt, ...)
{
	va_list ap;
	if (t->used >= t->len)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(t->buf + t->used, t->len - t->used, fmt, ap);
	va_end(ap);
	if (n > 0)
		t->used += (size_t)n;
}

/* "rank 2", "ranks 0 and 3", "ranks 0, 1 and 3" for the ranks r with pick[r] */
static void ranks(text *t, const int *pick, int world)
{
	int n = 0, k = 0;
	for (int r = 0; r < world; r++)
		n += pick[r];
	add(t, "rank%s", n == 1 ? "" : "s");
	for (int r = 0; r < world; r++)
		if (pick[r]) {
			k++;
			add(t, "%s%d", k == 1 ? " " : k == n ? " and " : ", ", r);
		}
}

int harness_hang_describe(const char *trail_prefix, const char *ckpt_root, int world, int attempt, double watchdog_s,
			  char *out, size_t len)
{
	where w[MAX_RANKS];
	int held[MAX_RANKS] = { 0 }, done[MAX_RANKS] = { 0 }, trails = 0, nheld = 0;
	text t = { out, len, 0 };
	struct timespec ts;

	if (world > MAX_RANKS)
		world = MAX_RANKS;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t now_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	memset(w, 0, sizeof w);
	for (int r = 0; r < world; r++) {
		if (read_trail(trail_prefix, r, attempt, now_ns, &w[r]) == 0) {
			trails++;
		} else if (ckpt_root) {
			char path[4200];
			snprintf(path, sizeof path, "%s/journal/rank-%05d.jsonl", ckpt_root, r);
			harness_jsonl_each(path, last_io, &w[r]);
		}
		phase_at(&w[r], w[r].group, sizeof w[r].group);
		held[r] = w[r].known == 1 && w[r].held;
		nheld += held[r];
	}

	add(&t, "the job hung: ");
	if (nheld) {
		/* the held ranks, each with its place, then the others grouped by phase and step */
		int first = 1;
		for (int r = 0; r < world; r++) {
			if (!held[r])
				continue;
			char where_[400], note[64];
			snprintf(note, sizeof note, "an injected delay of %u ms", w[r].delay_ms);
			place(&w[r], note, where_, sizeof where_);
			add(&t, "%srank %d waits in %s", first ? "" : ", ", r, where_);
			first = 0;
			done[r] = 1;
		}
		if (nheld < world)
			add(&t, " while ");
	} else {
		add(&t, "no rank was in an injected delay; ");
	}
	int groups = 0;
	for (int r = 0; r < world; r++) {
		if (done[r] || !w[r].known)
			continue;
		int pick[MAX_RANKS] = { 0 };
		for (int q = r; q < world; q++)
			if (!done[q] && w[q].known && strcmp(w[q].group, w[r].group) == 0)
				pick[q] = done[q] = 1;
		add(&t, "%s", groups ? "; " : "");
		ranks(&t, pick, world);
		if (nheld) {
			add(&t, " passed %s", w[r].group);
		} else {
			char where_[400];
			int n = 0;
			for (int q = 0; q < world; q++)
				n += pick[q];
			place(&w[r], "", where_, sizeof where_);
			add(&t, " last passed %s", n == 1 ? where_ : w[r].group);
		}
		if (w[r].known == 2)
			add(&t, " (from the journal: no trail)");
		groups++;
	}
	int others = 0;
	for (int r = 0; r < world; r++)
		others += done[r] && !held[r];
	if (nheld && groups)
		add(&t, " and wait%s for %s", others == 1 ? "s" : "", nheld == 1 ? "it" : "them");
	int pick[MAX_RANKS] = { 0 }, unknown = 0;
	for (int r = 0; r < world; r++)
		if (!done[r]) {
			pick[r] = 1;
			unknown++;
		}
	if (unknown) {
		add(&t, "%s", groups || nheld ? "; " : "");
		ranks(&t, pick, world);
		add(&t, " left no trail and no journal (never reached a fault point?)");
	}
	add(&t, "; the watchdog stopped attempt %d after %.0f s", attempt, watchdog_s);
	return trails;
}
