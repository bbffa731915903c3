/*
 * The naive backend's file: one per rank, ROOT/rank-<R>.ckpt, little endian.
 *
 *   0   "RTNAIVE1"              magic
 *   8   u64 step
 *   16  u32 rank, u32 world size
 *   24  u32 tensor count, u32 0
 *   32  per tensor: u16 name length (1..255), u8 dtype, u8 0, u32 0,
 *                   u64 element count, then the name's bytes
 *   ..  per tensor, in the same order: its elements' bytes
 *
 * The parser is the only defence the naive backend has, and all it checks
 * is that the bytes make sense for this rank's tensor table: the right
 * magic, rank and world size, the same tensors (name, dtype, count) in the
 * same order, and exactly as many bytes as they need. There is no checksum
 * and nothing ties the files of different ranks together: a stale file, a
 * flipped bit or a mix of steps passes. That is the point (DESIGN.md, issue
 * 10: the negative control).
 */
#ifndef REFTRAIN_NAIVE_FORMAT_H
#define REFTRAIN_NAIVE_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "reftrain/backend.h"

#define REFTRAIN_NAIVE_MAGIC "RTNAIVE1"
#define REFTRAIN_NAIVE_HEADER 32
#define REFTRAIN_NAIVE_ENTRY 16
#define REFTRAIN_NAIVE_MAX_NAME 255
#define REFTRAIN_NAIVE_MAX_TENSORS 4096

size_t reftrain_naive_dtype_size(reftrain_backend_dtype t);

/*
 * Bytes of the header and index for these tensors; 0 if a name is empty or
 * longer than REFTRAIN_NAIVE_MAX_NAME, or there are too many tensors.
 */
size_t reftrain_naive_index_size(const reftrain_backend_tensor *t, size_t n);
/* The whole file's size: index plus every tensor's bytes; 0 as above or on overflow. */
size_t reftrain_naive_file_size(const reftrain_backend_tensor *t, size_t n);

/* Write the header and index into buf (reftrain_naive_index_size bytes). */
void reftrain_naive_write_index(unsigned char *buf, uint64_t step, int rank, int world,
				const reftrain_backend_tensor *t, size_t n);

/*
 * Check len bytes of a file against this rank's tensor table; on success
 * *step is the file's step and *data the first tensor's bytes (the rest
 * follow in table order). 0, or -EBADMSG with what is wrong in why.
 * Never reads outside buf[0, len).
 */
int reftrain_naive_parse(const unsigned char *buf, size_t len, int rank, int world,
			 const reftrain_backend_tensor *t, size_t n, uint64_t *step,
			 const unsigned char **data, char *why, size_t why_len);

#endif
