"""reftrain's checkpoint backends (reference_trainer/include/reftrain/backend.h), run directly.

Guards against: a plugged backend that does not resume bit for bit; libckpt
behaving differently built in and plugged in; a naive checkpoint (in place,
no fsync, no manifest) whose damage goes unnoticed where the trainer could
see it (truncated files, ranks at different steps) or is noticed where the
negative control must not notice it (a flipped bit); a --ckpt-backend that
cannot be used and runs anyway or fails without saying why; reftrain not
announcing its step to the fault shim.
"""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest

import mpi
from mpi import BIN, REPO, reftrain

LIB = mpi.BUILD / "lib"
ARGS = ["--preset", "tiny", "--steps", "40", "--seed", "3", "--ckpt-every", "10"]
BACKENDS = {"builtin": [], "libckpt": ["--ckpt-backend", "libckpt"], "naive": ["--ckpt-backend", "naive"]}


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def job(traj, ck, backend, *extra, np=2):
    return reftrain(np, traj, *ARGS, "--ckpt-dir", ck, *BACKENDS[backend], *extra)


def oracle(*trajs):
    return subprocess.run([str(BIN / "ckpt-harness"), "oracle", *map(str, trajs)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden")
    res = job(d / "g.jsonl", d / "ck", "builtin")
    assert res.returncode == 0, res.stderr
    return d / "g.jsonl"


def stopped_at_25(tmp_path, backend):
    """Attempt 1 stops after step 25: the newest save is step 20."""
    ck = tmp_path / "ck"
    res = job(tmp_path / "a1.jsonl", ck, backend, "--stop-after", "25")
    assert res.returncode == 0, res.stderr
    return ck


def resume(tmp_path, ck, backend, attempt=2):
    traj = tmp_path / f"a{attempt}.jsonl"
    res = job(traj, ck, backend, "--resume", "auto", "--attempt", str(attempt))
    return res, records(traj)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_stop_and_resume_is_bitwise_with_each_backend(golden, tmp_path, backend):
    ck = stopped_at_25(tmp_path, backend)
    res, recs = resume(tmp_path, ck, backend)
    assert res.returncode == 0, res.stderr
    assert recs[0]["restored_from"] == 20
    assert recs[-1] == {"event": "end", "status": "done", "steps": 40}
    judged = oracle(golden, tmp_path / "a1.jsonl", tmp_path / "a2.jsonl")
    assert judged.returncode == 0 and judged.stdout.startswith("PASS"), judged.stdout + judged.stderr


def test_libckpt_plugged_in_writes_what_the_built_in_writes(golden, tmp_path):
    res = job(tmp_path / "p.jsonl", tmp_path / "ck", "libckpt")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "p.jsonl").read_bytes() == golden.read_bytes()
    gens = sorted(p.name for p in (tmp_path / "ck").iterdir() if p.name.startswith("step-"))
    assert gens == ["step-00000020", "step-00000030", "step-00000040"]


def naive_header(path):
    raw = Path(path).read_bytes()
    magic, step, rank, world, n, _ = struct.unpack_from("<8sQIIII", raw)
    off, names = 32, []
    for _ in range(n):
        ln, dtype, _, _, elems = struct.unpack_from("<HBBIQ", raw, off)
        names.append(raw[off + 16:off + 16 + ln].decode())
        off += 16 + ln
    return {"magic": magic, "step": step, "rank": rank, "world": world, "names": names, "data": off,
            "size": len(raw)}


def test_naive_writes_one_file_per_rank_in_place(tmp_path):
    ck = stopped_at_25(tmp_path, "naive")
    assert sorted(p.name for p in ck.iterdir()) == ["rank-0.ckpt", "rank-1.ckpt"]
    for r in (0, 1):
        h = naive_header(ck / f"rank-{r}.ckpt")
        assert (h["magic"], h["step"], h["rank"], h["world"]) == (b"RTNAIVE1", 20, r, 2)
        assert h["names"][0] == "params.bf16" and "data.cursor" in h["names"]


def failed_restore(tmp_path, ck):
    res, recs = resume(tmp_path, ck, "naive")
    assert res.returncode == 1, res.stderr
    end = recs[-1]
    assert end["event"] == "end" and end["status"] == "failed", recs
    assert end["steps"] == 0
    return end["error"]


@pytest.mark.parametrize("where", ["half", "index_end", "empty", "one_byte_short"])
def test_naive_truncated_file_fails_restore_with_a_sentence(tmp_path, where):
    """What really happens: every cut, even one at the end of the index (header whole, no data), is refused."""
    ck = stopped_at_25(tmp_path, "naive")
    f = ck / "rank-1.ckpt"
    h = naive_header(f)
    size = {"half": h["size"] // 2, "index_end": h["data"], "empty": 0, "one_byte_short": h["size"] - 1}[where]
    os.truncate(f, size)
    error = failed_restore(tmp_path, ck)
    want = "empty file" if size == 0 else f"truncated: {size} bytes"
    assert f"rank-1.ckpt: {want}" in error, error


def test_naive_flipped_bit_is_restored_and_the_oracle_names_it(golden, tmp_path):
    """The negative control does not notice a flipped bit: it resumes, on the wrong weights."""
    ck = stopped_at_25(tmp_path, "naive")
    f = ck / "rank-0.ckpt"
    raw = bytearray(f.read_bytes())
    raw[naive_header(f)["data"] + 101] ^= 0x40       # inside params.bf16, rank 0's canonical copy
    f.write_bytes(bytes(raw))
    res, recs = resume(tmp_path, ck, "naive")
    assert res.returncode == 0, res.stderr
    assert recs[0]["restored_from"] == 20
    judged = oracle(golden, tmp_path / "a1.jsonl", tmp_path / "a2.jsonl")
    assert judged.returncode == 1, judged.stdout
    assert "params" in judged.stdout, judged.stdout


def test_naive_ranks_at_different_steps_are_refused_with_the_steps(tmp_path):
    """Killed between two ranks' saves, the files hold different steps: reftrain refuses the mix."""
    ck = tmp_path / "ck"
    res = job(tmp_path / "a1.jsonl", ck, "naive", "--stop-after", "10")
    assert res.returncode == 0, res.stderr
    shutil.copy(ck / "rank-1.ckpt", tmp_path / "rank-1.step10")
    res, _ = resume(tmp_path, ck, "naive")      # runs to the end: both files now at step 40
    assert res.returncode == 0, res.stderr
    shutil.copy(tmp_path / "rank-1.step10", ck / "rank-1.ckpt")
    res, recs = resume(tmp_path, ck, "naive", attempt=3)
    assert res.returncode == 1
    assert recs[-1]["error"] == "checkpoint backend naive restored a mix of states: rank 0 step 40, rank 1 step 10"


def test_naive_missing_rank_file_is_refused(tmp_path):
    ck = stopped_at_25(tmp_path, "naive")
    (ck / "rank-1.ckpt").unlink()
    error = failed_restore(tmp_path, ck)
    assert error == "checkpoint backend naive restored a mix of states: rank 0 step 20, rank 1 nothing"


# ---- --ckpt-backend that cannot be used: exit 2, one sentence, before MPI starts ----

def bad_backend(tmp_path, spec):
    return subprocess.run([str(BIN / "reftrain"), "--preset", "tiny", "--trajectory", str(tmp_path / "t.jsonl"),
                           "--ckpt-dir", str(tmp_path / "ck"), "--ckpt-backend", spec],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("spec,says", [
    ("nosuch", "reftrain-backend-nosuch.so: No such file or directory; give a path to a backend .so or the name "
               "of one installed in {lib}: libckpt, naive"),
    ("/nonexistent/b.so", "/nonexistent/b.so: No such file or directory"),
    ("{lib}/libckpt.so", "does not export reftrain_backend_v1(), so it is not a reftrain checkpoint backend"),
    ("{lib}/test-backend-bad-abi.so", "speaks backend ABI 99; this reftrain speaks ABI 1"),
    ("not a name", "is neither a path to a backend .so nor a backend name"),
])
def test_unusable_backend_exits_2_with_a_sentence(tmp_path, spec, says):
    lib = str(LIB.resolve())
    res = bad_backend(tmp_path, spec.format(lib=lib))
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("reftrain: --ckpt-backend"), res.stderr
    assert says.format(lib=lib) in res.stderr
    assert res.stderr.count("\n") == 1
    assert not (tmp_path / "t.jsonl").exists() and not (tmp_path / "ck").exists()


def test_unusable_backend_under_mpirun_exits_2_and_speaks_once(tmp_path):
    res = reftrain(2, tmp_path / "t.jsonl", "--preset", "tiny", "--ckpt-dir", tmp_path / "ck",
                   "--ckpt-backend", "nosuch", timeout=60)
    assert res.returncode == 2
    assert res.stderr.count("reftrain: --ckpt-backend nosuch") == 1, res.stderr


# ---- under the fault shim: reftrain announces its step; naive fails where libckpt holds ----

def shim_job(tmp_path, traj, ck, backend, fault, *extra):
    from test_shim import PRELOAD, fault_line
    plan = tmp_path / "plan"
    plan.write_text(fault_line(**fault))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_") and k != "LD_PRELOAD"}
    xs = [a for k, v in {"LD_PRELOAD": PRELOAD, "CKPT_HARNESS_CKPT_DIR": ck, "CKPT_FAULT_PLAN_SHIM": plan,
                         "CKPT_FAULT_LOG": tmp_path / "faults"}.items() for a in ("-x", f"{k}={v}")]
    return mpi.run_mpi(2, [BIN / "reftrain", "--trajectory", traj, *ARGS, "--ckpt-dir", ck, *BACKENDS[backend],
                           *extra], mpirun_args=xs, env=env)


def test_the_shim_sees_reftrains_step(tmp_path):
    """A fault the shim matches by step fires in that step's save only (the beacon), not in the others."""
    ck, traj = tmp_path / "ck", tmp_path / "t.jsonl"
    res = shim_job(tmp_path, traj, ck, "builtin",
                   dict(op="write", path="rank-00001.safetensors", step=20, times=1))
    assert res.returncode == 0, res.stderr
    events = [(r["event"], r["step"]) for r in records(traj) if r.get("event") in ("committed", "save_failed")]
    assert events == [("committed", 10), ("save_failed", 20), ("committed", 30), ("committed", 40)]
    fires = records(f"{tmp_path / 'faults'}.rank-1.jsonl")
    assert [f["step"] for f in fires] == [20]


@pytest.mark.parametrize("backend,shard", [("builtin", "rank-00001.safetensors"), ("naive", "rank-1.ckpt")])
def test_torn_write_mid_save_naive_fails_where_libckpt_resumes(golden, tmp_path, backend, shard):
    """Rank 1 dies with 100 bytes of its step-20 save's first data write on disk."""
    ck = tmp_path / "ck"
    res = shim_job(tmp_path, tmp_path / "a1.jsonl", ck, backend,
                   dict(op="write", path=shard, step=20, nth=2, action="torn", arg=100))
    assert res.returncode in (128 + signal.SIGKILL, -signal.SIGKILL), res.stderr
    res, recs = resume(tmp_path, ck, backend)
    if backend == "builtin":
        assert res.returncode == 0, res.stderr
        assert recs[0]["restored_from"] == 10
        judged = oracle(golden, tmp_path / "a1.jsonl", tmp_path / "a2.jsonl")
        assert judged.returncode == 0, judged.stdout
    else:
        assert res.returncode == 1
        # naive writes in place: rank 1's file is torn, and rank 0, killed by mpirun when rank 1
        # dies, may be caught mid-write of its own; the resume names the first it checks
        assert re.search(r"/rank-[01]\.ckpt: truncated", recs[-1]["error"]), recs[-1]


@pytest.mark.parametrize("backend", ["builtin", "libckpt"])
def test_libckpts_fault_points_fire_inside_the_plugged_backend(golden, tmp_path, backend):
    """libfiu's injector (CKPT_FAULT_PLAN) reaches libckpt's phases whether it is built in or plugged in."""
    from test_shim import fault_line
    cache = mpi.BUILD / "CMakeCache.txt"
    if cache.exists() and "FIU_ENABLE:BOOL=OFF" in cache.read_text():
        pytest.skip("this build has no libfiu points (FIU_ENABLE=OFF)")
    plan, log, ck = tmp_path / "plan", tmp_path / "faults", tmp_path / "ck"
    plan.write_text(fault_line(op="write", phase="save.shard_write", rank=1, step=20, nth=2, action="torn", arg=100))
    res = mpi.run_mpi(
        2, [BIN / "reftrain", "--trajectory", tmp_path / "a1.jsonl", *ARGS, "--ckpt-dir", ck, *BACKENDS[backend]],
        mpirun_args=["-x", f"CKPT_FAULT_PLAN={plan}", "-x", f"CKPT_FAULT_LOG={log}"])
    assert res.returncode in (128 + signal.SIGKILL, -signal.SIGKILL), res.stderr
    fires = records(f"{log}.rank-1.jsonl")
    assert [(f["phase"], f["step"]) for f in fires] == [("save.shard_write", 20)]
    res, recs = resume(tmp_path, ck, backend)
    assert res.returncode == 0, res.stderr
    assert recs[0]["restored_from"] == 10
    assert oracle(golden, tmp_path / "a1.jsonl", tmp_path / "a2.jsonl").returncode == 0


# ---- through the harness: reftrain as a protocol command, faults through the shim ----

SCENARIO = """\
name: {backend}-{fault}
description: reftrain with the {backend} backend under the fault shim.
trainer:
  command: [{reftrain}, --preset, tiny, --steps, "{{steps}}", --seed, "{{seed}}", --trajectory, "{{trajectory}}",
            --ckpt-dir, "{{ckpt_dir}}", --ckpt-every, "10", --ckpt-backend, {backend}, --resume, auto,
            --attempt, "{{attempt}}"]
  launcher: mpirun
  beacon: true
  world_size: 2
  steps: 40
  checkpoint_root: "{{ckpt_dir}}"
faults:
  - when: {when}
    do: {do}
expect: {{outcome: resume_bitwise}}
"""

FAULTS = {
    # rank 1 dies with 100 bytes of its step-30 save's second write on disk
    "torn": ("{{attempt: 1, rank: 1, step: 30, op: write, nth: 2, path: \"{shard}\"}}", "{torn: 100, then: kill}"),
    # the power goes at step 40's first write, after step 30 was acknowledged
    "power_loss": ("{{attempt: 1, rank: 0, step: 40, op: write, nth: 1}}", "power_loss"),
}
SHARD = {"naive": "rank-1.ckpt", "libckpt": "rank-00001.safetensors*"}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("backend", ["naive", "libckpt"])
def test_harness_fails_naive_and_passes_libckpt_plugged_in(tmp_path, backend, fault):
    """The negative control: the same scenario, the harness's verdict decided by the checkpoint code alone."""
    when, do = FAULTS[fault]
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(backend=backend, fault=fault, reftrain=BIN / "reftrain",
                                        when=when.format(shard=SHARD[backend]), do=do))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    res = subprocess.run([str(BIN / "ckpt-harness"), "run", str(scenario), "--work", str(tmp_path / "w"),
                          "--json", str(tmp_path / "r.json")], capture_output=True, text=True, env=env, timeout=300)
    out = res.stdout + res.stderr
    if backend == "libckpt":
        assert res.returncode == 0, out
        assert "PASS" in out
    else:
        assert res.returncode == 1, out
        lost = "step 20" if fault == "torn" else "step 30"
        cause = "rank-1.ckpt: truncated" if fault == "torn" else "rank-0.ckpt: empty file"
        assert f"refused to resume" in out and cause in out, out
        assert f"but {lost} had been committed and acknowledged: a durable checkpoint was lost" in out, out


# ---- scenarios/backends: path-agnostic faults, any backend, through `--ckpt-backend` ----

BACKEND_SCENARIOS = REPO / "scenarios" / "backends"
# what restore says of a naive rank file cut short: the torn rank's, or one killed while rewriting it in place
TORN_OR_EMPTY = re.compile(r"rank-[0-3]\.ckpt: (truncated: \d+ bytes|empty file)")


def suite_with(tmp_path, *args):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    res = subprocess.run([str(BIN / "ckpt-harness"), "suite", str(BACKEND_SCENARIOS), "-j", "2", "--json",
                          str(tmp_path / "r.json"), *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=900)
    return res, {s["name"]: s for s in json.loads((tmp_path / "r.json").read_text())["scenarios"]}


@pytest.mark.parametrize("how", [(), ("--ckpt-backend", "libckpt")], ids=["built-in", "plugged-in"])
def test_libckpt_passes_the_backend_scenarios(tmp_path, how):
    res, got = suite_with(tmp_path, *how)
    assert res.returncode == 0, res.stdout
    assert len(got) >= 5
    for name, s in got.items():
        assert s["verdict"] == "PASS" and s["faults_fired"] == s["faults_planned"], (name, s["sentence"])


def test_naive_fails_every_backend_scenario_with_a_sentence(tmp_path):
    """The negative control: kills mid-save, torn writes and power loss each cost
    naive an acknowledged checkpoint, and the harness says which and why."""
    res, got = suite_with(tmp_path, "--ckpt-backend", "naive")
    assert res.returncode == 1, res.stdout
    for name, s in got.items():
        assert s["verdict"] == "FAIL" and s["faults_fired"] == s["faults_planned"], (name, s["sentence"])
        assert "had been committed and acknowledged" in s["sentence"] and "lost" in s["sentence"], s["sentence"]
    # rank 1's file is torn; another rank killed with it may be caught mid-rewrite, its file then named first
    assert TORN_OR_EMPTY.search(got["any-torn-write-mid-save"]["sentence"]), got["any-torn-write-mid-save"]["sentence"]
    assert "a missing fsync or rename?" in got["any-power-loss-after-ack"]["sentence"]
    # the verdicts were the shim's: naive has no libfiu point
    assert all(not c.startswith("save.") for s in got.values() for c in s["coverage"])


def test_ckpt_backend_in_a_scenario_and_its_refusals(tmp_path):
    text = (BACKEND_SCENARIOS / "any-torn-write-mid-save.yaml").read_text()
    p = tmp_path / "naive.yaml"
    p.write_text(text.replace("trainer: {preset: tiny,", "trainer: {ckpt_backend: naive, preset: tiny,"))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    res = subprocess.run([str(BIN / "ckpt-harness"), "run", str(p)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 1 and TORN_OR_EMPTY.search(res.stdout), res.stdout
    # a libckpt phase, or libckpt's damage at rest, cannot reach another backend: refused where written
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("trainer: {preset: tiny,", "trainer: {ckpt_backend: naive, preset: tiny,")
                   .replace("{rank: 1, step: 30, op: write, nth: 2}", "{rank: 1, step: 30, phase: save.shard_write}"))
    res = subprocess.run([str(BIN / "ckpt-harness"), "validate", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2 and "bad.yaml:8:" in res.stderr and "none of libckpt's phases" in res.stderr, res.stderr
    cmd = tmp_path / "cmd.yaml"
    cmd.write_text("name: c\ntrainer: {command: [/bin/true], ckpt_backend: naive}\n"
                   "faults:\n  - when: {op: write}\n    do: kill\nexpect: {outcome: resume_bitwise}\n")
    res = subprocess.run([str(BIN / "ckpt-harness"), "validate", str(cmd)], capture_output=True, text=True)
    assert res.returncode == 2 and "ckpt_backend is a setting of reftrain" in res.stderr, res.stderr
