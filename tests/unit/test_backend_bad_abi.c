/*
 * A backend .so built for another ABI: reftrain must refuse it at load time
 * (exit 2, naming both ABIs) instead of calling through a table it does not
 * understand. A fixture for tests/driver/test_backends.py.
 */
#include "reftrain/backend.h"

static const reftrain_backend table = { .abi = REFTRAIN_BACKEND_ABI + 98, .name = "from-the-future" };

__attribute__((visibility("default"))) const reftrain_backend *reftrain_backend_v1(void);

const reftrain_backend *reftrain_backend_v1(void)
{
	return &table;
}
