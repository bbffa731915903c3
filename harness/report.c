#include "report.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_version.h"

const char *harness_verdict_name(enum harness_verdict v)
{
	return v == HARNESS_PASS ? "PASS" : v == HARNESS_FAIL ? "FAIL" : v == HARNESS_SKIP ? "SKIP" : "ERROR";
}

static void restored_list(const harness_result *r, char *buf, size_t len)
{
	size_t used = 0;
	buf[0] = '\0';
	for (int i = 1; i < r->oracle.attempts && used < len; i++) {
		int64_t R = r->oracle.restored_from[i];
		used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? "," : "",
					 R >= 0 ? "" : R == -1 ? "fresh" : "none");
		if (R >= 0)
			used += (size_t)snprintf(buf + used, len - used, "%" PRId64, R);
	}
	if (!buf[0])
		snprintf(buf, len, "-");
}

/* How many scenarios crossed transition x in this way. */
static int crossed_by(const harness_result *r, int n, int x, int how)
{
	int k = 0;
	for (int i = 0; i < n; i++)
		k += harness_transitions_has(&r[i].transitions, x, how);
	return k;
}

/* One line: which transitions the restored runs crossed, and which none did. */
static void transitions_line(FILE *out, const harness_result *r, int n)
{
	int missing = 0;

	fprintf(out, "transitions crossed by restored runs:");
	for (int x = 0; x < HARNESS_TR_COUNT; x++)
		fprintf(out, " %s %d/%d", harness_transition_name(x), crossed_by(r, n, x, HARNESS_CROSSED_ACROSS),
			crossed_by(r, n, x, HARNESS_CROSSED_RESTORED_AFTER));
	fprintf(out, " (scenarios across / restored from after)\n");
	for (int x = 0; x < HARNESS_TR_COUNT; x++)
		if (!crossed_by(r, n, x, HARNESS_CROSSED_ACROSS))
			fprintf(out, "%s %s", missing++ ? "," : "transitions no restored run crossed:",
				harness_transition_name(x));
	fprintf(out, "%s", missing ? "\n" : "every transition was crossed by a restored run\n");
}

static json_t *crossings_json(const harness_transitions *t)
{
	json_t *list = json_array();
	for (int i = 0; i < t->n; i++) {
		const harness_crossing *c = &t->v[i];
		json_array_append_new(list, json_pack("{s:s,s:s,s:i,s:I,s:I}", "transition",
						      harness_transition_name(c->transition), "how",
						      harness_crossing_how_name(c->how), "attempt", c->attempt,
						      "restored_from", (json_int_t)c->restored_from, "step",
						      (json_int_t)c->step));
	}
	return list;
}

/* {"epoch_boundary": ["scenario", ...], ...}: every transition, an empty list if none crossed it. */
static json_t *transitions_summary(const harness_result *r, int n, int how)
{
	json_t *m = json_object();
	for (int x = 0; x < HARNESS_TR_COUNT; x++) {
		json_t *names = json_array();
		for (int i = 0; i < n; i++)
			if (harness_transitions_has(&r[i].transitions, x, how))
				json_array_append_new(names, json_string(r[i].name));
		json_object_set_new(m, harness_transition_name(x), names);
	}
	return m;
}

void harness_report_table(FILE *out, const harness_result *r, int n, double seconds)
{
	int pass = 0, skip = 0;

	fprintf(out, "%-40s %-7s %8s %7s %-12s %5s %8s\n", "scenario", "verdict", "attempts", "faults", "restored",
		"lost", "time");
	for (int i = 0; i < n; i++) {
		char restored[64], faults[16];
		restored_list(&r[i], restored, sizeof restored);
		snprintf(faults, sizeof faults, "%d/%d", r[i].faults_fired, r[i].faults_planned);
		fprintf(out, "%-40.40s %-7s %8d %7s %-12.12s %5" PRId64 " %7.1fs\n", r[i].name,
			harness_verdict_name(r[i].verdict), r[i].attempts, faults, restored, r[i].oracle.max_lost,
			r[i].seconds);
		pass += r[i].verdict == HARNESS_PASS;
		skip += r[i].verdict == HARNESS_SKIP;
	}
	for (int i = 0; i < n; i++)
		if (r[i].verdict != HARNESS_PASS)
			fprintf(out, "\n%s %s: %s\n  (%s%s%s)\n", harness_verdict_name(r[i].verdict), r[i].name, r[i].sentence,
				r[i].file, r[i].workdir[0] ? "; kept " : "", r[i].workdir);
	fprintf(out, "\n%d passed, %d failed", pass, n - pass - skip);
	if (skip)
		fprintf(out, ", %d skipped (cannot run in this mode, see above)", skip);
	fprintf(out, " in %.1f s\n", seconds);
	if (n > 1)
		transitions_line(out, r, n);
}

static json_t *coverage_json(const harness_result *r, int n)
{
	json_t *cov = json_object();
	for (int i = 0; i < n; i++)
		for (int k = 0; k < r[i].ncoverage; k++) {
			json_t *c = json_object_get(cov, r[i].coverage[k]);
			json_object_set_new(cov, r[i].coverage[k], json_integer(c ? json_integer_value(c) + 1 : 1));
		}
	return cov;
}

int harness_report_json(const char *path, const harness_result *r, int n, double seconds)
{
	json_t *root = json_object(), *list = json_array();
	int pass = 0, fail = 0, err = 0, skip = 0;
	double launch = 0;

	for (int i = 0; i < n; i++) {
		json_t *restored = json_array(), *lost = json_array(), *cov = json_array();
		for (int a = 1; a < r[i].oracle.attempts; a++)
			json_array_append_new(restored, r[i].oracle.restored_from[a] >= 0
							? json_integer(r[i].oracle.restored_from[a]) : json_null());
		for (int c = 0; c < r[i].oracle.ncrashes; c++)
			json_array_append_new(lost, json_integer(r[i].oracle.lost_steps[c]));
		for (int c = 0; c < r[i].ncoverage; c++)
			json_array_append_new(cov, json_string(r[i].coverage[c]));
		json_array_append_new(list, json_pack("{s:s,s:s,s:s,s:s,s:i,s:i,s:i,s:o,s:o,s:I,s:b,s:f,s:f,s:o,s:o,s:s?}",
			"name", r[i].name, "file", r[i].file, "verdict", harness_verdict_name(r[i].verdict),
			"sentence", r[i].sentence, "attempts", r[i].attempts, "faults_planned", r[i].faults_planned,
			"faults_fired", r[i].faults_fired, "restored_from", restored, "lost_steps", lost,
			"max_lost_steps", (json_int_t)r[i].oracle.max_lost, "finished", r[i].oracle.finished,
			"seconds", r[i].seconds, "launch_seconds", r[i].launch_seconds, "coverage", cov,
			"transitions", crossings_json(&r[i].transitions),
			"workdir", r[i].workdir[0] ? r[i].workdir : NULL));
		pass += r[i].verdict == HARNESS_PASS;
		fail += r[i].verdict == HARNESS_FAIL;
		err += r[i].verdict == HARNESS_ERROR;
		skip += r[i].verdict == HARNESS_SKIP;
		launch += r[i].launch_seconds;
	}
	json_object_set_new(root, "schema_version", json_integer(1));
	/* what judged: a CI result names the harness build it came from */
	json_object_set_new(root, "harness", json_pack("{s:s,s:s,s:s}", "name", "ckpt-harness", "version", CKPT_VERSION,
						       "commit", CKPT_COMMIT));
	/* resume coverage: per transition, the scenarios whose restored runs crossed it */
	json_object_set_new(root, "summary", json_pack("{s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:o,s:o}", "total", n, "passed",
						       pass, "failed", fail, "errors", err, "skipped", skip, "seconds", seconds,
						       "launch_seconds", launch, "transitions",
						       transitions_summary(r, n, HARNESS_CROSSED_ACROSS),
						       "transitions_restored_after",
						       transitions_summary(r, n, HARNESS_CROSSED_RESTORED_AFTER)));
	json_object_set_new(root, "coverage", coverage_json(r, n));
	json_object_set_new(root, "scenarios", list);
	int rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
	json_decref(root);
	return rc == 0 ? 0 : -EIO;
}

static void xml_escape(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '&': fputs("&amp;", f); break;
		case '"': fputs("&quot;", f); break;
		default:
			if ((unsigned char)*s >= 0x20 || *s == '\n' || *s == '\t')
				fputc(*s, f);
		}
	}
}

int harness_report_junit(const char *path, const harness_result *r, int n, double seconds)
{
	FILE *f = fopen(path, "w");
	int fail = 0, err = 0, skip = 0;

	if (!f)
		return -errno;
	for (int i = 0; i < n; i++) {
		fail += r[i].verdict == HARNESS_FAIL;
		err += r[i].verdict == HARNESS_ERROR;
		skip += r[i].verdict == HARNESS_SKIP;
	}
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
	fprintf(f, "<testsuites tests=\"%d\" failures=\"%d\" errors=\"%d\" skipped=\"%d\" time=\"%.3f\">\n", n, fail,
		err, skip, seconds);
	fprintf(f, "  <testsuite name=\"ckpt-harness\" tests=\"%d\" failures=\"%d\" errors=\"%d\" skipped=\"%d\" "
		"time=\"%.3f\">\n", n, fail, err, skip, seconds);
	for (int i = 0; i < n; i++) {
		fprintf(f, "    <testcase classname=\"");
		xml_escape(f, r[i].file);
		fprintf(f, "\" name=\"");
		xml_escape(f, r[i].name);
		fprintf(f, "\" time=\"%.3f\"", r[i].seconds);
		if (r[i].verdict == HARNESS_PASS) {
			fprintf(f, "/>\n");
			continue;
		}
		if (r[i].verdict == HARNESS_SKIP) {
			fprintf(f, ">\n      <skipped message=\"");
			xml_escape(f, r[i].sentence);
			fprintf(f, "\"/>\n    </testcase>\n");
			continue;
		}
		const char *tag = r[i].verdict == HARNESS_FAIL ? "failure" : "error";
		fprintf(f, ">\n      <%s message=\"", tag);
		xml_escape(f, r[i].sentence);
		fprintf(f, "\">attempts: %d, faults fired: %d/%d", r[i].attempts, r[i].faults_fired, r[i].faults_planned);
		if (r[i].workdir[0]) {
			fprintf(f, ", evidence kept in ");
			xml_escape(f, r[i].workdir);
		}
		fprintf(f, "</%s>\n    </testcase>\n", tag);
	}
	fprintf(f, "  </testsuite>\n</testsuites>\n");
	return fclose(f) == 0 ? 0 : -errno;
}

int harness_exit_code(const harness_result *r, int n)
{
	int code = 0;
	for (int i = 0; i < n; i++) {
		if (r[i].harness_error)
			return 3;
		if (r[i].verdict != HARNESS_PASS && r[i].verdict != HARNESS_SKIP)
			code = 1;
	}
	return code;
}
