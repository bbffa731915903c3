/*
 * Errors: functions return 0 or a negative errno, or one of the project codes
 * below for what errno cannot say. The context keeps the last error with
 * where it happened (rank, phase, operation, path, errno) and a sentence.
 */
#ifndef CKPT_ERROR_H
#define CKPT_ERROR_H

#include <stdint.h>

enum {
	CKPT_ECORRUPT = 1000,   /* a file or manifest failed its integrity check */
	CKPT_ENOVALID,          /* generations exist, none is valid */
	CKPT_ENOGEN,            /* no generation at all */
	CKPT_EWORLD,            /* saved with another world size (ckpt_restore reshards instead) */
	CKPT_ECONFIG,           /* saved by another configuration or state layout */
	CKPT_EPEER,             /* another rank failed; see the error's rank */
	CKPT_EREFUSED,          /* the caller's validation refused the restored state */
};

typedef struct ckpt_error {
	int code;               /* negative errno or -CKPT_E*; 0 = none */
	int rank;
	int sys_errno;
	uint64_t step;
	char phase[24];
	char op[16];
	char path[256];
	char msg[512];
} ckpt_error;

/* A short name for an error code: "EIO", "ECORRUPT", ... */
const char *ckpt_strerror(int code);
/* A sentence for an error code, errno or libckpt's own: "integrity check failed", ... */
const char *ckpt_describe(int code);

#endif
