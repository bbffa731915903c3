/*
 * The trajectory: JSONL written by rank 0, one line per record, each line
 * written with a single write(2) so a killed run leaves whole lines behind.
 */
#ifndef REFTRAIN_TRAJ_H
#define REFTRAIN_TRAJ_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* A growable line buffer. */
typedef struct reftrain_line {
	char buf[4096];
	size_t len;
	int overflow;
} reftrain_line;

void reftrain_line_reset(reftrain_line *l);
void reftrain_line_add(reftrain_line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* ,"key":"0x%08x" with the bits of f */
void reftrain_line_f32(reftrain_line *l, const char *key, float f);
/* ,"key":"%016x" */
void reftrain_line_digest(reftrain_line *l, const char *key, uint64_t d);

int reftrain_traj_open(const char *path);
/* Append l plus a newline. 0 or -errno. */
int reftrain_traj_write(int fd, reftrain_line *l);

/*
 * The ack clock: with $CKPT_ACK_LOG set, append {"t":NS,"step":S} to that
 * file right after the `committed` record of step S reached the trajectory,
 * t in CLOCK_MONOTONIC nanoseconds, the clock of libckpt's undo record, so a
 * recorder can place the acknowledgement among the save's operations. Best
 * effort, never fsynced, outside anything compared bit for bit.
 */
void reftrain_ack_note(uint64_t step);

#endif
