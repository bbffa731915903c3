/* The backends linked into reftrain itself (no --ckpt-backend). */
#ifndef REFTRAIN_BACKENDS_BUILTIN_H
#define REFTRAIN_BACKENDS_BUILTIN_H

#include "ckpt/alert.h"
#include "reftrain/backend.h"

/* libckpt, the same source as reftrain-backend-libckpt.so. */
const reftrain_backend *reftrain_backend_libckpt(void);

/*
 * Background saves through the built-in libckpt backend (reftrain
 * --ckpt-async; ckpt/async.h). h is the handle lk_open returned. Each is
 * collective; a save that finished during the call is reported in *done.
 */
typedef struct reftrain_async_done {
	int completed;              /* 1: a save finished */
	uint64_t step;
	int code;                   /* 0 committed; < 0 failed, err says why */
	char err[512];
} reftrain_async_done;

/* Rank 0, after a save: the alerts libckpt raised (ckpt/alert.h); *out valid until the next save. */
int reftrain_libckpt_alerts(void *h, const ckpt_alert **out);
/* Rank 0, when a background save was reported: its alerts; *out valid until the next one finishes. */
int reftrain_libckpt_async_alerts(void *h, const ckpt_alert **out);

/*
 * Local, after open: the staging copy allocated now, not in the first save;
 * the model and optimizer stages copied by the writer while the next step
 * computes (reftrain_libckpt_async_fence before the update). 0 or -ENOMEM.
 */
int reftrain_libckpt_async_prepare(void *h);
/* Local: before the optimizer update, wait until the save in flight has copied what it defers. */
void reftrain_libckpt_async_fence(void *h);
/* 0 started, 1 skipped (a save in flight), < 0 the snapshot failed (message in the backend's last_error). */
int reftrain_libckpt_save_async(void *h, uint64_t step, unsigned flags, reftrain_async_done *done);
/* At a step boundary: progress without waiting for the disk. 0 or < 0. */
int reftrain_libckpt_async_poll(void *h, reftrain_async_done *done);
/*
 * Tiered storage: the newest step drained to the durable tier (0: none);
 * wait (collective): finish the drain in flight first.
 */
uint64_t reftrain_libckpt_drained(void *h, int wait);
/* Wait until no save is in flight. 0 or < 0. */
int reftrain_libckpt_async_wait(void *h, reftrain_async_done *done);

#endif
