"""Trajectory records for Python trainers: the trainer protocol v1 (DESIGN.md,
"Any program under test"), without dependencies.

    import ckpt_trajectory as ct
    traj = ct.Trajectory(os.environ.get("CKPT_HARNESS_TRAJECTORY"))   # None: write nothing
    traj.start(attempt=1, world_size=2, restored_from=None)
    traj.step(41, loss=ct.f32_hex(loss), params=ct.digest(param_bytes))
    traj.committed(50, "step-00000050")
    traj.end("done", 60)

Each record is one line of compact JSON written with one write(2) (looping on
a short write), so a kill leaves whole lines. Floats go as the hex of their
bits (f32_hex, f64_hex), component digests as 16 hex digits (digest: blake2b
with an 8-byte digest over the bytes given, in order).
"""
import hashlib
import json
import os
import struct


def f32_hex(x):
    """The bits of x rounded to float32, as 0x%08x (exact for a float32 value)."""
    return "0x%08x" % struct.unpack("<I", struct.pack("<f", float(x)))[0]


def f64_hex(x):
    return "0x%016x" % struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def digest(*chunks):
    """16 hex digits: blake2b (8-byte digest) over the chunks (bytes), in order."""
    h = hashlib.blake2b(digest_size=8)
    for c in chunks:
        h.update(c)
    return h.hexdigest()


class Trajectory:
    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644) if path else None

    def record(self, obj):
        if self.fd is None:
            return
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        while data:
            n = os.write(self.fd, data)
            data = data[n:]

    def start(self, attempt, world_size, restored_from, checkpoint=None, restored=None, **extra):
        rec = {"event": "start", "protocol": 1, "attempt": attempt, "world_size": world_size,
               "restored_from": restored_from}
        if checkpoint is not None:
            rec["checkpoint"] = checkpoint
        if restored is not None:
            rec["restored"] = restored
        rec.update(extra)
        self.record(rec)

    def step(self, step, **fields):
        rec = {"step": step}
        rec.update(fields)
        self.record(rec)

    def committed(self, step, checkpoint):
        self.record({"event": "committed", "step": step, "checkpoint": checkpoint})

    def save_failed(self, step, error):
        self.record({"event": "save_failed", "step": step, "error": error})

    def end(self, status, steps, error=None):
        rec = {"event": "end", "status": status, "steps": steps}
        if error is not None:
            rec["error"] = error
        self.record(rec)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
