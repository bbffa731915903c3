#include "elastic.h"

#include <mpi.h>
#include <stdio.h>
#include <unistd.h>

#include "ckpt/fault.h"
#include "traj.h"

int reftrain_elastic_refuse(const reftrain_config *cfg, int world, int rank)
{
	char msg[512];
	size_t n = (size_t)snprintf(msg, sizeof msg, "world size %d does not divide --virtual-workers %u, so the "
				    "virtual workers cannot be spread evenly; valid world sizes:", world,
				    cfg->virtual_workers);

	for (uint32_t d = 1; d <= cfg->virtual_workers && n < sizeof msg; d++)
		if (cfg->virtual_workers % d == 0)
			n += (size_t)snprintf(msg + n, sizeof msg - n, " %u", d);
	if (rank == 0) {
		fprintf(stderr, "reftrain: %s\n", msg);
		ckpt_mutant_reached("world_refused_silently");
#ifdef CKPT_MUTANT_WORLD_REFUSED_SILENTLY
		int fd = -1;      /* mutant: refused on stderr only, as if the job had been killed */
#else
		int fd = cfg->trajectory ? reftrain_traj_open(cfg->trajectory) : -1;
#endif
		if (fd >= 0) {
			reftrain_line l;
			reftrain_line_reset(&l);
			reftrain_line_add(&l, "{\"event\":\"end\",\"status\":\"failed\",\"steps\":0,\"error\":\"%s\"}", msg);
			if (reftrain_traj_write(fd, &l) == 0)
				fsync(fd);
			close(fd);
		}
	}
	MPI_Finalize();
	return 2;
}
