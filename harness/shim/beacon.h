/*
 * The beacon: how a trainer without libfiu points tells the fault shim where
 * it is, so scenario faults can name a step and a phase (DESIGN.md, "Any
 * program under test"). Header only, no dependency: each call is a weak
 * reference to a function the preloaded shim exports, and does nothing when
 * the shim is not loaded. The shim keeps step and phase in the rank's shared
 * memory, so they hold for the rank's threads and child processes, and reads
 * them with no syscall.
 *
 *   ckpt_beacon_step(step);              at the start of each step
 *   ckpt_beacon_phase("save.shard_write"); entering a phase (DESIGN's names);
 *                                        a phase is a fault point: 0, or
 *                                        -errno for an injected failure
 */
#ifndef CKPT_BEACON_H
#define CKPT_BEACON_H

#include <stdint.h>

extern void ckpt_shim_beacon_step(uint64_t step) __attribute__((weak));
extern int ckpt_shim_beacon_phase(const char *phase) __attribute__((weak));

static inline void ckpt_beacon_step(uint64_t step)
{
	if (ckpt_shim_beacon_step)
		ckpt_shim_beacon_step(step);
}

static inline int ckpt_beacon_phase(const char *phase)
{
	return ckpt_shim_beacon_phase ? ckpt_shim_beacon_phase(phase) : 0;
}

#endif
