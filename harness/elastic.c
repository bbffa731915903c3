#include "elastic.h"

#include <stdio.h>

#include "nodes.h"

int harness_attempt_ranks(const harness_scenario *s, int attempt)
{
	const harness_trainer *t = &s->trainer;

	if (attempt < 2 || t->nrestart_ranks == 0)
		return t->world_size;
	return t->restart_ranks[attempt - 2 < t->nrestart_ranks ? attempt - 2 : t->nrestart_ranks - 1];
}

int harness_ranks_max(const harness_scenario *s)
{
	int m = s->trainer.world_size;

	for (int i = 0; i < s->trainer.nrestart_ranks; i++)
		if (s->trainer.restart_ranks[i] > m)
			m = s->trainer.restart_ranks[i];
	return m;
}

int harness_elastic_check(const harness_scenario *s, char *err, size_t len)
{
	for (int i = 0; i < s->nfaults; i++) {
		const harness_fault *f = &s->faults[i];
		int w = harness_attempt_ranks(s, f->attempt);
		if (f->rank >= w) {
			snprintf(err, len, "rank %d is not in attempt %d, which runs %d rank%s (restart.ranks); valid: rank 0 "
				 "to %d", f->rank, f->attempt, w, w == 1 ? "" : "s", w - 1);
			return i + 1;
		}
	}
	return 0;
}

bool harness_elastic_refused(const harness_scenario *s, int attempt)
{
	int w = harness_attempt_ranks(s, attempt);

	if (s->trainer.nodes > 1)      /* a node lost without a replacement takes its ranks away */
		w = s->trainer.world_size - harness_nodes_gone() * (s->trainer.world_size / s->trainer.nodes);
	return !s->trainer.ncommand && w > 0 && 8 % w != 0;
}
