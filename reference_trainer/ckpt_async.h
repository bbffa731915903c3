/*
 * reftrain --ckpt-async: background saves through the built-in libckpt
 * backend (ckpt/async.h). Every call is collective and its outcome is the
 * same on every rank (libckpt agrees it), so every rank takes the same branch.
 */
#ifndef REFTRAIN_CKPT_ASYNC_H
#define REFTRAIN_CKPT_ASYNC_H

#include "backends/builtin.h"
#include "checkpoint.h"

/* Snapshot the state after step t->step and start writing it. 0 started, 1 skipped, < 0 err says why. */
int reftrain_ckpt_save_async(reftrain_ckpt *k, reftrain_trainer *t, reftrain_async_done *done, char *err, size_t len);
/* At a step boundary: progress, never waiting for the disk. */
int reftrain_ckpt_async_poll(reftrain_ckpt *k, reftrain_async_done *done, char *err, size_t len);
/* Before the end: wait until the save in flight is reported. */
int reftrain_ckpt_async_wait(reftrain_ckpt *k, reftrain_async_done *done, char *err, size_t len);

#endif
