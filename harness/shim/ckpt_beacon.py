"""The beacon for Python trainers: tell the fault shim the step and phase.

No dependency: ctypes finds the functions the preloaded shim
(libckpt-fault-shim.so in LD_PRELOAD) exports; without the shim every call
does nothing. See harness/shim/beacon.h for the contract.

    import ckpt_beacon
    ckpt_beacon.step(41)                 # start of a step
    ckpt_beacon.phase("save.shard_write")  # 0, or -errno for an injected failure
"""
import ctypes

try:
    _lib = ctypes.CDLL(None)
    _step = _lib.ckpt_shim_beacon_step
    _step.argtypes, _step.restype = [ctypes.c_uint64], None
    _phase = _lib.ckpt_shim_beacon_phase
    _phase.argtypes, _phase.restype = [ctypes.c_char_p], ctypes.c_int
except (OSError, AttributeError):
    _step = _phase = None


def loaded():
    """True when the shim is loaded (the calls below reach it)."""
    return _step is not None


def step(n):
    if _step is not None:
        _step(int(n))


def phase(name):
    return _phase(name.encode()) if _phase is not None else 0
