"""The fault shim (libckpt-fault-shim.so, LD_PRELOAD) on programs that have no
fault points of their own: shim_victim (every wrapped entry point), reftrain
under mpirun (the shim in the ranks only), and a Python interpreter.

Guards against: a fault that fires on the wrong call or outside the
checkpoint root, an entry point a real trainer reaches that the shim misses,
nth counts split by threads or child processes, an undo record the power-loss
simulation cannot replay, and a preload that deadlocks MPI_Init.
"""
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

import mpi

BIN = mpi.BIN
LIB = mpi.BUILD / "lib"
SHIM = LIB / "libckpt-fault-shim.so"
VICTIM = BIN / "shim_victim"
ERRNO = {"EIO": 5, "ENOSPC": 28}


def preload_value():
    """LD_PRELOAD for the shim; a sanitizer build's shim needs the ASan runtime first."""
    try:
        dyn = subprocess.run(["readelf", "-d", str(SHIM)], capture_output=True, text=True).stdout
    except OSError:
        dyn = ""
    if "libasan" not in dyn:
        return str(SHIM)
    asan = subprocess.run(["cc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return f"{asan} {SHIM}"


PRELOAD = preload_value()

# Which DESIGN op each call of `shim_victim entry` is decided as.
ENTRY_OPS = {
    "open": {"open_dir", "open", "open64", "openat", "openat64", "__open_2", "__open64_2", "__openat_2",
             "__openat64_2", "creat", "creat64", "fopen", "freopen", "fopen64", "open_tmpfile"},
    "write": {"fwrite", "fwrite_unlocked", "fputs", "fputs_unlocked", "fputc", "putc", "fputc_unlocked",
              "putc_unlocked", "fprintf", "__fprintf_chk", "vfprintf", "write", "pwrite", "pwrite64", "writev", "pwritev", "pwritev2", "write_dup", "write_dup2",
              "write_dup3", "write_fcntl_dupfd", "write_fcntl_dupfd_cloexec", "copy_file_range", "sendfile",
              "write_tmpfile"},
    "read": {"pread", "pread64", "__pread_chk", "read", "__read_chk", "readv", "preadv", "preadv2",
             "copy_file_range", "sendfile"},
    "fsync": {"fsync", "syncfs", "fsync_dir"},
    "fdatasync": {"fdatasync", "sync_file_range"},
    "ftruncate": {"ftruncate", "truncate", "fallocate", "posix_fallocate"},
    "rename": {"rename", "renameat", "renameat2"},
    "link": {"link", "linkat", "linkat_tmpfile"},
    "unlink": {"unlink", "unlinkat", "remove"},
    "rmdir": {"rmdir", "unlinkat_dir", "remove_dir"},
    "mkdir": {"mkdir", "mkdirat"},
    "opendir": {"opendir"},
    "close": {"close", "fclose"},
}


def fault_line(op="*", path="*", nth=1, times=0, action="errno", arg=0, err="EIO", rank=-1, step=-1, phase="*",
               attempt=-1):
    """One line of the plan format of harness/plan.h."""
    return (f"fault attempt={attempt} rank={rank} step={step} phase={phase} op={op} nth={nth} times={times} "
            f"path={path} action={action} arg={arg} errno={ERRNO.get(err, 0)}\n")


class Work:
    def __init__(self, base):
        self.base = Path(base)
        self.root = self.base / "root"
        self.out = self.base / "out"
        self.root.mkdir()
        self.out.mkdir()
        self.plan = self.base / "plan"
        self.log = self.base / "faults"

    def env(self, *faults, shim=True, **extra):
        env = dict(os.environ)
        for k in [k for k in env if k.startswith("CKPT_") or k in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK",
                                                                   "PMIX_RANK", "SLURM_PROCID", "LD_PRELOAD")]:
            del env[k]
        self.plan.write_text("".join(faults))
        env.update(CKPT_HARNESS_CKPT_DIR=str(self.root), CKPT_FAULT_PLAN=str(self.plan), CKPT_FAULT_LOG=str(self.log))
        if shim:
            env["LD_PRELOAD"] = PRELOAD
            env["ASAN_OPTIONS"] = "detect_leaks=0"   # python3 and the victim's children are not ours
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run(self, args, *faults, shim=True, check=True, **extra):
        p = subprocess.run([str(a) for a in args], env=self.env(*faults, shim=shim, **extra), capture_output=True,
                           text=True, timeout=60)
        if check:
            assert p.returncode == 0, p.stderr
        return p

    def fires(self, rank=0):
        path = Path(f"{self.log}.rank-{rank}.jsonl")
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def work(tmp_path):
    assert SHIM.exists() and VICTIM.exists(), "build first: cmake --build build"
    return Work(tmp_path)


def rows(text):
    out = []
    for line in text.splitlines():
        tag, call, rc, err = line.split()
        out.append((tag, call, int(rc), int(err)))
    return out


def entry_rows(work, *faults):
    inside = rows(work.run([VICTIM, "entry", work.root, "root"], *faults).stdout)
    outside = rows(work.run([VICTIM, "entry", work.out, "out"], *faults).stdout)
    return inside, outside


def test_victim_passes_everything_without_the_shim(work):
    inside, outside = rows(work.run([VICTIM, "entry", work.root, "root"], shim=False).stdout), []
    assert len(inside) > 60
    assert [r for r in inside if r[2] < 0] == []
    assert {c for _, c, _, _ in inside} == set().union(*ENTRY_OPS.values()) | {"close_range"}, outside


@pytest.mark.parametrize("op", sorted(ENTRY_OPS))
def test_every_entry_point_of_an_op_fails_under_the_root_only(work, op):
    # opens: spare the directory (every *at call needs it) and stdio's first open (freopen needs it)
    spared = {"open_dir", "open_tmpfile", "fopen", "freopen", "fopen64"}
    want = ENTRY_OPS[op] - spared if op == "open" else ENTRY_OPS[op]
    inside, outside = entry_rows(work, fault_line(op=op, times=0, path="[abe]*.bin" if op == "open" else "*"))
    failed = {c for _, c, rc, e in inside if rc < 0 and e == 5}
    assert failed == want
    assert [r for r in outside if r[2] < 0] == []
    assert {f["op"] for f in work.fires()} == {op}
    assert all(f["path"].startswith(str(work.root)) for f in work.fires())


def test_stdio_opens_are_faulted_too(work):
    # c.bin: opened by fopen (1st), freopen (2nd), fopen64 (3rd)
    inside, _ = entry_rows(work, fault_line(op="open", path="c.bin", nth=2, times=2))
    assert {c for _, c, rc, e in inside if rc < 0 and e == 5} == {"freopen", "fopen64"}


def test_o_tmpfile_open_is_faulted(work):
    # the root directory is opened by name twice: the dirfd (1st), O_TMPFILE (2nd)
    inside, _ = entry_rows(work, fault_line(op="open", path="root", nth=2, times=1))
    assert {c for _, c, rc, e in inside if rc < 0 and e == 5} == {"open_tmpfile"}


def test_fault_fires_exactly_on_the_nth_matching_call(work):
    f = work.root / "c.bin"
    p = work.run([VICTIM, "writes", f, 6], fault_line(op="write", path="c.bin", nth=3, times=2))
    got = [(int(k), int(rc), int(e)) for _, k, rc, e in (x.split() for x in p.stdout.splitlines())]
    assert got == [(1, 1, 0), (2, 1, 0), (3, -1, 5), (4, -1, 5), (5, 1, 0), (6, 1, 0)]
    assert f.stat().st_size == 4
    assert [x["nth"] for x in work.fires()] == [3, 4]


def test_a_second_run_counts_from_zero(work):
    f = work.root / "c.bin"
    for _ in range(2):
        p = work.run([VICTIM, "writes", f, 2], fault_line(op="write", nth=2, times=1))
        assert p.stdout.splitlines() == ["write 1 1 0", "write 2 -1 5"]


def test_same_name_outside_the_root_is_untouched(work):
    p = work.run([VICTIM, "writes", work.out / "c.bin", 3], fault_line(op="write", path="c.bin"))
    assert all(x.split()[2] == "1" for x in p.stdout.splitlines())
    assert work.fires() == []


def test_fd_reused_behind_the_shims_back_is_judged_by_what_it_is_now(work):
    p = work.run([VICTIM, "stale", work.root / "c.bin", work.out / "c.bin"], fault_line(op="write"))
    assert p.stdout == "reused 1 1 0\n"
    p = work.run([VICTIM, "stale", work.root / "c.bin", work.root / "d.bin"], fault_line(op="write"))
    assert p.stdout == "reused 1 -1 5\n"
    assert Path(work.fires()[-1]["path"]).name == "d.bin"


def test_path_glob_selects_the_file(work):
    p = work.run([VICTIM, "writes", work.root / "other.bin", 2], fault_line(op="write", path="c.bin"))
    assert all(x.split()[2] == "1" for x in p.stdout.splitlines())


def test_short_write_writes_k_bytes_and_returns_k(work):
    f = work.root / "big.bin"
    p = work.run([VICTIM, "big", f, 100], fault_line(op="write", action="short", arg=10))
    assert "write 10 0" in p.stdout
    assert f.stat().st_size == 10


def test_torn_write_leaves_k_bytes_and_kills(work):
    f = work.root / "big.bin"
    p = work.run([VICTIM, "big", f, 100], fault_line(op="write", action="torn", arg=10), check=False)
    assert p.returncode == -signal.SIGKILL
    assert "write" not in p.stdout.replace("start", "")
    assert f.read_bytes() == b"z" * 10


@pytest.mark.parametrize("action", ["kill", "power_loss"])
def test_kill_before_the_call(work, action):
    f = work.root / "big.bin"
    p = work.run([VICTIM, "big", f, 100], fault_line(op="write", action=action), check=False)
    assert p.returncode == -signal.SIGKILL
    assert f.stat().st_size == 0
    assert work.fires()[0]["action"] == action


def test_fault_log_line_is_the_injectors_format(work):
    f = work.root / "c.bin"
    work.run([VICTIM, "writes", f, 2], fault_line(op="write", path="c.bin", nth=2, times=1), RANK=3,
             CKPT_HARNESS_ATTEMPT=2, CKPT_FAULT_LOG=work.log)
    line = Path(f"{work.log}.rank-3.jsonl").read_text()
    assert line == ('{"fault":0,"attempt":2,"rank":3,"step":0,"phase":"","op":"write","path":"%s","nth":2,'
                    '"action":"errno:EIO x1"}\n' % f)


@pytest.mark.parametrize("var", ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID", "RANK"])
def test_rank_comes_from_the_launchers_environment(work, var):
    f = work.root / "c.bin"
    p = work.run([VICTIM, "writes", f, 1], fault_line(op="write", rank=2), **{var: 2})
    assert "write 1 -1 5" in p.stdout
    assert work.fires(2)[0]["rank"] == 2
    p = work.run([VICTIM, "writes", f, 1], fault_line(op="write", rank=2), **{var: 1})
    assert "write 1 1 0" in p.stdout


def test_attempt_selects_the_fault(work):
    f = work.root / "c.bin"
    p = work.run([VICTIM, "writes", f, 1], fault_line(op="write", attempt=2), CKPT_HARNESS_ATTEMPT=1)
    assert "write 1 1 0" in p.stdout
    p = work.run([VICTIM, "writes", f, 1], fault_line(op="write", attempt=2), CKPT_HARNESS_ATTEMPT=2)
    assert "write 1 -1 5" in p.stdout


@pytest.mark.parametrize("nth, who", [(2, "thread"), (3, "fork"), (5, "main")])
def test_threads_and_child_processes_share_the_ranks_count(work, nth, who):
    f = work.root / "s.bin"
    p = work.run([VICTIM, "share", f, VICTIM], fault_line(op="write", path="s.bin", nth=nth, times=1))
    lines = [x.split() for x in p.stdout.splitlines()]
    failed = [x for x in lines if x[-2] == "-1"]
    assert len(failed) == 1 and failed[0][0] == who and failed[0][-1] == "5", p.stdout
    assert f.stat().st_size == 4


def test_an_execed_child_shares_the_ranks_count(work):
    f = work.root / "s.bin"
    p = work.run([VICTIM, "share", f, VICTIM], fault_line(op="write", path="s.bin", nth=4, times=1))
    assert "write 1 -1 5" in p.stdout, p.stdout   # the exec'ed `writes FILE 1`
    assert sum(1 for x in p.stdout.splitlines() if x.split()[-2] == "-1") == 1


def test_beacon_step_and_phase_select_the_call(work):
    f = work.root / "b.bin"
    p = work.run([VICTIM, "beacon", f], fault_line(op="write", step=5, phase="save.shard_write"),
                 fault_line(op="phase", phase="save.commit", err="ENOSPC"))
    assert p.stdout.split("\n")[:3] == ["step5 -1 5", "step6 1 0", "phase -28"]
    fires = work.fires()
    assert (fires[0]["step"], fires[0]["phase"]) == (5, "save.shard_write")
    assert fires[1]["op"] == "phase"


def test_damage_at_rest_fires_at_a_beacon_phase(work):
    gen = work.root / "step-00000010"
    gen.mkdir()
    (gen / "rank-00000.safetensors").write_bytes(b"\x10" * 8)
    (gen / "manifest.json").write_bytes(b"{}")
    damage = fault_line(op="phase", phase="save.commit", action="damage").rstrip("\n") + \
        " dkind=0 target=newest/rank-*.safetensors doff=0 dseed=0 dsize=0\n"
    p = work.run([VICTIM, "beacon", work.root / "b.bin"], damage)
    assert "phase 0" in p.stdout
    assert (gen / "rank-00000.safetensors").read_bytes() == b"\x11" + b"\x10" * 7
    assert (gen / "manifest.json").read_bytes() == b"{}"
    assert work.fires()[0]["action"] == "bitflip:newest/rank-*.safetensors"


def test_beacon_without_the_shim_does_nothing(work):
    p = work.run([VICTIM, "beacon", work.root / "b.bin"], fault_line(op="write"), shim=False)
    assert p.stdout.split("\n")[:3] == ["step5 1 0", "step6 1 0", "phase 0"]


PY_SAVE = """
import os, sys
sys.path.insert(0, sys.argv[2])
import ckpt_beacon
root = sys.argv[1]
print("beacon", ckpt_beacon.loaded())
ckpt_beacon.step(7)
ckpt_beacon.phase("save.commit")
with open(os.path.join(root, "x.tmp"), "wb") as f:
    f.write(b"abc")
    f.flush()
    try:
        os.fsync(f.fileno())
        print("fsync ok")
    except OSError as e:
        print("fsync", e.errno)
os.replace(os.path.join(root, "x.tmp"), os.path.join(root, "x"))
"""


def test_python_open_write_replace_fsync_reach_the_shim(work):
    trace = [fault_line(op=op, action="delay", arg=0, times=100) for op in ("open", "write", "rename")]
    p = work.run(["/usr/bin/python3", "-c", PY_SAVE, work.root, LIB], *trace,
                 fault_line(op="fsync", step=7, phase="save.commit"))
    assert "beacon True" in p.stdout and "fsync 5" in p.stdout
    seen = {(f["op"], Path(f["path"]).name) for f in work.fires()}
    assert {("open", "x.tmp"), ("write", "x.tmp"), ("fsync", "x.tmp"), ("rename", "x")} <= seen
    assert (work.root / "x").read_bytes() == b"abc"


def test_python_beacon_is_inert_without_the_shim(work):
    p = work.run(["/usr/bin/python3", "-c", PY_SAVE, work.root, LIB], fault_line(op="fsync"), shim=False)
    assert "beacon False" in p.stdout and "fsync ok" in p.stdout


def undo_lines(prefix, root):
    out = []
    for line in Path(f"{prefix}.rank-0.jsonl").read_text().splitlines():
        r = json.loads(line)
        for k in ("seq", "pid", "t", "ino", "parent", "from_parent", "to_parent"):
            r.pop(k, None)
        for k in ("path", "from", "to"):
            if k in r:
                r[k] = r[k].replace(str(root), "ROOT")
        if "saved" in r:
            r["saved"] = bool(r["saved"])
        out.append(r)
    return out


def undo_run(work, name, args, shim):
    root = work.base / name
    root.mkdir()
    (root / "old.bin").write_text("old")
    prefix = work.base / f"undo-{name}"
    Path(f"{prefix}.keep").mkdir()
    p = work.run([*args, root], shim=shim, CKPT_HARNESS_CKPT_DIR=root, CKPT_UNDO_LOG=prefix)
    assert p.returncode == 0
    return root, prefix


def test_undo_record_is_libckpts_for_the_same_calls(work):
    shim_root, shim_prefix = undo_run(work, "viashim", [VICTIM, "undo"], True)
    ref_root, ref_prefix = undo_run(work, "vialibckpt", [BIN / "undo_ref"], False)
    got, want = undo_lines(shim_prefix, shim_root), undo_lines(ref_prefix, ref_root)
    assert len(want) == 11
    assert got == want


def test_power_loss_replays_the_shims_undo_record(work):
    root, prefix = undo_run(work, "viashim", [VICTIM, "undo"], True)
    p = subprocess.run([BIN / "powerloss_apply", prefix, "1", root], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    # the truncation after the shard's fsync was never synced: the 10 bytes come back;
    # the rename and the unlink were made durable by the root's fsync
    assert (root / "step-00000010" / "rank-00000.safetensors").read_bytes() == b"0123456789"
    assert not (root / "old.bin").exists()
    assert not (root / "step-00000010.tmp").exists()


def test_power_loss_drops_an_entry_whose_parent_was_never_synced(work):
    prefix = work.base / "u"
    Path(f"{prefix}.keep").mkdir()
    f = work.root / "c.bin"
    work.run([VICTIM, "writes", f, 3], CKPT_UNDO_LOG=prefix)
    assert f.stat().st_size == 3
    p = subprocess.run([BIN / "powerloss_apply", prefix, "1", work.root], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert not f.exists()


def powerloss(prefix, root):
    p = subprocess.run([BIN / "powerloss_apply", prefix, "1", root], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p


def test_syncfs_makes_everything_under_the_root_durable(work):
    prefix = work.base / "u"
    Path(f"{prefix}.keep").mkdir()
    work.run([VICTIM, "syncfs", work.root], CKPT_UNDO_LOG=prefix)
    powerloss(prefix, work.root)
    assert (work.root / "sub" / "f.bin").read_bytes() == b"durable"


def test_fsync_of_the_roots_parent_is_in_the_undo_record(work):
    # the root's own entry (made by mkdir under the root) is durable once its parent is fsynced
    prefix = work.base / "u"
    Path(f"{prefix}.keep").mkdir()
    root = work.base / "newroot"
    work.run([VICTIM, "mkroot", root], CKPT_UNDO_LOG=prefix, CKPT_HARNESS_CKPT_DIR=root)
    recs = [json.loads(x) for x in Path(f"{prefix}.rank-0.jsonl").read_text().splitlines()]
    assert [(r["op"], r["path"]) for r in recs[:2]] == [("mkdir", str(root)), ("fsync", str(work.base))]
    assert recs[1]["ino"] == recs[0]["parent"]
    powerloss(prefix, root)
    assert (root / "f.bin").read_bytes() == b"durable"


def test_no_undo_record_outside_the_root(work):
    prefix = work.base / "u"
    Path(f"{prefix}.keep").mkdir()
    work.run([VICTIM, "writes", work.out / "c.bin", 3], CKPT_UNDO_LOG=prefix)
    assert not Path(f"{prefix}.rank-0.jsonl").exists()


# ---- reftrain under mpirun, the shim in the ranks only -----------------------------------------

def mpirun_shim(tmp, env_vars, np=4, steps=30, timeout=120):
    if not (BIN / "reftrain").exists():
        pytest.skip("reftrain is not built (CKPT_BUILD_MPI=OFF)")
    ck, traj = tmp / "ck", tmp / "traj.jsonl"
    xs = [a for k, v in env_vars.items() for a in ("-x", f"{k}={v}")]
    # mpirun itself runs without the shim and without our fault variables
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_") and k != "LD_PRELOAD"}
    res = mpi.run_mpi(np, [BIN / "reftrain", "--preset", "tiny", "--steps", steps, "--ckpt-dir", ck,
                           "--ckpt-every", "10", "--trajectory", traj], timeout=timeout, mpirun_args=xs, env=env)
    events = [json.loads(x) for x in traj.read_text().splitlines()] if traj.exists() else []
    return res.returncode, res.stderr, events


def test_reftrain_under_the_shim_completes_ten_times(tmp_path):
    for k in range(10):
        run = tmp_path / str(k)
        run.mkdir()
        rc, err, events = mpirun_shim(run, {"LD_PRELOAD": PRELOAD, "CKPT_HARNESS_CKPT_DIR": run / "ck"})
        assert rc == 0, f"run {k}: {err}"
        assert events[-1] == {"event": "end", "status": "done", "steps": 30}
        assert [e["step"] for e in events if e.get("event") == "committed"] == [10, 20, 30]


def test_reftrain_reports_a_save_the_shim_failed(tmp_path):
    plan = tmp_path / "plan"
    plan.write_text(fault_line(op="write", path="rank-00001.safetensors", nth=2, times=1))
    log = tmp_path / "faults"
    rc, err, events = mpirun_shim(tmp_path, {"LD_PRELOAD": PRELOAD, "CKPT_HARNESS_CKPT_DIR": tmp_path / "ck",
                                             "CKPT_FAULT_PLAN_SHIM": plan, "CKPT_FAULT_LOG": log})
    assert rc == 0, err
    failed = [e for e in events if e.get("event") == "save_failed"]
    assert len(failed) == 1 and "rank-00001.safetensors" in failed[0]["error"], failed
    fires = [json.loads(x) for x in Path(f"{log}.rank-1.jsonl").read_text().splitlines()]
    assert len(fires) == 1 and fires[0]["nth"] == 2 and fires[0]["path"].endswith("rank-00001.safetensors")
    # the shim fired it, not reftrain's libfiu injector: no libckpt phase, the last one reftrain announced
    assert fires[0]["phase"] == "train.reduce"
    assert all(Path(f"{log}.rank-{r}.jsonl").read_text() == "" for r in (0, 2, 3))
    assert events[-1]["status"] == "done"


def test_numpy_trainer_reports_a_save_the_shim_failed(work):
    """A real foreign trainer (examples/numpy_trainer): the 3rd fsync under the root fails once."""
    if subprocess.run(["/usr/bin/python3", "-c", "import numpy"], capture_output=True).returncode != 0:
        pytest.skip("python3-numpy is not installed")
    train = mpi.REPO / "examples" / "numpy_trainer" / "train.py"
    traj = work.base / "t.jsonl"
    work.run(["/usr/bin/python3", train, "--steps", 30, "--ckpt", work.root, "--trajectory", traj],
             fault_line(op="fsync", nth=3, times=1))
    events = [json.loads(x) for x in traj.read_text().splitlines() if '"event"' in x]
    assert [(e["event"], e.get("step")) for e in events[1:]] == [
        ("committed", 10), ("save_failed", 20), ("committed", 30), ("end", None)]
    assert [f["nth"] for f in work.fires()] == [3]
