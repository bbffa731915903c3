/*
 * Opening a file the harness reads but did not write itself, or that
 * someone else could have replaced (a checkpoint root, a golden cache, a
 * journal, a job folder): never through a symbolic link, never blocking on
 * a FIFO or a device, and only a regular file.
 */
#ifndef HARNESS_REGFILE_H
#define HARNESS_REGFILE_H

#include <stdio.h>
#include <sys/stat.h>

/*
 * path (relative to dirfd: a directory, or AT_FDCWD), read-only. The
 * descriptor of a regular file, with *st filled when st is not NULL; or -1
 * with errno set: ELOOP for a link, EINVAL for something there that is not a
 * regular file, else open's or fstat's.
 */
int harness_open_regular(int dirfd, const char *path, struct stat *st);

/* The same as a stdio stream (closed with fclose); NULL with errno set. */
FILE *harness_fopen_regular(int dirfd, const char *path);

#endif
