/*
 * The undo record for power-loss simulation (undo.c): written by libckpt's
 * I/O layer and by the fault shim (harness/shim), one implementation for
 * both, read by harness/powerloss.c. Armed by CKPT_UNDO_LOG.
 */
#ifndef CKPT_UNDO_H
#define CKPT_UNDO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Each returns the record's sequence number (0 when not armed); see undo.c. */
bool ckpt__undo_armed(void);
uint64_t ckpt__undo_open(int rank, const char *path, int flags);
uint64_t ckpt__undo_write(int rank, int fd, const char *path, size_t len);
uint64_t ckpt__undo_ftruncate(int rank, int fd, const char *path, off_t size);
uint64_t ckpt__undo_mkdir(int rank, const char *path);
uint64_t ckpt__undo_rmdir(int rank, const char *path);
uint64_t ckpt__undo_unlink(int rank, const char *path);
uint64_t ckpt__undo_rename(int rank, const char *from, const char *to);
void ckpt__undo_fsync(int rank, int fd, const char *path);
/* The change recorded as ref did not happen. */
void ckpt__undo_failed(int rank, uint64_t ref);

#endif
