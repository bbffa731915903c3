/*
 * The reference for the shim's undo record: the same save-like sequence as
 * `shim_victim undo DIR`, made through libckpt's own I/O layer, whose undo
 * record harness/powerloss.c reads. tests/driver/test_shim.py compares the
 * two records line by line.
 */
#include <fcntl.h>
#include <stdio.h>

#include "internal.h"

int main(int argc, char **argv)
{
	ckpt_error err;
	ckpt_io io = { .rootfd = -1, .root = NULL, .rank = 0, .step = 0, .phase = NULL, .err = &err, .journal = NULL };
	char tmp[CKPT_PATH_MAX], fin[CKPT_PATH_MAX], shard[CKPT_PATH_MAX], old[CKPT_PATH_MAX], missing[CKPT_PATH_MAX];
	int fd;

	if (argc < 2)
		return 2;
	snprintf(missing, sizeof missing, "%s/no-such-file", argv[1]);
	snprintf(tmp, sizeof tmp, "%s/step-00000010.tmp", argv[1]);
	snprintf(fin, sizeof fin, "%s/step-00000010", argv[1]);
	snprintf(shard, sizeof shard, "%s/rank-00000.safetensors", tmp);
	snprintf(old, sizeof old, "%s/old.bin", argv[1]);
	if (ckpt__io_mkdir(&io, tmp, 0755) < 0)
		return 1;
	if ((fd = ckpt__io_open(&io, shard, O_CREAT | O_WRONLY | O_TRUNC, 0644)) < 0)
		return 1;
	if (ckpt__io_write_all(&io, fd, "0123456789", 10, shard) < 0 || ckpt__io_fsync(&io, fd, shard) < 0 ||
	    ckpt__io_ftruncate(&io, fd, 4, shard) < 0 || ckpt__io_close(&io, &fd, shard) < 0)
		return 1;
	if (ckpt__io_fsync_dir(&io, tmp) < 0 || ckpt__io_rename(&io, tmp, fin) < 0 || ckpt__io_unlink(&io, old) < 0 ||
	    ckpt__io_fsync_dir(&io, argv[1]) < 0)
		return 1;
	if (ckpt__io_rename(&io, missing, fin) == 0)
		return 1;
	return 0;
}
