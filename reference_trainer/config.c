#include "config.h"
#include "suggest.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static const char usage[] =
"usage: reftrain --preset tiny|small|large --steps N --seed S --trajectory FILE [options]\n"
"\n"
"A deterministic data-parallel trainer (MPI). Its trajectory is bit-identical\n"
"run to run and for every world size that divides --virtual-workers.\n"
"\n"
"  --preset P           tiny (3.4k parameters), small (1M) or large (--params)\n"
"  --steps N            training steps to run, N >= 1 (default 60)\n"
"  --seed S             seed of data, initialization, dropout and shuffling (default 1)\n"
"  --trajectory FILE    JSONL trajectory written by rank 0 (required)\n"
"  --digest-every K     component digests every K steps; 0 never (default 1)\n"
"  --attempt N          attempt number written to the start record (default 1;\n"
"                       0: an uninterrupted run, as $CKPT_HARNESS_ATTEMPT says)\n"
"  --virtual-workers V  data-parallel workers, each with its own data shard and\n"
"                       dropout stream; the world size must divide V (default 8)\n"
"  --micro-batch B      samples per micro-batch per virtual worker\n"
"  --accum A            micro-batches accumulated per step\n"
"  --accum-steps N      steps per optimizer update: gradients accumulate across\n"
"                       N steps (their records carry \"micro\"), default 1\n"
"  --width W            hidden width (overrides the preset)\n"
"  --depth D            hidden layers (overrides the preset)\n"
"  --params N[K|M|G]    large preset: parameter count (default 16M)\n"
"  --overflow-steps L   comma-separated steps whose gradients overflow, to\n"
"                       exercise loss-scale backoff and skipped steps; 'none'\n"
"  --ckpt-dir DIR       checkpoint root\n"
"  --ckpt-backend B     checkpoint code: a backend .so (PATH, or NAME for\n"
"                       <dir of reftrain>/../lib[/ckpt-harness]/\n"
"                       reftrain-backend-NAME.so,\n"
"                       e.g. libckpt, naive); default: built-in libckpt\n"
"  --ckpt-every K       save every K steps (default 10 with --ckpt-dir)\n"
"  --keep K             generations kept by retention (default 3)\n"
"  --resume auto|never  resume from the newest valid generation (default never)\n"
"  --ckpt-fatal         a failed save stops training (default: log and go on)\n"
"  --ckpt-incremental   incremental checkpoints: only changed chunks are written\n"
"  --ckpt-full-every M  with --ckpt-incremental, every M-th save is full (default 10)\n"
"  --ckpt-chunk-bytes N with --ckpt-incremental, the chunk size (4K to 256M;\n"
"                       default 4K for the tiny preset, 1M otherwise)\n"
"  --frozen PCT         fine-tuning: the first PCT percent of the parameters are\n"
"                       frozen (never updated), 0 to 95 (default 0)\n"
"  --ckpt-key-file F   sealed checkpoints: shards and manifest encrypted and\n"
"                       authenticated with the key in F (32 bytes or 64 hex\n"
"                       digits; private: chmod 600); built-in libckpt only\n"
"  --ckpt-async         save in the background (built-in libckpt backend only):\n"
"                       snapshot at the step, write while training goes on;\n"
"                       'committed' once the save is durable\n"
"  --ckpt-fast-dir DIR  tiered storage (built-in libckpt backend): saves commit in\n"
"                       DIR (node-local) and drain to --ckpt-dir (durable)\n"
"  --ckpt-durable-every M  with --ckpt-fast-dir, the durable tier also keeps\n"
"                       every generation whose step is a multiple of M\n"
"  --help               this text\n"
"  --version            the version and the commit built from\n"
"\n"
"Exit status: 0 done, 1 runtime failure, 2 bad usage.\n";

const char *reftrain_config_usage(void)
{
	return usage;
}

static const char *const flags[] = {
	"--preset", "--steps", "--seed", "--trajectory", "--digest-every", "--attempt",
	"--virtual-workers", "--micro-batch", "--accum", "--accum-steps", "--width", "--depth", "--params",
	"--overflow-steps", "--ckpt-dir", "--ckpt-backend", "--ckpt-every", "--keep", "--resume", "--ckpt-fatal",
	"--stop-after", "--stats", "--test-skip-restore", "--help", "--version", "--ckpt-incremental",
	"--ckpt-full-every", "--ckpt-chunk-bytes", "--frozen", "--ckpt-key-file", "--ckpt-fast-dir",
	"--ckpt-durable-every", NULL,
};

static void preset_tiny(reftrain_config *c)
{
	c->model = (reftrain_model_cfg){ .d_in = 16, .width = 48, .depth = 2, .d_out = 4, .dropout = 0.1f };
	c->samples = 4096;
	c->micro_batch = 4;
	c->accum = 2;
	c->sched = (reftrain_sched_cfg){ .base_lr = 3e-3f, .min_lr = 3e-4f, .warmup_steps = 10 };
	c->scaler = (reftrain_scaler_cfg){ .init_scale = 65536.0f, .growth_factor = 2.0f,
					   .backoff_factor = 0.5f, .growth_interval = 16, .min_scale = 1.0f };
	uint64_t ov[] = { 9, 37, 38, 85 };
	memcpy(c->overflow_steps, ov, sizeof ov);
	c->n_overflow = 4;
}

static void preset_small(reftrain_config *c)
{
	c->model = (reftrain_model_cfg){ .d_in = 256, .width = 640, .depth = 3, .d_out = 16, .dropout = 0.1f };
	c->samples = 16384;
	c->micro_batch = 2;
	c->accum = 2;
	c->sched = (reftrain_sched_cfg){ .base_lr = 1e-3f, .min_lr = 1e-4f, .warmup_steps = 20 };
	c->scaler = (reftrain_scaler_cfg){ .init_scale = 65536.0f, .growth_factor = 2.0f,
					   .backoff_factor = 0.5f, .growth_interval = 50, .min_scale = 1.0f };
	uint64_t ov[] = { 9, 37 };
	memcpy(c->overflow_steps, ov, sizeof ov);
	c->n_overflow = 2;
}

/* Wide and shallow: state size is the point, compute per step stays modest. */
static void preset_large(reftrain_config *c)
{
	c->model = (reftrain_model_cfg){ .d_in = 512, .width = 0, .depth = 2, .d_out = 16, .dropout = 0.1f };
	c->samples = 8192;
	c->micro_batch = 1;
	c->accum = 1;
	c->sched = (reftrain_sched_cfg){ .base_lr = 1e-4f, .min_lr = 1e-5f, .warmup_steps = 5 };
	c->scaler = (reftrain_scaler_cfg){ .init_scale = 65536.0f, .growth_factor = 2.0f,
					   .backoff_factor = 0.5f, .growth_interval = 100, .min_scale = 1.0f };
	c->n_overflow = 0;
	c->target_params = 16u << 20;
}

static void set_defaults(reftrain_config *c)
{
	memset(c, 0, sizeof *c);
	c->steps = 60;
	c->seed = 1;
	c->virtual_workers = 8;
	c->clip_norm = 1.0f;
	c->adamw = (reftrain_adamw_cfg){ .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f };
	c->digest_every = 1;
	c->accum_steps = 1;
	c->attempt = 1;
	c->keep = 3;
	c->resume = REFTRAIN_RESUME_NEVER;
}

static int fail(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* A whole decimal number in [lo, hi], with an optional K/M/G suffix if sized. */
static int parse_u64(const char *flag, const char *s, uint64_t lo, uint64_t hi, int sized,
		     uint64_t *out, char *err, size_t len)
{
	char *end;
	uint64_t v;

	errno = 0;
	if (!s || !*s || *s == '-' || *s == '+')
		goto bad;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		goto bad;
	if (sized && *end) {
		unsigned shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
		if (!shift || end[1] || v > (UINT64_MAX >> shift))
			goto bad;
		v <<= shift;
		end++;
	}
	if (*end || v < lo || v > hi)
		goto bad;
	*out = v;
	return 0;
bad:
	return fail(err, len, "%s: '%s' is not valid; expected a whole number from %" PRIu64 " to %" PRIu64 "%s",
		    flag, s ? s : "", lo, hi, sized ? " (K, M or G suffix allowed)" : "");
}

static int parse_overflow(reftrain_config *c, const char *s, char *err, size_t len)
{
	c->n_overflow = 0;
	if (strcmp(s, "none") == 0)
		return 0;
	char buf[1024];
	if (strlen(s) >= sizeof buf)
		return fail(err, len, "--overflow-steps: list too long");
	strcpy(buf, s);
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (c->n_overflow == REFTRAIN_MAX_OVERFLOW_STEPS)
			return fail(err, len, "--overflow-steps: at most %d steps", REFTRAIN_MAX_OVERFLOW_STEPS);
		if (parse_u64("--overflow-steps", tok, 1, UINT64_MAX, 0, &c->overflow_steps[c->n_overflow], err, len))
			return -EINVAL;
		c->n_overflow++;
	}
	if (c->n_overflow == 0)
		return fail(err, len, "--overflow-steps: '%s' is empty; give steps like 9,37 or 'none'", s);
	return 0;
}

static int unknown_flag(const char *arg, char *err, size_t len)
{
	char name[64];
	const char *eq = strchr(arg, '=');
	size_t n = eq ? (size_t)(eq - arg) : strlen(arg);

	snprintf(name, sizeof name, "%.*s", (int)(n < 63 ? n : 63), arg);
	const char *s = harness_suggest(name, flags);
	if (s)
		return fail(err, len, "unknown option '%s'; did you mean '%s'? (see --help)", name, s);
	return fail(err, len, "unknown option '%s' (see --help)", name);
}

int reftrain_config_parse(reftrain_config *c, int argc, char **argv, char *err, size_t len)
{
	const char *preset = "tiny", *overflow = NULL;
	uint64_t width = 0, depth = UINT64_MAX, v, params = 0, micro = 0, accum = 0;
	int have_every = 0;

	set_defaults(c);
	/* the preset decides the defaults that the other flags override */
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--preset") == 0 && i + 1 < argc)
			preset = argv[i + 1];
	if (strcmp(preset, "tiny") == 0)
		preset_tiny(c);
	else if (strcmp(preset, "small") == 0)
		preset_small(c);
	else if (strcmp(preset, "large") == 0)
		preset_large(c);
	else
		return fail(err, len, "--preset: '%s' is not a preset; valid: tiny, small, large", preset);
	snprintf(c->preset, sizeof c->preset, "%s", preset);

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
			return REFTRAIN_PARSE_HELP;
		if (strcmp(a, "--version") == 0)
			return REFTRAIN_PARSE_VERSION;
		if (strcmp(a, "--ckpt-async") == 0) {
			c->ckpt_async = 1;
			continue;
		}
		if (strcmp(a, "--ckpt-fatal") == 0 || strcmp(a, "--stats") == 0) {
			*(a[2] == 'c' ? &c->ckpt_fatal : &c->stats) = 1;
			continue;
		}
		if (strcmp(a, "--ckpt-incremental") == 0) {
			c->ckpt_incremental = 1;
			continue;
		}
		if (strncmp(a, "--", 2) != 0)
			return fail(err, len, "unexpected argument '%s'; options start with -- (see --help)", a);
		int known = 0;
		for (size_t k = 0; flags[k]; k++)
			known |= strcmp(a, flags[k]) == 0;
		if (!known)
			return unknown_flag(a, err, len);
		if (!val)
			return fail(err, len, "%s needs a value (see --help)", a);

		if (strcmp(a, "--preset") == 0) {
			/* handled above */
		} else if (strcmp(a, "--steps") == 0) {
			if (parse_u64(a, val, 1, 100000000, 0, &c->steps, err, len))
				return -EINVAL;
		} else if (strcmp(a, "--seed") == 0) {
			if (parse_u64(a, val, 0, UINT64_MAX, 0, &c->seed, err, len))
				return -EINVAL;
		} else if (strcmp(a, "--stop-after") == 0) {
			if (parse_u64(a, val, 1, UINT64_MAX, 0, &c->stop_after, err, len))
				return -EINVAL;
		} else if (strcmp(a, "--test-skip-restore") == 0) {
			static const char *const comps[] = { "params", "master", "opt", "rng", "data", "sched",
							     "scaler", "user", "accum" };
			int ok = 0;
			for (size_t k = 0; k < sizeof comps / sizeof *comps; k++)
				ok |= strcmp(val, comps[k]) == 0;
			if (!ok)
				return fail(err, len, "--test-skip-restore: '%s' is not a component; valid: params, master, "
					    "opt, rng, data, sched, scaler, user, accum (with --accum-steps)", val);
			c->test_skip_restore = val;
		} else if (strcmp(a, "--trajectory") == 0) {
			c->trajectory = val;
		} else if (strcmp(a, "--digest-every") == 0) {
			if (parse_u64(a, val, 0, UINT64_MAX, 0, &c->digest_every, err, len))
				return -EINVAL;
		} else if (strcmp(a, "--attempt") == 0) {
			if (parse_u64(a, val, 0, 1000000, 0, &v, err, len))
				return -EINVAL;
			c->attempt = (uint32_t)v;
		} else if (strcmp(a, "--virtual-workers") == 0) {
			if (parse_u64(a, val, 1, 1024, 0, &v, err, len))
				return -EINVAL;
			c->virtual_workers = (uint32_t)v;
		} else if (strcmp(a, "--micro-batch") == 0) {
			if (parse_u64(a, val, 1, 4096, 0, &micro, err, len))
				return -EINVAL;
		} else if (strcmp(a, "--accum") == 0) {
			if (parse_u64(a, val, 1, 4096, 0, &accum, err, len))
				return -EINVAL;
		} else if (strcmp(a, "--accum-steps") == 0) {
			if (parse_u64(a, val, 1, 1024, 0, &v, err, len))
				return -EINVAL;
			c->accum_steps = (uint32_t)v;
		} else if (strcmp(a, "--width") == 0) {
			if (parse_u64(a, val, 1, 1u << 20, 0, &width, err, len))
				return -EINVAL;
		} else if (strcmp(a, "--depth") == 0) {
			if (parse_u64(a, val, 0, REFTRAIN_MAX_LAYERS - 1, 0, &depth, err, len))
				return -EINVAL;
		} else if (strcmp(a, "--params") == 0) {
			if (parse_u64(a, val, 1024, 1ull << 34, 1, &params, err, len))
				return -EINVAL;
		} else if (strcmp(a, "--overflow-steps") == 0) {
			overflow = val;
		} else if (strcmp(a, "--ckpt-dir") == 0) {
			if (!*val)
				return fail(err, len, "--ckpt-dir: empty path");
			c->ckpt_dir = val;
		} else if (strcmp(a, "--ckpt-fast-dir") == 0) {
			if (!*val)
				return fail(err, len, "--ckpt-fast-dir: empty path");
			c->ckpt_fast_dir = val;
		} else if (strcmp(a, "--ckpt-durable-every") == 0) {
			if (parse_u64(a, val, 1, UINT32_MAX, 0, &v, err, len))
				return -EINVAL;
			c->ckpt_durable_every = (uint32_t)v;
		} else if (strcmp(a, "--ckpt-backend") == 0) {
			if (!*val)
				return fail(err, len, "--ckpt-backend: empty; expected a backend .so path or a name "
					    "(libckpt, naive)");
			c->ckpt_backend = val;
		} else if (strcmp(a, "--ckpt-every") == 0) {
			if (parse_u64(a, val, 1, UINT64_MAX, 0, &c->ckpt_every, err, len))
				return -EINVAL;
			have_every = 1;
		} else if (strcmp(a, "--ckpt-full-every") == 0) {
			if (parse_u64(a, val, 1, 100000, 0, &v, err, len))
				return -EINVAL;
			c->ckpt_full_every = (uint32_t)v;
		} else if (strcmp(a, "--ckpt-chunk-bytes") == 0) {
			if (parse_u64(a, val, 4096, 256u << 20, 1, &v, err, len))
				return -EINVAL;
			c->ckpt_chunk_bytes = (uint32_t)v;
		} else if (strcmp(a, "--ckpt-key-file") == 0) {
			if (!*val)
				return fail(err, len, "--ckpt-key-file: empty path");
			c->ckpt_key_file = val;
		} else if (strcmp(a, "--frozen") == 0) {
			if (parse_u64(a, val, 0, 95, 0, &v, err, len))
				return -EINVAL;
			c->frozen_pct = (uint32_t)v;
		} else if (strcmp(a, "--keep") == 0) {
			if (parse_u64(a, val, 1, 100000, 0, &v, err, len))
				return -EINVAL;
			c->keep = (uint32_t)v;
		} else if (strcmp(a, "--resume") == 0) {
			if (strcmp(val, "auto") == 0)
				c->resume = REFTRAIN_RESUME_AUTO;
			else if (strcmp(val, "never") == 0)
				c->resume = REFTRAIN_RESUME_NEVER;
			else
				return fail(err, len, "--resume: '%s' is not valid; expected auto or never", val);
		}
		i++;
	}

	if (!c->trajectory)
		return fail(err, len, "--trajectory FILE is required (see --help)");
	if (overflow && parse_overflow(c, overflow, err, len))
		return -EINVAL;
	if (micro)
		c->micro_batch = (uint32_t)micro;
	if (accum)
		c->accum = (uint32_t)accum;
	if (depth != UINT64_MAX)
		c->model.depth = (uint32_t)depth;
	if (params && strcmp(c->preset, "large") != 0)
		return fail(err, len, "--params sizes the large preset only; use --width/--depth with %s", c->preset);
	if (params)
		c->target_params = params;
	if (width)
		c->model.width = (uint32_t)width;
	else if (strcmp(c->preset, "large") == 0) {
		/* width w with depth d: d_in*w + (d-1)*w*w + w*d_out + biases ~ target */
		uint64_t w = 1;
		reftrain_model_cfg m = c->model;
		for (uint64_t step = 1u << 20; step; step >>= 1) {
			m.width = (uint32_t)(w + step);
			if (reftrain_model_param_count(&m) <= c->target_params)
				w += step;
		}
		c->model.width = (uint32_t)w;
	}
	if (c->model.depth > 0 && c->model.width == 0)
		return fail(err, len, "--width must be at least 1");
	if (c->ckpt_dir && !have_every)
		c->ckpt_every = 10;
	if ((c->ckpt_full_every || c->ckpt_chunk_bytes) && !c->ckpt_incremental)
		return fail(err, len, "%s configures incremental checkpoints: it needs --ckpt-incremental",
			    c->ckpt_full_every ? "--ckpt-full-every" : "--ckpt-chunk-bytes");
	if (c->ckpt_incremental && !c->ckpt_dir)
		return fail(err, len, "--ckpt-incremental needs --ckpt-dir");
	if (c->ckpt_incremental && !c->ckpt_full_every)
		c->ckpt_full_every = 10;
	if (c->ckpt_incremental && !c->ckpt_chunk_bytes)
		c->ckpt_chunk_bytes = strcmp(c->preset, "tiny") == 0 ? 4096 : 0;
	if (c->ckpt_key_file && (c->ckpt_backend || !c->ckpt_dir || c->ckpt_incremental))
		return fail(err, len, "--ckpt-key-file needs --ckpt-dir and the built-in libckpt backend, without "
			    "--ckpt-incremental (%s)", c->ckpt_backend ? "--ckpt-backend given" : c->ckpt_dir ?
			    "--ckpt-incremental given" : "no --ckpt-dir");
	if (c->ckpt_async && c->ckpt_backend)
		return fail(err, len, "--ckpt-async needs the built-in libckpt backend; drop --ckpt-backend %s",
			    c->ckpt_backend);
	if (c->ckpt_durable_every && !c->ckpt_fast_dir)
		return fail(err, len, "--ckpt-durable-every configures the durable tier: it needs --ckpt-fast-dir");
	if (c->ckpt_fast_dir && (!c->ckpt_dir || c->ckpt_backend || c->ckpt_async || c->ckpt_incremental))
		return fail(err, len, "--ckpt-fast-dir %s", !c->ckpt_dir ? "needs --ckpt-dir (the durable tier)" :
			    c->ckpt_backend ? "needs the built-in libckpt backend; drop --ckpt-backend" :
			    c->ckpt_async ? "does not go with --ckpt-async yet" : "does not go with --ckpt-incremental yet");
	if (c->ckpt_async && !c->ckpt_dir)
		return fail(err, len, "--ckpt-async needs --ckpt-dir");
	if ((have_every || c->resume == REFTRAIN_RESUME_AUTO || c->ckpt_backend) && !c->ckpt_dir)
		return fail(err, len, "%s needs --ckpt-dir",
			    have_every ? "--ckpt-every" : c->ckpt_backend ? "--ckpt-backend" : "--resume auto");
	if ((uint64_t)c->samples < (uint64_t)c->virtual_workers * c->micro_batch * c->accum)
		return fail(err, len, "a step reads %" PRIu64 " samples but the dataset has %u; lower --micro-batch or --accum",
			    (uint64_t)c->virtual_workers * c->micro_batch * c->accum, c->samples);
	c->sched.total_steps = c->steps;
	return REFTRAIN_PARSE_OK;
}

int reftrain_config_canonical(const reftrain_config *c, char *buf, size_t len)
{
	int n = snprintf(buf, len,
			 "reftrain/1 preset=%s d_in=%u width=%u depth=%u d_out=%u dropout=%a seed=%" PRIu64
			 " steps=%" PRIu64 " V=%u micro=%u accum=%u samples=%u clip=%a lr=%a,%a,%" PRIu64
			 " scaler=%a,%a,%a,%u,%a adamw=%a,%a,%a,%a overflow=",
			 c->preset, c->model.d_in, c->model.width, c->model.depth, c->model.d_out,
			 (double)c->model.dropout, c->seed, c->steps, c->virtual_workers, c->micro_batch,
			 c->accum, c->samples, (double)c->clip_norm, (double)c->sched.base_lr,
			 (double)c->sched.min_lr, c->sched.warmup_steps, (double)c->scaler.init_scale,
			 (double)c->scaler.growth_factor, (double)c->scaler.backoff_factor,
			 c->scaler.growth_interval, (double)c->scaler.min_scale, (double)c->adamw.beta1,
			 (double)c->adamw.beta2, (double)c->adamw.eps, (double)c->adamw.weight_decay);
	for (size_t i = 0; i < c->n_overflow && n > 0 && (size_t)n < len; i++)
		n += snprintf(buf + n, len - (size_t)n, "%s%" PRIu64, i ? "," : "", c->overflow_steps[i]);
	/* only when set: the default configuration keeps the hash it always had */
	if (c->accum_steps > 1 && n > 0 && (size_t)n < len)
		n += snprintf(buf + n, len - (size_t)n, " accum_steps=%u", c->accum_steps);
	if (c->frozen_pct > 0 && n > 0 && (size_t)n < len)
		n += snprintf(buf + n, len - (size_t)n, " frozen=%u", c->frozen_pct);
	return n > 0 && (size_t)n < len ? 0 : -ENOSPC;
}

uint64_t reftrain_config_hash(const reftrain_config *c)
{
	char buf[2048];

	if (reftrain_config_canonical(c, buf, sizeof buf) < 0)
		return 0;
	return XXH3_64bits(buf, strlen(buf));
}
