/* The backends linked into reftrain itself (no --ckpt-backend). */
#ifndef REFTRAIN_BACKENDS_BUILTIN_H
#define REFTRAIN_BACKENDS_BUILTIN_H

#include "reftrain/backend.h"

/* libckpt, the same source as reftrain-backend-libckpt.so. */
const reftrain_backend *reftrain_backend_libckpt(void);

#endif
