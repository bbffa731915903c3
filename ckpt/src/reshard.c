/*
 * Elastic restore: a generation saved by W1 ranks restored by W2 != W1.
 *
 * The state's per-rank tensors are described globally (ckpt_state_add_tensor:
 * a rank's part is [global_offset, global_offset + local_elems) of the
 * tensor), and the manifest keeps every saved rank's slice. A rank of the new
 * job plans, tensor by tensor, which saved ranks hold its slice
 * (ckpt_reshard_plan), then verifies each of those saved shards in full with
 * the ordinary check (ckpt__shard_verify: size, header against the manifest,
 * xxh3 of every byte, or every chunk of a chunked generation) into a scratch
 * copy, and copies the pieces it needs from it. So every byte a reshard
 * copies was hash-checked with the rest of its file, a damaged shard fails
 * the generation as it would a same-size restore, and restore falls back.
 * The same world size never comes here (ckpt.c reads its own shard straight
 * into the state).
 */
#include <errno.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt/reshard.h"
#include "internal.h"
#include "reshard.h"

int ckpt_reshard_plan(const uint64_t *off, const uint64_t *len, int nsaved, uint64_t goff, uint64_t local,
		      ckpt_reshard_piece *out, int max)
{
	uint64_t cur = goff, end = goff + local;
	int n = 0;

	while (cur < end) {
		int s = -1;
		uint64_t stop = end;
		for (int r = 0; r < nsaved && s < 0; r++)
			if (len[r] && off[r] <= cur && cur - off[r] < len[r])
				s = r;
		if (s < 0)
			return -CKPT_ECORRUPT;      /* a gap: no saved rank holds element cur */
		if (off[s] + len[s] < stop)
			stop = off[s] + len[s];
		/* a lower rank that starts inside the piece takes over from there */
		for (int r = 0; r < s; r++)
			if (len[r] && off[r] > cur && off[r] < stop)
				stop = off[r];
		if (n < max && out)
			out[n] = (ckpt_reshard_piece){ .src_rank = s, .src_elem = cur - off[s], .dst_elem = cur - goff,
						       .elems = stop - cur };
		n++;
		cur = stop;
	}
	return n;
}

/* The saved slices of tensor k, one per saved rank. */
static void saved_slices(const ckpt_manifest *m, int k, uint64_t *off, uint64_t *len)
{
	ckpt_mutant_reached("reshard_wrong_slices");
	for (int s = 0; s < m->world_size; s++) {
#ifdef CKPT_MUTANT_RESHARD_WRONG_SLICES
		/* mutant: the saved ranks assumed to hold equal parts, not the slices the manifest records */
		uint64_t g = m->layout[k].global_elems, u = ckpt__layout_local(m, k, s) == g ? 0 : 1;
		off[s] = u ? g * (uint64_t)s / (uint64_t)m->world_size : 0;
		len[s] = u ? g * (uint64_t)(s + 1) / (uint64_t)m->world_size - off[s] : g;
#else
		off[s] = ckpt__layout_goff(m, k, s);
		len[s] = ckpt__layout_local(m, k, s);
#endif
	}
}

/* Every saved rank holds the tensor whole: replicated (or saved by one rank). */
static bool held_whole_by_all(const uint64_t *off, const uint64_t *len, int n, const ckpt_entry *e)
{
	for (int s = 0; s < n; s++)
		if (off[s] != 0 || len[s] != e->global_elems)
			return false;
	return e->global_offset + e->local_elems <= e->global_elems;
}

typedef struct plan {
	ckpt_reshard_piece *p;
	int n;
} plan;

static void plans_free(plan *pl, int n)
{
	for (int k = 0; pl && k < n; k++)
		free(pl[k].p);
	free(pl);
}

/* Every tensor's plan; need[s] set for each saved rank some piece comes from. */
static int plan_all(ckpt_io *io, const char *path, const ckpt_manifest *m, ckpt_entry *const *dst, plan *pl,
		    unsigned char *need)
{
	uint64_t *off = malloc((size_t)m->world_size * sizeof *off), *len = malloc((size_t)m->world_size * sizeof *len);
	int rc = 0;

	if (!off || !len) {
		rc = ckpt__io_fail(io, -ENOMEM, path, "out of memory");
		goto out;
	}
	for (int k = 0; k < m->ntensors; k++) {
		const ckpt_layout_entry *t = &m->layout[k];
		const ckpt_entry *e = dst[k];
		char esc[CKPT_NAME_MAX * 4];
		ckpt__escape(esc, sizeof esc, t->name);
		if (strcmp(e->name, t->name) != 0 || e->dtype != t->dtype || e->global_elems != t->global_elems) {
			rc = ckpt__io_fail(io, -CKPT_ECONFIG, path, "%s: tensor %s (%s x %" PRIu64 ") is not this job's %s "
					   "(%s x %" PRIu64 "): another state layout, which resharding cannot bridge", path, esc,
					   ckpt__dtype_name(t->dtype), t->global_elems, e->name, ckpt__dtype_name(e->dtype),
					   (uint64_t)e->global_elems);
			goto out;
		}
		saved_slices(m, k, off, len);
		if (held_whole_by_all(off, len, m->world_size, e))
			continue;       /* replicated: from a shard read anyway (below) */
		int n = ckpt_reshard_plan(off, len, m->world_size, e->global_offset, e->local_elems, NULL, 0);
		if (n < 0) {
			rc = ckpt__io_fail(io, -CKPT_ECORRUPT, path, "%s: tensor %s: elements %" PRIu64 " to %" PRIu64
					   " of %" PRIu64 " are not all held by the %d saved ranks", path, esc,
					   (uint64_t)e->global_offset, (uint64_t)(e->global_offset + e->local_elems),
					   t->global_elems, m->world_size);
			goto out;
		}
		if (n > 0 && !(pl[k].p = calloc((size_t)n, sizeof *pl[k].p))) {
			rc = ckpt__io_fail(io, -ENOMEM, path, "out of memory");
			goto out;
		}
		pl[k].n = ckpt_reshard_plan(off, len, m->world_size, e->global_offset, e->local_elems, pl[k].p, n);
		for (int i = 0; i < pl[k].n; i++)
			need[pl[k].p[i].src_rank] = 1;
	}
	/*
	 * A tensor every saved rank holds whole (replicated) comes from the
	 * lowest saved rank this rank reads anyway, rank 0 if none: the copies
	 * are the same bytes (a same-size restore takes each rank's own), and
	 * reading rank 0's shard on every rank for a few replicated bytes would
	 * cost a whole shard each.
	 */
	int from = 0;
	while (from < m->world_size && !need[from])
		from++;
	from = from == m->world_size ? 0 : from;
	for (int k = 0; k < m->ntensors; k++) {
		if (pl[k].p || dst[k]->local_elems == 0)
			continue;
		saved_slices(m, k, off, len);
		if (!held_whole_by_all(off, len, m->world_size, dst[k]))
			continue;
		if (!(pl[k].p = calloc(1, sizeof *pl[k].p))) {
			rc = ckpt__io_fail(io, -ENOMEM, path, "out of memory");
			goto out;
		}
		pl[k].p[0] = (ckpt_reshard_piece){ .src_rank = from, .src_elem = dst[k]->global_offset - off[from],
						   .dst_elem = 0, .elems = dst[k]->local_elems };
		pl[k].n = 1;
		need[from] = 1;
	}
out:
	free(off);
	free(len);
	return rc;
}

/*
 * Saved rank s's part, verified, into scratch buffers, then the pieces this
 * rank needs from it into the state. The scratch is sized by the manifest's
 * layout, which the shard's size bounds for a plain generation (checked
 * before anything is allocated); the verification then checks every byte.
 */
static int copy_from(ckpt_io *io, const char *name, const ckpt_manifest *m, int s, ckpt_entry *const *dst,
		     const plan *pl)
{
	ckpt_entry *tmp = calloc((size_t)m->ntensors, sizeof *tmp);
	ckpt_entry **tp = calloc((size_t)m->ntensors, sizeof *tp);
	unsigned char *direct = calloc((size_t)m->ntensors, 1);
	uint64_t total = 0;
	int rc = 0;

	if (!tmp || !tp || !direct) {
		rc = ckpt__io_fail(io, -ENOMEM, name, "out of memory");
		goto out;
	}
	for (int k = 0; k < m->ntensors; k++)
		total += ckpt__layout_local(m, k, s) * ckpt__dtype_size(m->layout[k].dtype);
	if (!m->chunk_size && (s >= m->nfiles || total > m->files[s].size)) {
		rc = ckpt__io_fail(io, -CKPT_ECORRUPT, name, "%s: the manifest gives rank %d %" PRIu64 " bytes of tensors, "
				   "more than its shard", name, s, total);
		goto out;
	}
	for (int k = 0; k < m->ntensors; k++) {
		const ckpt_reshard_piece *whole = NULL;
		tmp[k] = *dst[k];
		tmp[k].local_elems = ckpt__layout_local(m, k, s);
		tmp[k].global_offset = ckpt__layout_goff(m, k, s);
		tp[k] = &tmp[k];
		for (int i = 0; i < pl[k].n; i++)
			if (pl[k].p[i].src_rank == s && pl[k].p[i].src_elem == 0 && pl[k].p[i].elems == tmp[k].local_elems &&
			    pl[k].p[i].dst_elem + pl[k].p[i].elems <= dst[k]->local_elems)
				whole = &pl[k].p[i];
		if (whole) {      /* all of rank s's part is one piece of this rank's: read straight into the state */
			tmp[k].data = (char *)dst[k]->data + whole->dst_elem * ckpt__dtype_size(dst[k]->dtype);
			direct[k] = 1;
			continue;
		}
		tmp[k].data = malloc(tmp[k].local_elems * ckpt__dtype_size(tmp[k].dtype) + 1);
		if (!tmp[k].data) {
			rc = ckpt__io_fail(io, -ENOMEM, name, "out of memory");
			goto out;
		}
	}
	if ((rc = ckpt__shard_verify(io, name, m, s, tp)) < 0)
		goto out;
	for (int k = 0; k < m->ntensors; k++) {
		size_t sz = ckpt__dtype_size(dst[k]->dtype);
		for (int i = 0; i < pl[k].n; i++) {
			const ckpt_reshard_piece *p = &pl[k].p[i];
			if (p->src_rank != s || direct[k])
				continue;
			if (p->src_elem + p->elems > tmp[k].local_elems || p->dst_elem + p->elems > dst[k]->local_elems) {
				rc = ckpt__io_fail(io, -CKPT_ECORRUPT, name, "%s: tensor %s: rank %d's part has %" PRIu64
						   " elements, the plan reads %" PRIu64 " at %" PRIu64, name, dst[k]->name, s,
						   tmp[k].local_elems, p->elems, p->src_elem);
				goto out;
			}
			memcpy((char *)dst[k]->data + p->dst_elem * sz, (char *)tmp[k].data + p->src_elem * sz,
			       p->elems * sz);
		}
	}
out:
	for (int k = 0; tmp && direct && k < m->ntensors; k++)
		if (!direct[k])
			free(tmp[k].data);
	free(tmp);
	free(tp);
	free(direct);
	return rc;
}

int ckpt__reshard_read(ckpt_io *io, const char *name, const ckpt_manifest *m, ckpt_entry *const *dst)
{
	plan *pl = calloc((size_t)m->ntensors + 1, sizeof *pl);
	unsigned char *need = calloc((size_t)m->world_size, 1);
	int rc;

	if (!pl || !need) {
		rc = ckpt__io_fail(io, -ENOMEM, name, "out of memory");
		goto out;
	}
	if ((rc = plan_all(io, name, m, dst, pl, need)) < 0)
		goto out;
	for (int s = 0; s < m->world_size && rc == 0; s++)
		if (need[s])
			rc = copy_from(io, name, m, s, dst, pl);
out:
	plans_free(pl, m->ntensors);
	free(need);
	return rc;
}
