/* Elastic restore (reshard.c), called by ckpt.c when a generation's world size is not the job's. */
#ifndef CKPT_SRC_RESHARD_H
#define CKPT_SRC_RESHARD_H

#include "internal.h"

/*
 * Fill this rank's tensors (dst, file order, m->ntensors) from generation
 * `name`, saved by m->world_size ranks: names, dtypes and global sizes must
 * match; every saved shard a piece comes from is verified in full first.
 * 0, or < 0 with the error in io->err.
 */
int ckpt__reshard_read(ckpt_io *io, const char *name, const ckpt_manifest *m, ckpt_entry *const *dst);

#endif
