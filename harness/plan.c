#include "plan.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const action_names[] = { "kill", "errno", "short", "torn", "delay", "power_loss", "damage", "node_loss" };

const char *harness_action_name(enum harness_action a)
{
	return (unsigned)a < HARNESS_ACTION_COUNT ? action_names[a] : "?";
}

static const struct { const char *name; int err; } errnos[] = {
	{ "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EDQUOT", EDQUOT }, { "EINTR", EINTR },
	{ "EACCES", EACCES }, { "EROFS", EROFS }, { "ENOMEM", ENOMEM }, { "EAGAIN", EAGAIN },
	{ "EBADF", EBADF }, { "EFBIG", EFBIG }, { "ENOENT", ENOENT }, { "EEXIST", EEXIST },
};

int harness_errno_parse(const char *name)
{
	for (size_t i = 0; i < sizeof errnos / sizeof *errnos; i++)
		if (strcmp(errnos[i].name, name) == 0)
			return errnos[i].err;
	return 0;
}

const char *harness_errno_name(int err)
{
	for (size_t i = 0; i < sizeof errnos / sizeof *errnos; i++)
		if (errnos[i].err == err)
			return errnos[i].name;
	return "E?";
}

const char *harness_errno_list(void)
{
	return "EIO, ENOSPC, EDQUOT, EINTR, EACCES, EROFS, ENOMEM, EAGAIN, EBADF, EFBIG, ENOENT, EEXIST";
}

void harness_fault_describe(const harness_fault *f, char *buf, unsigned long len)
{
	switch (f->action) {
	case HARNESS_ERRNO:
		if (f->times)
			snprintf(buf, len, "errno:%s x%d", harness_errno_name(f->err), f->times);
		else
			snprintf(buf, len, "errno:%s", harness_errno_name(f->err));
		break;
	case HARNESS_SHORT: snprintf(buf, len, "short:%ld", f->arg); break;
	case HARNESS_TORN: snprintf(buf, len, "torn:%ld+kill", f->arg); break;
	case HARNESS_DELAY: snprintf(buf, len, "delay_ms:%ld", f->arg); break;
	case HARNESS_POWER_LOSS: snprintf(buf, len, "power_loss"); break;
	case HARNESS_NODE_LOSS: snprintf(buf, len, "node_loss:%d%s", f->node, f->arg ? "+replace" : ""); break;
	case HARNESS_DAMAGE:
		snprintf(buf, len, "%s:%s", f->dkind == 0 ? "bitflip" : f->dkind == 1 ? "truncate" : "delete", f->target);
		break;
	default: snprintf(buf, len, "kill"); break;
	}
}

int harness_plan_write(const char *path, const harness_fault *f, int n)
{
	FILE *out = fopen(path, "w");

	if (!out)
		return -errno;
	for (int i = 0; i < n; i++)
		fprintf(out, "fault attempt=%d rank=%d step=%" PRId64 " phase=%s op=%s nth=%d times=%d path=%s "
			"action=%s arg=%ld errno=%d dkind=%d target=%s doff=%" PRId64 " dseed=%" PRId64 " dsize=%" PRId64 " node=%d rpn=%d\n",
			f[i].attempt, f[i].rank, f[i].step, f[i].phase[0] ? f[i].phase : "*", f[i].op[0] ? f[i].op : "*",
			f[i].nth, f[i].times, f[i].path[0] ? f[i].path : "*", harness_action_name(f[i].action), f[i].arg,
			f[i].err, f[i].dkind, f[i].target[0] ? f[i].target : "*", f[i].doff, f[i].dseed, f[i].dsize, f[i].node, f[i].rpn);
	if (fclose(out) != 0)
		return -errno;
	return 0;
}

static int parse_line(char *line, harness_fault *f)
{
	char *save = NULL, *tok = strtok_r(line, " \t\n", &save);

	if (!tok || strcmp(tok, "fault") != 0)
		return -EINVAL;
	memset(f, 0, sizeof *f);
	while ((tok = strtok_r(NULL, " \t\n", &save)) != NULL) {
		char *eq = strchr(tok, '=');
		if (!eq)
			return -EINVAL;
		*eq = '\0';
		const char *k = tok, *v = eq + 1;
		if (strcmp(k, "attempt") == 0) f->attempt = atoi(v);
		else if (strcmp(k, "rank") == 0) f->rank = atoi(v);
		else if (strcmp(k, "step") == 0) f->step = strtoll(v, NULL, 10);
		else if (strcmp(k, "nth") == 0) f->nth = atoi(v);
		else if (strcmp(k, "times") == 0) f->times = atoi(v);
		else if (strcmp(k, "arg") == 0) f->arg = strtol(v, NULL, 10);
		else if (strcmp(k, "errno") == 0) f->err = atoi(v);
		else if (strcmp(k, "dkind") == 0) f->dkind = atoi(v);
		else if (strcmp(k, "doff") == 0) f->doff = strtoll(v, NULL, 10);
		else if (strcmp(k, "dseed") == 0) f->dseed = strtoll(v, NULL, 10);
		else if (strcmp(k, "dsize") == 0) f->dsize = strtoll(v, NULL, 10);
		else if (strcmp(k, "node") == 0) f->node = atoi(v);
		else if (strcmp(k, "rpn") == 0) f->rpn = atoi(v);
		else if (strcmp(k, "target") == 0) snprintf(f->target, sizeof f->target, "%s", strcmp(v, "*") ? v : "");
		else if (strcmp(k, "phase") == 0) snprintf(f->phase, sizeof f->phase, "%s", strcmp(v, "*") ? v : "");
		else if (strcmp(k, "op") == 0) snprintf(f->op, sizeof f->op, "%s", strcmp(v, "*") ? v : "");
		else if (strcmp(k, "path") == 0) snprintf(f->path, sizeof f->path, "%s", strcmp(v, "*") ? v : "");
		else if (strcmp(k, "action") == 0) {
			int a;
			for (a = 0; a < HARNESS_ACTION_COUNT && strcmp(v, action_names[a]) != 0; a++)
				;
			if (a == HARNESS_ACTION_COUNT)
				return -EINVAL;
			f->action = (enum harness_action)a;
		} else
			return -EINVAL;
	}
	return 0;
}

int harness_plan_read(const char *path, harness_fault **out, int *n)
{
	FILE *in = fopen(path, "r");
	char line[512];
	int cap = 0, rc = 0;

	*out = NULL;
	*n = 0;
	if (!in)
		return -errno;
	while (fgets(line, sizeof line, in)) {
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 8;
			harness_fault *g = realloc(*out, sizeof *g * (size_t)cap);
			if (!g) {
				rc = -ENOMEM;
				break;
			}
			*out = g;
		}
		if ((rc = parse_line(line, &(*out)[*n])) < 0)
			break;
		(*n)++;
	}
	fclose(in);
	if (rc < 0) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return rc;
}
