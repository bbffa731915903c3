/*
 * Crash states of any program, by replay (`crashstates --scenario FILE`).
 *
 * The in-process exploration (crashstate.c) knows libckpt's layout: it
 * rebuilds each crash state of one save and restores it with libckpt. A
 * program of the user's has its own layout and its own restore, so here the
 * program itself is the judge: one recording run of the scenario's trainer
 * (no fault, the undo record on: every change it makes under the root, from
 * the fault shim or libckpt's I/O layer), then, for every recorded change,
 * the scenario replayed with a crash placed right at that call (the call
 * does not happen): a kill, a power cut, and for a write a torn write. Each
 * replay is a real run with real restarts, judged by the oracle: an
 * acknowledged checkpoint lost, a resume that is not bit for bit, a restart
 * that fails, is a violation, written out as a scenario that reproduces it.
 *
 * A replay places its crash by call, file name and count (op, path, nth, and
 * the step when the trainer announces steps), so a deterministic program
 * makes the same call again; a crash that no replay reached is reported as
 * unreached, never as checked. One crash per replay: the combinations the
 * in-process exploration adds (one non-durable change dropped, a write torn
 * at a block boundary) need a model of the layout, which a program's is not.
 */
#include "replay.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "launch.h"
#include "powerloss.h"
#include "report.h"
#include "scenario_write.h"
#include "workdir.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *target(const harness_undo_rec *x);

/*
 * The calls a crash can be placed at: the changes the undo record names by
 * their call, on the root or below it (the root's parent is synced when the
 * root is made, but faults reach only what is under the root).
 */
static int crash_op(const harness_undo_rec *x, const char *root)
{
	static const char *const ops[] = { "write", "fsync", "fdatasync", "rename", "mkdir", "unlink", "rmdir",
					   "ftruncate", "link", NULL };
	size_t rl = strlen(root);
	const char *p = target(x);
	if (x->failed || strncmp(p, root, rl) != 0 || (p[rl] && p[rl] != '/'))
		return 0;
	for (int i = 0; ops[i]; i++)
		if (strcmp(x->call, ops[i]) == 0)
			return 1;
	return 0;
}

/* The path a fault names for this change: a rename's target, as the matcher sees it. */
static const char *target(const harness_undo_rec *x)
{
	return strcmp(x->op, "rename") == 0 ? x->to : x->path;
}

static const char *base_of(const char *path, char *buf, size_t len)
{
	snprintf(buf, len, "%s", path);
	return basename(buf);
}

/*
 * The fault that crashes at record h: same rank, call and file name, counted
 * as the matcher counts (every call of that rank, op and file name in attempt
 * 1, within the step when steps are announced; the recording has them all,
 * since each of these calls changes something).
 */
static void place(const harness_undo *u, int h, int steps, harness_fault *f)
{
	const harness_undo_rec *x = &u->v[h];
	char b[1024], bb[1024];
	const char *name = base_of(target(x), b, sizeof b);
	int nth = 0;

	for (int j = 0; j <= h; j++) {
		const harness_undo_rec *y = &u->v[j];
		nth += !y->failed && y->rank == x->rank && strcmp(y->call, x->call) == 0 &&
		       (!steps || y->step == x->step) && strcmp(base_of(target(y), bb, sizeof bb), name) == 0;
	}
	memset(f, 0, sizeof *f);
	f->attempt = 1;
	f->rank = x->rank;
	f->step = steps ? (int64_t)x->step : -1;      /* no phase: any */
	snprintf(f->op, sizeof f->op, "%s", x->call);
	snprintf(f->path, sizeof f->path, "%s", name);
	f->nth = nth;
	f->times = 1;
}

/*
 * The replay as a scenario file that reproduces it with `ckpt-harness run`:
 * the scenario that was run, written by the same writer as chaos's
 * (scenario_write.h), {scenario_dir} spelled out as the recording's folder.
 */
static void write_case(const harness_replay_opts *ro, const harness_scenario *s, const char *why, const char *sdir,
		       char *path, size_t len)
{
	char comment[2048], err[1024];

	snprintf(path, len, "%s/%s.yaml", ro->out_dir, s->name);
	snprintf(comment, sizeof comment, "Found by ckpt-harness %s --scenario %s\n%s", ro->err ? "sweep" : "crashstates",
		 ro->scenario, why);
	if (harness_scenario_save(path, s, comment, sdir, err, sizeof err) < 0) {
		fprintf(stderr, "ckpt-harness: cannot write %s: %s\n", path, err);
		path[0] = '\0';
	}
}

int harness_crashstates_replay(const harness_replay_opts *ro, const harness_opts *o)
{
	harness_scenario *base = calloc(1, sizeof *base), *s = calloc(1, sizeof *s);
	harness_result *r = calloc(1, sizeof *r);
	harness_undo u = { 0 };
	json_t *cases = json_array();
	char err[2048], dir[600], traj[1200], ck[1200], undo[1200], keep[1300], log[1200], sdir[1024];
	int rc = 3, checked = 0, violations = 0, unreached = 0, errors = 0, points = 0, stopped = 0;
	double t0 = now();
	const char *cmd = ro->err ? "sweep" : "crashstates";

	if (!base || !s || !r || !cases)
		goto out;
	if (harness_scenario_load(ro->scenario, base, err, sizeof err) < 0) {
		fprintf(stderr, "%s\n", err);
		rc = 2;
		goto out;
	}
	if (o->ckpt_backend && !base->trainer.ncommand)
		snprintf(base->trainer.ckpt_backend, sizeof base->trainer.ckpt_backend, "%s", o->ckpt_backend);
	int steps = !base->trainer.ncommand || base->trainer.beacon;   /* the trainer announces its steps */
	if (ro->step > 0 && !steps) {
		fprintf(stderr, "ckpt-harness: %s: --step %ld needs a trainer that announces its steps (reftrain, "
			"or trainer: {beacon: true}); without it every change of the run is explored\n", cmd, ro->step);
		rc = 2;
		goto out;
	}
	/* the scenario's folder, absolute: what {scenario_dir} meant for the recording */
	char rel[1024], cwd[512];
	snprintf(rel, sizeof rel, "%s", ro->scenario);
	const char *d = dirname(rel);
	if (d[0] == '/')
		snprintf(sdir, sizeof sdir, "%s", d);
	else
		snprintf(sdir, sizeof sdir, "%s/%s", getcwd(cwd, sizeof cwd) ? cwd : ".", d);

	/* the recording */
	if (harness_workdir_create(dir, sizeof dir, harness_workdir_tmp(), "ckpt-crashstates") < 0) {
		fprintf(stderr, "ckpt-harness: %s: cannot create a work directory\n", cmd);
		goto out;
	}
	snprintf(traj, sizeof traj, "%s/record.jsonl", dir);
	snprintf(ck, sizeof ck, "%s/ckpt", dir);
	snprintf(undo, sizeof undo, "%s/undo", dir);
	snprintf(keep, sizeof keep, "%s.keep", undo);
	snprintf(log, sizeof log, "%s/record.log", dir);
	mkdir(keep, 0755);
	harness_job_result jr;
	if (harness_record_run(base, o, dir, traj, ck, undo, log, &jr) < 0 || !jr.exited || jr.status != 0) {
		fprintf(stderr, "ckpt-harness: %s: the recording run failed; see %s\n", cmd, log);
		goto out;
	}
	if (harness_undo_load(&u, undo, base->trainer.world_size, ck, err, sizeof err) < 0) {
		fprintf(stderr, "ckpt-harness: %s: %s\n", cmd, err);
		goto out;
	}
	for (int i = 0; i < u.n; i++)
		points += crash_op(&u.v[i], ck) && (ro->step <= 0 || u.v[i].step == (uint64_t)ro->step);
	if (!points) {
		fprintf(stderr, "ckpt-harness: %s: the recording made no change under %s%s; nothing to explore "
			"(see %s)\n", cmd, ck, ro->step > 0 ? " at that step" : "", log);
		goto out;
	}

	/* the replays */
	mkdir(ro->out_dir, 0755);
	int placed = 0;
	for (int i = 0; i < u.n && !harness_interrupted(); i++) {
		if (!crash_op(&u.v[i], ck) || (ro->step > 0 && u.v[i].step != (uint64_t)ro->step))
			continue;
		if (ro->max_states && placed >= ro->max_states)
			break;
		for (int v = 0; v < 3; v++) {
			/* crash states: kill, power cut, torn write; a sweep: the call fails once, then from then on */
			if (v == 2 && (ro->err || strcmp(u.v[i].call, "write") != 0 || u.v[i].len < 2))
				continue;
			*s = *base;
			s->ndamage = 0;
			s->nfaults = 1;
			s->fault_line[0] = 0;
			place(&u, i, steps, &s->faults[0]);
			if (ro->err) {
				s->faults[0].action = HARNESS_ERRNO;
				s->faults[0].err = ro->err;
				s->faults[0].times = v == 0 ? 1 : 0;
			} else {
				s->faults[0].action = v == 0 ? HARNESS_KILL : v == 1 ? HARNESS_POWER_LOSS : HARNESS_TORN;
				s->faults[0].arg = v == 2 ? (long)(u.v[i].len / 2) : 0;
			}
			harness_expect_init(&s->expect);
			if (s->max_attempts < 2)
				s->max_attempts = 2;
			snprintf(s->name, sizeof s->name, "%.80s-cs-%03d", base->name, checked + unreached + errors + 1);
			char at[48] = "";
			if (steps)
				snprintf(at, sizeof at, ", step %" PRIu64, u.v[i].step);
			static const char *const what[2][3] = {
				{ "A kill", "A power cut", "A torn write and a kill" },
				{ "A transient error", "A persistent error", "" },
			};
			snprintf(s->description, sizeof s->description, "%s at %s of %s (rank %d, call %d of its kind%s)",
				 what[ro->err != 0][v], u.v[i].call, s->faults[0].path, u.v[i].rank, s->faults[0].nth, at);
			harness_run_scenario(s, o, r);
			if (r->harness_error) {
				fprintf(stderr, "ckpt-harness: %s: %s\n", cmd, r->sentence);
				goto out;
			}
			int missed = r->verdict == HARNESS_ERROR && strstr(r->sentence, "did not fire");
			/* a sweep: stopping cleanly at an I/O error, saying why and losing nothing acknowledged, is right */
			int clean = ro->err && r->verdict == HARNESS_FAIL && r->oracle.stopped_failed && !r->oracle.lost_acked &&
				    strncmp(r->sentence, "the run did not finish", 22) == 0;
			char path[1200] = "";
			if (missed) {
				unreached++;
			} else if (clean) {
				checked++;
				stopped++;
			} else if (r->verdict == HARNESS_PASS || r->verdict == HARNESS_FAIL) {
				checked++;
				if (r->verdict == HARNESS_FAIL) {
					violations++;
					write_case(ro, s, r->sentence, sdir, path, sizeof path);
				}
			} else {
				errors++;       /* the replay could not judge this state: said, never counted as checked */
			}
			const char *shown = missed ? "UNREACHED" : clean ? "STOPPED" : harness_verdict_name(r->verdict);
			fprintf(stderr, "[%d] %s: %s%s%s\n", checked + unreached + errors, s->description, shown,
				r->verdict == HARNESS_PASS ? "" : ": ", r->verdict == HARNESS_PASS ? "" : r->sentence);
			json_array_append_new(cases, json_pack("{s:s,s:s,s:s,s:s}", "state", s->description, "verdict", shown,
							       "sentence", r->sentence, "scenario", path));
		}
		placed++;
	}
	double secs = now() - t0;
	printf("%s of %s by replay%s%s (%d changes recorded under the root, %d explored): %d checked (%d stopped "
	       "cleanly), %d violations, %d unreached, %d not judged, %.1f s\n", ro->err ? "sweep" : "crash states",
	       base->name, ro->err ? ", failing each call with " : "", ro->err ? harness_errno_name(ro->err) : "", points,
	       placed, checked, stopped, violations, unreached, errors, secs);
	if (ro->json) {
		json_t *j = json_pack("{s:s,s:s,s:s?,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:o}", "mode", "replay", "scenario",
				      ro->scenario, "errno", ro->err ? harness_errno_name(ro->err) : NULL, "stopped_cleanly",
				      stopped, "changes_recorded", points, "states_checked", checked, "violations",
				      violations, "unreached", unreached, "not_judged", errors, "changes_explored", placed,
				      "seconds", secs, "cases", cases);
		cases = NULL;
		if (json_dump_file(j, ro->json, JSON_INDENT(2)) < 0)
			fprintf(stderr, "ckpt-harness: %s: cannot write %s\n", cmd, ro->json);
		json_decref(j);
	}
	rc = harness_interrupted() ? 128 + harness_interrupted() : violations ? 1 : errors ? 3 : 0;
	if (!ro->keep)
		harness_workdir_remove(dir);
	else
		fprintf(stderr, "ckpt-harness: %s: the recording is kept in %s\n", cmd, dir);
out:
	json_decref(cases);
	harness_undo_free(&u);
	free(base);
	free(s);
	free(r);
	return rc;
}
