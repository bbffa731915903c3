/* ckpt-harness from-journal (from_journal.h). */
#include "regfile.h"
#include "from_journal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scenario_write.h"

/* The order a rank goes through the phases within one step. */
static const char *const phase_order[] = {
	"open.cleanup", "restore.scan", "restore.read", "restore.verify", "save.prepare", "save.shard_write",
	"save.shard_sync", "save.barrier", "save.manifest_write", "save.manifest_sync", "save.commit", "save.dir_sync",
	"save.latest", "save.retention", NULL,
};

static int index_of(const char *const *list, const char *s)
{
	for (int i = 0; list[i]; i++)
		if (strcmp(list[i], s) == 0)
			return i;
	return -1;
}

#define MAX_SEGMENTS 64

/* One rank's view of one attempt: where it was when the attempt ended. */
typedef struct seg {
	int world_size;
	long long step;
	char phase[32];
	int calls;                 /* in (step, phase) */
	int step_calls;            /* in step, every phase */
	char last_op[16], last_path[128];
	double time;               /* of the last call (the journal's wall clock) */
	int any;
} seg;

typedef struct rank_log {
	seg seg[MAX_SEGMENTS];
	int nseg;
	int cleanup;               /* open.cleanup calls of the attempt whose "open" comes next */
} rank_log;

/*
 * The tail of a regular file under dirfd, never through a link, never
 * blocking: at most HARNESS_JOURNAL_MAX_READ bytes, starting at a line.
 * 0 (*buf malloc'ed, NUL-terminated), -ENOENT if it does not exist, -errno.
 */
static int read_tail(int dirfd, const char *name, char **buf, size_t *len)
{
	struct stat st;
	int fd = harness_open_regular(dirfd, name, &st), rc = 0;

	*buf = NULL;
	if (fd < 0)
		return -errno;  /* ELOOP a link, EINVAL not a regular file */
	off_t start = st.st_size > HARNESS_JOURNAL_MAX_READ ? st.st_size - HARNESS_JOURNAL_MAX_READ : 0;
	size_t want = (size_t)(st.st_size - start), got = 0;
	char *b = malloc(want + 1);
	if (!b) {
		close(fd);
		return -ENOMEM;
	}
	while (got < want) {
		ssize_t r = pread(fd, b + got, want - got, start + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			break;
		}
		if (r == 0)
			break;      /* it shrank meanwhile: what was read */
		got += (size_t)r;
	}
	close(fd);
	if (rc < 0) {
		free(b);
		return rc;
	}
	b[got] = '\0';
	size_t skip = 0;
	if (start > 0) {
		/* the first line is cut: start after it */
		char *nl = memchr(b, '\n', got);
		skip = nl ? (size_t)(nl - b + 1) : got;
	}
	memmove(b, b + skip, got - skip + 1);
	*buf = b;
	*len = got - skip;
	return 0;
}

static const char *str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "";
}

/* Feed one journal record to a rank's log. */
static void feed(rank_log *l, json_t *o, long long *saves, int *nsaves, int maxsaves)
{
	const char *ev = str(o, "event");

	if (strcmp(ev, "open") == 0) {
		if (l->nseg == MAX_SEGMENTS) {
			/* keep the newest attempts */
			memmove(&l->seg[0], &l->seg[1], sizeof l->seg[0] * (MAX_SEGMENTS - 1));
			l->nseg--;
		}
		seg *s = &l->seg[l->nseg++];
		memset(s, 0, sizeof *s);
		s->step = -1;
		/* its start-up cleanup, journaled before its "open", is its first calls at step 0 */
		if (l->cleanup) {
			s->any = 1;
			s->step = 0;
			snprintf(s->phase, sizeof s->phase, "open.cleanup");
			s->calls = s->step_calls = l->cleanup;
			l->cleanup = 0;
		}
		json_t *ws = json_object_get(o, "world_size");
		s->world_size = json_is_integer(ws) && json_integer_value(ws) > 0 && json_integer_value(ws) <= 1 << 20
				? (int)json_integer_value(ws) : 0;
		return;
	}
	if (strcmp(ev, "save") == 0) {
		json_t *st = json_object_get(o, "step"), *res = json_object_get(o, "result");
		if (json_is_integer(st) && json_integer_value(st) > 0 && json_is_integer(res) && json_integer_value(res) == 0 &&
		    *nsaves < maxsaves)
			saves[(*nsaves)++] = (long long)json_integer_value(st);
		return;
	}
	const char *op = str(o, "op"), *phase = str(o, "phase");
	json_t *st = json_object_get(o, "step");
	if (ev[0] || !op[0] || !phase[0] || !json_is_integer(st) || (l->nseg == 0 && strcmp(phase, "open.cleanup") != 0))
		return;
	if (index_of(phase_order, phase) < 0 || strlen(op) >= sizeof l->seg[0].last_op)
		return;      /* not a phase or call this harness can name */
	/* ckpt_open cleans up before it journals its "open": those calls belong to the next attempt */
	if (strcmp(phase, "open.cleanup") == 0) {
		l->cleanup++;
		return;
	}
	seg *s = &l->seg[l->nseg - 1];
	long long step = (long long)json_integer_value(st);
	if (!s->any || step != s->step)
		s->step_calls = 0;
	if (!s->any || step != s->step || strcmp(phase, s->phase) != 0) {
		s->step = step;
		snprintf(s->phase, sizeof s->phase, "%s", phase);
		s->calls = 0;
	}
	s->any = 1;
	s->calls++;
	s->step_calls++;
	json_t *tm = json_object_get(o, "time");
	s->time = json_is_number(tm) ? json_number_value(tm) : 0;
	snprintf(s->last_op, sizeof s->last_op, "%s", op);
	const char *path = str(o, "path"), *slash = strrchr(path, '/');
	snprintf(s->last_path, sizeof s->last_path, "%s", slash ? slash + 1 : path);
}

static int parse_lines(char *buf, size_t len, rank_log *l, long long *saves, int *nsaves, int maxsaves)
{
	char *p = buf, *end = buf + len;

	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (n > 0 && n <= HARNESS_JOURNAL_LINE_MAX) {
			json_t *o = json_loadb(p, n, 0, NULL);
			if (json_is_object(o))
				feed(l, o, saves, nsaves, maxsaves);
			json_decref(o);
		}
		p += n + 1;
	}
	return 0;
}

static long long gcd(long long a, long long b)
{
	while (b) {
		long long t = a % b;
		a = b;
		b = t;
	}
	return a;
}

int harness_journal_crash_points(const char *root, int rank, harness_crash_point *points, int max, int *nattempts,
				 long long *every, long long *last_saved, char *err, size_t errlen)
{
	int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC), jfd = -1, nranks = 0, rc = 0;
	rank_log *logs = NULL;
	long long saves[4096];
	int nsaves = 0;

	*nattempts = 0;
	*every = 0;
	*last_saved = 0;
	if (rootfd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: cannot open the checkpoint root: %s", root, strerror(errno));
		return rc;
	}
	/* journal/ under the root, never a link out of it */
	if ((jfd = openat(rootfd, "journal", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s/journal: %s; a libckpt checkpoint root has its journal there (not a link)", root,
			 errno == ENOTDIR || errno == ELOOP ? "not a directory" : strerror(errno));
		goto out;
	}
	if (!(logs = calloc(HARNESS_JOURNAL_MAX_RANKS, sizeof *logs))) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (int r = 0; r < HARNESS_JOURNAL_MAX_RANKS; r++) {
		char name[32], *buf;
		size_t len = 0;
		snprintf(name, sizeof name, "rank-%05d.jsonl", r);
		int e = read_tail(jfd, name, &buf, &len);
		if (e == -ENOENT)
			break;
		if (e < 0) {
			rc = e;
			snprintf(err, errlen, "%s/journal/%s: %s", root, name, e == -EINVAL ? "not a regular file"
				 : e == -ELOOP ? "a symbolic link (refused)" : strerror(-e));
			goto out;
		}
		parse_lines(buf, len, &logs[r], saves, &nsaves, (int)(sizeof saves / sizeof *saves));
		free(buf);
		nranks = r + 1;
	}
	if (nranks == 0 || logs[0].nseg == 0) {
		rc = -ENOENT;
		snprintf(err, errlen, "%s/journal: no rank-00000.jsonl with an \"open\" record: not the journal of a libckpt "
			 "job", root);
		goto out;
	}
	if (rank >= nranks) {
		rc = -EINVAL;
		snprintf(err, errlen, "--rank %d: the journal has ranks 0 to %d only", rank, nranks - 1);
		goto out;
	}
	int nseg = logs[0].nseg;
	for (int r = 1; r < nranks; r++)
		if (logs[r].nseg < nseg)
			nseg = logs[r].nseg;
	for (int a = 0; a < nseg && a < max; a++) {
		/* the same attempt of every rank: count from the newest, where the logs agree */
		const seg *sg[HARNESS_JOURNAL_MAX_RANKS];
		for (int r = 0; r < nranks; r++)
			sg[r] = &logs[r].seg[logs[r].nseg - nseg + a];
		/*
		 * The rank that died was busy until it died; the others were
		 * killed by the launcher after it, most of them blocked in a
		 * collective waiting for it since their last call: its last
		 * call is the newest. On a tie, the one that got least far.
		 */
		int crashed = rank, newest = -1;
		for (int r = 0; rank < 0 && r < nranks; r++)
			if (sg[r]->any && (newest < 0 || sg[r]->time > sg[newest]->time))
				newest = r;
		/*
		 * Ranks that were in the same phase as the newest were busy side
		 * by side when one died: the one that got least far there stopped
		 * first, the others went on until the launcher killed them.
		 */
		for (int r = 0; newest >= 0 && r < nranks; r++)
			if (sg[r]->any && sg[r]->step == sg[newest]->step && strcmp(sg[r]->phase, sg[newest]->phase) == 0 &&
			    (crashed < 0 || sg[r]->calls < sg[crashed]->calls))
				crashed = r;
		if (crashed < 0)
			crashed = 0;
		harness_crash_point *c = &points[a];
		const seg *s = sg[crashed];
		memset(c, 0, sizeof *c);
		c->rank = crashed;
		c->attempt = a + 1;
		c->step = s->any ? s->step : -1;
		snprintf(c->phase, sizeof c->phase, "%s", s->any ? s->phase : "");
		c->calls = s->any ? s->calls : 0;
		c->step_calls = s->any ? s->step_calls : 0;
		snprintf(c->last_op, sizeof c->last_op, "%s", s->last_op);
		snprintf(c->last_path, sizeof c->last_path, "%s", s->last_path);
		c->world_size = sg[0]->world_size ? sg[0]->world_size : nranks;
		(*nattempts)++;
	}
	for (int i = 0; i < nsaves; i++) {
		if (saves[i] > *last_saved)
			*last_saved = saves[i];
		*every = gcd(*every, saves[i]);
	}
out:
	free(logs);
	if (jfd >= 0)
		close(jfd);
	close(rootfd);
	return rc;
}

static int fj_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "ckpt-harness from-journal: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nusage: ckpt-harness from-journal ROOT [-o FILE] [--rank R] [--attempt N] [--scenario BASE.yaml]\n");
	return 2;
}

int harness_from_journal_main(int argc, char **argv)
{
	const char *root = NULL, *outp = NULL, *base = NULL;
	long rank = -1, attempt = 0;
	harness_crash_point pts[MAX_SEGMENTS];
	harness_scenario *s = calloc(1, sizeof *s);
	char err[2048], comment[2048], dir[PATH_MAX] = "";
	int n, rc = 0;
	long long every, last_saved;

	if (!s)
		return 3;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end;
		if (a[0] != '-') {
			if (root) {
				free(s);
				return fj_usage("one ROOT only ('%s' is a second)", a);
			}
			root = a;
			continue;
		}
		if (!v) {
			free(s);
			return fj_usage("%s needs a value", a);
		}
		i++;
		if (strcmp(a, "-o") == 0) {
			outp = v;
		} else if (strcmp(a, "--scenario") == 0) {
			base = v;
		} else if (strcmp(a, "--rank") == 0 || strcmp(a, "--attempt") == 0) {
			long x = strtol(v, &end, 10);
			if (!*v || *end || x < (a[2] == 'r' ? 0 : 1) || x > HARNESS_JOURNAL_MAX_RANKS) {
				free(s);
				return fj_usage(a[2] == 'r' ? "--rank: '%s' is not valid; expected a rank number"
					       : "--attempt: '%s' is not valid; expected 1, 2, ... (the journal's attempts)", v);
			}
			*(a[2] == 'r' ? &rank : &attempt) = x;
		} else {
			free(s);
			return fj_usage("unknown option '%s'", a);
		}
	}
	if (!root) {
		free(s);
		return fj_usage("%s", "needs the checkpoint ROOT of the crashed job");
	}
	if ((rc = harness_journal_crash_points(root, (int)rank, pts, MAX_SEGMENTS, &n, &every, &last_saved, err,
					       sizeof err)) < 0) {
		fprintf(stderr, "ckpt-harness from-journal: %s\n", err);
		free(s);
		return 2;
	}
	if (attempt > n) {
		fprintf(stderr, "ckpt-harness from-journal: --attempt %ld: the journal shows %d attempt%s\n", attempt, n,
			n == 1 ? "" : "s");
		free(s);
		return 2;
	}
	int upto = attempt ? (int)attempt : n;
	const harness_crash_point *c = &pts[upto - 1];
	if (base) {
		if (harness_scenario_load(base, s, err, sizeof err) < 0) {
			fprintf(stderr, "%s\n", err);
			free(s);
			return 2;
		}
		const char *slash = strrchr(base, '/');
		char d[PATH_MAX];
		snprintf(d, sizeof d, "%.*s", slash ? (int)(slash - base) : 1, slash ? base : ".");
		if (!realpath(d, dir))
			dir[0] = '\0';
		s->nfaults = s->ndamage = 0;
		harness_expect_init(&s->expect);
	} else {
		/* reftrain's tiny preset with the journal's world size and checkpoint interval */
		char text[512];
		long long ev = every > 0 ? every : 10, steps = (last_saved > c->step ? last_saved : c->step) + 2 * ev;
		int len = snprintf(text, sizeof text, "name: x\ntrainer: {preset: tiny, world_size: %d, steps: %lld, "
				   "checkpoint: {every: %lld, keep: 3}}\nexpect: {outcome: resume_bitwise}\n",
				   c->world_size, steps, ev);
		if (harness_scenario_load_buffer("from-journal", text, (size_t)len, s, err, sizeof err) < 0) {
			fprintf(stderr, "ckpt-harness from-journal: the journal's job does not fit reftrain (%s); give its "
				"trainer with --scenario BASE.yaml\n", err);
			free(s);
			return 2;
		}
	}
	snprintf(s->name, sizeof s->name, "from-journal");
	s->max_attempts = upto + 1 > s->max_attempts ? upto + 1 : s->max_attempts;
	if (s->max_attempts > HARNESS_MAX_ATTEMPTS)
		s->max_attempts = HARNESS_MAX_ATTEMPTS;
	/* each attempt up to the chosen one crashed where its journal stops */
	for (int a = 0; a < upto && s->nfaults < HARNESS_MAX_FAULTS; a++) {
		const harness_crash_point *p = &pts[a];
		harness_fault *f = &s->faults[s->nfaults++];
		memset(f, 0, sizeof *f);
		f->attempt = p->attempt;
		f->rank = p->rank;
		f->step = p->step;
		f->action = HARNESS_KILL;
		/*
		 * The next I/O call of that rank in that step, whatever its
		 * phase: the crash may have come at the first call of the next
		 * phase, which the journal cannot name.
		 */
		snprintf(f->op, sizeof f->op, "any");
		f->nth = p->step_calls + 1;
	}
	snprintf(s->description, sizeof s->description,
		 "Reproduces the crash of rank %d in attempt %d at step %lld: its last call done was %s %s in %s (call %d "
		 "of that phase, %d of the step); the kill lands on its next I/O call.", c->rank, c->attempt, c->step,
		 c->last_op[0] ? c->last_op : "-", c->last_path[0] ? c->last_path : "-",
		 c->phase[0] ? c->phase : "no phase", c->calls, c->step_calls);
	snprintf(comment, sizeof comment,
		 "Written by ckpt-harness from-journal %s\n"
		 "The journal records each call after it returns: the crash came at the rank's next call.\n"
		 "%s", root, base ? "The trainer is that of the --scenario given." :
		 "The trainer is reftrain's tiny preset with the journal's world size and checkpoint interval;\n"
		 "give the job's own with --scenario BASE.yaml.");
	if (outp) {
		if ((rc = harness_scenario_save(outp, s, comment, dir[0] ? dir : NULL, err, sizeof err)) < 0) {
			fprintf(stderr, "ckpt-harness from-journal: %s\n", err);
			free(s);
			return rc == -EINVAL ? 2 : 3;
		}
		fprintf(stderr, "ckpt-harness from-journal: wrote %s: %s\n", outp, s->description);
	} else {
		char *text = NULL;
		size_t len;
		harness_scenario *back = malloc(sizeof *back);
		if (!back || harness_scenario_to_text(s, comment, dir[0] ? dir : NULL, &text, &len) < 0) {
			free(back);
			free(s);
			return 3;
		}
		if (harness_scenario_load_buffer("from-journal", text, len, back, err, sizeof err) < 0) {
			fprintf(stderr, "ckpt-harness from-journal: the scenario does not validate: %s\n", err);
			rc = 2;
		} else {
			fwrite(text, 1, len, stdout);
		}
		free(text);
		free(back);
	}
	free(s);
	return rc < 0 ? 3 : rc;
}
