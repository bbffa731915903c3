#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *ckpt_strerror(int code)
{
	static const char *const own[] = { "ECORRUPT", "ENOVALID", "ENOGEN", "EWORLD", "ECONFIG", "EPEER",
					   "EREFUSED" };
	int c = code < 0 ? -code : code;

	if (c >= CKPT_ECORRUPT && c <= CKPT_EREFUSED)
		return own[c - CKPT_ECORRUPT];
	switch (c) {
	case 0: return "OK";
	case EIO: return "EIO";
	case ENOSPC: return "ENOSPC";
	case EDQUOT: return "EDQUOT";
	case EINTR: return "EINTR";
	case ENOENT: return "ENOENT";
	case EEXIST: return "EEXIST";
	case EACCES: return "EACCES";
	case EPERM: return "EPERM";
	case EROFS: return "EROFS";
	case ENOMEM: return "ENOMEM";
	case EINVAL: return "EINVAL";
	case ENOTEMPTY: return "ENOTEMPTY";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case ENAMETOOLONG: return "ENAMETOOLONG";
	case EFBIG: return "EFBIG";
	case ELOOP: return "ELOOP";
	case ENOTDIR: return "ENOTDIR";
	case ENXIO: return "ENXIO";
	default: return "ERRNO";
	}
}

void ckpt__error_clear(ckpt_error *e)
{
	memset(e, 0, sizeof *e);
}

int ckpt__error_set(ckpt_error *e, int code, const char *fmt, ...)
{
	va_list ap;

	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	return code;
}

const char *ckpt_describe(int code)
{
	static const char *const own[] = {
		"a file or manifest failed its integrity check", "generations exist but none is valid",
		"no checkpoint generation", "saved with another world size", "saved by another configuration",
		"another rank failed", "the restored state was refused by the caller's validation",
	};
	int c = code < 0 ? -code : code;

	if (c >= CKPT_ECORRUPT && c <= CKPT_EREFUSED)
		return own[c - CKPT_ECORRUPT];
	return strerror(c);
}
