/*
 * reftrain's checkpointing through a backend (include/reftrain/backend.h):
 * the registry's components become the backend's tensor table, MPI becomes
 * its communicator, and every outcome is agreed across ranks before the
 * trainer acts on it. The backend is the built-in libckpt one, or a .so
 * named by --ckpt-backend.
 */
#ifndef REFTRAIN_CHECKPOINT_H
#define REFTRAIN_CHECKPOINT_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "reftrain/backend.h"
#include "state.h"
#include "train.h"

typedef struct reftrain_ckpt {
	const reftrain_backend *b;
	void *dl;                        /* dlopen handle of a plugged backend; NULL: built in */
	void *h;                         /* the backend's handle, between open and close */
	char path[4096];                 /* the .so loaded, for messages */
	reftrain_backend_tensor tensors[REFTRAIN_MAX_COMPONENTS * REFTRAIN_MAX_TENSORS];
	size_t ntensors;
	reftrain_backend_comm comm;
	reftrain_backend_config cfg;
	MPI_Comm mpi;                    /* the trainer's communicator: channel 0 */
	MPI_Comm bg;                     /* channel 1, a duplicate (--ckpt-async), else MPI_COMM_NULL */
} reftrain_ckpt;

/*
 * Local, before MPI_Init. Choose the backend: spec NULL is the built-in
 * libckpt; a spec with a '/' or ending in ".so" is a path; otherwise a name,
 * <dir of reftrain>/../lib/reftrain-backend-NAME.so. 0, or -EINVAL with a
 * sentence in err (what, which file, what would be valid): the caller exits 2.
 */
int reftrain_ckpt_load(reftrain_ckpt *k, const char *spec, char *err, size_t len);

/* Collective. 0, or < 0 with the lowest failing rank's message in err, on every rank. */
int reftrain_ckpt_open(reftrain_ckpt *k, reftrain_trainer *t, char *err, size_t len);
/* Collective; also unloads the backend. */
void reftrain_ckpt_close(reftrain_ckpt *k);

/*
 * Collective. 0: restored (info filled, trainer state replaced and
 * re-derived); REFTRAIN_BACKEND_NOTHING: nothing to restore, fresh start;
 * < 0: err says why (also when ranks restored different steps, or the
 * restored state fails the trainer's checks).
 */
int reftrain_ckpt_restore(reftrain_ckpt *k, reftrain_trainer *t, reftrain_backend_restored *info, char *err,
			  size_t len);

/* Collective. Save the state after step `step`. */
int reftrain_ckpt_save(reftrain_ckpt *k, reftrain_trainer *t, char *err, size_t len);
/*
 * Rank 0, after a save: write the alerts libckpt raised for it to the
 * trajectory, one {"event":"alert",...} record each (the built-in libckpt
 * backend only; other backends raise none). Timing-dependent, so the oracle
 * never compares them. 0 or -errno.
 */
int reftrain_ckpt_write_alerts(reftrain_ckpt *k, int fd);
/* The same for the background save just reported (--ckpt-async). */
int reftrain_ckpt_write_async_alerts(reftrain_ckpt *k, int fd);

/* Local: the backend's generations, newest first (see reftrain_backend.list). */
int reftrain_ckpt_list(reftrain_ckpt *k, reftrain_backend_generation *gens, int max, char *err, size_t len);

#endif
