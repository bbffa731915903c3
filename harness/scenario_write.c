/*
 * A harness_scenario as YAML (scenario_write.h). Every value the loader
 * fills in is written, defaults included, so that what reads back does not
 * depend on the loader's defaults staying what they are today.
 */
#include "scenario_write.h"
#include "alerts.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void harness_yaml_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", out);
		else if (*p == '\t')
			fputs("\\t", out);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(out, "\\x%02x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

/* A command item with {scenario_dir} spelled out as dir. */
static void write_arg(FILE *out, const char *arg, const char *dir)
{
	static const char ph[] = "{scenario_dir}";
	char buf[HARNESS_MAX_ARG * 8];
	size_t used = 0;

	if (!dir) {
		harness_yaml_string(out, arg);
		return;
	}
	for (const char *p = arg; *p && used + 1 < sizeof buf;) {
		if (strncmp(p, ph, sizeof ph - 1) == 0) {
			used += (size_t)snprintf(buf + used, sizeof buf - used, "%s", dir);
			p += sizeof ph - 1;
		} else {
			buf[used++] = *p++;
		}
		if (used >= sizeof buf)
			used = sizeof buf - 1;
	}
	buf[used] = '\0';
	harness_yaml_string(out, buf);
}

static void write_trainer(FILE *out, const harness_scenario *s, const char *dir)
{
	const harness_trainer *t = &s->trainer;

	fputs("trainer:\n", out);
	if (t->ncommand) {
		fputs("  command: [", out);
		for (int i = 0; i < t->ncommand; i++) {
			fputs(i ? ", " : "", out);
			write_arg(out, t->command[i], dir);
		}
		fprintf(out, "]\n  launcher: %s\n  checkpoint_root: \"{ckpt_dir}\"\n  beacon: %s\n", t->launcher,
			t->beacon ? "true" : "false");
		if (t->generations[0]) {
			fputs("  generations: ", out);
			harness_yaml_string(out, t->generations);
			fputc('\n', out);
		}
		/* what the loader assumes of a program that does not say: every 1, keep unknown (0) */
		if (t->every != 1 || t->keep) {
			fprintf(out, "  checkpoint: {every: %" PRId64, t->every);
			if (t->keep)
				fprintf(out, ", keep: %d", t->keep);
			fputs("}\n", out);
		}
	} else {
		fprintf(out, "  preset: %s\n  checkpoint: {every: %" PRId64 ", keep: %d", t->preset, t->every, t->keep);
		if (t->incremental)
			fputs(", incremental: true", out);
		if (t->full_every)
			fprintf(out, ", full_every: %d", t->full_every);
		if (t->async)
			fputs(", async: true", out);
		if (t->encrypt)
			fputs(", encrypt: true", out);
		if (t->tiered)
			fputs(", tiered: true", out);
		fprintf(out, "}\n  accum_steps: %d\n", t->accum_steps);
		if (t->frozen)
			fprintf(out, "  frozen: %d\n", t->frozen);
		if (t->test_skip_restore[0])
			fprintf(out, "  test_skip_restore: %s\n", t->test_skip_restore);
		if (t->ckpt_backend[0]) {
			fputs("  ckpt_backend: ", out);
			harness_yaml_string(out, t->ckpt_backend);
			fputc('\n', out);
		}
	}
	fprintf(out, "  world_size: %d\n  steps: %" PRId64 "\n  seed: %" PRId64 "\n", t->world_size, t->steps, t->seed);
	if (t->nodes > 1)
		fprintf(out, "  nodes: %d\n", t->nodes);
	for (int i = 0; i < t->nrestart_ranks; i++)      /* elastic.h: the restarts' world sizes */
		fprintf(out, "%s%d%s", i ? ", " : "restart: {ranks: [", t->restart_ranks[i],
			i + 1 == t->nrestart_ranks ? "]}\n" : "");
}

static void write_damage_do(FILE *out, int kind, const char *target, int64_t off, int64_t seed, int64_t size,
			    const harness_damage *g)
{
	static const char *const kinds[] = { "bitflip", "truncate", "delete", "overwrite" };

	fprintf(out, "{%s: ", kinds[kind < 0 || kind > 3 ? 0 : kind]);
	harness_yaml_string(out, target);
	if (kind == HARNESS_BITFLIP) {
		if (off != INT64_MIN)
			fprintf(out, ", offset: %" PRId64, off);
		fprintf(out, ", seed: %" PRId64, seed);
	} else if (kind == HARNESS_TRUNCATE) {
		fprintf(out, ", size: %" PRId64, size);
	}
	if (g && g->kind == HARNESS_OVERWRITE) {     /* tampering: between attempts only */
		fputs(", from: ", out);
		harness_yaml_string(out, g->from);
	}
	if (g && g->recompute)
		fputs(", recompute: true", out);
	fputs("}\n", out);
}

static void write_fault(FILE *out, const harness_fault *f)
{
	fprintf(out, "  - when: {attempt: %d", f->attempt);
	if (f->rank >= 0)
		fprintf(out, ", rank: %d", f->rank);
	if (f->rpn > 0)
		fprintf(out, ", node: %d", f->node);
	if (f->step >= 0)
		fprintf(out, ", step: %" PRId64, f->step);
	if (f->phase[0])
		fprintf(out, ", phase: %s", f->phase);
	if (f->op[0])
		fprintf(out, ", op: %s", f->op);
	if (f->path[0]) {
		fputs(", path: ", out);
		harness_yaml_string(out, f->path);
	}
	fprintf(out, ", nth: %d}\n    do: ", f->nth);
	switch (f->action) {
	case HARNESS_KILL: fputs("kill\n", out); break;
	case HARNESS_POWER_LOSS: fputs("power_loss\n", out); break;
	case HARNESS_SHORT: fprintf(out, "{short: %ld}\n", f->arg); break;
	case HARNESS_TORN: fprintf(out, "{torn: %ld, then: kill}\n", f->arg); break;
	case HARNESS_DELAY: fprintf(out, "{delay_ms: %ld}\n", f->arg); break;
	case HARNESS_ERRNO:
		fprintf(out, "{errno: %s", harness_errno_name(f->err));
		if (f->times)
			fprintf(out, ", times: %d", f->times);
		fputs("}\n", out);
		break;
	case HARNESS_DAMAGE:
		write_damage_do(out, f->dkind, f->target, f->doff, f->dseed, f->dsize, NULL);
		break;
	case HARNESS_NODE_LOSS: fprintf(out, "{node_loss: true, replace: %s}\n", f->arg ? "true" : "false"); break;
	default: fputs("kill\n", out); break;
	}
}

/* restored_from / max_lost_steps: a scalar, or a mapping from attempt to step. */
static void write_expect_steps(FILE *out, const char *key, int64_t scalar, const int64_t *at)
{
	int any = 0;

	if (scalar != -1) {
		fprintf(out, ", %s: %" PRId64, key, scalar);
		return;
	}
	for (int a = 2; a <= HARNESS_MAX_ATTEMPTS; a++) {
		if (at[a] == -1)
			continue;
		if (any)
			fputs(", ", out);
		else
			fprintf(out, ", %s: {", key);
		fprintf(out, "%d: ", a);
		if (at[a] == HARNESS_EXPECT_FRESH)
			fputs("none", out);
		else
			fprintf(out, "%" PRId64, at[a]);
		any = 1;
	}
	if (any)
		fputc('}', out);
}

int harness_scenario_write(FILE *out, const harness_scenario *s, const char *comment, const char *scenario_dir)
{
	const harness_expect *e = &s->expect;

	for (const char *p = comment; p && *p;) {
		const char *nl = strchr(p, '\n');
		int n = nl ? (int)(nl - p) : (int)strlen(p);
		fprintf(out, "#%s%.*s\n", n ? " " : "", n, p);
		p += n + (nl != NULL);
	}
	fprintf(out, "name: %s\n", s->name);
	if (s->description[0]) {
		fputs("description: ", out);
		harness_yaml_string(out, s->description);
		fputc('\n', out);
	}
	/* before the faults, which are checked against them */
	fprintf(out, "max_attempts: %d\ntimeout_s: %d\n", s->max_attempts, s->timeout_s);
	write_trainer(out, s, scenario_dir);
	if (s->nfaults || s->ndamage)
		fputs("faults:\n", out);
	for (int i = 0; i < s->nfaults; i++)
		write_fault(out, &s->faults[i]);
	for (int i = 0; i < s->ndamage; i++) {
		const harness_damage *g = &s->damage[i];
		char target[160];
		snprintf(target, sizeof target, "%s/%s", g->generation, g->file);
		fprintf(out, "  - when: {after_attempt: %d}\n    do: ", g->after_attempt);
		write_damage_do(out, (int)g->kind, target, g->offset, g->seed, g->size, g);
	}
	fprintf(out, "expect: {outcome: %s", e->outcome == HARNESS_CLEAN_FAILURE ? "clean_failure" : "resume_bitwise");
	if (e->outcome == HARNESS_CLEAN_FAILURE) {
		fputs(", error: ", out);
		harness_yaml_string(out, e->error);
	}
	write_expect_steps(out, "restored_from", e->restored_from, e->restored_from_at);
	write_expect_steps(out, "max_lost_steps", e->max_lost_steps, e->max_lost_at);
	if (e->refused[0]) {
		fputs(", refused: ", out);
		harness_yaml_string(out, e->refused);
	}
	harness_alerts_write(out, s);
	fputs("}\n", out);
	return ferror(out) ? -EIO : 0;
}

int harness_scenario_to_text(const harness_scenario *s, const char *comment, const char *scenario_dir, char **text,
			     size_t *len)
{
	FILE *f = open_memstream(text, len);
	int rc;

	if (!f)
		return -ENOMEM;
	rc = harness_scenario_write(f, s, comment, scenario_dir);
	if (fclose(f) != 0 || rc < 0) {
		free(*text);
		*text = NULL;
		return -ENOMEM;
	}
	return 0;
}

int harness_scenario_save(const char *path, const harness_scenario *s, const char *comment, const char *scenario_dir,
			  char *err, size_t errlen)
{
	char tmp[HARNESS_SCENARIO_PATH_MAX + 16], *text = NULL;
	size_t len = 0;
	harness_scenario *back;
	int fd, rc;

	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
		snprintf(err, errlen, "%s: the path is too long", path);
		return -ENAMETOOLONG;
	}
	if ((rc = harness_scenario_to_text(s, comment, scenario_dir, &text, &len)) < 0) {
		snprintf(err, errlen, "%s: out of memory", path);
		return rc;
	}
	if (!(back = malloc(sizeof *back))) {
		free(text);
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	/* what is written must read back: a scenario the loader refuses is never left behind */
	if ((rc = harness_scenario_load_buffer(path, text, len, back, err, errlen)) < 0)
		goto out;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644)) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
		goto out;
	}
	size_t done = 0;
	while (done < len) {
		ssize_t w = write(fd, text + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = w < 0 ? -errno : -EIO;
			break;
		}
		done += (size_t)w;
	}
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0) {
		snprintf(err, errlen, "%s: cannot write: %s", path, strerror(-rc));
		unlink(tmp);
	}
out:
	free(back);
	free(text);
	return rc;
}
