#!/usr/bin/python3
"""A data-parallel PyTorch trainer that speaks the trainer protocol v1
(DESIGN.md, "Any program under test"), for judging PyTorch checkpoint code.

Gloo on CPU, torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT; the harness's `launcher: procs`), 1, 2 or 4 processes. The state a
real job has: a model with Conv1d, Linear, LayerNorm, GELU and Dropout layers
under DistributedDataParallel, AdamW with weight decay, a warmup + cosine
LambdaLR, a DistributedSampler over a synthetic data set (shuffled per epoch,
several epochs), gradient clipping, an input-noise augmentation drawn from
Python's `random` (whether) and numpy's global RNG (the noise), and an EMA of
the loss as user state. Bitwise deterministic on CPU:
use_deterministic_algorithms, one thread, seeded generators, no loader
workers, and a fixed world size (Gloo's sum of two gradients is commutative).

Writers (--writer), each checkpointing the same state:
  atomic      DESIGN.md's save protocol: ROOT/step-S.tmp/, every rank writes
              and fsyncs rank-R.pt, barrier, rank 0 writes and fsyncs
              manifest.json (sizes and blake2b of every file) last, fsyncs the
              directory, renames it to ROOT/step-S, fsyncs ROOT. Restore: newest
              generation whose manifest and files verify, else the next older.
  torch-save  the pattern of most training scripts: rank 0 gathers every
              rank's state and calls torch.save(state, ROOT/ckpt-S.pt.tmp), then
              os.replace to ROOT/ckpt-S.pt. Restore: torch.load of the newest
              ckpt-*.pt, the next older one if torch.load raises.
  dcp         torch 1.13's distributed checkpoint: save_state_dict with its
              FileSystemWriter into ROOT/dcp-S/, load_state_dict with its
              FileSystemReader from the newest dcp-S/ that has a .metadata, the
              next older one if it raises. Importing it on Debian 12 needs one
              workaround, in one place: _MetadataFix below.
  skorch      one process: Debian's skorch 0.12 trains the same model with its
              Checkpoint callback and resumes with load_params(checkpoint=...)
              as its documentation shows (run_skorch below).

Phases are announced through the beacon (harness/shim/ckpt_beacon.py) and the
trajectory written with harness/shim/ckpt_trajectory.py; both are found next
to the shim in $LD_PRELOAD, else in harness/shim/ of this repository.

Exit status: 0 done or stopped (--stop-after), 1 failed (the end record says
why) or crashed (an exception: no end record, the scheduler restarts the job),
2 bad usage.
"""
import argparse
import datetime
import faulthandler
import hashlib
import importlib.abc
import importlib.util
import io
import json
import math
import os
import random
import re
import shutil
import signal
import struct
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


# the harness's helpers: where it says they are ($CKPT_HARNESS_LIBDIR), next to the shim it
# preloads, then this repository's sources
sys.path[:0] = [d for d in [os.environ.get("CKPT_HARNESS_LIBDIR", "")] if d] + \
    [os.path.dirname(lib) for lib in os.environ.get("LD_PRELOAD", "").split()
     if os.path.exists(os.path.join(os.path.dirname(lib), "ckpt_trajectory.py"))] + \
    [os.path.join(HERE, "..", "..", "harness", "shim")]
import ckpt_beacon as beacon          # noqa: E402
import ckpt_trajectory as ct          # noqa: E402

import numpy as np                    # noqa: E402
import torch                          # noqa: E402
import torch.distributed as dist      # noqa: E402
import torch.nn as nn                 # noqa: E402

FORMAT = 1
N_SAMPLES, D_IN, N_CLASSES = 320, 16, 4      # 10 batches an epoch
BATCH = 32                     # global batch, split over the ranks
BASE_LR, MIN_LR, WEIGHT_DECAY, CLIP = 3e-3, 3e-4, 0.01, 1.0
DROPOUT, NOISE_P, NOISE_STD, EMA_DECAY = 0.1, 0.5, 0.05, 0.9
WRITERS = ("atomic", "torch-save", "dcp", "skorch")
GEN_RE = re.compile(r"^step-(\d{8})$")
FILE_RE = re.compile(r"^ckpt-(\d{8})\.pt$")
DCP_RE = re.compile(r"^dcp-(\d{8})$")
MAX_FILE = 64 << 20


class Untrusted(Exception):
    """A checkpoint that fails verification; the message says why."""


# ---------------------------------------------------------------- model and data

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(4 * D_IN, 48)
        self.norm = nn.LayerNorm(48)
        self.act = nn.GELU()
        self.drop = nn.Dropout(DROPOUT)
        self.fc2 = nn.Linear(48, N_CLASSES)

    def forward(self, x):
        h = self.conv(x.unsqueeze(1)).flatten(1)
        return self.fc2(self.drop(self.act(self.norm(self.fc1(h)))))


def dataset(seed):
    """The synthetic data set: derived from the seed, never state."""
    g = torch.Generator().manual_seed(10_000 + seed)
    x = torch.randn(N_SAMPLES, D_IN, generator=g)
    w = torch.randn(D_IN, N_CLASSES, generator=g)
    y = torch.argmax(x @ w + 0.5 * torch.randn(N_SAMPLES, N_CLASSES, generator=g), dim=1)
    return torch.utils.data.TensorDataset(x, y)


def lr_factor(steps):
    warmup = max(1, steps // 10)

    def f(t):                  # t: scheduler steps taken so far
        if t < warmup:
            return (t + 1) / warmup
        progress = (t - warmup) / max(1, steps - warmup)
        return (MIN_LR + (BASE_LR - MIN_LR) * 0.5 * (1.0 + math.cos(math.pi * progress))) / BASE_LR
    return f


# ---------------------------------------------------------------- canonical bytes of state

def encode(obj, out):
    """Append canonical bytes of obj (tensors by dtype, shape and raw bytes) to the list out."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        out.append(b"T%s%s;" % (str(t.dtype).encode(), str(tuple(t.shape)).encode()))
        out.append(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        out.append(b"N%s%s;" % (obj.dtype.str.encode(), str(obj.shape).encode()))
        out.append(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, dict):
        out.append(b"{")
        for k in sorted(obj, key=repr):
            encode(k, out)
            encode(obj[k], out)
        out.append(b"}")
    elif isinstance(obj, (list, tuple)):
        out.append(b"[")
        for v in obj:
            encode(v, out)
        out.append(b"]")
    elif isinstance(obj, float):
        out.append(b"F" + struct.pack("<d", obj))
    elif obj is None or isinstance(obj, (bool, int, str)):
        out.append(b"S" + repr(obj).encode() + b";")
    else:
        raise TypeError("cannot encode %r" % type(obj))
    return out


def edigest(obj):
    return ct.digest(*encode(obj, []))


def opt_digest(opt):
    """The optimizer's own state (moments, step counts, hyperparameters); the LR it holds belongs to the
    schedule (sched, and the step record's lr), so a wrong schedule is not reported as wrong moments."""
    sd = opt.state_dict()
    groups = [{k: v for k, v in g.items() if k not in ("lr", "initial_lr")} for g in sd["param_groups"]]
    return edigest({"state": sd["state"], "param_groups": groups})


# ---------------------------------------------------------------- the trainer

class Trainer:
    def __init__(self, a):
        self.a = a
        self.rank, self.world = a.rank, a.world_size
        torch.manual_seed(a.seed)                      # the same initial weights on every rank
        self.model = Net()
        self.ddp = (torch.nn.parallel.DistributedDataParallel(self.model) if self.world > 1 else self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=BASE_LR, weight_decay=WEIGHT_DECAY)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor(a.steps))
        self.data = dataset(a.seed)
        self.sampler = torch.utils.data.distributed.DistributedSampler(
            self.data, num_replicas=self.world, rank=self.rank, shuffle=True, seed=a.seed)
        self.per_rank = BATCH // self.world
        self.batches = len(self.sampler) // self.per_rank
        # per-rank streams: dropout (torch), augmentation (random, numpy)
        torch.manual_seed(a.seed * 1000 + 1 + self.rank)
        np.random.seed(a.seed * 1000 + 2 + self.rank)
        random.seed(a.seed * 1000 + 3 + self.rank)
        self.epoch, self.pos = 0, 0                   # data cursor: batches into the epoch
        self.ema, self.ema_n = 0.0, 0
        self.step = 0

    def config(self):
        return {"trainer": "torch_trainer", "format": FORMAT, "seed": self.a.seed, "steps": self.a.steps,
                "world_size": self.world, "model": [N_SAMPLES, D_IN, N_CLASSES, BATCH],
                "hyper": [BASE_LR, MIN_LR, WEIGHT_DECAY, CLIP, DROPOUT, NOISE_P, NOISE_STD, EMA_DECAY]}

    # -- state: what a checkpoint holds (torch 1.13's weights_only unpickler refuses floats: see README)
    def shared_state(self):
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "user": {"ema": self.ema, "ema_n": self.ema_n},
                "step": self.step, "config": json.dumps(self.config(), sort_keys=True)}

    def rank_state(self):
        name, keys, pos, has_gauss, cached = np.random.get_state()
        version, mt, gauss_next = random.getstate()
        return {"rank": self.rank,
                "rng": {"torch": torch.get_rng_state(),
                        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                                  float(cached)],
                        "python": [version, torch.tensor(mt, dtype=torch.int64), gauss_next]},
                "data": {"epoch": self.epoch, "pos": self.pos}}

    def load_shared(self, st):
        if st.get("config") != json.dumps(self.config(), sort_keys=True):
            raise Untrusted("written with another configuration")
        self.model.load_state_dict(st["model"])
        if "opt" not in self.a.test_forget:
            self.opt.load_state_dict(st["optimizer"])
        if "sched" not in self.a.test_forget:
            self.sched.load_state_dict(st["scheduler"])
        self.ema, self.ema_n = float(st["user"]["ema"]), int(st["user"]["ema_n"])
        self.step = int(st["step"])

    def load_rank(self, st):
        if st.get("rank") != self.rank:
            raise Untrusted("rank state of rank %r, expected %d" % (st.get("rank"), self.rank))
        rng = st["rng"]
        if "rng" not in self.a.test_forget:
            torch.set_rng_state(rng["torch"])
            name, keys, pos, has_gauss, cached = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            version, mt, gauss_next = rng["python"]
            random.setstate((version, tuple(int(v) for v in mt.tolist()), gauss_next))
        if "data" not in self.a.test_forget:
            self.epoch, self.pos = int(st["data"]["epoch"]), int(st["data"]["pos"])
        if not (0 <= self.pos < self.batches):
            raise Untrusted("data cursor %d is not a batch of an epoch of %d" % (self.pos, self.batches))

    # -- component digests: from the tensors' bytes; per-rank components over all ranks in rank order
    def digests(self):
        rs = self.rank_state()
        mine = bytes.fromhex(edigest(rs["rng"]) + edigest([self.rank, self.a.seed, rs["data"]]))
        if self.world > 1:
            t = torch.tensor(list(mine), dtype=torch.uint8)
            allt = [torch.zeros_like(t) for _ in range(self.world)]
            dist.all_gather(allt, t)
            every = [bytes(x.tolist()) for x in allt]
        else:
            every = [mine]
        return {"params": edigest(self.model.state_dict()),
                "opt": opt_digest(self.opt),
                "sched": edigest(self.sched.state_dict()),
                "rng": ct.digest(*[e[:8] for e in every]),
                "data": ct.digest(*[e[8:] for e in every]),
                "user": edigest([self.ema, self.ema_n])}

    def train_step(self):
        self.step += 1
        beacon.step(self.step)
        beacon.phase("train.step")
        self.sampler.set_epoch(self.epoch)
        idx = list(self.sampler)[self.pos * self.per_rank:(self.pos + 1) * self.per_rank]
        x, y = self.data[idx]
        if random.random() < NOISE_P:
            x = x + torch.from_numpy(np.random.standard_normal(x.shape).astype(np.float32)) * NOISE_STD
        self.ddp.train()
        loss = nn.functional.cross_entropy(self.ddp(x), y)
        self.opt.zero_grad(set_to_none=True)
        beacon.phase("train.reduce")
        loss.backward()                                # DDP's allreduce of the gradients
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.sched.step()
        gl = loss.detach().clone()
        if self.world > 1:
            dist.all_reduce(gl)
            gl /= self.world
        gl = float(gl)
        self.ema = gl if self.ema_n == 0 else EMA_DECAY * self.ema + (1.0 - EMA_DECAY) * gl
        self.ema_n += 1
        self.pos += 1
        if self.pos == self.batches:
            self.epoch, self.pos = self.epoch + 1, 0
        rec = {"loss": ct.f32_hex(gl), "lr": ct.f64_hex(lr), "grad_norm": ct.f32_hex(float(gnorm)),
               "epoch": self.epoch, "ema": ct.f64_hex(self.ema)}
        rec.update(self.digests())
        return rec


# ---------------------------------------------------------------- collectives that also work alone

def barrier(world):
    if world > 1:
        dist.barrier()


def all_ok(ok, world):
    """True when ok holds on every rank."""
    if world == 1:
        return ok
    t = torch.tensor([1 if ok else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def bcast(obj, world):
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def phase(name):
    """A phase point: an injected errno comes back as an OSError."""
    rc = beacon.phase(name)
    if rc < 0:
        raise OSError(-rc, "%s: %s (injected at the phase point)" % (name, os.strerror(-rc)))


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_file(path):
    """The whole regular file (no symlink), at most MAX_FILE bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000) or st.st_size > MAX_FILE:
            raise Untrusted("%s is not a regular file of at most %d bytes" % (os.path.basename(path), MAX_FILE))
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


def blake(data):
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def err_text(e):
    if isinstance(e, OSError) and e.strerror:
        return "%s: %s" % (os.path.basename(e.filename or "") or "checkpoint", e.strerror)
    return str(e) or type(e).__name__


# ---------------------------------------------------------------- writer: atomic (DESIGN.md's protocol)

class Writer:
    """What every writer holds (the trainer, the checkpoint root, the world and this rank), its
    checkpoints' names (PATTERN) and the retention they share."""
    PATTERN = None

    def __init__(self, tr, root):
        self.tr, self.root, self.world, self.rank = tr, root, tr.world, tr.rank

    def generations(self, newest_first=False):
        return sorted((n for n in os.listdir(self.root) if self.PATTERN.match(n)), reverse=newest_first)

    def retain(self, keep):
        """Rank 0: all but the newest `keep` checkpoints go (a directory, or a file)."""
        if self.rank != 0:
            return
        phase("save.retention")
        for n in self.generations()[:-keep] if keep > 0 else []:
            path = os.path.join(self.root, n)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)


class AtomicWriter(Writer):
    """ROOT/step-S/{rank-R.pt..., manifest.json}; manifest last, renamed into place, every step made durable."""
    PATTERN = GEN_RE

    @staticmethod
    def name(step):
        return "step-%08d" % step

    def save(self, step):
        """True when the generation is committed and durable on every rank."""
        tmp = os.path.join(self.root, self.name(step) + ".tmp")
        ok = True
        try:
            if self.rank == 0:
                phase("save.prepare")
                shutil.rmtree(tmp, ignore_errors=True)
                os.mkdir(tmp)
        except OSError as e:
            ok, why = False, err_text(e)
        if not all_ok(ok, self.world):
            return self._failed(tmp, why if not ok else "rank 0 could not prepare %s" % os.path.basename(tmp))
        shard = "rank-%05d.pt" % self.rank
        try:
            state = self.tr.rank_state()
            if self.rank == 0:
                state["shared"] = self.tr.shared_state()
            buf = io.BytesIO()
            torch.save(state, buf)
            data = buf.getvalue()
            phase("save.shard_write")
            fd = write_file(os.path.join(tmp, shard), data)
            try:
                phase("save.shard_sync")
                os.fsync(fd)
            finally:
                os.close(fd)
            mine = [shard, len(data), blake(data)]
        except OSError as e:
            ok, why, mine = False, err_text(e), None
        phase("save.barrier")
        files = [mine]
        if self.world > 1:
            files = [None] * self.world
            dist.all_gather_object(files, mine)
        if not all_ok(ok, self.world):
            return self._failed(tmp, why if not ok else "another rank failed to write its shard")
        try:
            if self.rank == 0:
                man = {"format": FORMAT, "step": step, "world_size": self.world,
                       "config": self.tr.config(), "files": {f[0]: {"size": f[1], "blake2b": f[2]} for f in files}}
                man["checksum"] = blake(json.dumps(man, sort_keys=True).encode())
                phase("save.manifest_write")
                fd = write_file(os.path.join(tmp, "manifest.json"), json.dumps(man, sort_keys=True).encode())
                try:
                    phase("save.manifest_sync")
                    os.fsync(fd)
                finally:
                    os.close(fd)
                fsync_path(tmp)                        # the shards' and the manifest's names
                phase("save.commit")
                os.rename(tmp, os.path.join(self.root, self.name(step)))
                phase("save.dir_sync")
                fsync_path(self.root)                  # the rename
        except OSError as e:
            ok, why = False, err_text(e)
        if not all_ok(ok, self.world):
            return self._failed(tmp, why if not ok else "rank 0 failed to commit")
        return True

    def _failed(self, tmp, why):
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        self.why = why
        return False

    def verify(self, name):
        """Rank 0: the manifest of ROOT/name, after checking it and every file it lists."""
        d = os.path.join(self.root, name)
        try:
            man = json.loads(read_file(os.path.join(d, "manifest.json")))
        except (OSError, ValueError) as e:
            raise Untrusted("manifest.json unreadable (%s)" % err_text(e))
        if not isinstance(man, dict) or not isinstance(man.get("checksum"), str):
            raise Untrusted("manifest.json has no checksum")
        body = dict(man)
        del body["checksum"]
        if blake(json.dumps(body, sort_keys=True).encode()) != man["checksum"]:
            raise Untrusted("manifest.json checksum mismatch")
        if man.get("format") != FORMAT or man.get("step") != int(GEN_RE.match(name).group(1)) \
                or man.get("world_size") != self.world or man.get("config") != self.tr.config():
            raise Untrusted("manifest.json is for another step, world size or configuration")
        want = {"rank-%05d.pt" % r for r in range(self.world)}
        if not isinstance(man.get("files"), dict) or set(man["files"]) != want:
            raise Untrusted("manifest.json does not list exactly the %d shards" % self.world)
        phase("restore.verify")
        for f, meta in sorted(man["files"].items()):
            self._check(d, f, meta)
        return man

    @staticmethod
    def _check(d, f, meta):
        try:
            data = read_file(os.path.join(d, f))
        except OSError as e:
            raise Untrusted("%s unreadable (%s)" % (f, err_text(e)))
        if len(data) != meta.get("size") or blake(data) != meta.get("blake2b"):
            raise Untrusted("%s size or blake2b mismatch" % f)
        return data

    def restore(self):
        """(step restored or None, checkpoint name, fallbacks); raises Untrusted when none is trusted."""
        choice = None
        if self.rank == 0:
            beacon.step(0)
            phase("restore.scan")
            os.makedirs(self.root, exist_ok=True)
            for n in os.listdir(self.root):
                if n.startswith("step-") and n.endswith(".tmp"):
                    shutil.rmtree(os.path.join(self.root, n), ignore_errors=True)
            gens = self.generations(newest_first=True)
            fallbacks, chosen = [], None
            for n in gens:
                beacon.step(int(n[5:]))
                try:
                    phase("restore.read")
                    self.verify(n)
                    chosen = n
                    break
                except (Untrusted, OSError) as e:
                    fallbacks.append({"checkpoint": n, "why": err_text(e)})
            choice = (chosen, fallbacks, len(gens))
        chosen, fallbacks, ngens = bcast(choice, self.world)
        if chosen is None:
            if ngens:
                raise Untrusted("no trustworthy checkpoint under %s (%s); refusing to start fresh over them"
                                % (self.root, "; ".join("%s: %s" % (f["checkpoint"], f["why"]) for f in fallbacks)))
            return None, None, fallbacks
        step = int(chosen[5:])
        beacon.step(step)
        d = os.path.join(self.root, chosen)
        ok, why = True, ""
        try:
            phase("restore.read")
            man = json.loads(read_file(os.path.join(d, "manifest.json")))
            mine = "rank-%05d.pt" % self.rank
            st = torch.load(io.BytesIO(self._check(d, mine, man["files"][mine])))
            shared = st["shared"] if self.rank == 0 else torch.load(
                io.BytesIO(self._check(d, "rank-00000.pt", man["files"]["rank-00000.pt"])))["shared"]
            self.tr.load_shared(shared)
            self.tr.load_rank(st)
        except (Untrusted, OSError, KeyError, ValueError, RuntimeError) as e:
            ok, why = False, err_text(e)
        if not all_ok(ok, self.world):
            raise Untrusted("%s changed while it was restored (%s)" % (chosen, why or "on another rank"))
        return step, chosen, fallbacks


# ---------------------------------------------------------------- writer: torch-save (what most scripts do)

class TorchSaveWriter(Writer):
    """ROOT/ckpt-S.pt: rank 0 gathers, torch.save to ckpt-S.pt.tmp, os.replace. No fsync: the common pattern."""
    PATTERN = FILE_RE

    @staticmethod
    def name(step):
        return "ckpt-%08d.pt" % step

    def save(self, step):
        phase("save.prepare")
        ranks = [self.tr.rank_state()]
        if self.world > 1:
            ranks = [None] * self.world
            dist.all_gather_object(ranks, self.tr.rank_state())
        if self.rank == 0:
            state = {"shared": self.tr.shared_state(), "ranks": ranks}
            final = os.path.join(self.root, self.name(step))
            phase("save.shard_write")
            torch.save(state, final + ".tmp")          # an exception here crashes the job, as in most scripts
            phase("save.commit")
            os.replace(final + ".tmp", final)
        barrier(self.world)
        return True

    def restore(self):
        choice = None
        if self.rank == 0:
            beacon.step(0)
            phase("restore.scan")
            os.makedirs(self.root, exist_ok=True)
            files = self.generations(newest_first=True)
            fallbacks, chosen = [], None
            for n in files:
                beacon.step(int(n[5:13]))
                try:
                    phase("restore.read")
                    torch.load(os.path.join(self.root, n))
                    chosen = n
                    break
                except Exception as e:                 # whatever torch.load raises on a bad file
                    fallbacks.append({"checkpoint": n, "why": err_text(e)[:200]})
            choice = (chosen, fallbacks)
        chosen, fallbacks = bcast(choice, self.world)
        if chosen is None:
            return None, None, fallbacks
        step = int(chosen[5:13])
        beacon.step(step)
        phase("restore.read")
        st = torch.load(os.path.join(self.root, chosen))
        self.tr.load_shared(st["shared"])
        self.tr.load_rank(st["ranks"][self.rank])
        return step, chosen, fallbacks


# ---------------------------------------------------------------- writer: dcp (torch 1.13's distributed checkpoint)

class _MetadataFix(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """THE ONE WORKAROUND for torch.distributed._shard.checkpoint on Debian 12 (documented here only; the README
    points here). Under Debian's Python 3.11, `import torch.distributed._shard.checkpoint` fails as shipped:
    torch/distributed/_shard/sharded_tensor/metadata.py declares the dataclass field
    `tensor_properties: TensorProperties = field(default=TensorProperties())`, an unhashable instance as a
    default, which Python 3.11's dataclasses refuse (ValueError: mutable default ... use default_factory).
    This import hook loads that one shipped file with that one line read as
    `field(default_factory=TensorProperties)` (each metadata object gets its own default TensorProperties()
    instead of sharing one; nothing in torch mutates it), and refuses (ImportError) if the line is not there
    exactly once. Every other module, and all of the checkpoint's I/O (filesystem.py, state_dict_saver.py,
    state_dict_loader.py, the planners), is imported from the shipped files unchanged."""
    NAME = "torch.distributed._shard.sharded_tensor.metadata"
    OLD = "tensor_properties: TensorProperties = field(default=TensorProperties())"
    NEW = "tensor_properties: TensorProperties = field(default_factory=TensorProperties)"

    def find_spec(self, fullname, path, target=None):
        if fullname != self.NAME or not path:
            return None
        return importlib.util.spec_from_file_location(fullname, os.path.join(list(path)[0], "metadata.py"),
                                                      loader=self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        with open(module.__spec__.origin) as f:
            src = f.read()
        if src.count(self.OLD) != 1:
            raise ImportError("%s: not the shipped file this workaround knows (%r not found once)"
                              % (module.__spec__.origin, self.OLD))
        exec(compile(src.replace(self.OLD, self.NEW), module.__spec__.origin, "exec"), module.__dict__)


def import_dcp():
    if sys.version_info >= (3, 11) and not any(isinstance(f, _MetadataFix) for f in sys.meta_path):
        sys.meta_path.insert(0, _MetadataFix())
    import torch.distributed._shard.checkpoint as dcp
    return dcp


class DcpWriter(Writer):
    """ROOT/dcp-S/ through save_state_dict(FileSystemWriter), restored with load_state_dict(FileSystemReader).
    FileSystemWriter writes one file per item (__0_0.distcp, ...) into the new directory, fsyncs each,
    writes .metadata.tmp, fsyncs it and renames it to .metadata (the commit mark). Model tensors are
    tensor items; everything else (optimizer, scheduler, user state, every rank's RNG and cursor, gathered)
    goes as byte items, which only the coordinator (rank 0) writes, as DCP does with replicated values."""
    PATTERN = DCP_RE

    def __init__(self, tr, root):
        super().__init__(tr, root)
        self.dcp = import_dcp()

        class Announcing(self.dcp.FileSystemWriter):
            """FileSystemWriter as shipped; it only announces its commit (.metadata written, renamed) first."""
            def finish(self, metadata, results):
                phase("save.commit")
                return super().finish(metadata, results)
        self.fs_writer = Announcing

    @staticmethod
    def name(step):
        return "dcp-%08d" % step

    def _state(self, ranks):
        sd = {"model." + k: v for k, v in self.tr.model.state_dict().items()}
        shared = self.tr.shared_state()
        del shared["model"]
        sd.update({"shared": shared, "ranks": ranks})
        return sd

    def save(self, step):
        phase("save.prepare")
        ranks = [self.tr.rank_state()]
        if self.world > 1:
            ranks = [None] * self.world
            dist.all_gather_object(ranks, self.tr.rank_state())
        phase("save.shard_write")
        self.dcp.save_state_dict(self._state(ranks), self.fs_writer(os.path.join(self.root, self.name(step))),
                                 no_dist=self.world == 1)
        barrier(self.world)
        return True

    def _load(self, name):
        sd = self._state(None)
        self.dcp.load_state_dict(sd, self.dcp.FileSystemReader(os.path.join(self.root, name)),
                                 no_dist=self.world == 1)
        return sd

    def restore(self):
        """The newest dcp-S with a .metadata that load_state_dict reads, else the next older."""
        choice = None
        if self.rank == 0:
            beacon.step(0)
            phase("restore.scan")
            os.makedirs(self.root, exist_ok=True)
            gens = [n for n in self.generations(newest_first=True)
                    if os.path.exists(os.path.join(self.root, n, ".metadata"))]
            choice = gens
        gens = bcast(choice, self.world)
        fallbacks = []
        for n in gens:
            beacon.step(int(n[4:]))
            ok, why = True, ""
            try:
                phase("restore.read")
                sd = self._load(n)
                if not isinstance(sd.get("ranks"), list) or len(sd["ranks"]) != self.world:
                    raise Untrusted("holds no state for %d ranks" % self.world)
            # torch 1.13's CheckpointException derives from BaseException: `except Exception` misses it
            except (Exception, self.dcp.api.CheckpointException) as e:
                ok, why = False, err_text(e)[:200]
            if not all_ok(ok, self.world):
                fallbacks.append({"checkpoint": n, "why": why or "failed on another rank"})
                continue
            shared = sd["shared"]
            shared["model"] = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
            self.tr.load_shared(shared)
            self.tr.load_rank(sd["ranks"][self.rank])
            return int(n[4:]), n, fallbacks
        return None, None, fallbacks


# ---------------------------------------------------------------- writer: skorch (third-party code as documented)

class StopNow(Exception):
    """--stop-after reached inside skorch's fit loop."""


def run_skorch(a, traj):
    """One process: skorch's NeuralNetClassifier trains the same model on the same data (10 batches an
    epoch), its Checkpoint callback saves every epoch into ROOT (params.pt, optimizer.pt, criterion.pt,
    history.json, fixed names, written in place), and a restart resumes exactly as skorch's documentation
    shows: net.initialize(), net.load_params(checkpoint=cp), then partial_fit for the epochs left."""
    from skorch import NeuralNetClassifier
    from skorch.callbacks import Callback, Checkpoint, LRScheduler

    if a.world_size != 1:
        raise SystemExit("train.py: --writer skorch runs one process (launcher: single), not %d" % a.world_size)
    if a.every != 10:
        raise SystemExit("train.py: --writer skorch saves at the end of each epoch of 10 steps: --every must be 10")
    if a.steps % 10:
        raise SystemExit("train.py: --writer skorch trains whole epochs of 10 steps: --steps must be a multiple of 10")
    data = dataset(a.seed)
    X, y = data.tensors[0].numpy(), data.tensors[1].numpy()
    batches = N_SAMPLES // BATCH
    total_epochs = (a.steps + batches - 1) // batches
    box = {"step": 0, "ema": 0.0, "ema_n": 0, "started": False}

    def digests(net, sched):
        rs = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1], "python": random.getstate()[1]}
        return {"params": edigest(net.module_.state_dict()), "opt": opt_digest(net.optimizer_),
                "sched": edigest(sched.lr_scheduler_.state_dict()), "rng": edigest(rs),
                "data": edigest([0, a.seed, {"epoch": box["step"] // batches, "pos": box["step"] % batches}])}

    class Announce(Callback):          # before skorch's Checkpoint: the save's phase
        def on_epoch_end(self, net, **kw):
            phase("save.shard_write")

    class Protocol(Callback):          # after the scheduler and the Checkpoint: the trajectory
        def on_train_begin(self, net, **kw):
            if not box["started"]:
                box["started"] = True
                r = box["step"] or None
                traj.start(a.attempt, 1, r, "history.json" if r else None, digests(net, sched) if r else None,
                           trainer="torch_trainer", writer="skorch", seed=a.seed, steps=a.steps)

        def on_batch_begin(self, net, training=None, **kw):
            if training:
                box["step"] += 1
                beacon.step(box["step"])
                beacon.phase("train.step")
                box["lr"] = net.optimizer_.param_groups[0]["lr"]

        def on_grad_computed(self, net, named_parameters, **kw):
            # what skorch's GradientNormClipping does, keeping the norm (only training steps compute gradients)
            box["gnorm"] = float(torch.nn.utils.clip_grad_norm_([p for _, p in named_parameters], CLIP))

        def on_batch_end(self, net, training=None, loss=None, **kw):
            if not training:
                return
            gl = float(loss)
            traj.step(box["step"], loss=ct.f32_hex(gl), lr=ct.f64_hex(box["lr"]),
                      grad_norm=ct.f32_hex(box["gnorm"]), epoch=box["step"] // batches, **digests(net, sched))
            if a.stop_after is not None and box["step"] == a.stop_after and box["step"] < a.steps:
                raise StopNow()

        def on_epoch_end(self, net, **kw):
            # skorch's Checkpoint has returned; it never tells whether the save worked
            traj.committed(box["step"], "history.json")

    torch.manual_seed(a.seed)
    sched = LRScheduler(policy=torch.optim.lr_scheduler.LambdaLR, lr_lambda=lr_factor(a.steps), step_every="batch")
    cp = Checkpoint(monitor=None, dirname=a.ckpt)
    net = NeuralNetClassifier(Net, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.AdamW, lr=BASE_LR,
                              optimizer__weight_decay=WEIGHT_DECAY, max_epochs=total_epochs, batch_size=BATCH,
                              train_split=None, iterator_train__shuffle=True, verbose=0,
                              callbacks=[("sched", sched), ("announce", Announce()), ("checkpoint", cp),
                                         ("protocol", Protocol())])
    torch.manual_seed(a.seed)
    net.initialize()
    torch.manual_seed(a.seed * 1000 + 1)
    np.random.seed(a.seed * 1000 + 2)
    random.seed(a.seed * 1000 + 3)
    os.makedirs(a.ckpt, exist_ok=True)
    if os.path.exists(os.path.join(a.ckpt, "history.json")):
        beacon.step(0)
        phase("restore.scan")
        phase("restore.read")
        net.load_params(checkpoint=cp)            # as skorch's documentation shows
        box["step"] = len(net.history) * batches
    status = "done"
    try:
        left = total_epochs - len(net.history)
        if left > 0:
            net.partial_fit(X, y, epochs=left)
    except StopNow:
        status = "stopped"
    if not box["started"]:
        traj.start(a.attempt, 1, box["step"] or None, trainer="torch_trainer", writer="skorch", seed=a.seed,
                   steps=a.steps)
    traj.end(status, box["step"])
    traj.close()
    return 0


# ---------------------------------------------------------------- main

def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get
    p.add_argument("--writer", choices=WRITERS, default="atomic")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ckpt", default=env("CKPT_HARNESS_CKPT_DIR"))
    p.add_argument("--trajectory", default=env("CKPT_HARNESS_TRAJECTORY"))
    p.add_argument("--attempt", type=int, default=int(env("CKPT_HARNESS_ATTEMPT", "0")))
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--keep", type=int, default=3)
    # a seeded bug for the tests: restore everything but these components (a writer that forgets them)
    p.add_argument("--test-forget", action="append", default=[], choices=("rng", "data", "opt", "sched"))
    p.add_argument("--stop-after", type=int, default=int(env("CKPT_HARNESS_STOP_AFTER") or 0) or None)
    a = p.parse_args(argv)
    a.rank, a.world_size = int(env("RANK", "0")), int(env("WORLD_SIZE", "1"))
    if not a.ckpt:
        p.error("--ckpt (or $CKPT_HARNESS_CKPT_DIR) is required")
    if a.steps < 1 or a.every < 1 or a.keep < 1 or not 0 <= a.seed < 2 ** 31:
        p.error("--steps, --every and --keep must be at least 1, --seed in [0, 2^31)")
    if a.world_size not in (1, 2, 4) or not 0 <= a.rank < a.world_size:
        p.error("WORLD_SIZE must be 1, 2 or 4 (it divides the batch of %d) and RANK below it" % BATCH)
    return a


def main(argv=None):
    a = parse(sys.argv[1:] if argv is None else argv)
    # a watchdog's SIGTERM (a hung job) leaves every thread's Python stack in the log
    faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if a.world_size > 1:
        dist.init_process_group("gloo", rank=a.rank, world_size=a.world_size,
                                timeout=datetime.timedelta(seconds=60))
    lead = a.rank == 0
    traj = ct.Trajectory(a.trajectory if lead else None)
    if a.writer == "skorch":
        return run_skorch(a, traj)
    tr = Trainer(a)
    w = {"atomic": AtomicWriter, "torch-save": TorchSaveWriter, "dcp": DcpWriter}[a.writer](tr, a.ckpt)
    try:
        restored, name, fallbacks = w.restore()
    except Untrusted as e:
        if lead:
            traj.end("failed", 0, str(e))
        return 1
    start = {"trainer": "torch_trainer", "writer": a.writer, "seed": a.seed, "steps": a.steps}
    if fallbacks:
        start["fallbacks"] = fallbacks
    traj.start(a.attempt, a.world_size, restored, name, tr.digests() if restored is not None else None, **start)
    status = "done"
    while tr.step < a.steps:
        traj.step(tr.step + 1, **tr.train_step())
        if tr.step % a.every == 0:
            if w.save(tr.step):
                traj.committed(tr.step, w.name(tr.step))
                w.retain(a.keep)
            else:
                traj.save_failed(tr.step, w.why)
        if a.stop_after is not None and tr.step == a.stop_after and tr.step < a.steps:
            status = "stopped"
            break
    barrier(a.world_size)
    traj.end(status, tr.step)
    traj.close()
    return 0


def run():
    """main(), then os._exit: with Gloo's threads alive, torch 1.13's interpreter teardown hung in about 1 of
    10 two-rank runs here (after the end record was written), so a process never returns to it."""
    try:
        rc = main()
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    except BaseException:                              # a crash: the traceback, no end record, exit 1
        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    run()
