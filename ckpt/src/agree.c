#include <errno.h>
#include <stdlib.h>

#include "internal.h"

int ckpt__agree(ckpt_comm *comm, const ckpt_error *local, ckpt_error *out)
{
	ckpt_error *all = NULL;
	int rc;

	if (comm->rank == 0 && !(all = calloc((size_t)comm->size, sizeof *all)))
		return -ENOMEM;   /* the others will block: a crash, not a silent disagreement */
	if ((rc = comm->gather(comm->ctx, local, sizeof *local, all, 0)) < 0)
		goto out;
	if (comm->rank == 0) {
		*out = all[0];
		for (int r = 0; r < comm->size; r++)
			if (all[r].code != 0) {
				*out = all[r];
				break;
			}
	}
	rc = comm->bcast(comm->ctx, out, sizeof *out, 0);
out:
	free(all);
	return rc;
}
