"""Process hygiene, the golden cache and hangs (issue 9).

- A SIGKILLed harness takes its jobs with it (PR_SET_PDEATHSIG on the
  launcher chain, and a guard per job that kills the job's session when the
  harness's pipe reaches EOF), and the next harness removes the work
  directories it left, and only those.
- SIGTERM exits 143, SIGINT 130, with no rank left.
- The golden cache is keyed on what changes the trajectory (not
  checkpoint.every or keep), and parallel scenarios share one entry.
- A job that hangs is a FAIL saying where each rank was, stopped by a
  watchdog sized from the uninterrupted run, not an ERROR after 120 s.

Every test runs the harness with its own TMPDIR and cache, and looks only at
processes whose command line names that test's directory, so other jobs on
the machine do not disturb it.
"""
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mpi import BIN, REPO

HARNESS = BIN / "ckpt-harness"
HANG = REPO / "tests" / "driver" / "scenarios" / "hang-restore-verify-rank2.yaml"


def env_for(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return dict(os.environ, TMPDIR=str(tmp), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def processes_under(path):
    """Live (not zombie) processes whose command line mentions path: {pid: cmdline}."""
    found = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(path) in cmd and state != "Z":
            found[int(p.name)] = cmd
    return found


def ranks_under(path):
    return {p: c for p, c in processes_under(path).items() if c.split()[0].endswith("bin/reftrain")}


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def stalled_scenario(d, name, timeout_s=None):
    """A tiny job whose rank 1 sleeps 60 s at step 5 of attempt 1: its ranks stay up."""
    extra = f"timeout_s: {timeout_s}\n" if timeout_s else ""
    p = d / f"{name}.yaml"
    p.write_text(f"""name: {name}
trainer: {{preset: tiny, world_size: 2, steps: 20}}
faults:
  - when: {{rank: 1, step: 5, phase: train.step}}
    do: {{delay_ms: 60000}}
expect: {{outcome: resume_bitwise}}
{extra}""")
    return p


def start_stalled(tmp_path, mode, n):
    suite = tmp_path / "suite"
    suite.mkdir()
    for i in range(n):
        stalled_scenario(suite, f"stalled-{i}")
    args = ["run", suite / "stalled-0.yaml"] if mode == "run" else ["suite", suite, "-j", str(n)]
    proc = subprocess.Popen([str(HARNESS), *map(str, args), "--cache", str(tmp_path / "cache")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(tmp_path))
    # every scenario's attempt is running (the golden runs have finished): 2 ranks each
    wait_for(lambda: sum("attempt-1.jsonl" in c for c in ranks_under(tmp_path).values()) >= 2 * n, 120,
             "the attempts' ranks")
    time.sleep(0.5)
    return proc


def shm_job_dirs():
    """The MPI job folders (Open MPI session, shared-memory segments) of local jobs, on /dev/shm."""
    return set(Path("/dev/shm").glob("ckpt-harness-mpi.*")) if os.access("/dev/shm", os.W_OK) else set()


def test_sigkill_of_the_harness_mid_suite_leaves_no_job_running(tmp_path):
    before = shm_job_dirs()
    proc = start_stalled(tmp_path, "suite", 2)
    assert len(ranks_under(tmp_path)) == 4
    mine = shm_job_dirs() - before
    if os.access("/dev/shm", os.W_OK):
        assert len(mine) == 2, mine       # each job's own, off the disk
    t0 = time.time()
    proc.kill()
    proc.wait(timeout=30)
    # mpirun, its ranks, the scenario runners and the guards: nothing that names this test's directory
    while processes_under(tmp_path) and time.time() - t0 < 10:
        time.sleep(0.05)
    left = processes_under(tmp_path)
    took = time.time() - t0
    assert not left, f"still running {took:.1f} s after SIGKILL: {left}"
    print(f"everything gone {took:.2f} s after SIGKILL of the harness")
    # the guards removed the jobs' folders on /dev/shm, which no work directory sweep would reach
    wait_for(lambda: not any(d.exists() for d in mine), 10, "the MPI job folders on /dev/shm to go")
    proc.communicate(timeout=30)
    # what it left (the suite directory and both work directories) goes at the next start
    tmp = Path(env_for(tmp_path)["TMPDIR"])
    assert len(list(tmp.glob("ckpt-harness-*"))) == 3
    q = tmp_path / "quick.yaml"
    q.write_text(QUICK)
    res = subprocess.run([str(HARNESS), "run", str(q), "--cache", str(tmp_path / "cache")], capture_output=True,
                         text=True, env=env_for(tmp_path), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not list(tmp.iterdir())


def proc_start(pid):
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19])


def dead_pid():
    p = subprocess.Popen(["true"])
    pid, start = p.pid, None
    try:
        start = proc_start(pid)
    except OSError:
        start = 1
    p.wait()
    return pid, start


QUICK = """name: quick
trainer: {preset: tiny, world_size: 1, steps: 4, checkpoint: {every: 2, keep: 1}}
expect: {outcome: resume_bitwise}
"""


def test_next_start_removes_stale_work_dirs_of_dead_harnesses_only(tmp_path):
    env = env_for(tmp_path)
    tmp, cache = Path(env["TMPDIR"]), tmp_path / "cache"
    cache.mkdir()
    dead, dead_start = dead_pid()
    me, my_start = os.getpid(), proc_start(os.getpid())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("x")

    def mk(parent, name, kept=False):
        d = parent / name
        d.mkdir()
        (d / "attempt-1.log").write_text("evidence")
        (d / "sub").mkdir()
        if kept:
            (d / "KEPT").write_text("")
        return d

    stale = [mk(tmp, f"ckpt-harness-kill-rank1.{dead}-{dead_start}.a1B2c3"),
             mk(tmp, f"ckpt-harness-suite.{dead}-{dead_start}.Zz9yX8"),
             # a live pid, but another start time: the pid was reused, the owner is dead
             mk(tmp, f"ckpt-harness-x.{me}-{my_start + 1}.q1w2e3"),
             mk(cache, f"golden.{dead}-{dead_start}.r4t5y6")]
    kept = [mk(tmp, f"ckpt-harness-alive.{me}-{my_start}.a1b2c3"),          # its owner runs
            mk(tmp, f"ckpt-harness-failed.{dead}-{dead_start}.k3p4t5", kept=True),  # evidence kept
            mk(tmp, "ckpt-harness-old-style.AbC123"),                          # not the pattern
            mk(tmp, f"other-tool.{dead}-{dead_start}.a1B2c3"),
            mk(tmp, f"ckpt-harness-dots.x.{dead}-{dead_start}.a1B2c3"),
            mk(cache, f"ckpt-harness-y.{dead}-{dead_start}.a1B2c3")]           # right name, wrong parent
    if os.access("/dev/shm", os.W_OK):
        # a local job's MPI folder on /dev/shm, left by a dead harness whose guard died too; one of a live owner
        stale.append(mk(Path("/dev/shm"), f"ckpt-harness-mpi.{dead}-{dead_start}.s1h2m3"))
        kept.append(mk(Path("/dev/shm"), f"ckpt-harness-mpi.{me}-{my_start}.s4h5m6"))
    link = tmp / f"ckpt-harness-link.{dead}-{dead_start}.l1n2k3"
    link.symlink_to(outside, target_is_directory=True)
    afile = tmp / f"ckpt-harness-file.{dead}-{dead_start}.f1l2e3"
    afile.write_text("not a directory")

    q = tmp_path / "quick.yaml"
    q.write_text(QUICK)
    res = subprocess.run([str(HARNESS), "run", str(q), "--cache", str(cache)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    for d in stale:
        assert not d.exists(), f"{d.name} of a dead harness was left"
    for d in kept:
        assert (d / "attempt-1.log").read_text() == "evidence", d.name
        if d.parent == Path("/dev/shm"):
            shutil.rmtree(d)
    assert link.is_symlink() and (outside / "precious").read_text() == "x"
    assert afile.read_text() == "not a directory"
    # and the harness's own directories carry its pid and start time while it runs, and go when it passes
    assert not list(tmp.glob("ckpt-harness-quick.*"))


def test_after_sigkill_the_next_harness_removes_what_it_left(tmp_path):
    proc = start_stalled(tmp_path, "run", 1)
    tmp = Path(env_for(tmp_path)["TMPDIR"])
    left = list(tmp.glob("ckpt-harness-stalled-0.*"))
    assert len(left) == 1
    pid, start = left[0].name.split(".")[1].split("-")
    assert int(pid) == proc.pid and int(start) == proc_start(proc.pid)
    proc.kill()
    proc.communicate(timeout=30)
    wait_for(lambda: not processes_under(tmp_path), 10, "the job to die")
    assert left[0].exists()
    q = tmp_path / "quick.yaml"
    q.write_text(QUICK)
    res = subprocess.run([str(HARNESS), "run", str(q), "--cache", str(tmp_path / "cache")], capture_output=True,
                         text=True, env=env_for(tmp_path), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not left[0].exists()
    assert not list(tmp.iterdir())


@pytest.mark.parametrize("mode", ["run", "suite"])
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_exit_code_and_no_rank_left(tmp_path, mode, sig, code):
    proc = start_stalled(tmp_path, mode, 1 if mode == "run" else 2)
    t0 = time.time()
    proc.send_signal(sig)        # to the harness alone, not its process group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, out + err
    assert time.time() - t0 < 20, "the harness did not stop its jobs promptly"
    time.sleep(0.5)
    assert not processes_under(tmp_path), "processes outlived the harness"


def scenario(d, name, preset="tiny", world=2, steps=30, seed=1, every=10, keep=3, kill_step=25, restored=20):
    p = d / f"{name}.yaml"
    p.write_text(f"""name: {name}
trainer: {{preset: {preset}, world_size: {world}, steps: {steps}, seed: {seed}, checkpoint: {{every: {every}, keep: {keep}}}}}
faults:
  - when: {{rank: 0, step: {kill_step}, phase: train.step}}
    do: kill
expect: {{outcome: resume_bitwise, restored_from: {restored}}}
""")
    return p


def run_suite(tmp_path, d, cache, jobs=2):
    res = subprocess.run([str(HARNESS), "suite", str(d), "-j", str(jobs), "--cache", str(cache), "--json",
                          str(tmp_path / "r.json")], capture_output=True, text=True, env=env_for(tmp_path),
                         timeout=600)
    return res, json.loads((tmp_path / "r.json").read_text())


def test_golden_cache_is_shared_by_every_and_keep_and_keyed_on_the_trajectory(tmp_path):
    cache = tmp_path / "cache"
    a = tmp_path / "a"
    a.mkdir()
    # the same run checkpointed differently: one golden entry, computed once under -j 2, and both pass
    scenario(a, "every-10-keep-3", every=10, keep=3, restored=20)
    scenario(a, "every-5-keep-1", every=5, keep=1, restored=20)
    scenario(a, "every-7-keep-2", every=7, keep=2, restored=21)
    res, report = run_suite(tmp_path, a, cache)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [s["verdict"] for s in report["scenarios"]] == ["PASS"] * 3
    entries = sorted(cache.glob("*.jsonl"))
    assert len(entries) == 1, entries
    assert len(list(cache.glob("*.seconds"))) == 1
    assert not list(cache.glob("golden.*")), "a golden work directory was left"
    # the cached copy holds no checkpoint acknowledgements (they depend on `every`)
    records = [json.loads(line) for line in entries[0].read_text().splitlines()]
    assert not [r for r in records if r.get("event") == "committed"]
    assert sum("event" not in r for r in records) == 30

    # what changes the trajectory gets an entry of its own
    b = tmp_path / "b"
    b.mkdir()
    scenario(b, "seed-2", seed=2)
    scenario(b, "steps-32", steps=32)
    scenario(b, "world-4", world=4)
    scenario(b, "preset-small", preset="small", steps=12, kill_step=7, every=5, restored=5)
    res, report = run_suite(tmp_path, b, cache)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(list(cache.glob("*.jsonl"))) == 5


def test_a_hang_is_a_fail_that_says_where_each_rank_was(tmp_path):
    """The watchdog comes from the golden run (10 x its time + 10 s, at least 30 s), not the fixed 120 s."""
    t0 = time.time()
    res = subprocess.run([str(HARNESS), "run", str(HANG), "--cache", str(tmp_path / "cache"), "--json",
                          str(tmp_path / "r.json")], capture_output=True, text=True, env=env_for(tmp_path),
                         timeout=300)
    took = time.time() - t0
    assert res.returncode == 1, res.stdout + res.stderr
    entry = json.loads((tmp_path / "r.json").read_text())["scenarios"][0]
    sentence = entry["sentence"]
    assert entry["verdict"] == "FAIL"
    assert sentence.startswith(
        "the job hung: rank 2 waits in restore.verify of step 20 (an injected delay of 600000 ms) while ranks 0, 1 "
        "and 3 passed restore.verify of step 20 and wait for it; the watchdog stopped attempt 2 after "), sentence
    assert entry["attempts"] == 2 and entry["faults_fired"] == 2
    # the limit is the one sized from the golden time stored with the cache entry
    (golden,) = (tmp_path / "cache").glob("*.seconds")
    g = float(golden.read_text())
    limit = 30 if 10 * g + 10 <= 30 else min(120, math.ceil(10 * g + 10))
    assert f"(its limit: {limit} s, at least 30 s and 10 x the uninterrupted run's {g:.2f} s + 10 s)" in sentence
    after = int(re.search(r"stopped attempt 2 after (\d+) s", sentence).group(1))
    assert limit <= after <= limit + 3, sentence
    assert took < limit + 60, f"the hang took {took:.0f} s to be judged"
    assert not processes_under(tmp_path)


def test_timeout_s_is_the_upper_bound_of_the_watchdog(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    p = stalled_scenario(d, "stalled-bound", timeout_s=6)
    t0 = time.time()
    res = subprocess.run([str(HARNESS), "run", str(p), "--cache", str(tmp_path / "cache")], capture_output=True,
                         text=True, env=env_for(tmp_path), timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    assert ("rank 1 waits in train.step at step 5 (an injected delay of 60000 ms) while rank 0 passed "
            "train.reduce at step 5 and waits for it; the watchdog stopped attempt 1 after 6 s (its limit: the scenario's "
            "timeout_s, 6 s)") in res.stdout, \
        res.stdout
    assert time.time() - t0 < 25


def test_a_hang_names_the_call_a_rank_waits_in(tmp_path):
    p = tmp_path / "hang-io.yaml"
    p.write_text("""name: hang-io
trainer: {preset: tiny, world_size: 4, steps: 20, checkpoint: {every: 10, keep: 3}}
timeout_s: 8
faults:
  - when: {rank: 1, step: 10, phase: save.shard_write, op: write, nth: 2}
    do: {delay_ms: 600000}
expect: {outcome: resume_bitwise}
""")
    res = subprocess.run([str(HARNESS), "run", str(p), "--cache", str(tmp_path / "cache")], capture_output=True,
                         text=True, env=env_for(tmp_path), timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    assert ("the job hung: rank 1 waits in save.shard_write of step 10 (the 2nd write, rank-00001.safetensors; "
            "an injected delay of 600000 ms) while ranks 0, 2 and 3 passed save.barrier of step 10 and wait for "
            "it; the watchdog stopped attempt 1 after 8 s (its limit: the scenario's timeout_s, 8 s)") \
        in res.stdout, res.stdout


def test_a_launch_failure_is_still_an_error_not_a_hang(tmp_path):
    """Infrastructure stays exit 3: here mpirun is not on PATH."""
    q = tmp_path / "quick.yaml"
    q.write_text(QUICK)
    env = dict(env_for(tmp_path), PATH=str(tmp_path / "no-such-bin"))
    res = subprocess.run([str(HARNESS), "run", str(q), "--cache", str(tmp_path / "cache"), "--json",
                          str(tmp_path / "r.json")], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 3, res.stdout + res.stderr
    entry = json.loads((tmp_path / "r.json").read_text())["scenarios"][0]
    assert entry["verdict"] == "ERROR" and "the uninterrupted run failed (exit 127" in entry["sentence"]
