#include "regfile.h"
#include "run.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "damage.h"
#include "elastic.h"
#include "hang.h"
#include "jsonl.h"
#include "launch.h"
#include "nodes.h"
#include "parts.h"
#include "powerloss.h"
#include "workdir.h"
#include "sealkey.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void harness_fail(harness_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void harness_fail(harness_result *r, const char *fmt, ...)
{
	va_list ap;

	if (r->harness_error)
		return;
	r->harness_error = 1;
	r->verdict = HARNESS_ERROR;
	va_start(ap, fmt);
	vsnprintf(r->sentence, sizeof r->sentence, fmt, ap);
	va_end(ap);
}

static int hash_file(XXH3_state_t *st, const char *path)
{
	char buf[1 << 16];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -errno;
	while ((n = read(fd, buf, sizeof buf)) > 0)
		XXH3_64bits_update(st, buf, (size_t)n);
	close(fd);
	return n < 0 ? -EIO : 0;
}

/*
 * One reftrain job of this scenario's trainer, stopped by the watchdog after
 * timeout_s. trail: where the ranks keep their trail (inject.h), or NULL.
 */
/*
 * Placeholders of a command item: {ckpt_dir} {trajectory} {attempt} {steps}
 * {seed} {world_size} {every} {keep} {scenario_dir}. -1 if the result would
 * not fit, or on an unknown {name} (validate has refused those already).
 */
static int expand(char *out, size_t len, const char *in, const harness_scenario *s, const char *ckdir,
		  const char *traj, int attempt)
{
	size_t o = 0;
	char sdir[HARNESS_SCENARIO_PATH_MAX];

	snprintf(sdir, sizeof sdir, "%s", s->file);
	char *slash = strrchr(sdir, '/');
	if (slash)
		*slash = '\0';
	else
		snprintf(sdir, sizeof sdir, ".");
	while (*in) {
		char val[HARNESS_SCENARIO_PATH_MAX];
		const char *end = *in == '{' ? strchr(in, '}') : NULL;
		size_t nl = end ? (size_t)(end - in - 1) : 0;
		val[0] = '\0';
		if (!end) {
			if (o + 1 >= len)
				return -1;
			out[o++] = *in++;
			continue;
		}
#define IS(name) (nl == strlen(name) && strncmp(in + 1, name, nl) == 0)
		if (IS("ckpt_dir"))
			snprintf(val, sizeof val, "%s", ckdir);
		else if (IS("trajectory"))
			snprintf(val, sizeof val, "%s", traj);
		else if (IS("attempt"))
			snprintf(val, sizeof val, "%d", attempt);
		else if (IS("steps"))
			snprintf(val, sizeof val, "%" PRId64, s->trainer.steps);
		else if (IS("seed"))
			snprintf(val, sizeof val, "%" PRId64, s->trainer.seed);
		else if (IS("world_size"))
			snprintf(val, sizeof val, "%d", s->trainer.world_size);
		else if (IS("every"))
			snprintf(val, sizeof val, "%" PRId64, s->trainer.every);
		else if (IS("keep"))
			snprintf(val, sizeof val, "%d", s->trainer.keep);
		else if (IS("scenario_dir"))
			snprintf(val, sizeof val, "%s", sdir);
		else if (IS("node") || IS("node_dir"))
			snprintf(val, sizeof val, "{%.*s}", (int)nl, in + 1);   /* per rank: ckpt-node-exec (nodes.h) */
		else
			return -1;
#undef IS
		size_t vl = strlen(val);
		if (o + vl >= len)
			return -1;
		memcpy(out + o, val, vl);
		o += vl;
		in = end + 1;
	}
	out[o] = '\0';
	return 0;
}

/*
 * One job of a program that speaks the trainer protocol: the command with
 * its placeholders, the protocol's environment, and, when faults are
 * planned, the fault shim preloaded into the trainer's processes only.
 */
static int command_job(const harness_scenario *s, const harness_opts *o, harness_result *r, const char *dir,
		       const char *traj, const char *ckdir, int attempt, const char *plan, const char *faultlog,
		       const char *undo, const char *log, int timeout_s, int64_t stop_after, harness_job_result *jr)
{
	static char args[HARNESS_MAX_ARGS][HARNESS_SCENARIO_PATH_MAX];
	char envp[11][HARNESS_SCENARIO_PATH_MAX + 64];
	const char *argv[HARNESS_MAX_ARGS + 1], *env[12];
	int ne = 0;

	for (int i = 0; i < s->trainer.ncommand; i++) {
		if (expand(args[i], sizeof args[i], s->trainer.command[i], s, ckdir, traj, attempt) < 0) {
			harness_fail(r, "%s: trainer.command item %d ('%s') does not expand", s->file, i + 1,
				     s->trainer.command[i]);
			return -EINVAL;
		}
		argv[i] = args[i];
	}
	argv[s->trainer.ncommand] = NULL;
	snprintf(envp[ne], sizeof envp[ne], "CKPT_HARNESS_CKPT_DIR=%s", ckdir), env[ne] = envp[ne], ne++;
	snprintf(envp[ne], sizeof envp[ne], "CKPT_HARNESS_TRAJECTORY=%s", traj), env[ne] = envp[ne], ne++;
	snprintf(envp[ne], sizeof envp[ne], "CKPT_HARNESS_ATTEMPT=%d", attempt), env[ne] = envp[ne], ne++;
	/* where the Python helpers for programs live (ckpt_beacon.py, ckpt_trajectory.py), build tree or install */
	char helper[PATH_MAX], *slash;
	harness_part_path(helper, sizeof helper, o->bindir, "ckpt_beacon.py");
	if ((slash = strrchr(helper, '/')) != NULL)
		*slash = '\0';
	snprintf(envp[ne], sizeof envp[ne], "CKPT_HARNESS_LIBDIR=%s", helper), env[ne] = envp[ne], ne++;
	if (plan || undo) {
		/* the shim: faults, and the undo record of a program's changes (power loss, crash states) */
		char shim[PATH_MAX];
		harness_part_path(shim, sizeof shim, o->bindir, "libckpt-fault-shim.so");
		snprintf(envp[ne], sizeof envp[ne], "LD_PRELOAD=%s", shim);
		env[ne] = envp[ne], ne++;
	}
	if (plan) {
		/* the shim's own variable: a program that also carries our libfiu injector (reftrain as a
		 * command) must not arm it too, or each fault would fire twice */
		snprintf(envp[ne], sizeof envp[ne], "CKPT_FAULT_PLAN_SHIM=%s", plan), env[ne] = envp[ne], ne++;
		snprintf(envp[ne], sizeof envp[ne], "CKPT_FAULT_LOG=%s", faultlog), env[ne] = envp[ne], ne++;
	}
	if (undo)
		snprintf(envp[ne], sizeof envp[ne], "CKPT_UNDO_LOG=%s", undo), env[ne] = envp[ne], ne++;
	if (stop_after > 0) {
		snprintf(envp[ne], sizeof envp[ne], "CKPT_HARNESS_STOP_AFTER=%" PRId64, stop_after);
		env[ne] = envp[ne], ne++;
	}
	if (plan && s->trainer.generations[0]) {
		/* the shim's damage at a step boundary: what a generation is called */
		snprintf(envp[ne], sizeof envp[ne], "CKPT_HARNESS_GENERATIONS=%s", s->trainer.generations);
		env[ne] = envp[ne], ne++;
	}
	env[ne] = NULL;
	const harness_launcher *l = &harness_local_mpirun;
	if (strcmp(s->trainer.launcher, "single") == 0)
		l = &harness_local_single;
	else if (strcmp(s->trainer.launcher, "procs") == 0)
		l = &harness_local_procs;
	int np;
	l = harness_nodes_launcher(s, o->bindir, ckdir, l, &np);
	int rc = harness_launch_run(l, np, dir, timeout_s, env, argv, log, jr);
	r->launch_seconds += jr->seconds;
	r->launches++;
	return rc;
}

enum harness_inject harness_inject_mode(const harness_opts *o)
{
	if (o->inject != HARNESS_INJECT_AUTO)
		return o->inject;
#ifdef HARNESS_HAVE_FIU
	return HARNESS_INJECT_FIU;
#else
	return HARNESS_INJECT_SHIM;
#endif
}

/* Faults reach this scenario's reftrain through the shim: asked for, or a backend without libfiu points. */
static int via_shim(const harness_scenario *s, const harness_opts *o)
{
	return harness_inject_mode(o) == HARNESS_INJECT_SHIM || harness_foreign_backend(s);
}

/* The .so reftrain loads for --ckpt-backend (a name resolves next to it, as reftrain does). */
static void backend_path(const harness_scenario *s, const harness_opts *o, char *out, size_t len)
{
	const char *b = s->trainer.ckpt_backend;
	char name[PATH_MAX];

	if (strchr(b, '/')) {
		snprintf(out, len, "%s", b);
		return;
	}
	snprintf(name, sizeof name, "reftrain-backend-%s.so", b);
	harness_part_path(out, len, o->bindir, name);
}

const char *harness_shim_blind_spot(const harness_scenario *s, char *buf, size_t len)
{
	if (s->trainer.ncommand)
		return NULL;
	if (harness_foreign_backend(s) && s->ndamage) {
		snprintf(buf, len, "damage at rest strikes libckpt's generations, and the checkpoint backend '%s' has its "
			 "own layout", s->trainer.ckpt_backend);
		return buf;
	}
	for (int i = 0; i < s->nfaults; i++) {
		const char *ph = s->faults[i].phase;
		if (harness_foreign_backend(s) && s->faults[i].action == HARNESS_DAMAGE) {
			snprintf(buf, len, "fault %d damages libckpt's generations at rest, and the checkpoint backend '%s' "
				 "has its own layout", i + 1, s->trainer.ckpt_backend);
			return buf;
		}
		if (ph[0] && strncmp(ph, "train.", 6) != 0) {
			snprintf(buf, len, "fault %d names libckpt's phase %s, which only its libfiu points announce; under "
				 "the shim reftrain announces its steps and its own phases (train.step, train.reduce) and "
				 "every I/O call under the root is visible by op, path and nth", i + 1, ph);
			return buf;
		}
	}
	return NULL;
}

/* Set while golden() runs the uninterrupted runs and the plain resume (checkpoint.async: synchronous there). */
static _Thread_local int golden_running;

static int job(const harness_scenario *s, const harness_opts *o, harness_result *r, const char *dir,
	       const char *traj, const char *ckdir, int attempt, const char *plan, const char *faultlog,
	       const char *undo, const char *trail, const char *log, int with_test_flags, int timeout_s,
	       int64_t stop_after, harness_job_result *jr)
{
	if (s->trainer.ncommand)
		return command_job(s, o, r, dir, traj, ckdir, attempt, plan, faultlog, undo, log, timeout_s, stop_after,
				   jr);

	char prog_path[1024], steps[32], seed[32], every[32], keep[32], att[16], accum[16], envp[7][1100];
	const char *env[8] = { NULL };
	int ne = 0, shim = via_shim(s, o);
	const char *argv[40];
	int n = 0;

	snprintf(prog_path, sizeof prog_path, "%s/reftrain", o->bindir);
	snprintf(steps, sizeof steps, "%" PRId64, s->trainer.steps);
	snprintf(seed, sizeof seed, "%" PRId64, s->trainer.seed);
	snprintf(every, sizeof every, "%" PRId64, s->trainer.every);
	snprintf(keep, sizeof keep, "%d", s->trainer.keep);
	snprintf(att, sizeof att, "%d", attempt ? attempt : 1);
	argv[n++] = prog_path;
	argv[n++] = "--preset"; argv[n++] = s->trainer.preset;
	argv[n++] = "--steps"; argv[n++] = steps;
	argv[n++] = "--seed"; argv[n++] = seed;
	argv[n++] = "--trajectory"; argv[n++] = traj;
	argv[n++] = "--ckpt-dir"; argv[n++] = ckdir;
	argv[n++] = "--ckpt-every"; argv[n++] = every;
	argv[n++] = "--keep"; argv[n++] = keep;
	argv[n++] = "--resume"; argv[n++] = "auto";
	argv[n++] = "--attempt"; argv[n++] = att;
	if (s->trainer.accum_steps > 1) {
		snprintf(accum, sizeof accum, "%d", s->trainer.accum_steps);
		argv[n++] = "--accum-steps"; argv[n++] = accum;
	}
	char frozen[16], full_every[16];
	if (s->trainer.frozen > 0) {
		snprintf(frozen, sizeof frozen, "%d", s->trainer.frozen);
		argv[n++] = "--frozen"; argv[n++] = frozen;
	}
	if (s->trainer.incremental)
		argv[n++] = "--ckpt-incremental";
	if (s->trainer.full_every > 0) {
		snprintf(full_every, sizeof full_every, "%d", s->trainer.full_every);
		argv[n++] = "--ckpt-full-every"; argv[n++] = full_every;
	}
	char stop[32];
	if (stop_after > 0) {
		snprintf(stop, sizeof stop, "%" PRId64, stop_after);
		argv[n++] = "--stop-after"; argv[n++] = stop;
	}
	/*
	 * checkpoint.async: the attempts save in the background; the golden runs
	 * (the uninterrupted ones and the plain stop-and-resume) do not, so the oracle compares background saving with a
	 * synchronous run (same step records, bit for bit; only `committed` moves)
	 */
	if (s->trainer.async && !golden_running)
		argv[n++] = "--ckpt-async";
	char key[1100];
	if (s->trainer.encrypt) {      /* sealed checkpoints: one key per run directory, made private */
		int rc = harness_seal_key(dir, key, sizeof key);
		if (rc < 0) {
			harness_fail(r, "cannot make the checkpoint key in %s: %s", dir, strerror(-rc));
			return rc;
		}
		argv[n++] = "--ckpt-key-file"; argv[n++] = key;
	}
	/* checkpoint.tiered: the fast tier is each rank's node-local directory (ckpt-node-exec fills {node_dir}) */
	char fast[4400];
	if (s->trainer.tiered && !golden_running) {
		if (s->trainer.nodes > 1)
			snprintf(fast, sizeof fast, "{node_dir}/fast");
		else
			snprintf(fast, sizeof fast, "%s.nodes/node-0/fast", ckdir);
		argv[n++] = "--ckpt-fast-dir";
		argv[n++] = fast;
	}
	if (s->trainer.ckpt_backend[0]) {
		argv[n++] = "--ckpt-backend";
		argv[n++] = s->trainer.ckpt_backend;
	}
	if (with_test_flags && s->trainer.test_skip_restore[0]) {
		argv[n++] = "--test-skip-restore";
		argv[n++] = s->trainer.test_skip_restore;
	}
	argv[n] = NULL;
	if (plan) {
		/* under the shim, its own plan variable: reftrain's libfiu injector (if built in) stays unarmed */
		snprintf(envp[0], sizeof envp[0], "%s=%s", shim ? "CKPT_FAULT_PLAN_SHIM" : "CKPT_FAULT_PLAN", plan);
		snprintf(envp[1], sizeof envp[1], "CKPT_FAULT_LOG=%s", faultlog);
		snprintf(envp[2], sizeof envp[2], "%s=%s", shim ? "CKPT_HARNESS_CKPT_DIR" : "CKPT_FAULT_ROOT", ckdir);
		env[ne++] = envp[0];
		env[ne++] = envp[1];
		env[ne++] = envp[2];
	}
	if (undo) {
		/* under the shim the shim records the changes, libckpt does not */
		snprintf(envp[3], sizeof envp[3], "%s=%s", shim ? "CKPT_UNDO_LOG_SHIM" : "CKPT_UNDO_LOG", undo);
		env[ne++] = envp[3];
		if (shim && !plan) {
			snprintf(envp[2], sizeof envp[2], "CKPT_HARNESS_CKPT_DIR=%s", ckdir);
			env[ne++] = envp[2];
		}
	}
	if (shim && (plan || undo)) {
		char shim_so[PATH_MAX];
		harness_part_path(shim_so, sizeof shim_so, o->bindir, "libckpt-fault-shim.so");
		snprintf(envp[5], sizeof envp[5], "LD_PRELOAD=%s", shim_so);
		snprintf(envp[6], sizeof envp[6], "CKPT_HARNESS_ATTEMPT=%d", attempt);
		env[ne++] = envp[5];
		env[ne++] = envp[6];
		trail = NULL;   /* the trail is the libfiu injector's; the shim keeps none */
	}
	if (trail) {
		snprintf(envp[4], sizeof envp[4], "CKPT_FAULT_TRAIL=%s", trail);
		env[ne++] = envp[4];
	}
	int np;
	const harness_launcher *l = harness_nodes_launcher(s, o->bindir, ckdir, &harness_local_mpirun, &np);
	if (!golden_running && s->trainer.nrestart_ranks)
		np = harness_attempt_ranks(s, attempt);      /* restart: {ranks}: elastic resume on another world size */
	int rc = harness_launch_run(l, np, dir, timeout_s, env, argv, log, jr);
	r->launch_seconds += jr->seconds;
	r->launches++;
	return rc;
}

static int same_file(const char *a, const char *b, int *line)
{
	FILE *fa = fopen(a, "r"), *fb = fopen(b, "r");
	char la[4096], lb[4096];
	int same = fa && fb;

	*line = 0;
	while (same) {
		char *x = fgets(la, sizeof la, fa), *y = fgets(lb, sizeof lb, fb);
		(*line)++;
		if (!x && !y)
			break;
		if (!x || !y || strcmp(la, lb) != 0)
			same = 0;
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return same;
}

/*
 * The cached copy of an uninterrupted trajectory: its start, step and end
 * records. `committed` (and `save_failed`) records are dropped: where they
 * fall depends on checkpoint.every, which changes no step record, and the
 * oracle reads the golden run's step records only.
 */
static int store_golden(const char *src, const char *dst)
{
	FILE *in = fopen(src, "r"), *out = in ? fopen(dst, "w") : NULL;
	char *line = NULL;
	size_t cap = 0;
	int rc = 0;

	if (!in || !out) {
		rc = -errno;
		goto done;
	}
	while (getline(&line, &cap, in) > 0) {
		json_t *j = json_loads(line, 0, NULL);
		const char *ev = j ? json_string_value(json_object_get(j, "event")) : NULL;
		int keep = j && (!ev || strcmp(ev, "start") == 0 || strcmp(ev, "end") == 0);
		json_decref(j);
		if (keep && fputs(line, out) == EOF)
			rc = -EIO;
	}
done:
	free(line);
	if (in)
		fclose(in);
	if (out && fclose(out) != 0 && rc == 0)
		rc = -EIO;
	return rc;
}

/* The wall time stored with a golden entry (KEY.seconds), or 0 if absent or not believable. */
static double golden_seconds(const char *path)
{
	char buf[64] = "", *end;
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	double v = strtod(buf, &end);
	return end != buf && (*end == '\n' || *end == '\0') && v > 0 && v < 86400 ? v : 0;
}

/*
 * The determinism gate's second half: a run stopped cleanly one step after
 * its first checkpoint (the first `committed` record of the uninterrupted
 * run) and resumed, with no fault at all, must equal the
 * uninterrupted run bit for bit. A trainer that fails it would fail every
 * scenario for a reason that has nothing to do with the faults, so it is
 * reported as such, before any fault verdict: a FAIL (the checkpoint path
 * loses state), never a pass. reftrain stops on --stop-after; a program of
 * the user's is asked with CKPT_HARNESS_STOP_AFTER (the trainer protocol):
 * one that ignores it and runs to the end cannot be checked this way, and
 * the harness says so on stderr rather than count it as checked.
 */
static void end_status(const char *traj, char *status, size_t len);

/* The step of the first `committed` record of a trajectory, or 0 if it has none. */
static int64_t first_commit(const char *traj)
{
	FILE *f = fopen(traj, "r");
	char *line = NULL;
	size_t cap = 0;
	int64_t step = 0;

	while (f && !step && getline(&line, &cap, f) > 0) {
		json_t *j = json_loads(line, 0, NULL);
		const char *ev = j ? json_string_value(json_object_get(j, "event")) : NULL;
		if (ev && strcmp(ev, "committed") == 0 && json_is_integer(json_object_get(j, "step")))
			step = json_integer_value(json_object_get(j, "step"));
		json_decref(j);
	}
	free(line);
	if (f)
		fclose(f);
	return step > 0 ? step : 0;
}

static int plain_resume(const harness_scenario *s, const harness_opts *o, harness_result *r, const char *tmp,
			const char *gold)
{
	char traj[2][1200], ck[1200], log[2][1200];
	const char *trajs[2] = { traj[0], traj[1] };
	int64_t stop = first_commit(gold) + 1;
	harness_expect exp;
	harness_oracle_result res;
	int rc;

	if (stop == 1 || stop >= s->trainer.steps) {
		if (s->trainer.ncommand)
			fprintf(stderr, "ckpt-harness: %s: the uninterrupted run acknowledged no checkpoint before its last "
				"step (no `committed` record): the plain stop-and-resume check did not run\n", s->name);
		return 0;
	}
	snprintf(ck, sizeof ck, "%s/ckpt-resume", tmp);
	for (int i = 0; i < 2; i++) {
		harness_job_result jr;
		snprintf(traj[i], sizeof traj[i], "%s/resume-%d.jsonl", tmp, i + 1);
		snprintf(log[i], sizeof log[i], "%s/resume-%d.log", tmp, i + 1);
		if ((rc = job(s, o, r, tmp, traj[i], ck, i + 1, NULL, NULL, NULL, NULL, log[i], 0, s->timeout_s,
			      i == 0 ? stop : 0, &jr)) < 0) {
			harness_fail(r, "cannot launch mpirun: %s", strerror(-rc));
			return rc;
		}
		if (!jr.exited || jr.status != 0) {
			harness_fail(r, "the trainer failed a plain stop and resume (stopped after step %" PRId64
				     ", no fault): %s %d%s; see %s", stop, jr.exited ? "exit" : "signal", jr.status,
				     jr.timed_out ? ", timed out" : "", log[i]);
			return -EIO;
		}
		char status[32];
		end_status(traj[i], status, sizeof status);
		if (i == 0 && strcmp(status, "stopped") != 0) {
			if (strcmp(status, "done") == 0) {
				fprintf(stderr, "ckpt-harness: %s: the trainer ran to the end although asked to stop after step "
					"%" PRId64 " (CKPT_HARNESS_STOP_AFTER): the plain stop-and-resume check did not run; "
					"see the trainer protocol in README.md\n", s->name, stop);
				return 0;
			}
			harness_fail(r, "the trainer, asked to stop after step %" PRId64 " with no fault, ended its "
				     "trajectory with status '%s' (expected 'stopped'); see %s", stop,
				     status[0] ? status : "(no end record)", traj[i]);
			return -EIO;
		}
	}
	harness_expect_init(&exp);
	exp.keep = s->trainer.keep;
	if (harness_oracle_compare(gold, trajs, 2, s->trainer.steps, &exp, &res) < 0) {
		harness_fail(r, "cannot compare the plain resume: %s", res.sentence);
		return -EIO;
	}
	if (res.verdict != HARNESS_PASS) {
		/* a finding, not a harness failure: the checkpoint path loses state with no fault at all */
		r->verdict = HARNESS_FAIL;
		snprintf(r->sentence, sizeof r->sentence, "the trainer does not resume bit for bit even without a fault "
			 "(stopped cleanly after step %" PRId64 " and resumed), so no fault verdict can count: %s; see %s",
			 stop, res.sentence, tmp);
		return -EPROTO;
	}
	return 0;
}

/* Append the reach record src (or, if it is missing, "*": unknown) to the scenario's (CKPT_REACH_LOG). */
static void reach_merge(const char *src)
{
	const char *dst = getenv("CKPT_REACH_LOG");
	char buf[4096];
	ssize_t n;
	int in, out;

	if (!dst || (out = open(dst, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0)
		return;
	if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0) {
		if (write(out, "*\n", 2) != 2)
			perror(dst);
	} else {
		while ((n = read(in, buf, sizeof buf)) > 0)
			if (write(out, buf, (size_t)n) != n)
				perror(dst);
		close(in);
	}
	close(out);
}

/* text into path whole or not at all (PATH.part, then a rename): the golden cache's KEY.failed and CFG.ref. */
static void store_text(const char *path, const char *text)
{
	char part[1200];
	FILE *f;

	snprintf(part, sizeof part, "%s.part", path);
	if (!(f = fopen(part, "w")))
		return;
	fputs(text, f);
	if (fclose(f) == 0)
		rename(part, path);
	else
		unlink(part);
}

/*
 * A trainer that does not resume bit for bit even without a fault fails so
 * for every scenario with the same golden key (the same binaries, preset,
 * world size, steps and seed): the finding is kept beside the key
 * (KEY.failed, its sentence) and handed to the next scenario instead of
 * three more runs that would end the same. Only that finding is kept; a
 * launch failure or a nondeterministic trainer is computed again.
 */
static int load_failed_golden(const char *path, harness_result *r)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return 0;
	n = fread(r->sentence, 1, sizeof r->sentence - 1, f);
	fclose(f);
	r->sentence[n] = '\0';
	r->verdict = HARNESS_FAIL;
	return 1;
}

/*
 * The golden cache's index by configuration alone (CFG.ref: the full key of
 * the golden last stored for it), for --golden-from: the mutant's binaries
 * give other keys, its configuration the same one.
 */
static void cfg_ref_path(char *buf, size_t len, const char *cache, const char *cfg)
{
	snprintf(buf, len, "%s/cfg-%016" PRIx64 ".ref", cache, (uint64_t)XXH3_64bits(cfg, strlen(cfg)));
}

/* A small regular file of the cache into buf (NUL-terminated); -1 if absent, not regular or too long. */
static int read_small(const char *path, char *buf, size_t len)
{
	struct stat st;
	int fd = harness_open_regular(AT_FDCWD, path, &st);
	ssize_t n;

	if (fd < 0)
		return -1;
	if ((size_t)st.st_size >= len) {
		close(fd);
		return -1;
	}
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0 || n != st.st_size)
		return -1;
	buf[n] = '\0';
	return 0;
}

/*
 * --golden-from CACHE:MUTANT: the baseline's golden for this configuration,
 * if its uninterrupted runs and plain resume never reached the mutant's
 * sites (their record, KEY.reach, names neither it nor "*"). Sets out and
 * *seconds and returns 1; 0 to compute it as usual.
 */
static int golden_reused(const harness_opts *o, const char *cfg, char *out, size_t len, double *seconds)
{
	char path[PATH_MAX], ref[64], key[17], reach[65536];

	cfg_ref_path(path, sizeof path, o->golden_from, cfg);
	if (read_small(path, ref, sizeof ref) < 0 || strspn(ref, "0123456789abcdef") != 16 ||
	    (ref[16] && ref[16] != '\n'))
		return 0;
	memcpy(key, ref, 16);
	key[16] = '\0';
	snprintf(path, sizeof path, "%s/%s.reach", o->golden_from, key);
	if (read_small(path, reach, sizeof reach) < 0)
		return 0;
	for (char *save = NULL, *w = strtok_r(reach, "\n", &save); w; w = strtok_r(NULL, "\n", &save))
		if (strcmp(w, "*") == 0 || strcmp(w, o->golden_mutant) == 0)
			return 0;
	snprintf(path, sizeof path, "%s/%s.jsonl", o->golden_from, key);
	if (access(path, R_OK) < 0 || (size_t)snprintf(out, len, "%s", path) >= len)
		return 0;
	snprintf(path, sizeof path, "%s/%s.seconds", o->golden_from, key);
	*seconds = golden_seconds(path);
	return 1;
}

/*
 * The uninterrupted trajectory, keyed by the trainer and library binaries and
 * what changes the trajectory: preset, world size, steps and seed (not the
 * checkpoint interval or retention: see store_golden). Computed once (twice
 * the first time: the two runs must be identical, or no verdict can count)
 * and shared by every scenario; a lock keeps parallel scenarios from
 * computing it twice. The slower run's wall time is stored with it
 * (KEY.seconds, written before KEY.jsonl appears) to size the watchdog of
 * the attempts; *seconds gets it, or 0 if unknown.
 */
static int golden(const harness_scenario *s, const harness_opts *o, harness_result *r, char *out, size_t len,
		  double *seconds)
{
	XXH3_state_t *st = XXH3_createState();
	char path[1024], cfg[256], lock[1100], secs[1100], reach[1100], failed[1100], scen_reach[PATH_MAX] = "";
	char tmp[1024], traj[2][1200], ck[1200], log[1200], part[1300];
	uint64_t key;
	int fd, rc = 0;

	*seconds = 0;
	XXH3_64bits_reset(st);
	if (s->trainer.ncommand) {
		/*
		 * A program of the user's: its command, every file the command
		 * names (the script, the binary), the Python helpers we ship for
		 * programs (beacon, trajectory), and what the trainer section
		 * says; every and keep too, since the harness cannot know what a
		 * foreign program does with them. What else the program imports
		 * (its own modules, installed packages) is not part of the key:
		 * a fresh --cache after changing those.
		 */
		static const char *const helpers[] = { "ckpt_beacon.py", "ckpt_trajectory.py" };
		for (size_t i = 0; i < sizeof helpers / sizeof *helpers; i++) {
			harness_part_path(path, sizeof path, o->bindir, helpers[i]);
			hash_file(st, path);
		}
		for (int i = 0; i < s->trainer.ncommand; i++) {
			char item[HARNESS_SCENARIO_PATH_MAX];
			struct stat sb;
			XXH3_64bits_update(st, s->trainer.command[i], strlen(s->trainer.command[i]) + 1);
			if (expand(item, sizeof item, s->trainer.command[i], s, "", "", 0) == 0 && stat(item, &sb) == 0 &&
			    S_ISREG(sb.st_mode))
				hash_file(st, item);
		}
		snprintf(cfg, sizeof cfg, "golden-cmd-v2 launcher=%s world=%d steps=%" PRId64 " seed=%" PRId64
			 " every=%" PRId64 " keep=%d", s->trainer.launcher, s->trainer.world_size, s->trainer.steps,
			 s->trainer.seed, s->trainer.every, s->trainer.keep);
		XXH3_64bits_update(st, cfg, strlen(cfg));
		goto keyed;
	}
	snprintf(path, sizeof path, "%s/reftrain", o->bindir);
	if (hash_file(st, path) < 0) {
		XXH3_freeState(st);
		harness_fail(r, "cannot read the trainer %s: build it first", path);
		return -ENOENT;
	}
	harness_libckpt_path(path, sizeof path, o->bindir);
	hash_file(st, path);
	/* only what changes the uninterrupted trajectory: not every or keep */
	int used = snprintf(cfg, sizeof cfg, "golden-v3 preset=%s world=%d steps=%" PRId64 " seed=%" PRId64,
			    s->trainer.preset, s->trainer.world_size, s->trainer.steps, s->trainer.seed);
	if (s->trainer.accum_steps > 1)
		used += snprintf(cfg + used, sizeof cfg - (size_t)used, " accum_steps=%d", s->trainer.accum_steps);
	if (s->trainer.frozen > 0)
		used += snprintf(cfg + used, sizeof cfg - (size_t)used, " frozen=%d", s->trainer.frozen);
	if (s->trainer.ckpt_backend[0]) {
		/* the trajectory is the same, but the plain-resume check (run with the golden) is the backend's */
		backend_path(s, o, path, sizeof path);
		hash_file(st, path);
		snprintf(cfg + used, sizeof cfg - (size_t)used, " backend=%s", s->trainer.ckpt_backend);
	}
	XXH3_64bits_update(st, cfg, strlen(cfg));
	if (o->golden_from && golden_reused(o, cfg, out, len, seconds)) {
		XXH3_freeState(st);
		return 0;
	}
keyed:
	key = XXH3_64bits_digest(st);
	XXH3_freeState(st);

	mkdir(o->cache, 0755);
	snprintf(out, len, "%s/%016" PRIx64 ".jsonl", o->cache, key);
	snprintf(secs, sizeof secs, "%s/%016" PRIx64 ".seconds", o->cache, key);
	snprintf(lock, sizeof lock, "%s/%016" PRIx64 ".lock", o->cache, key);
	if ((fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0 || flock(fd, LOCK_EX) < 0) {
		harness_fail(r, "cannot lock the golden cache %s: %s", lock, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	snprintf(reach, sizeof reach, "%s/%016" PRIx64 ".reach", o->cache, key);
	snprintf(failed, sizeof failed, "%s/%016" PRIx64 ".failed", o->cache, key);
	if (load_failed_golden(failed, r)) {
		if (o->reach)
			reach_merge(failed);    /* no record kept with it: "*" */
		rc = -EPROTO;
		goto done;
	}
	if (access(out, R_OK) == 0) {
		*seconds = golden_seconds(secs);
		if (o->reach)
			reach_merge(reach);     /* cached before --reach: "*" */
		goto done;
	}

	double slowest = 0;
	if ((rc = harness_workdir_create(tmp, sizeof tmp, o->cache, "golden")) < 0) {
		harness_fail(r, "cannot create a directory in %s: %s", o->cache, strerror(-rc));
		goto done;
	}
	golden_running = 1;
	if (o->reach && getenv("CKPT_REACH_LOG")) {
		/* the uninterrupted runs' reach, kept with the golden for every scenario that uses it */
		int fd;
		snprintf(scen_reach, sizeof scen_reach, "%s", getenv("CKPT_REACH_LOG"));
		snprintf(part, sizeof part, "%s/golden.reach", tmp);
		if ((fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) >= 0)
			close(fd);
		setenv("CKPT_REACH_LOG", part, 1);
	}
	for (int i = 0; i < 2 && rc == 0; i++) {
		harness_job_result jr;
		snprintf(traj[i], sizeof traj[i], "%s/golden-%d.jsonl", tmp, i);
		snprintf(ck, sizeof ck, "%s/ckpt-%d", tmp, i);
		snprintf(log, sizeof log, "%s/golden-%d.log", tmp, i);
		/* the uninterrupted runs are attempt 0 (the protocol's CKPT_HARNESS_ATTEMPT) */
		if ((rc = job(s, o, r, tmp, traj[i], ck, 0, NULL, NULL, NULL, NULL, log, 0, s->timeout_s, 0, &jr)) < 0)
			harness_fail(r, "cannot launch mpirun: %s", strerror(-rc));
		else if (!jr.exited || jr.status != 0) {
			harness_fail(r, "the uninterrupted run failed (%s %d%s); see %s", jr.exited ? "exit" : "signal",
				     jr.status, jr.timed_out ? ", timed out" : "", log);
			rc = -EIO;
		} else if (jr.seconds > slowest) {
			slowest = jr.seconds;
		}
	}
	int line;
	if (rc == 0 && !same_file(traj[0], traj[1], &line)) {
		harness_fail(r, "trainer is not deterministic: two uninterrupted runs differ at line %d of %s and %s",
			     line, traj[0], traj[1]);
		rc = -EPROTO;
		goto done;       /* keep the evidence */
	}
	if (rc == 0 && (rc = plain_resume(s, o, r, tmp, traj[0])) < 0) {
		if (rc == -EPROTO && r->verdict == HARNESS_FAIL)
			store_text(failed, r->sentence);
		goto done;       /* keep the evidence */
	}
	if (rc == 0 && scen_reach[0]) {
		/* before the trajectory appears: a golden stored under --reach always has its record */
		snprintf(part, sizeof part, "%s/golden.reach", tmp);
		if (rename(part, reach) < 0)
			unlink(reach);          /* then "*" below */
	}
	if (rc == 0) {
		FILE *f;
		snprintf(part, sizeof part, "%s/golden.seconds", tmp);
		if ((f = fopen(part, "w")) != NULL) {
			fprintf(f, "%.3f\n", slowest);
			if (fclose(f) == 0)
				rename(part, secs);   /* without it the watchdog falls back to timeout_s */
		}
		snprintf(part, sizeof part, "%s/golden.jsonl", tmp);
		if ((rc = store_golden(traj[0], part)) < 0 || rename(part, out) < 0) {
			rc = rc < 0 ? rc : -errno;
			harness_fail(r, "cannot store the golden trajectory %s: %s", out, strerror(-rc));
		} else {
			*seconds = slowest;
		}
	}
	if (rc == 0 && scen_reach[0] && !s->trainer.ncommand) {
		/* the index --golden-from reads: this configuration's golden, with its reach record */
		char ref[PATH_MAX], hex[24];
		cfg_ref_path(ref, sizeof ref, o->cache, cfg);
		snprintf(hex, sizeof hex, "%016" PRIx64 "\n", key);
		store_text(ref, hex);
	}
	if (rc == 0)
		harness_workdir_remove(tmp);
	else
		harness_workdir_keep(tmp);     /* the evidence the sentence points to */
done:
	if (scen_reach[0]) {
		setenv("CKPT_REACH_LOG", scen_reach, 1);
		if (rc == 0)
			reach_merge(reach);
		else {          /* what the failed runs reached */
			snprintf(part, sizeof part, "%s/golden.reach", tmp);
			reach_merge(part);
		}
	}
	golden_running = 0;
	flock(fd, LOCK_UN);
	close(fd);
	return rc;
}

typedef struct fired_ctx {
	const harness_scenario *s;
	harness_result *r;
	int *fired;
} fired_ctx;

static int count_fired(json_t *j, void *arg)
{
	fired_ctx *c = arg;
	int i = (int)json_integer_value(json_object_get(j, "fault"));
	if (i >= 0 && i < c->s->nfaults)
		c->fired[i]++;
	char cov[48];
	const char *op = json_string_value(json_object_get(j, "op"));
	const char *ph = json_string_value(json_object_get(j, "phase"));
	/*
	 * Under the shim an I/O call carries the last phase the trainer
	 * announced (train.reduce during a save): that phase makes no I/O, so
	 * the pair is the call alone ("/write"), not "train.reduce/write".
	 */
	if (!ph || (strncmp(ph, "train.", 6) == 0 && op && strcmp(op, "phase") != 0))
		ph = "";
	snprintf(cov, sizeof cov, "%s/%s", ph, op ? op : "?");
	int known = 0;
	for (int k = 0; k < c->r->ncoverage; k++)
		known |= strcmp(c->r->coverage[k], cov) == 0;
	if (!known && c->r->ncoverage < HARNESS_MAX_COVERAGE)
		strcpy(c->r->coverage[c->r->ncoverage++], cov);
	return 0;
}

/* Which planned faults fired, from the per-rank fault logs. */
static void read_fault_logs(const harness_scenario *s, const char *prefix, harness_result *r, int *fired)
{
	fired_ctx c = { s, r, fired };
	for (int rank = 0; rank < harness_ranks_max(s); rank++) {
		char path[1200];
		snprintf(path, sizeof path, "%s.rank-%d.jsonl", prefix, rank);
		harness_jsonl_each(path, count_fired, &c);
	}
}

/* Did libckpt journal a failure to replace LATEST (a stale hint it knows about)? */
static int latest_failure_journaled(const char *root)
{
	char dir[1200], path[1500], *line = NULL;
	size_t cap = 0;
	int found = 0;
	DIR *d;
	struct dirent *de;

	snprintf(dir, sizeof dir, "%s/journal", root);
	if (!(d = opendir(dir)))
		return 0;
	while (!found && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		FILE *f = harness_fopen_regular(AT_FDCWD, path);
		if (!f)
			continue;
		while (!found && getline(&line, &cap, f) > 0)
			found = strstr(line, "\"phase\":\"save.latest\"") && strstr(line, "\"event\":\"warning\"");
		fclose(f);
	}
	closedir(d);
	free(line);
	return found;
}

/*
 * LATEST is a hint, but a hint must never lie: after any crash it is absent,
 * or names a committed generation, or is a stale name that libckpt itself
 * journaled it could not replace (discovery by scan is the truth, and the
 * failure was reported). Anything else is a lie: a torn or garbled LATEST
 * was written in place instead of replaced atomically; a well-formed name
 * of a generation that is not there, with no failure journaled, points
 * restore at nothing.
 */
static int check_latest(const char *root, char *why, size_t len)
{
	char path[1200], buf[64] = "", gen[1300];
	struct stat st;
	ssize_t n;
	int fd;

	snprintf(path, sizeof path, "%s/LATEST", root);
	if ((fd = harness_open_regular(AT_FDCWD, path, &st)) < 0) {
		if (errno == ENOENT)
			return 0;
		if (errno == EINVAL || errno == ELOOP)
			snprintf(why, len, "after the crash LATEST is not a regular file");
		else
			snprintf(why, len, "after the crash LATEST cannot be opened as a file: %s", strerror(errno));
		return -1;
	}
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n < 0)
		n = 0;
	buf[n] = '\0';
	int well_formed = n == 14 && strncmp(buf, "step-", 5) == 0 && strspn(buf + 5, "0123456789") == 8 &&
			  buf[13] == '\n';
	if (well_formed) {
		buf[13] = '\0';
		snprintf(gen, sizeof gen, "%s/%s/manifest.json", root, buf);
		if (lstat(gen, &st) == 0 && S_ISREG(st.st_mode))
			return 0;
		if (latest_failure_journaled(root))
			return 0;      /* stale, and said so: the scan finds the truth */
		snprintf(why, len, "after the crash LATEST names %s, which is not a committed generation, and libckpt "
			 "journaled no failure to update it: the hint lies", buf);
		return -1;
	}
	for (ssize_t i = 0; i < n; i++)
		if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] >= 0x7f)
			buf[i] = ' ';
	snprintf(why, len, "after the crash LATEST holds \"%s\", not the name of a committed generation: it "
		 "was written in place instead of replaced atomically", buf);
	return -1;
}

/* A fault-log record of the attempt that a predicate picks. */
typedef struct fire_ctx {
	int attempt, hit;
	int (*pick)(json_t *j);
} fire_ctx;

static int fire_matches(json_t *j, void *arg)
{
	fire_ctx *c = arg;
	if (json_integer_value(json_object_get(j, "attempt")) == c->attempt && c->pick(j))
		c->hit = 1;
	return c->hit;
}

/* Did a fault that `pick` accepts fire in this attempt, on any rank? */
static int fired_in_attempt(const harness_scenario *s, const char *prefix, int attempt, int (*pick)(json_t *j))
{
	fire_ctx c = { attempt, 0, pick };
	for (int rank = 0; rank < harness_ranks_max(s) && !c.hit; rank++) {
		char path[1200];
		snprintf(path, sizeof path, "%s.rank-%d.jsonl", prefix, rank);
		harness_jsonl_each(path, fire_matches, &c);
	}
	return c.hit;
}

static int is_power_loss(json_t *j)
{
	const char *a = json_string_value(json_object_get(j, "action"));
	return a && strcmp(a, "power_loss") == 0;
}

/* A fault inside the restore: that attempt may refuse or fall back. */
/*
 * A fault that struck the restore: in libckpt's restore phases, or, for a
 * writer seen through the shim (no libckpt phases), a failed read or listing
 * under the root: the program reads its checkpoints back only to restore.
 */
static int is_restore_fault(json_t *j)
{
	const char *ph = json_string_value(json_object_get(j, "phase"));
	const char *op = json_string_value(json_object_get(j, "op"));
	if (ph && strncmp(ph, "restore.", 8) == 0)
		return 1;
	return (!ph || !*ph || strncmp(ph, "train.", 6) == 0) && op &&
	       (strcmp(op, "read") == 0 || strcmp(op, "opendir") == 0);
}

/* The attempt's last record says how it ended: "done", "failed", "stopped" or NULL (killed). */
static void end_status(const char *traj, char *status, size_t len)
{
	FILE *f = fopen(traj, "r");
	char *line = NULL, *last = NULL;
	size_t cap = 0;

	status[0] = '\0';
	if (!f)
		return;
	while (getline(&line, &cap, f) > 0) {
		free(last);
		last = strdup(line);
	}
	fclose(f);
	free(line);
	json_t *j = last ? json_loads(last, 0, NULL) : NULL;
	const char *ev = j ? json_string_value(json_object_get(j, "event")) : NULL;
	if (ev && strcmp(ev, "end") == 0)
		snprintf(status, len, "%s", json_string_value(json_object_get(j, "status")));
	json_decref(j);
	free(last);
}

/* Did libckpt's journal record retention deleting generation `name`? */
static int retention_deleted(const char *root, const char *name)
{
	char path[1200], want[64], *line = NULL;
	size_t cap = 0;
	int found = 0;

	snprintf(path, sizeof path, "%s/journal/rank-00000.jsonl", root);
	snprintf(want, sizeof want, "\"event\":\"retention\",\"deleted\":\"%s\"", name);
	FILE *f = harness_fopen_regular(AT_FDCWD, path);
	if (!f)
		return 0;
	while (!found && getline(&line, &cap, f) > 0)
		found = strstr(line, want) != NULL;
	fclose(f);
	free(line);
	return found;
}

/* The generations a damage log names, damaged as seen from attempt `from` on. */
static void note_damage(harness_expect *e, const char *log, const char *root, const char *pattern, int from)
{
	int64_t steps[HARNESS_MAX_DAMAGED];
	int n = harness_damage_scan_log(log, root, pattern, steps, HARNESS_MAX_DAMAGED);

	for (int i = 0; i < n && e->ndamaged < HARNESS_MAX_DAMAGED; i++) {
		int known = 0;
		for (int d = 0; d < e->ndamaged; d++)
			known |= e->damaged_step[d] == steps[i] && e->damaged_from_attempt[d] == from;
		if (!known) {
			e->damaged_step[e->ndamaged] = steps[i];
			e->damaged_from_attempt[e->ndamaged++] = from;
		}
	}
}

/*
 * The watchdog of an attempt, sized from the uninterrupted run: an attempt
 * redoes at most the whole run plus a restore, so K times the golden wall
 * time plus a launch allowance, never under a floor (a loaded 2-core CI
 * machine; see the figures in README.md), and never over the scenario's
 * timeout_s, which is the upper bound (default 120). Without a golden time
 * (an old cache entry) it is timeout_s.
 */
#define WATCHDOG_K 10
#define WATCHDOG_ALLOWANCE_S 10
#define WATCHDOG_FLOOR_S 30

static int attempt_watchdog(const harness_scenario *s, double golden_s)
{
	if (golden_s <= 0)
		return s->timeout_s;
	double w = WATCHDOG_K * golden_s + WATCHDOG_ALLOWANCE_S;
	if (w < WATCHDOG_FLOOR_S)
		w = WATCHDOG_FLOOR_S;
	return w < s->timeout_s ? (int)(w + 0.999) : s->timeout_s;
}

/* How the watchdog's limit came about, for the hang sentence. */
static void watchdog_why(const harness_scenario *s, double golden_s, int limit, char *buf, size_t len)
{
	if (golden_s <= 0)
		snprintf(buf, len, "its limit: the scenario's timeout_s, %d s (no time stored for the uninterrupted run)",
			 limit);
	else if (limit == s->timeout_s)
		snprintf(buf, len, "its limit: the scenario's timeout_s, %d s", limit);
	else
		snprintf(buf, len, "its limit: %d s, at least %d s and %d x the uninterrupted run's %.2f s + %d s", limit,
			 WATCHDOG_FLOOR_S, WATCHDOG_K, golden_s, WATCHDOG_ALLOWANCE_S);
}

/* A hang is a verdict: FAIL, saying where each rank was (hang.c). */
static void hang_verdict(const harness_scenario *s, harness_result *r, const char *trail, const char *ck,
			 int attempt, const harness_job_result *jr, double golden_s, int limit, const char *log)
{
	char where[800], why[200];
	harness_hang_describe(trail, ck, harness_attempt_ranks(s, attempt), attempt, jr->seconds, where, sizeof where);
	watchdog_why(s, golden_s, limit, why, sizeof why);
	r->verdict = HARNESS_FAIL;
	snprintf(r->sentence, sizeof r->sentence, "%s (%s); see %s", where, why, log);
}

static void run_scenario(const harness_scenario *s, const harness_opts *o, harness_result *r)
{
	char dir[600], gold[1200], plan[1200], faultlog[1200], ck[1200];
	char traj[HARNESS_MAX_ATTEMPTS][1200];
	const char *trajs[HARNESS_MAX_ATTEMPTS];
	int fired[HARNESS_MAX_FAULTS] = { 0 }, damaged[HARNESS_MAX_DAMAGE] = { 0 };
	FILE *damage_log = NULL;
	double t0 = now(), golden_s;

	memset(r, 0, sizeof *r);
	snprintf(r->name, sizeof r->name, "%s", s->name);
	snprintf(r->file, sizeof r->file, "%s", s->file);
	r->faults_planned = s->nfaults + s->ndamage;
	if (via_shim(s, o) && harness_shim_blind_spot(s, r->sentence, sizeof r->sentence)) {
		r->verdict = HARNESS_SKIP;      /* said why; never a pass */
		return;
	}
	if (o->work) {
		snprintf(dir, sizeof dir, "%s", o->work);
		mkdir(dir, 0755);
	} else {
		char prefix[160];
		snprintf(prefix, sizeof prefix, "ckpt-harness-%s", s->name);
		int rc = harness_workdir_create(dir, sizeof dir, harness_workdir_tmp(), prefix);
		if (rc < 0) {
			harness_fail(r, "cannot create a work directory %s: %s", dir, strerror(-rc));
			return;
		}
	}
	snprintf(r->workdir, sizeof r->workdir, "%s", dir);
	harness_nodes_begin(s);

	if (golden(s, o, r, gold, sizeof gold, &golden_s) < 0)
		goto out;
	int watchdog = attempt_watchdog(s, golden_s);

	snprintf(plan, sizeof plan, "%s/plan.txt", dir);
	snprintf(faultlog, sizeof faultlog, "%s/faults", dir);
	snprintf(ck, sizeof ck, "%s/ckpt", dir);
	if (harness_plan_write(plan, s->faults, s->nfaults) < 0) {
		harness_fail(r, "cannot write the fault plan %s", plan);
		goto out;
	}
	int k, power = 0, since_power_cut = 0;
	char latest_bad[512] = "", seal_bad[1024] = "";
	const char *gens = s->trainer.generations[0] ? s->trainer.generations : NULL;
	harness_expect exp = s->expect;
	exp.keep = s->trainer.keep;      /* 0 for a foreign program that did not say: every acknowledgement counts */
	for (int i = 0; i < s->nfaults; i++)
		power |= s->faults[i].action == HARNESS_POWER_LOSS;
	for (k = 0; k < s->max_attempts; k++) {
		char log[1200], status[32], undo[1200], trail[1200];
		harness_job_result jr;
		snprintf(traj[k], sizeof traj[k], "%s/attempt-%d.jsonl", dir, k + 1);
		snprintf(log, sizeof log, "%s/attempt-%d.log", dir, k + 1);
		snprintf(trail, sizeof trail, "%s/trail-%d", dir, k + 1);
		trajs[k] = traj[k];
		if (power) {
			/* libckpt keeps an undo record of this attempt's changes, for a power cut */
			char keepdir[1300];
			snprintf(undo, sizeof undo, "%s/undo-%d", dir, k + 1);
			snprintf(keepdir, sizeof keepdir, "%s.keep", undo);
			mkdir(keepdir, 0755);
		}
		int rc = job(s, o, r, dir, traj[k], ck, k + 1, s->nfaults ? plan : NULL, faultlog, power ? undo : NULL,
			     trail, log, 1, watchdog, 0, &jr);
		if (rc < 0) {
			harness_fail(r, "cannot launch mpirun: %s", strerror(-rc));
			goto out;
		}
		if (harness_interrupted()) {
			harness_fail(r, "interrupted");
			goto out;
		}
		if (jr.timed_out) {
			hang_verdict(s, r, trail, ck, k + 1, &jr, golden_s, watchdog, log);
			r->attempts = k + 1;
			harness_story_collect(&r->story, s, gold, trajs, k + 1, faultlog);
			read_fault_logs(s, faultlog, r, fired);
			for (int i = 0; i < s->nfaults; i++)
				r->faults_fired += fired[i] > 0;
			if (damage_log)
				fclose(damage_log);
			goto out;
		}
		if (s->nfaults && k + 1 <= HARNESS_MAX_ATTEMPTS)
			exp.restore_faulted[k + 1] |= (unsigned char)fired_in_attempt(s, faultlog, k + 1, is_restore_fault);
		end_status(traj[k], status, sizeof status);
		if (strcmp(status, "done") == 0 || strcmp(status, "failed") == 0) {
			k++;
			break;
		}
		/* damage the injector did at a step boundary counts from the next attempt on */
		note_damage(&exp, log, ck, gens, k + 2);
		/* a crash: a power cut drops what was not durable, since the last cut, in every attempt ... */
		if (power && fired_in_attempt(s, faultlog, k + 1, is_power_loss)) {
			char p[1200], prefix[HARNESS_MAX_ATTEMPTS][1200];
			const char *prefixes[HARNESS_MAX_ATTEMPTS];
			int np = 0;
			for (int a = since_power_cut; a <= k; a++, np++) {
				snprintf(prefix[np], sizeof prefix[np], "%s/undo-%d", dir, a + 1);
				prefixes[np] = prefix[np];
			}
			snprintf(p, sizeof p, "%s/damage.log", dir);
			FILE *pl = fopen(p, "a");
			int rc2 = harness_powerloss_apply(prefixes, np, harness_ranks_max(s), ck, pl);
			if (pl)
				fclose(pl);
			if (rc2 < 0) {
				harness_fail(r, "cannot simulate the power cut after attempt %d: %s (undo records %s/undo-*)",
					     k + 1, strerror(-rc2), dir);
				goto out;
			}
			since_power_cut = k + 1;
		}
		/* a lost node takes its node-local directory with it; the next attempt runs without it or on a replacement */
		char nerr[300], nlog[1200];
		snprintf(nlog, sizeof nlog, "%s/nodes.log", dir);
		int wiped = harness_nodes_wiped();
		/* fewer ranks than the generations were saved by: libckpt reshards, so nothing acknowledged may be lost */
		int nrc = harness_nodes_after_attempt(s, faultlog, k + 1, ck, nlog, nerr, sizeof nerr);
		/* tiered storage: what only the fast tier held is gone with the node */
		if (harness_nodes_wiped() > wiped && k + 2 <= HARNESS_MAX_ATTEMPTS)
			exp.fast_wiped[k + 2] = 1;
		if (nrc == 0 && k + 2 <= HARNESS_MAX_ATTEMPTS && harness_elastic_refused(s, k + 2))
			exp.restore_faulted[k + 2] = 1;      /* a world size reftrain refuses: nothing to restore into */
		if (nrc < 0) {
			harness_fail(r, "%s", nerr);
			goto out;
		}
		/* libckpt's LATEST, not a name another program or backend may use */
		if (!latest_bad[0] && !s->trainer.ncommand && !harness_foreign_backend(s))
			check_latest(ck, latest_bad, sizeof latest_bad);
		if (!seal_bad[0] && s->trainer.encrypt)      /* sealed: no two files may share a stream header */
			harness_seal_audit(ck, seal_bad, sizeof seal_bad);
		/* ... damage at rest strikes, then the scheduler restarts the job */
		char dlog[1200];
		snprintf(dlog, sizeof dlog, "%s/damage-after-%d.log", dir, k + 1);
		for (int i = 0; i < s->ndamage; i++) {
			if (s->damage[i].after_attempt != k + 1)
				continue;
			if (!damage_log)
				damage_log = fopen(dlog, "a");
			if (damage_log)
				damaged[i] += harness_damage_apply(&s->damage[i], ck, gens, damage_log);
		}
		if (damage_log) {
			fclose(damage_log);
			damage_log = NULL;
			note_damage(&exp, dlog, ck, gens, k + 2);
		}
	}
	r->attempts = k;
	harness_oracle_compare(gold, trajs, k, s->trainer.steps, &exp, &r->oracle);
	r->verdict = r->oracle.verdict;
	harness_transitions_find(gold, trajs, k, ck, &r->transitions);
	harness_story_collect(&r->story, s, gold, trajs, k, faultlog);
	harness_telemetry_collect(&r->story.tele, ck);
	snprintf(r->sentence, sizeof r->sentence, "%s", r->oracle.sentence);
	if (r->oracle.lost_acked > 0) {
		/* say why, when the evidence does: the library's own retention removed it */
		char name[32];
		snprintf(name, sizeof name, "step-%08" PRId64, r->oracle.lost_acked);
		if (retention_deleted(ck, name)) {
			size_t used = strlen(r->sentence);
			snprintf(r->sentence + used, sizeof r->sentence - used,
				 "; libckpt's journal says its retention deleted %s", name);
		}
	}
	if (latest_bad[0] && r->verdict == HARNESS_PASS) {
		r->verdict = HARNESS_FAIL;
		snprintf(r->sentence, sizeof r->sentence, "%s", latest_bad);
	}
	if (seal_bad[0] && r->verdict == HARNESS_PASS) {
		r->verdict = HARNESS_FAIL;
		snprintf(r->sentence, sizeof r->sentence, "%s", seal_bad);
	}

	read_fault_logs(s, faultlog, r, fired);
	for (int i = 0; i < s->ndamage; i++) {
		r->faults_fired += damaged[i] > 0;
		if (!damaged[i] && r->verdict == HARNESS_PASS) {
			r->verdict = HARNESS_ERROR;
			snprintf(r->sentence, sizeof r->sentence,
				 "fault did not fire: %s:%d (damage to %s/%s after attempt %d) matched no file, so this "
				 "scenario tested nothing", s->file, s->damage[i].line, s->damage[i].generation,
				 s->damage[i].file, s->damage[i].after_attempt);
		}
	}
	for (int i = 0; i < s->nfaults; i++) {
		r->faults_fired += fired[i] > 0;
		if (!fired[i] && r->verdict == HARNESS_PASS) {
			char desc[64];
			harness_fault_describe(&s->faults[i], desc, sizeof desc);
			r->verdict = HARNESS_ERROR;
			snprintf(r->sentence, sizeof r->sentence,
				 "fault did not fire: %s:%d (%s at %s%s%s) was never reached, so this scenario tested nothing",
				 s->file, s->fault_line[i], desc, s->faults[i].phase[0] ? s->faults[i].phase : "any phase",
				 s->faults[i].op[0] ? " / " : "", s->faults[i].op);
		}
	}
out:
	r->seconds = now() - t0;
	if (r->verdict == HARNESS_PASS && !o->keep && !o->work) {
		harness_workdir_remove(dir);
		r->workdir[0] = '\0';
	} else if (!o->work && r->workdir[0]) {
		harness_workdir_keep(dir);      /* evidence: the start-up sweep leaves it */
	}
}

void harness_run_scenario(const harness_scenario *s, const harness_opts *o, harness_result *r)
{
	if (o->reach) {
		/* every job of this scenario records the seeded bugs' sites it reaches (run.h) */
		char path[PATH_MAX];
		int fd;
		snprintf(path, sizeof path, "%s/%s.reach", o->reach, s->name);
		if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) >= 0)
			close(fd);
		setenv("CKPT_REACH_LOG", path, 1);
	}
	if (!o->ckpt_backend || s->trainer.ncommand) {
		run_scenario(s, o, r);
		if (o->reach)
			unsetenv("CKPT_REACH_LOG");
		return;
	}
	/* --ckpt-backend: the same scenario with reftrain checkpointing through that backend */
	harness_scenario *b = malloc(sizeof *b);
	if (!b) {
		memset(r, 0, sizeof *r);
		snprintf(r->name, sizeof r->name, "%s", s->name);
		harness_fail(r, "out of memory");
		return;
	}
	*b = *s;
	snprintf(b->trainer.ckpt_backend, sizeof b->trainer.ckpt_backend, "%s", o->ckpt_backend);
	run_scenario(b, o, r);
	free(b);
	if (o->reach)
		unsetenv("CKPT_REACH_LOG");
}

int harness_record_run(const harness_scenario *s, const harness_opts *o, const char *dir, const char *traj,
		       const char *ckdir, const char *undo, const char *log, harness_job_result *jr)
{
	harness_result r;

	memset(&r, 0, sizeof r);
	return job(s, o, &r, dir, traj, ckdir, 1, NULL, NULL, undo, NULL, log, 0, s->timeout_s, 0, jr);
}
