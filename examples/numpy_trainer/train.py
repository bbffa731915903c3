#!/usr/bin/python3
"""A small deterministic trainer outside the C tree that speaks the trainer
protocol v1 (DESIGN.md, "Any program under test").

It trains a 2-layer MLP (float32 parameters) on a synthetic regression set with
AdamW, warmup + cosine LR, dropout, per-epoch shuffling and an EMA of the loss,
split over V=4 virtual workers whose gradients are summed in worker order: the
shape of a data-parallel trainer, in one process.

Only the standard library and numpy. No BLAS: every product runs as explicit
float64 multiply-adds in a fixed order (a float32 x float32 product is exact in
float64, and elementwise +, -, *, /, sqrt are correctly rounded), and every
scalar sum is math.fsum (exactly rounded, so order cannot matter). The only
libm calls are math.cos for the LR and numpy's Generator methods, so a run is
bitwise reproducible on one machine, and a resume is bitwise identical to the
uninterrupted run.

Checkpoints: one file per saved step, ROOT/ckpt-00000040.bin, written by this
script byte by byte (the layout is in README.md) with os.open/os.write to
ROOT/ckpt-00000040.bin.tmp, then os.replace. --fsync (default) adds the two
calls durability needs: os.fsync of the file before the rename, and os.fsync
of ROOT after it. --no-fsync leaves both out, for the harness to catch.

Distributed (torchrun's environment, WORLD_SIZE > 1; the harness's
`launcher: procs`): the 4 virtual workers are split over the ranks (WORLD_SIZE
must divide 4), each rank computes its own workers' gradients, and rank 0
combines them over TCP at MASTER_ADDR:MASTER_PORT (standard library socket,
length-prefixed messages, timeouts) in worker order, exactly as the one-process
sum, and sends the sum back: the trajectory and the checkpoint files are
bitwise those of the one-process run. Checkpoints the common DDP way: rank 0
writes the file (as above), all ranks meet at a barrier, then rank 0 writes the
`committed` record; on a restart every rank reads the same file. A lost peer
makes every rank exit 1 (rank 0 without an end record: the job crashed, the
scheduler restarts it).

Exit status: 0 done or stopped (--stop-after), 1 failed (the trajectory's end
record says why) or a peer was lost, 2 bad usage.
"""
import argparse
import hashlib
import json
import math
import os
import re
import socket
import stat
import struct
import sys
import time

import numpy as np

PROTOCOL = 1
FORMAT = 1
MAGIC = b"NPTRAIN1"
CKPT_RE = re.compile(r"^ckpt-(\d{8})\.bin$")
TMP_RE = re.compile(r"^ckpt-(\d{8})\.bin\.tmp$")
MAX_CKPT_BYTES = 64 << 20      # anything larger is not ours; never read it whole
COMPONENTS = ("params", "opt", "rng", "data", "sched", "user")

# model and data: fixed, part of the configuration a checkpoint must match
N_SAMPLES, D_IN, D_HID, D_OUT = 256, 8, 32, 4
BATCH, WORKERS = 32, 4          # 8 samples per virtual worker
DROPOUT = 0.1
BASE_LR, MIN_LR = 1e-2, 1e-3
BETA1, BETA2, EPS, WEIGHT_DECAY = 0.9, 0.999, 1e-8, 0.01
CLIP = 1.0
EMA_DECAY = 0.9
PARAM_NAMES = ("w1", "b1", "w2", "b2")
PARAM_SHAPES = {"w1": (D_IN, D_HID), "b1": (D_HID,), "w2": (D_HID, D_OUT), "b2": (D_OUT,)}

F32 = np.dtype("<f4")
F64 = np.dtype("<f8")
U32 = np.dtype("<u4")


class Untrusted(Exception):
    """A checkpoint file that fails verification; the message says why."""


class PeerLost(Exception):
    """Another rank of the job is gone (closed, timed out, or sent garbage); the message says which."""


# ---------------------------------------------------------------- arithmetic

def mm(a, b):
    """a @ b in float64, summed over the inner index in order 0, 1, ..."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out = a[:, 0:1] * b[0:1, :]
    for k in range(1, a.shape[1]):
        out += a[:, k:k + 1] * b[k:k + 1, :]
    return out


def rowsum(a):
    """Sum over axis 0, rows added in order."""
    out = np.array(a[0], dtype=np.float64)
    for r in a[1:]:
        out += r
    return out


def fsum(a):
    return math.fsum(np.asarray(a, dtype=np.float64).ravel().tolist())


def f32_hex(x):
    return "0x%08x" % int(np.float32(x).view(np.uint32))


def digest(data):
    """A component digest: blake2b with an 8-byte digest, as 16 hex digits."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


# ---------------------------------------------------------------- RNG state

def pcg64_bytes(gen):
    """40 bytes: state (u128 LE), inc (u128 LE), has_uint32 (u32 LE), uinteger (u32 LE)."""
    s = gen.bit_generator.state
    return (s["state"]["state"].to_bytes(16, "little") + s["state"]["inc"].to_bytes(16, "little")
            + struct.pack("<II", s["has_uint32"], s["uinteger"]))


def pcg64_from(b):
    state, inc = int.from_bytes(b[0:16], "little"), int.from_bytes(b[16:32], "little")
    has32, uint = struct.unpack("<II", b[32:40])
    if has32 > 1 or inc % 2 == 0:
        raise Untrusted("PCG64 state is not one PCG64 can be in (has_uint32 %d, increment %s)"
                        % (has32, "even" if inc % 2 == 0 else "odd"))
    gen = np.random.Generator(np.random.PCG64())
    gen.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": state, "inc": inc},
                               "has_uint32": has32, "uinteger": uint}
    return gen


# ---------------------------------------------------------------- the trainer

class Trainer:
    def __init__(self, seed, steps):
        self.seed, self.steps = seed, steps
        self.warmup = max(1, steps // 10)
        ss = np.random.SeedSequence(seed)
        s_data, s_init, s_shuffle, s_drop = ss.spawn(4)
        # the data set is derived from the seed, not state: same in every attempt
        g = np.random.Generator(np.random.PCG64(s_data))
        self.x = g.standard_normal((N_SAMPLES, D_IN)).astype(np.float32)
        t1 = g.standard_normal((D_IN, 16)).astype(np.float32) * np.float32(0.5)
        t2 = g.standard_normal((16, D_OUT)).astype(np.float32) * np.float32(0.5)
        noise = g.standard_normal((N_SAMPLES, D_OUT)).astype(np.float32) * np.float32(0.01)
        self.y = (mm(np.maximum(mm(self.x, t1), 0.0), t2) + noise).astype(np.float32)
        # --- the state a checkpoint must hold
        gi = np.random.Generator(np.random.PCG64(s_init))
        self.p = {
            "w1": (gi.standard_normal((D_IN, D_HID)) * (1.0 / math.sqrt(D_IN))).astype(np.float32),
            "b1": np.zeros(D_HID, np.float32),
            "w2": (gi.standard_normal((D_HID, D_OUT)) * (1.0 / math.sqrt(D_HID))).astype(np.float32),
            "b2": np.zeros(D_OUT, np.float32),
        }
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.opt_t, self.b1_pow, self.b2_pow = 0, 1.0, 1.0
        self.shuffle = np.random.Generator(np.random.PCG64(s_shuffle))
        self.drop = [np.random.Generator(np.random.PCG64(s)) for s in s_drop.spawn(WORKERS)]
        self.epoch, self.pos = 0, 0
        self.perm = self.shuffle.permutation(N_SAMPLES).astype(np.uint32)
        self.sched_step, self.last_lr = 0, np.float32(0.0)
        self.ema, self.ema_n = 0.0, 0
        self.step = 0

    def config(self):
        """What a checkpoint must have been written with to be restored here."""
        return {"trainer": "numpy_trainer", "seed": self.seed, "steps": self.steps,
                "model": [N_SAMPLES, D_IN, D_HID, D_OUT, BATCH, WORKERS],
                "hyper": [BASE_LR, MIN_LR, BETA1, BETA2, EPS, WEIGHT_DECAY, CLIP, DROPOUT, EMA_DECAY]}

    # -- components: these bytes are both what a checkpoint stores and what a digest covers
    def component(self, name):
        if name == "params":
            return b"".join(self.p[k].astype(F32).tobytes() for k in PARAM_NAMES)
        if name == "opt":
            return (struct.pack("<Qdd", self.opt_t, self.b1_pow, self.b2_pow)
                    + b"".join(self.m[k].astype(F32).tobytes() for k in PARAM_NAMES)
                    + b"".join(self.v[k].astype(F32).tobytes() for k in PARAM_NAMES))
        if name == "rng":
            return b"".join(pcg64_bytes(g) for g in self.drop)
        if name == "data":
            return (struct.pack("<QQ", self.epoch, self.pos) + pcg64_bytes(self.shuffle)
                    + self.perm.astype(U32).tobytes())
        if name == "sched":
            return struct.pack("<Q", self.sched_step) + np.float32(self.last_lr).astype(F32).tobytes()
        if name == "user":
            return struct.pack("<dQ", self.ema, self.ema_n)
        raise KeyError(name)

    def digests(self):
        return {c: digest(self.component(c)) for c in COMPONENTS}

    def load_component(self, name, b):
        """Parse one section read from a checkpoint; raise Untrusted on anything off."""
        nparam = sum(int(np.prod(PARAM_SHAPES[k])) for k in PARAM_NAMES)
        want = {"params": 4 * nparam, "opt": 24 + 8 * nparam, "rng": 40 * WORKERS,
                "data": 16 + 40 + 4 * N_SAMPLES, "sched": 12, "user": 16}[name]
        if len(b) != want:
            raise Untrusted("section %s holds %d bytes, this model needs %d" % (name, len(b), want))

        def arrays(buf, off):
            out = {}
            for k in PARAM_NAMES:
                n = int(np.prod(PARAM_SHAPES[k]))
                out[k] = np.frombuffer(buf, F32, n, off).astype(np.float32).reshape(PARAM_SHAPES[k])
                off += 4 * n
            return out, off

        if name == "params":
            self.p, _ = arrays(b, 0)
        elif name == "opt":
            self.opt_t, self.b1_pow, self.b2_pow = struct.unpack_from("<Qdd", b, 0)
            self.m, off = arrays(b, 24)
            self.v, _ = arrays(b, off)
        elif name == "rng":
            self.drop = [pcg64_from(b[40 * i:40 * i + 40]) for i in range(WORKERS)]
        elif name == "data":
            self.epoch, self.pos = struct.unpack_from("<QQ", b, 0)
            self.shuffle = pcg64_from(b[16:56])
            self.perm = np.frombuffer(b, U32, N_SAMPLES, 56).astype(np.uint32)
            if self.pos % BATCH or self.pos >= N_SAMPLES or \
                    not np.array_equal(np.sort(self.perm), np.arange(N_SAMPLES, dtype=np.uint32)):
                raise Untrusted("data cursor is not a valid position in a permutation of %d samples"
                                % N_SAMPLES)
        elif name == "sched":
            (self.sched_step,) = struct.unpack_from("<Q", b, 0)
            self.last_lr = np.frombuffer(b, F32, 1, 8).astype(np.float32)[0]
        elif name == "user":
            self.ema, self.ema_n = struct.unpack_from("<dQ", b, 0)

    # -- one training step
    def lr_at(self, t):
        if t <= self.warmup:
            return BASE_LR * t / self.warmup
        progress = (t - self.warmup) / max(1, self.steps - self.warmup)
        return MIN_LR + (BASE_LR - MIN_LR) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def worker_grads(self, workers):
        """[(worker, squared error, {param: float64 gradient})] of these virtual workers, in order."""
        idx = self.perm[self.pos:self.pos + BATCH]
        per = BATCH // WORKERS
        w1, b1 = self.p["w1"], self.p["b1"]
        w2, b2 = self.p["w2"], self.p["b2"]
        out_list = []
        for w in workers:
            x = self.x[idx[w * per:(w + 1) * per]]
            y = self.y[idx[w * per:(w + 1) * per]]
            pre = mm(x, w1) + b1
            keep = self.drop[w].random((per, D_HID), dtype=np.float32) >= np.float32(DROPOUT)
            h = np.maximum(pre, 0.0) * keep * (1.0 / (1.0 - DROPOUT))
            out = mm(h, w2) + b2
            err = out - y
            dout = err * (2.0 / (BATCH * D_OUT))      # d(mean squared error)/d(out)
            dh = mm(dout, w2.T) * keep * (1.0 / (1.0 - DROPOUT)) * (pre > 0)
            out_list.append((w, fsum(err * err), {"w2": mm(h.T, dout), "b2": rowsum(dout),
                                                  "w1": mm(x.T, dh), "b1": rowsum(dh)}))
        return out_list

    @staticmethod
    def reduce(per_worker):
        """The sum over all workers, added in worker order: (loss, {param: float64 gradient})."""
        grads = {k: np.zeros(PARAM_SHAPES[k], np.float64) for k in PARAM_NAMES}
        sq_err = []
        for _, e, g in sorted(per_worker, key=lambda t: t[0]):
            sq_err.append(e)
            for k in ("w2", "b2", "w1", "b1"):
                grads[k] += g[k]
        return math.fsum(sq_err) / (BATCH * D_OUT), grads

    def train_step(self, group=None):
        if group is None:
            loss, grads = self.reduce(self.worker_grads(range(WORKERS)))
        else:
            loss, grads = group.allreduce_grads(self)
        return self.apply(loss, grads)

    def apply(self, loss, grads):
        """The optimizer step and the cursors, the same on every rank."""
        g = {k: grads[k].astype(np.float32) for k in PARAM_NAMES}
        gnorm = math.sqrt(math.fsum(fsum(np.square(g[k], dtype=np.float64)) for k in PARAM_NAMES))
        scale = min(1.0, CLIP / (gnorm + 1e-6))

        self.sched_step += 1
        lr = np.float32(self.lr_at(self.sched_step))
        self.last_lr = lr
        self.opt_t += 1
        self.b1_pow *= BETA1
        self.b2_pow *= BETA2
        for k in PARAM_NAMES:             # AdamW, float64 arithmetic, float32 state
            gk = g[k].astype(np.float64) * scale
            m = BETA1 * self.m[k] + (1.0 - BETA1) * gk
            v = BETA2 * self.v[k] + (1.0 - BETA2) * gk * gk
            mhat = m / (1.0 - self.b1_pow)
            vhat = v / (1.0 - self.b2_pow)
            p = self.p[k].astype(np.float64)
            p = p - float(lr) * (mhat / (np.sqrt(vhat) + EPS) + WEIGHT_DECAY * p)
            self.m[k], self.v[k], self.p[k] = m.astype(np.float32), v.astype(np.float32), p.astype(np.float32)

        self.pos += BATCH
        if self.pos >= N_SAMPLES:
            self.epoch += 1
            self.pos = 0
            self.perm = self.shuffle.permutation(N_SAMPLES).astype(np.uint32)
        self.ema = loss if self.ema_n == 0 else EMA_DECAY * self.ema + (1.0 - EMA_DECAY) * loss
        self.ema_n += 1
        self.step += 1
        return {"loss": np.float32(loss), "lr": lr, "grad_norm": np.float32(gnorm)}


# ---------------------------------------------------------------- the ranks of a distributed job

NET_TIMEOUT = 120.0            # seconds any one message may take; the harness's watchdog stops a hung job first
MAX_MSG = 1 << 20              # no message of this trainer is larger; a larger length is garbage
GRAD_ORDER = ("w2", "b2", "w1", "b1")
GRAD_BYTES = 8 * sum(int(np.prod(PARAM_SHAPES[k])) for k in GRAD_ORDER)
WORKER_MSG = 4 + 8 + GRAD_BYTES + 40     # worker, squared error, gradients, its dropout RNG after the step


class Group:
    """The ranks of a torchrun-style job, rank 0 at the centre: every other rank
    holds one TCP connection to rank 0 at MASTER_ADDR:MASTER_PORT. A message is
    a 4-byte little-endian length and that many bytes. Anything off (a closed
    connection, a timeout, a length or a size this trainer never sends) raises
    PeerLost naming the rank."""

    def __init__(self, rank, world, addr, port):
        self.rank, self.world = rank, world
        self.workers = list(range(rank * WORKERS // world, (rank + 1) * WORKERS // world))
        self.peers = {}
        deadline = time.monotonic() + NET_TIMEOUT
        if rank == 0:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                ls.bind((addr, port))
                ls.listen(world)
                while len(self.peers) < world - 1:
                    ls.settimeout(max(0.1, deadline - time.monotonic()))
                    try:
                        c, _ = ls.accept()
                    except socket.timeout:
                        raise PeerLost("only %d of %d ranks connected to %s:%d within %.0f s"
                                       % (len(self.peers) + 1, world, addr, port, NET_TIMEOUT))
                    c.settimeout(NET_TIMEOUT)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    hello = self._recv(c, "a connecting rank", 8)
                    (r, w) = struct.unpack("<II", hello)
                    if w != world or not 0 < r < world or r in self.peers:
                        c.close()
                        raise PeerLost("a process connected as rank %d of %d; this job is %d ranks and has %s"
                                       % (r, w, world, sorted(self.peers)))
                    self.peers[r] = c
            except OSError as e:
                raise PeerLost("rank 0 cannot listen on %s:%d: %s" % (addr, port, e.strerror or e))
            finally:
                ls.close()
        else:
            while True:
                try:
                    c = socket.create_connection((addr, port), timeout=max(0.1, deadline - time.monotonic()))
                    break
                except OSError as e:
                    if time.monotonic() > deadline:
                        raise PeerLost("rank %d cannot reach rank 0 at %s:%d: %s" % (rank, addr, port, e.strerror or e))
                    time.sleep(0.05)
            c.settimeout(NET_TIMEOUT)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.peers[0] = c
            self._send(c, 0, struct.pack("<II", rank, world))

    def _send(self, c, r, payload):
        try:
            c.sendall(struct.pack("<I", len(payload)) + payload)
        except OSError as e:
            raise PeerLost("rank %d is gone (sending to it: %s)" % (r, e.strerror or e))

    def _recv(self, c, who, size):
        def exactly(n):
            chunks = []
            while n:
                try:
                    b = c.recv(min(n, 1 << 16))
                except OSError as e:
                    raise PeerLost("%s is gone (receiving from it: %s)" % (who, e.strerror or "timed out"))
                if not b:
                    raise PeerLost("%s is gone (it closed the connection)" % who)
                chunks.append(b)
                n -= len(b)
            return b"".join(chunks)
        (n,) = struct.unpack("<I", exactly(4))
        if n != size:
            raise PeerLost("%s sent a message of %d bytes where %d belong" % (who, n, size))
        return exactly(n)

    def send(self, r, payload):
        self._send(self.peers[r], r, payload)

    def recv(self, r, size):
        return self._recv(self.peers[r], "rank %d" % r, size)

    def barrier(self):
        """Returns on every rank once every rank has entered it."""
        if self.rank == 0:
            for r in range(1, self.world):
                self.recv(r, 1)
            for r in range(1, self.world):
                self.send(r, b"B")
        else:
            self.send(0, b"B")
            self.recv(0, 1)

    def agree(self, value, what):
        """Every rank must hold the same small integer (or None); rank 0 checks and answers."""
        mine = struct.pack("<q", -1 if value is None else value)
        if self.rank == 0:
            theirs = {r: struct.unpack("<q", self.recv(r, 8))[0] for r in range(1, self.world)}
            bad = {r: v for r, v in theirs.items() if v != struct.unpack("<q", mine)[0]}
            verdict = b"N" if bad else b"Y"
            for r in range(1, self.world):
                self.send(r, verdict)
            if bad:
                raise RuntimeError("the ranks disagree on %s: rank 0 has %s, %s" % (
                    what, value, ", ".join("rank %d has %s" % (r, None if v < 0 else v) for r, v in bad.items())))
        else:
            self.send(0, mine)
            if self.recv(0, 1) != b"Y":
                raise RuntimeError("the ranks disagree on %s (rank 0 says why)" % what)

    def allreduce_grads(self, tr):
        """Each rank's workers' gradients to rank 0, the sum in worker order back to every rank.
        Rank 0 also takes each worker's dropout RNG, so its checkpoint holds the whole state."""
        mine = tr.worker_grads(self.workers)
        if self.rank != 0:
            self.send(0, b"".join(struct.pack("<Id", w, e) + b"".join(g[k].astype(F64).tobytes() for k in GRAD_ORDER)
                                  + pcg64_bytes(tr.drop[w]) for w, e, g in mine))
            body = self.recv(0, 8 + GRAD_BYTES)
            (loss,) = struct.unpack_from("<d", body, 0)
            grads, off = {}, 8
            for k in GRAD_ORDER:
                n = int(np.prod(PARAM_SHAPES[k]))
                grads[k] = np.frombuffer(body, F64, n, off).astype(np.float64).reshape(PARAM_SHAPES[k])
                off += 8 * n
            return loss, grads
        per_worker = list(mine)
        for r in range(1, self.world):
            theirs = list(range(r * WORKERS // self.world, (r + 1) * WORKERS // self.world))
            body = self.recv(r, WORKER_MSG * len(theirs))
            for i, want in enumerate(theirs):
                off = i * WORKER_MSG
                w, e = struct.unpack_from("<Id", body, off)
                if w != want:
                    raise PeerLost("rank %d sent worker %d's gradients where worker %d's belong" % (r, w, want))
                off += 12
                g = {}
                for k in GRAD_ORDER:
                    n = int(np.prod(PARAM_SHAPES[k]))
                    g[k] = np.frombuffer(body, F64, n, off).astype(np.float64).reshape(PARAM_SHAPES[k])
                    off += 8 * n
                try:
                    tr.drop[w] = pcg64_from(body[off:off + 40])
                except Untrusted as why:
                    raise PeerLost("rank %d sent a dropout RNG state that is not one: %s" % (r, why))
                per_worker.append((w, e, g))
        loss, grads = Trainer.reduce(per_worker)
        out = struct.pack("<d", loss) + b"".join(grads[k].astype(F64).tobytes() for k in GRAD_ORDER)
        for r in range(1, self.world):
            self.send(r, out)
        return loss, grads

    def close(self):
        for c in self.peers.values():
            c.close()


# ---------------------------------------------------------------- checkpoint files

def ckpt_name(step):
    return "ckpt-%08d.bin" % step


def encode(tr):
    """The checkpoint's bytes as a list of pieces, one os.write each (see README.md)."""
    sections = [(c, tr.component(c)) for c in COMPONENTS]
    header = json.dumps({"format": FORMAT, "step": tr.step, "config": tr.config(),
                         "sections": [[c, len(b)] for c, b in sections]},
                        sort_keys=True, separators=(",", ":")).encode()
    pieces = [MAGIC + struct.pack("<I", len(header)) + header] + [b for _, b in sections]
    h = hashlib.blake2b(digest_size=32)
    for p in pieces:
        h.update(p)
    return pieces + [h.digest()]


def write_all(fd, data):
    """os.write until every byte is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def save(root, tr, fsync):
    """Write ROOT/ckpt-STEP.bin; returns its name once it is in place (and, with fsync, durable)."""
    name = ckpt_name(tr.step)
    final = os.path.join(root, name)
    tmp = final + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        for piece in encode(tr):
            write_all(fd, piece)
        if fsync:
            # durability 1 of 2: the file's bytes reach the disk before its name can
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, final)
    except BaseException:
        unlink_quietly(tmp)
        raise
    if fsync:
        # durability 2 of 2: the rename (the directory entry) reaches the disk
        fsync_dir(root)
    return name


def fsync_dir(path):
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def scan(root):
    """Checkpoint steps under root, newest first, and the names of leftover temporary files."""
    steps, tmps = [], []
    for entry in os.listdir(root):
        m = CKPT_RE.match(entry)
        if m:
            steps.append(int(m.group(1)))
        elif TMP_RE.match(entry):
            tmps.append(entry)
    return sorted(steps, reverse=True), sorted(tmps)


def read_ckpt(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Untrusted("not a regular file")
        if st.st_size > MAX_CKPT_BYTES:
            raise Untrusted("%d bytes, more than any checkpoint of this trainer" % st.st_size)
        chunks, left = [], st.st_size
        while left > 0:
            b = os.read(fd, left)
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def verify_and_load(path, step, tr):
    """Check every byte of the checkpoint of `step`, then load it into `tr`. Raises Untrusted."""
    try:
        data = read_ckpt(path)
    except OSError as e:
        raise Untrusted("cannot read it: %s" % e.strerror)
    if len(data) < len(MAGIC) + 4 + 32:
        raise Untrusted("%d bytes, too short to be a checkpoint" % len(data))
    if data[:len(MAGIC)] != MAGIC:
        raise Untrusted("does not start with %r" % MAGIC)
    if hashlib.blake2b(data[:-32], digest_size=32).digest() != data[-32:]:
        raise Untrusted("checksum mismatch (blake2b-256 of its %d bytes)" % (len(data) - 32))
    (hlen,) = struct.unpack_from("<I", data, len(MAGIC))
    body = len(MAGIC) + 4
    if hlen > len(data) - body - 32:
        raise Untrusted("header length %d runs past the end of the file" % hlen)
    try:
        header = json.loads(data[body:body + hlen].decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise Untrusted("header is not JSON: %s" % e)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise Untrusted("format %r, this trainer reads format %d" %
                        (header.get("format") if isinstance(header, dict) else None, FORMAT))
    if header.get("step") != step:
        raise Untrusted("header says step %r, its name says %d" % (header.get("step"), step))
    theirs, ours = header.get("config"), tr.config()
    if theirs != ours:
        if not isinstance(theirs, dict):
            theirs = {}
        raise Untrusted("written with another configuration: %s"
                        % ", ".join("%s %s (this run: %s)" % (k, json.dumps(theirs.get(k)), json.dumps(ours.get(k)))
                                    for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)))
    sections = header.get("sections")
    if not isinstance(sections, list) or [s[0] if isinstance(s, list) and s else None
                                          for s in sections] != list(COMPONENTS):
        raise Untrusted("sections are not %s" % ", ".join(COMPONENTS))
    off = body + hlen
    for s in sections:
        if len(s) != 2 or not isinstance(s[1], int) or s[1] < 0:
            raise Untrusted("section entry %r is not [name, size]" % (s,))
        if off + s[1] > len(data) - 32:
            raise Untrusted("section %s runs past the end of the file" % s[0])
        tr.load_component(s[0], data[off:off + s[1]])
        off += s[1]
    if off != len(data) - 32:
        raise Untrusted("%d bytes between the last section and the checksum" % (len(data) - 32 - off))
    tr.step = step
    if tr.sched_step != step or tr.opt_t != step or tr.epoch * N_SAMPLES + tr.pos != step * BATCH:
        raise Untrusted("its counters disagree with step %d (schedule %d, optimizer %d, samples seen %d)"
                        % (step, tr.sched_step, tr.opt_t, tr.epoch * N_SAMPLES + tr.pos))


def restore(root, seed, steps):
    """(trainer, restored step or None, fallbacks [(name, why)]); raises RuntimeError when
    checkpoints exist and none of them can be trusted."""
    found, _ = scan(root)
    fallbacks = []
    for step in found:
        tr = Trainer(seed, steps)
        try:
            verify_and_load(os.path.join(root, ckpt_name(step)), step, tr)
            return tr, step, fallbacks
        except Untrusted as e:
            fallbacks.append((ckpt_name(step), str(e)))
    if fallbacks:
        raise RuntimeError("no trustworthy checkpoint under %s (%s); refusing to start fresh over them"
                           % (root, "; ".join("%s: %s" % f for f in fallbacks)))
    return Trainer(seed, steps), None, fallbacks


def retain(root, keep):
    found, _ = scan(root)
    for step in found[keep:]:
        unlink_quietly(os.path.join(root, ckpt_name(step)))


# ---------------------------------------------------------------- trajectory

class Trajectory:
    """One JSON object a line, each line one write(2), so a kill tears at most the last line."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def record(self, obj):
        write_all(self.fd, (json.dumps(obj, separators=(",", ":")) + "\n").encode())

    def close(self):
        os.fsync(self.fd)
        os.close(self.fd)


def parse_args(argv):
    env = os.environ
    ap = argparse.ArgumentParser(description="A numpy trainer speaking the ckpt-harness trainer protocol v1.")
    ap.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    ap.add_argument("--ckpt", default=env.get("CKPT_HARNESS_CKPT_DIR"),
                    help="checkpoint root (default $CKPT_HARNESS_CKPT_DIR)")
    ap.add_argument("--trajectory", default=env.get("CKPT_HARNESS_TRAJECTORY"),
                    help="trajectory file, JSON Lines (default $CKPT_HARNESS_TRAJECTORY)")
    ap.add_argument("--attempt", type=int, default=None, help="attempt number (default $CKPT_HARNESS_ATTEMPT or 0)")
    ap.add_argument("--seed", type=int, default=1, help="seed of data, init, shuffling and dropout (default 1)")
    ap.add_argument("--every", type=int, default=10, help="checkpoint every K steps (default 10)")
    ap.add_argument("--keep", type=int, default=3, help="checkpoints to keep (default 3)")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop after this step (end status 'stopped'; default $CKPT_HARNESS_STOP_AFTER, the "
                         "harness's plain stop-and-resume check, or never)")
    ap.add_argument("--world-size", type=int, default=None,
                    help="ranks, 1, 2 or 4 (default $WORLD_SIZE or 1); more than 1 takes torchrun's $RANK, "
                         "$MASTER_ADDR and $MASTER_PORT")
    ap.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=True,
                    help="fsync each checkpoint file before its rename and the root after it (default on)")
    a = ap.parse_args(argv)
    if a.attempt is None:
        try:
            a.attempt = int(env.get("CKPT_HARNESS_ATTEMPT", "0"))
        except ValueError:
            ap.error("$CKPT_HARNESS_ATTEMPT=%r is not an integer" % env["CKPT_HARNESS_ATTEMPT"])
    if a.stop_after is None:
        try:
            a.stop_after = int(env.get("CKPT_HARNESS_STOP_AFTER", "0"))
        except ValueError:
            ap.error("$CKPT_HARNESS_STOP_AFTER=%r is not an integer" % env["CKPT_HARNESS_STOP_AFTER"])
    if a.world_size is None:
        try:
            a.world_size = int(env.get("WORLD_SIZE", "1"))
        except ValueError:
            ap.error("$WORLD_SIZE=%r is not an integer" % env["WORLD_SIZE"])
    if a.world_size < 1 or WORKERS % a.world_size:
        ap.error("world size %d does not divide the %d virtual workers; valid: 1, 2, 4" % (a.world_size, WORKERS))
    try:
        a.rank = int(env.get("RANK", "0"))
    except ValueError:
        ap.error("$RANK=%r is not an integer" % env["RANK"])
    if not 0 <= a.rank < a.world_size:
        ap.error("rank %d is not one of the %d ranks (0 to %d)" % (a.rank, a.world_size, a.world_size - 1))
    a.master_addr, a.master_port = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
    if a.world_size > 1:
        if not a.master_addr or not a.master_port:
            ap.error("world size %d needs $MASTER_ADDR and $MASTER_PORT (rank 0's address), as torchrun sets "
                     "them; use launcher: procs" % a.world_size)
        try:
            a.master_port = int(a.master_port)
        except ValueError:
            a.master_port = 0
        if not 0 < a.master_port < 65536:
            ap.error("$MASTER_PORT=%r is not a TCP port (1 to 65535)" % env["MASTER_PORT"])
    for flag, v, lo in (("--steps", a.steps, 1), ("--every", a.every, 1), ("--keep", a.keep, 1),
                        ("--stop-after", a.stop_after, 0), ("--attempt", a.attempt, 0), ("--seed", a.seed, 0)):
        if v < lo:
            ap.error("%s %d: must be at least %d" % (flag, v, lo))
    if a.seed >= 1 << 63:
        ap.error("--seed %d: must be below 2^63" % a.seed)
    if not a.ckpt:
        ap.error("no checkpoint root: give --ckpt DIR or set $CKPT_HARNESS_CKPT_DIR")
    if not a.trajectory:
        ap.error("no trajectory file: give --trajectory FILE or set $CKPT_HARNESS_TRAJECTORY")
    return a


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    lead = a.rank == 0             # rank 0 writes the trajectory and the checkpoints
    traj = None
    if lead:
        try:
            traj = Trajectory(a.trajectory)
        except OSError as e:
            print("train.py: %s: %s" % (a.trajectory, e.strerror), file=sys.stderr)
            return 1
    tr, group = None, None
    try:
        if a.world_size > 1:
            group = Group(a.rank, a.world_size, a.master_addr, a.master_port)
        if lead:
            if not os.path.isdir(a.ckpt):
                os.makedirs(a.ckpt, exist_ok=True)
                if a.fsync:            # the root's own entry, so a power cut cannot take it
                    fsync_dir(os.path.dirname(os.path.abspath(a.ckpt)))
            _, tmps = scan(a.ckpt)
            for t in tmps:             # a save that never reached its rename: never read, removed
                unlink_quietly(os.path.join(a.ckpt, t))
        if group:
            group.barrier()            # the root is there, and clean, before any rank reads it
        tr, restored, fallbacks = restore(a.ckpt, a.seed, a.steps)
        if group:
            group.agree(restored, "the checkpoint to resume from")
        if lead:
            start = {"event": "start", "protocol": PROTOCOL, "attempt": a.attempt, "world_size": a.world_size,
                     "restored_from": restored, "checkpoint": None if restored is None else ckpt_name(restored),
                     "trainer": "numpy_trainer", "seed": a.seed, "steps": a.steps}
            if restored is not None:
                start["restored"] = tr.digests()
            start["fallbacks"] = [{"checkpoint": n, "why": w} for n, w in fallbacks]
            traj.record(start)
            for n, w in fallbacks:
                print("train.py: passed over %s: %s" % (n, w), file=sys.stderr)

        last = min(a.steps, a.stop_after) if a.stop_after else a.steps
        while tr.step < last:
            out = tr.train_step(group)
            if lead:
                rec = {"step": tr.step, "loss": f32_hex(out["loss"]), "lr": f32_hex(out["lr"]),
                       "grad_norm": f32_hex(out["grad_norm"])}
                rec.update(tr.digests())
                traj.record(rec)
            if tr.step % a.every:
                continue
            failed = None
            if lead:
                try:
                    name = save(a.ckpt, tr, a.fsync)
                except OSError as e:
                    # the run goes on; earlier checkpoints are intact, the next save retries
                    failed = e
            if group:
                group.barrier()        # every rank is past this save before it is acknowledged
            if not lead:
                continue
            if failed:
                traj.record({"event": "save_failed", "step": tr.step, "error": "%s: %s" % (
                    failed.filename or ckpt_name(tr.step), failed.strerror)})
                continue
            # the acknowledgement: only once the file is in place under its final name
            traj.record({"event": "committed", "step": tr.step, "checkpoint": name})
            retain(a.ckpt, a.keep)
        if lead:
            traj.record({"event": "end", "status": "done" if tr.step == a.steps else "stopped", "steps": tr.step})
            traj.close()
        if group:
            group.close()
        return 0
    except PeerLost as e:
        # the job crashed: no end record, the scheduler restarts it
        print("train.py: rank %d: %s" % (a.rank, e), file=sys.stderr)
        return 1
    except (RuntimeError, OSError) as e:
        msg = str(e) if isinstance(e, RuntimeError) else "%s: %s" % (e.filename or "", e.strerror)
        print("train.py: rank %d: %s" % (a.rank, msg) if a.world_size > 1 else "train.py: %s" % msg, file=sys.stderr)
        if lead:
            traj.record({"event": "end", "status": "failed", "steps": tr.step if tr else 0, "error": msg})
            traj.close()
        return 1


if __name__ == "__main__":
    sys.exit(main())
