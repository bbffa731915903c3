"""reftrain --ckpt-async on real Open MPI jobs, and checkpoint.async under the harness.

Guards against: a background save that changes the training bits (the
snapshot taken at the wrong time, the writer reading live state), an
acknowledgement that runs ahead of the commit, a delayed writer that blocks
training instead of staying in flight, and a scenario key that is not checked.
"""
import json
import signal
import subprocess

import mpi
from mpi import BIN, reftrain
from test_shim import fault_line

ARGS = ["--preset", "tiny", "--steps", "30", "--seed", "3", "--ckpt-every", "10"]


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(tmp_path, name, *extra, np=2, env_plan=None):
    traj, ck = tmp_path / f"{name}.jsonl", tmp_path / f"{name}-ck"
    if env_plan is None:
        res = reftrain(np, traj, *ARGS, "--ckpt-dir", ck, *extra)
    else:
        plan, log = env_plan
        res = mpi.run_mpi(np, [BIN / "reftrain", "--trajectory", traj, *ARGS, "--ckpt-dir", ck, *extra],
                          mpirun_args=["-x", f"CKPT_FAULT_PLAN={plan}", "-x", f"CKPT_FAULT_LOG={log}"])
    return res, traj, ck


def test_async_run_has_the_synchronous_runs_step_records(tmp_path):
    res, sync, _ = run(tmp_path, "sync")
    assert res.returncode == 0, res.stderr
    res, bg, ck = run(tmp_path, "async", "--ckpt-async")
    assert res.returncode == 0, res.stderr
    strip = lambda p: [r for r in records(p) if r.get("event") != "committed"]
    assert strip(bg) == strip(sync)                       # every step record, bit for bit
    recs = records(bg)
    acks = [r["step"] for r in recs if r.get("event") == "committed"]
    assert acks == [10, 20, 30]
    for step in acks:                                     # acknowledged only after the step it saves
        pos_ack = next(i for i, r in enumerate(recs) if r.get("event") == "committed" and r["step"] == step)
        pos_step = next(i for i, r in enumerate(recs) if r.get("step") == step and "event" not in r)
        assert pos_ack > pos_step
    assert recs[-1]["event"] == "end" and recs[-2] == {"event": "committed", "step": 30,
                                                       "checkpoint": "step-00000030"}
    journal = [json.loads(line) for line in (ck / "journal" / "rank-00000.jsonl").read_text().splitlines()]
    assert [j["step"] for j in journal if j.get("event") == "async_done" and j["result"] == 0] == [10, 20, 30]


def test_delayed_writer_keeps_the_save_in_flight_while_training_goes_on(tmp_path):
    """A delay_ms on rank 1's writer (save.shard_write of step 10) must not stop training."""
    if "FIU_ENABLE:BOOL=OFF" in (mpi.BUILD / "CMakeCache.txt").read_text():
        import pytest
        pytest.skip("this build has no libfiu points (FIU_ENABLE=OFF)")
    plan, log = tmp_path / "plan", tmp_path / "faults"
    plan.write_text(fault_line(op="phase", phase="save.shard_write", rank=1, step=10, action="delay", arg=600))
    res, traj, _ = run(tmp_path, "delayed", "--ckpt-async", env_plan=(plan, log))
    assert res.returncode == 0, res.stderr
    fires = records(tmp_path / "faults.rank-1.jsonl")
    assert [(f["phase"], f["step"]) for f in fires] == [("save.shard_write", 10)]
    recs = records(traj)
    pos_ack = next(i for i, r in enumerate(recs) if r.get("event") == "committed" and r["step"] == 10)
    steps_before_ack = [r["step"] for r in recs[:pos_ack] if "event" not in r]
    assert max(steps_before_ack) >= 13, steps_before_ack   # several steps trained while it was in flight


def test_kill_in_the_background_writer_resumes_from_the_previous_generation(tmp_path):
    plan, log = tmp_path / "plan", tmp_path / "faults"
    plan.write_text(fault_line(phase="save.shard_write", op="phase", rank=1, step=20, action="kill"))
    res, traj, ck = run(tmp_path, "a1", "--ckpt-async", env_plan=(plan, log))
    assert res.returncode in (128 + signal.SIGKILL, -signal.SIGKILL, 137), res.stderr
    assert 20 not in [r["step"] for r in records(traj) if r.get("event") == "committed"]
    res = reftrain(2, tmp_path / "a2.jsonl", *ARGS, "--ckpt-dir", ck, "--ckpt-async", "--resume", "auto")
    assert res.returncode == 0, res.stderr
    assert records(tmp_path / "a2.jsonl")[0]["restored_from"] == 10


def test_ckpt_async_needs_the_builtin_backend(tmp_path):
    res = reftrain(1, tmp_path / "t.jsonl", *ARGS, "--ckpt-dir", tmp_path / "ck", "--ckpt-async",
                   "--ckpt-backend", "naive")
    assert res.returncode == 2
    assert "--ckpt-async needs the built-in libckpt backend" in res.stderr


def test_scenario_async_key_is_validated(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntrainer: {preset: tiny, world_size: 2, steps: 20, checkpoint: {every: 10, async: yes}}\n"
                   "faults:\n  - when: {rank: 0, step: 10, phase: save.snapshot}\n    do: kill\n")
    res = subprocess.run([BIN / "ckpt-harness", "validate", bad], capture_output=True, text=True)
    assert res.returncode == 2
    assert "bad.yaml:2:" in res.stderr and "async is true or false" in res.stderr
    sync = tmp_path / "sync.yaml"
    sync.write_text("name: sync\ntrainer: {preset: tiny, world_size: 2, steps: 20, checkpoint: {every: 10}}\n"
                    "faults:\n  - when: {rank: 0, step: 10, phase: save.snapshot}\n    do: kill\n")
    res = subprocess.run([BIN / "ckpt-harness", "validate", sync], capture_output=True, text=True)
    assert res.returncode == 2
    assert "only with background saves" in res.stderr


def test_crashstates_covers_an_async_save(tmp_path):
    """Every crash state of a background save restores 10 or 20, and 20 once acknowledged."""
    out = tmp_path / "cs.json"
    res = subprocess.run([BIN / "ckpt-harness", "crashstates", "--async", "--world-size", "2", "--step", "20",
                          "--json", out, "--out", tmp_path / "found"], capture_output=True, text=True, timeout=300,
                         env=dict(__import__("os").environ, OMPI_ALLOW_RUN_AS_ROOT="1",
                                  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"))
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(out.read_text())
    assert report["states_checked"] > 50
    assert report["violations"] == 0
    # the trainer's acknowledgement came after the last of the save's operations, not at enqueue
    assert report["acknowledged_after_ops"] == report["operations"]
