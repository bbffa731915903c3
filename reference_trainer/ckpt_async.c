#include <stdio.h>

#include "ckpt_async.h"

static int failed(reftrain_ckpt *k, int rc, char *err, size_t len)
{
	const char *why = k->b->last_error ? k->b->last_error(k->h) : "";
	snprintf(err, len, "%s", why && *why ? why : "background checkpoint failed");
	return rc;
}

int reftrain_ckpt_save_async(reftrain_ckpt *k, reftrain_trainer *t, reftrain_async_done *done, char *err, size_t len)
{
	/* "best" as for a synchronous save: the lowest loss so far was reached since the previous save */
	unsigned flags = t->user.best_step + t->cfg.ckpt_every > t->step ? REFTRAIN_BACKEND_SAVE_BEST : 0;
	int rc = reftrain_libckpt_save_async(k->h, t->step, flags, done);

	err[0] = '\0';
	return rc < 0 ? failed(k, rc, err, len) : rc;
}

int reftrain_ckpt_async_poll(reftrain_ckpt *k, reftrain_async_done *done, char *err, size_t len)
{
	int rc = reftrain_libckpt_async_poll(k->h, done);

	err[0] = '\0';
	return rc < 0 ? failed(k, rc, err, len) : 0;
}

int reftrain_ckpt_async_wait(reftrain_ckpt *k, reftrain_async_done *done, char *err, size_t len)
{
	int rc = reftrain_libckpt_async_wait(k->h, done);

	err[0] = '\0';
	return rc < 0 ? failed(k, rc, err, len) : 0;
}
