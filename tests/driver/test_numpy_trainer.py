"""The numpy trainer (examples/numpy_trainer/train.py): a program outside the C
tree that speaks the trainer protocol v1, on its own, without the harness.

Guards against: a foreign trainer the harness would judge wrongly because the
trainer itself is wrong: runs that are not bitwise reproducible, a resume that
drifts (state not saved, or digests not taken from what was restored), a damaged
newest checkpoint being used, a run that starts fresh over checkpoints it cannot
read, torn temporary files mistaken for checkpoints, and an acknowledgement
(`committed`) written before the file is in place under its final name.

Kills are made the way the fault shim will make them, at one I/O call, by a small
wrapper that patches `os` in the trainer's process (WRAPPER below).
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "numpy_trainer" / "train.py"
PYTHON = "/usr/bin/python3"
STEPS, EVERY, KEEP = 40, 10, 3
COMPONENTS = ("params", "opt", "rng", "data", "sched", "user")

# Runs train.py with os.open/write/fsync/close/replace/unlink wrapped: every call
# on the checkpoint root is logged to $NPT_OPLOG ("write ckpt-00000010.bin.tmp"),
# and so is each `committed` record the trainer writes to its trajectory
# ("committed 10"). With $NPT_KILL_STEP, $NPT_KILL_OP and $NPT_KILL_NTH, the
# process SIGKILLs itself just before the NTH call of that kind counted from the
# opening of ckpt-STEP.bin.tmp (the start of that save); the call never happens.
# With $NPT_ERRNO as well, that call fails with that errno instead of killing.
WRAPPER = r'''
import errno, os, runpy, signal, sys
root = os.path.realpath(os.environ["NPT_ROOT"])
kill_step, kill_op = os.environ.get("NPT_KILL_STEP"), os.environ.get("NPT_KILL_OP")
kill_nth = int(os.environ.get("NPT_KILL_NTH", "1"))
real = {n: getattr(os, n) for n in ("open", "write", "fsync", "close", "replace", "unlink")}
logfd = real["open"](os.environ["NPT_OPLOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
fds, armed, seen = {}, [False], {}

def name_of(p):
    p = os.path.realpath(os.fsdecode(p))
    return "." if p == root else os.path.basename(p) if os.path.dirname(p) == root else None

def op(kind, name):
    if kill_step and kind == "open" and name == "ckpt-%08d.bin.tmp" % int(kill_step):
        armed[0] = True
    if armed[0] and kill_op:
        seen[kind] = seen.get(kind, 0) + 1
        if kind == kill_op and seen[kind] == kill_nth:
            e = os.environ.get("NPT_ERRNO")
            if e:
                real["write"](logfd, ("%s %s -> %s\n" % (kind, name, e)).encode())
                raise OSError(getattr(errno, e), os.strerror(getattr(errno, e)))
            os.kill(os.getpid(), signal.SIGKILL)
    real["write"](logfd, ("%s %s\n" % (kind, name)).encode())

def w_open(path, flags, mode=0o777, *a, **k):
    n = name_of(path)
    if n is not None:
        op("open", n)
    fd = real["open"](path, flags, mode, *a, **k)
    if n is not None:
        fds[fd] = n
    return fd

def w_write(fd, data):
    if fd in fds:
        op("write", fds[fd])
    elif b'"event":"committed"' in bytes(data):
        step = bytes(data).split(b'"step":')[1].split(b",")[0].decode()
        real["write"](logfd, ("committed %s\n" % step).encode())
    return real["write"](fd, data)

def w_fsync(fd):
    if fd in fds:
        op("fsync", fds[fd])
    return real["fsync"](fd)

def w_close(fd):
    if fd in fds:
        op("close", fds.pop(fd))
    return real["close"](fd)

def w_replace(src, dst, *a, **k):
    if name_of(dst) is not None:
        op("replace", "%s %s" % (name_of(src), name_of(dst)))
    return real["replace"](src, dst, *a, **k)

def w_unlink(path, *a, **k):
    if name_of(path) is not None:
        op("unlink", name_of(path))
    return real["unlink"](path, *a, **k)

os.open, os.write, os.fsync, os.close, os.replace, os.unlink = w_open, w_write, w_fsync, w_close, w_replace, w_unlink
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def run(root, traj, *args, attempt=None, wrap=None, env_extra=None):
    env = dict(os.environ)
    for k in ("CKPT_HARNESS_CKPT_DIR", "CKPT_HARNESS_TRAJECTORY", "CKPT_HARNESS_ATTEMPT", "RANK", "WORLD_SIZE"):
        env.pop(k, None)
    if attempt is not None:
        env["CKPT_HARNESS_ATTEMPT"] = str(attempt)
    env.update(env_extra or {})
    argv = [PYTHON, str(TRAIN)]
    if wrap is not None:
        env.update(wrap, NPT_ROOT=str(root))
        argv = [PYTHON, "-c", WRAPPER, str(TRAIN)]
    argv += ["--steps", str(STEPS), "--every", str(EVERY), "--keep", str(KEEP), "--seed", "7",
             "--ckpt", str(root), "--trajectory", str(traj)] + [str(a) for a in args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def events(path, name):
    return [r for r in records(path) if r.get("event") == name]


def step_lines(path, first=1):
    """The step records, verbatim (byte for byte), from step `first` on."""
    return [line for line in Path(path).read_text().splitlines()
            if line.startswith('{"step"') and json.loads(line)["step"] >= first]


def digests_at(path, step):
    (rec,) = [r for r in records(path) if "event" not in r and r["step"] == step]
    return {c: rec[c] for c in COMPONENTS}


def ckpts(root):
    return sorted(p.name for p in Path(root).iterdir())


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden")
    res = run(d / "ckpt", d / "golden.jsonl")
    assert res.returncode == 0, res.stderr
    return d / "golden.jsonl"


@pytest.fixture(scope="module")
def stopped30(tmp_path_factory):
    """A checkpoint root as a run stopped after step 30 leaves it: ckpt-10, -20, -30."""
    d = tmp_path_factory.mktemp("stopped30")
    res = run(d / "ckpt", d / "a1.jsonl", "--stop-after", 30, attempt=1)
    assert res.returncode == 0, res.stderr
    assert ckpts(d / "ckpt") == ["ckpt-00000010.bin", "ckpt-00000020.bin", "ckpt-00000030.bin"]
    return d / "ckpt"


@pytest.fixture
def root30(stopped30, tmp_path):
    shutil.copytree(stopped30, tmp_path / "ckpt")
    return tmp_path / "ckpt"


def assert_resumed_bitwise(traj, golden, restored):
    (start,) = events(traj, "start")
    assert start["restored_from"] == restored
    assert start["checkpoint"] == "ckpt-%08d.bin" % restored
    assert start["restored"] == digests_at(golden, restored)
    assert step_lines(traj) == step_lines(golden, restored + 1)
    assert events(traj, "end") == [{"event": "end", "status": "done", "steps": STEPS}]
    return start


def test_two_uninterrupted_runs_are_byte_identical(golden, tmp_path):
    res = run(tmp_path / "ckpt", tmp_path / "again.jsonl")
    assert res.returncode == 0, res.stderr
    assert Path(golden).read_bytes() == (tmp_path / "again.jsonl").read_bytes()
    for name in ckpts(tmp_path / "ckpt"):      # the checkpoints too, byte for byte
        assert (golden.parent / "ckpt" / name).read_bytes() == (tmp_path / "ckpt" / name).read_bytes()
    # and it is a real run: every step recorded, the loss moves, each component changes every step
    recs = records(golden)
    assert recs[0]["event"] == "start" and recs[0]["restored_from"] is None and "restored" not in recs[0]
    steps = [r for r in recs if "event" not in r]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    assert len({r["loss"] for r in steps}) == STEPS
    for c in COMPONENTS:
        assert len({r[c] for r in steps}) == STEPS, c
    assert [r["step"] for r in events(golden, "committed")] == [10, 20, 30, 40]
    assert ckpts(golden.parent / "ckpt") == ["ckpt-00000020.bin", "ckpt-00000030.bin", "ckpt-00000040.bin"]


def test_another_seed_is_another_run(golden, tmp_path):
    res = run(tmp_path / "ckpt", tmp_path / "t.jsonl", "--seed", 8)   # the later --seed wins
    assert res.returncode == 0, res.stderr
    assert step_lines(tmp_path / "t.jsonl")[0] != step_lines(golden)[0]


@pytest.mark.parametrize("stop", [20, 25])
def test_stop_then_resume_is_bitwise(golden, tmp_path, stop):
    root = tmp_path / "ckpt"
    res = run(root, tmp_path / "a1.jsonl", "--stop-after", stop, attempt=1)
    assert res.returncode == 0, res.stderr
    assert events(tmp_path / "a1.jsonl", "end") == [{"event": "end", "status": "stopped", "steps": stop}]
    assert step_lines(tmp_path / "a1.jsonl") == step_lines(golden)[:stop]
    res = run(root, tmp_path / "a2.jsonl", attempt=2)
    assert res.returncode == 0, res.stderr
    start = assert_resumed_bitwise(tmp_path / "a2.jsonl", golden, 20)
    assert start["attempt"] == 2 and start["fallbacks"] == []


def flip(path, where):
    data = bytearray(path.read_bytes())
    hlen = struct.unpack_from("<I", data, 8)[0]
    off = {"magic": 0, "header": 12 + hlen // 2, "section": 12 + hlen + 100, "checksum": len(data) - 1}[where]
    data[off] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,why", [
    ("magic", "does not start with"), ("section", "checksum mismatch"), ("checksum", "checksum mismatch"),
    ("truncate", "checksum mismatch"), ("empty", "too short"),
])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(golden, root30, tmp_path, damage, why):
    newest = root30 / "ckpt-00000030.bin"
    if damage == "truncate":
        newest.write_bytes(newest.read_bytes()[:-100])
    elif damage == "empty":
        newest.write_bytes(b"")
    else:
        flip(newest, damage)
    res = run(root30, tmp_path / "a2.jsonl", attempt=2)
    assert res.returncode == 0, res.stderr
    start = assert_resumed_bitwise(tmp_path / "a2.jsonl", golden, 20)
    assert [f["checkpoint"] for f in start["fallbacks"]] == ["ckpt-00000030.bin"]
    assert why in start["fallbacks"][0]["why"], start["fallbacks"]
    assert "passed over ckpt-00000030.bin" in res.stderr


def test_every_checkpoint_damaged_is_a_clean_failure_not_a_fresh_start(root30, tmp_path):
    for p in root30.iterdir():
        flip(p, "section")
    before = {p.name: p.read_bytes() for p in root30.iterdir()}
    res = run(root30, tmp_path / "a2.jsonl", attempt=2)
    assert res.returncode == 1, res.stderr
    recs = records(tmp_path / "a2.jsonl")
    assert len(recs) == 1 and recs[0]["event"] == "end" and recs[0]["status"] == "failed", recs
    err = recs[0]["error"]
    assert "no trustworthy checkpoint" in err
    for step in (10, 20, 30):
        assert "ckpt-%08d.bin: checksum mismatch" % step in err
    assert {p.name: p.read_bytes() for p in root30.iterdir()} == before    # nothing written over them


def test_a_checkpoint_of_another_configuration_is_not_trusted(root30, tmp_path):
    res = run(root30, tmp_path / "a2.jsonl", "--seed", 8, attempt=2)
    assert res.returncode == 1
    (end,) = events(tmp_path / "a2.jsonl", "end")
    assert end["status"] == "failed" and "written with another configuration" in end["error"]
    assert "ckpt-00000030.bin: written with another configuration: seed 7 (this run: 8)" in end["error"]


def test_restored_digests_are_taken_from_the_restored_state(golden, root30, tmp_path):
    """A checkpoint whose `user` section was altered (checksum recomputed, so it is
    trusted): the start record's user digest must differ from the uninterrupted
    run's, the other components must not, so the oracle can name the component."""
    path = root30 / "ckpt-00000030.bin"
    data = bytearray(path.read_bytes())
    user_off = len(data) - 32 - 16                 # user is the last section: ema (f64), count (u64)
    (ema,) = struct.unpack_from("<d", data, user_off)
    struct.pack_into("<d", data, user_off, ema * 2)
    data[-32:] = hashlib.blake2b(bytes(data[:-32]), digest_size=32).digest()
    path.write_bytes(bytes(data))
    res = run(root30, tmp_path / "a2.jsonl", attempt=2)
    assert res.returncode == 0, res.stderr
    (start,) = events(tmp_path / "a2.jsonl", "start")
    want = digests_at(golden, 30)
    assert start["restored_from"] == 30
    assert [c for c in COMPONENTS if start["restored"][c] != want[c]] == ["user"]
    # the EMA is not in the loss, so the steps' losses still match; their user digests do not
    g, r = [json.loads(x) for x in step_lines(golden, 31)], [json.loads(x) for x in step_lines(tmp_path / "a2.jsonl")]
    assert [x["loss"] for x in r] == [x["loss"] for x in g]
    assert all(x["user"] != y["user"] for x, y in zip(r, g))


def test_torn_temporary_files_are_ignored_and_removed(golden, root30, tmp_path):
    full = (root30 / "ckpt-00000030.bin").read_bytes()
    (root30 / "ckpt-00000040.bin.tmp").write_bytes(full[:700])       # a save torn mid-write
    (root30 / "ckpt-00000030.bin.tmp").write_bytes(b"\0" * 4096)     # a re-save that never got renamed
    res = run(root30, tmp_path / "a2.jsonl", "--stop-after", 35, attempt=2)
    assert res.returncode == 0, res.stderr
    (start,) = events(tmp_path / "a2.jsonl", "start")
    assert start["restored_from"] == 30 and start["fallbacks"] == []
    assert not any(n.endswith(".tmp") for n in ckpts(root30))
    assert step_lines(tmp_path / "a2.jsonl") == step_lines(golden, 31)[:5]


def test_only_a_torn_temporary_file_means_a_fresh_start(golden, tmp_path):
    root = tmp_path / "ckpt"
    root.mkdir()
    (root / "ckpt-00000010.bin.tmp").write_bytes(b"NPTRAIN1" + b"\xff" * 50)
    res = run(root, tmp_path / "a2.jsonl", "--stop-after", 3, attempt=2)
    assert res.returncode == 0, res.stderr
    (start,) = events(tmp_path / "a2.jsonl", "start")
    assert start["restored_from"] is None and start["checkpoint"] is None
    assert step_lines(tmp_path / "a2.jsonl") == step_lines(golden)[:3]
    assert ckpts(root) == []


def save_block(oplog, step):
    """The calls of one save, from the opening of its temporary file to its acknowledgement (if any)."""
    lines = Path(oplog).read_text().splitlines()
    first = lines.index("open ckpt-%08d.bin.tmp" % step)
    ack = "committed %d" % step
    return lines[first:lines.index(ack) + 1] if ack in lines else lines[first:]


@pytest.mark.parametrize("fsync", [True, False])
def test_save_call_sequence_and_the_acknowledgement_after_it(golden, tmp_path, fsync):
    """What the harness will see: with --fsync the file is fsynced before the
    rename and the root after it; with --no-fsync neither; `committed` follows
    both. The trajectory is the same either way."""
    oplog = tmp_path / "ops.log"
    res = run(tmp_path / "ckpt", tmp_path / "t.jsonl", "--fsync" if fsync else "--no-fsync",
              wrap={"NPT_OPLOG": str(oplog)})
    assert res.returncode == 0, res.stderr
    tmp, final = "ckpt-00000020.bin.tmp", "ckpt-00000020.bin"
    want = ["open " + tmp] + ["write " + tmp] * 8
    if fsync:
        want += ["fsync " + tmp, "close " + tmp, "replace %s %s" % (tmp, final), "open .", "fsync .", "close .",
                 "committed 20"]
    else:
        want += ["close " + tmp, "replace %s %s" % (tmp, final), "committed 20"]
    assert save_block(oplog, 20) == want
    ops = Path(oplog).read_text()
    assert ("fsync" in ops) == fsync
    assert ops.count("committed") == 4
    assert (tmp_path / "t.jsonl").read_bytes() == golden.read_bytes()


# kill points in the save of step 20: (op, nth counted from the opening of the temp file), and
# whether the new file is in place at that moment (then a restart restores 20, else 10)
KILLS = [("write", 5, False), ("fsync", 1, False), ("replace", 1, False), ("fsync", 2, True)]


@pytest.mark.parametrize("kop,nth,in_place", KILLS, ids=["%s%d" % k[:2] for k in KILLS])
def test_killed_during_a_save_never_acknowledges_it_and_resumes_bitwise(golden, tmp_path, kop, nth, in_place):
    root, oplog = tmp_path / "ckpt", tmp_path / "ops.log"
    res = run(root, tmp_path / "a1.jsonl", attempt=1,
              wrap={"NPT_OPLOG": str(oplog), "NPT_KILL_STEP": "20", "NPT_KILL_OP": kop, "NPT_KILL_NTH": str(nth)})
    assert res.returncode == -9, (res.returncode, res.stderr)
    assert [r["step"] for r in events(tmp_path / "a1.jsonl", "committed")] == [10]
    assert events(tmp_path / "a1.jsonl", "end") == []
    assert "committed 20" not in oplog.read_text()
    assert (root / "ckpt-00000020.bin").exists() == in_place
    torn = root / "ckpt-00000020.bin.tmp"
    assert torn.exists() == (not in_place)
    res = run(root, tmp_path / "a2.jsonl", attempt=2)
    assert res.returncode == 0, res.stderr
    assert_resumed_bitwise(tmp_path / "a2.jsonl", golden, 20 if in_place else 10)
    assert not torn.exists()


def test_a_kill_after_the_acknowledgement_keeps_the_acknowledged_checkpoint(golden, tmp_path):
    root, oplog = tmp_path / "ckpt", tmp_path / "ops.log"
    res = run(root, tmp_path / "a1.jsonl", attempt=1,
              wrap={"NPT_OPLOG": str(oplog), "NPT_KILL_STEP": "30", "NPT_KILL_OP": "write", "NPT_KILL_NTH": "1"})
    assert res.returncode == -9
    assert [r["step"] for r in events(tmp_path / "a1.jsonl", "committed")] == [10, 20]
    res = run(root, tmp_path / "a2.jsonl", attempt=2)
    assert res.returncode == 0, res.stderr
    assert_resumed_bitwise(tmp_path / "a2.jsonl", golden, 20)


def test_environment_names_the_root_trajectory_and_attempt(golden, tmp_path):
    env = {"CKPT_HARNESS_CKPT_DIR": str(tmp_path / "ckpt"), "CKPT_HARNESS_TRAJECTORY": str(tmp_path / "t.jsonl"),
           "CKPT_HARNESS_ATTEMPT": "3"}
    res = subprocess.run([PYTHON, str(TRAIN), "--steps", str(STEPS), "--seed", "7", "--stop-after", "10"],
                         env=dict(os.environ, **env), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    (start,) = events(tmp_path / "t.jsonl", "start")
    assert start["attempt"] == 3
    assert step_lines(tmp_path / "t.jsonl") == step_lines(golden)[:10]
    assert ckpts(tmp_path / "ckpt") == ["ckpt-00000010.bin"]


@pytest.mark.parametrize("args,env,msg", [
    (["--steps", "0"], {}, "--steps 0: must be at least 1"),
    (["--every", "0"], {}, "--every 0: must be at least 1"),
    ([], {"WORLD_SIZE": "3", "RANK": "1"}, "world size 3 does not divide the 4 virtual workers"),
    ([], {"WORLD_SIZE": "2", "RANK": "1"}, "needs $MASTER_ADDR and $MASTER_PORT"),
    (["--bogus"], {}, "unrecognized arguments: --bogus"),
])
def test_bad_usage_exits_2_and_writes_nothing(tmp_path, args, env, msg):
    res = subprocess.run([PYTHON, str(TRAIN), "--ckpt", str(tmp_path / "ckpt"), "--trajectory",
                          str(tmp_path / "t.jsonl"), *args], env=dict(os.environ, **env),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and msg in res.stderr, res.stderr
    assert not (tmp_path / "t.jsonl").exists() and not (tmp_path / "ckpt").exists()


def test_a_failed_save_is_reported_cleaned_up_and_the_run_goes_on(golden, tmp_path):
    root, oplog = tmp_path / "ckpt", tmp_path / "ops.log"
    res = run(root, tmp_path / "a1.jsonl", attempt=1, wrap={"NPT_OPLOG": str(oplog), "NPT_KILL_STEP": "20",
                                                            "NPT_KILL_OP": "write", "NPT_KILL_NTH": "3",
                                                            "NPT_ERRNO": "EIO"})
    assert res.returncode == 0, res.stderr
    t = tmp_path / "a1.jsonl"
    assert "write ckpt-00000020.bin.tmp -> EIO" in oplog.read_text()
    assert events(t, "save_failed") == [{"event": "save_failed", "step": 20,
                                         "error": "ckpt-00000020.bin: Input/output error"}]
    assert [r["step"] for r in events(t, "committed")] == [10, 30, 40]
    assert step_lines(t) == step_lines(golden)
    assert events(t, "end") == [{"event": "end", "status": "done", "steps": STEPS}]
    assert ckpts(root) == ["ckpt-00000010.bin", "ckpt-00000030.bin", "ckpt-00000040.bin"]
