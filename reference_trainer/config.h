/*
 * reftrain's configuration: presets and the command line.
 *
 * Everything that changes the trajectory is in reftrain_config and in its
 * hash; the world size and output paths are not, so runs on 1, 2, 4 or 8
 * ranks share a config hash and, by construction, their step records.
 */
#ifndef REFTRAIN_CONFIG_H
#define REFTRAIN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "adamw.h"
#include "model.h"
#include "scaler.h"
#include "sched.h"

#define REFTRAIN_MAX_OVERFLOW_STEPS 64

enum reftrain_resume { REFTRAIN_RESUME_NEVER = 0, REFTRAIN_RESUME_AUTO = 1 };

typedef struct reftrain_config {
	char preset[16];
	reftrain_model_cfg model;
	uint64_t seed;
	uint64_t steps;
	uint32_t virtual_workers;
	uint32_t micro_batch;        /* samples per micro-batch per virtual worker */
	uint32_t accum;              /* micro-batches per step */
	/*
	 * Steps per optimizer update (default 1): gradients accumulate across
	 * that many steps, each of which reads its own batch, and the update
	 * comes at the window's last step. Checkpoints can then fall inside a
	 * window, so the accumulated gradient is training state ("accum").
	 */
	uint32_t accum_steps;
	uint32_t samples;            /* dataset size */
	float clip_norm;
	reftrain_sched_cfg sched;
	reftrain_scaler_cfg scaler;
	reftrain_adamw_cfg adamw;
	uint64_t overflow_steps[REFTRAIN_MAX_OVERFLOW_STEPS];
	size_t n_overflow;
	uint64_t target_params;      /* large preset: size of the model */
	/*
	 * Fine-tuning: this percent of the parameters, the first ones of the
	 * flat vector (the input layer first), is frozen: never updated, its
	 * master weights and optimizer moments never change (0: none).
	 */
	uint32_t frozen_pct;

	/* not part of the trajectory */
	const char *trajectory;
	uint64_t digest_every;
	uint32_t attempt;
	const char *ckpt_dir;
	const char *ckpt_backend;     /* --ckpt-backend as given; NULL: the built-in libckpt backend */
	uint64_t ckpt_every;
	uint32_t keep;
	int resume;
	int ckpt_fatal;
	int ckpt_incremental;         /* --ckpt-incremental: libckpt's chunked, differential saves */
	uint32_t ckpt_full_every;     /* --ckpt-full-every M: every M-th incremental save is full */
	uint32_t ckpt_chunk_bytes;    /* --ckpt-chunk-bytes; 0: 4 KiB for tiny, libckpt's default otherwise */
	const char *ckpt_key_file;    /* --ckpt-key-file: sealed checkpoints (libckpt, seal.c) */
	int ckpt_async;               /* --ckpt-async: background saves (not in the config hash) */
	const char *ckpt_fast_dir;    /* --ckpt-fast-dir: tiered storage, the fast tier (not in the config hash) */
	uint32_t ckpt_durable_every;  /* --ckpt-durable-every M: the durable tier keeps multiples of M */
	int stats;
	uint64_t stop_after;          /* 0: run to steps */
	const char *test_skip_restore; /* test only: component left at its initial state */
} reftrain_config;

enum { REFTRAIN_PARSE_OK = 0, REFTRAIN_PARSE_HELP = 1, REFTRAIN_PARSE_VERSION = 2 };

/*
 * Parse argv into c. Returns REFTRAIN_PARSE_OK, REFTRAIN_PARSE_HELP (usage was
 * asked for), REFTRAIN_PARSE_VERSION (--version) or -EINVAL with a message for the user in err.
 */
int reftrain_config_parse(reftrain_config *c, int argc, char **argv, char *err, size_t errlen);
const char *reftrain_config_usage(void);

/* Canonical text of everything that determines the trajectory. */
int reftrain_config_canonical(const reftrain_config *c, char *buf, size_t len);
uint64_t reftrain_config_hash(const reftrain_config *c);

#endif
