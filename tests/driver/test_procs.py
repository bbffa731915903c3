"""launcher: procs, N plain processes with torchrun's environment.

Guards against: a harness that can run a distributed trainer only under
mpirun, so a PyTorch-style job (torchrun's RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) cannot be judged; a launcher whose processes see
the wrong rank or a port that is taken; a job that runs on, hangs, or leaves
processes behind when one of its processes fails (torchrun stops the others:
the job fails as a whole); and a distributed numpy trainer whose trajectory
is not bitwise the one-process run's, or that does not notice a lost peer.
"""
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from mpi import BIN, REPO

PYTHON = "/usr/bin/python3"
EXAMPLE = REPO / "examples" / "numpy_trainer"
TRAIN = EXAMPLE / "train.py"
SCENARIOS = EXAMPLE / "scenarios"

# A stand-in trainer: each process writes what it sees to OUT/env-RANK-PID.json;
# rank 0 binds MASTER_PORT (as a real rank 0 would) and writes a 3-step trajectory.
DUMP = r'''
import json, os, socket, sys
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rec = dict(os.environ)
rec.update(pid=os.getpid(), pgid=os.getpgid(0), sid=os.getsid(0), ppid=os.getppid())
rec["shim_loaded"] = "libckpt-fault-shim.so" in open("/proc/self/maps").read()
if os.environ["RANK"] == "0":
    s = socket.socket()
    try:
        s.bind((os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])))
        s.listen(1)
        rec["port_bound"] = True
    except OSError as e:
        rec["port_bound"] = str(e)
    s.close()
    with open(os.environ["CKPT_HARNESS_TRAJECTORY"], "w") as f:
        f.write(json.dumps({"event": "start", "restored_from": None}) + "\n")
        for i in range(1, 4):
            f.write(json.dumps({"step": i, "x": "0x%08x" % i}) + "\n")
        f.write(json.dumps({"event": "end", "status": "done"}) + "\n")
with open(os.path.join(out, "env-%s-%d.json" % (os.environ["RANK"], os.getpid())), "w") as f:
    json.dump(rec, f)
'''

# A rank that fails: rank FAIL_RANK ends by FAIL_HOW (exit:N or signal:N) once
# every process has written its pid file; the others note SIGTERM in a file
# (and exit 0 on it, or ignore it when IGNORE_TERM) and otherwise sleep 60 s.
FAILER = r'''
import os, signal, sys, time
out, fail_rank, how, ignore_term = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
rank, world = os.environ["RANK"], int(os.environ["WORLD_SIZE"])
os.makedirs(out, exist_ok=True)
def on_term(sig, frame):
    open(os.path.join(out, "term-" + rank), "w").close()
    if not ignore_term:
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
with open(os.path.join(out, "pid-" + rank), "w") as f:
    f.write("%d %d" % (os.getpid(), os.getsid(0)))
while len([n for n in os.listdir(out) if n.startswith("pid-")]) < world:
    time.sleep(0.01)
if rank == fail_rank:
    kind, n = how.split(":")
    if kind == "exit":
        sys.exit(int(n))
    os.kill(os.getpid(), int(n))
for _ in range(600):
    time.sleep(0.1)
'''


def harness(*args, env=None):
    return subprocess.run([str(BIN / "ckpt-harness")] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=600, env=env)


def entry(path):
    """The report's only scenario; its work directory (kept on a FAIL) is removed."""
    e = json.loads(Path(path).read_text())["scenarios"][0]
    if e.get("workdir") and not e["workdir"].startswith(str(Path(path).parent)):
        subprocess.run(["rm", "-rf", e["workdir"]])
    return e


def scenario(tmp_path, command, world, faults=""):
    p = tmp_path / "s.yaml"
    p.write_text("name: procs\ntrainer:\n  command: %s\n  launcher: procs\n  world_size: %d\n  steps: 3\n%s"
                 "expect: {outcome: resume_bitwise}\n" % (json.dumps([str(c) for c in command]), world, faults))
    return p


def session_alive(sid):
    """Processes (not zombies) of session sid."""
    alive = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path("/proc/%s/stat" % d).read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(int(d))
    return alive


def test_each_process_sees_torchruns_environment_and_a_free_port_per_job(tmp_path):
    (tmp_path / "dump.py").write_text(DUMP)
    out = tmp_path / "out"
    # a fault that never fires: the shim is armed in every process, and faults are planned
    p = scenario(tmp_path, [PYTHON, tmp_path / "dump.py", out], 3,
                 "faults:\n  - when: {rank: 2, op: write, path: \"never-*\"}\n    do: kill\n")
    env = dict(os.environ, SLURM_PROCID="5", OMPI_COMM_WORLD_RANK="5", PMI_RANK="5")
    env.pop("OMP_NUM_THREADS", None)
    harness("run", p, "--cache", tmp_path / "cache", "--json", tmp_path / "r.json", env=env)
    entry(tmp_path / "r.json")
    recs = [json.loads(f.read_text()) for f in out.glob("env-*.json")]
    jobs = {}
    for r in recs:
        jobs.setdefault(r["sid"], []).append(r)     # a job is a session
    # the uninterrupted run twice, then attempt 1: each a job of three processes
    assert len(jobs) >= 3 and all(len(j) == 3 for j in jobs.values()), sorted(jobs)
    ports = []
    for _, job in sorted(jobs.items(), key=lambda kv: min(r["pid"] for r in kv[1])):
        assert sorted(int(r["RANK"]) for r in job) == [0, 1, 2]
        for r in job:
            assert r["LOCAL_RANK"] == r["ROLE_RANK"] == r["RANK"]
            assert r["WORLD_SIZE"] == r["LOCAL_WORLD_SIZE"] == r["ROLE_WORLD_SIZE"] == "3"
            assert r["GROUP_RANK"] == "0" and r["GROUP_WORLD_SIZE"] == "1"
            assert r["MASTER_ADDR"] == "127.0.0.1" and r["OMP_NUM_THREADS"] == "1"
            assert r["TORCHELASTIC_RESTART_COUNT"] == "0"
            # the harness's own rank variables would win over RANK in the shim
            assert not any(k in r for k in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")), r
            assert r["CKPT_HARNESS_TRAJECTORY"] == job[0]["CKPT_HARNESS_TRAJECTORY"] and r["CKPT_HARNESS_CKPT_DIR"]
            if r["CKPT_HARNESS_ATTEMPT"] != "0":    # the uninterrupted runs go without faults
                assert r["shim_loaded"] and r["LD_PRELOAD"].endswith("libckpt-fault-shim.so"), r
                assert r["CKPT_FAULT_PLAN_SHIM"] and "CKPT_FAULT_PLAN" not in r   # the shim's plan only
        assert len({r["MASTER_PORT"] for r in job}) == 1
        assert len({(r["sid"], r["pgid"]) for r in job}) == 1
        assert job[0]["sid"] != os.getsid(0)
        (zero,) = [r for r in job if r["RANK"] == "0"]
        assert zero["port_bound"] is True, zero["port_bound"]
        ports.append(int(job[0]["MASTER_PORT"]))
    assert all(a != b for a, b in zip(ports, ports[1:])), ports
    attempts = sorted(r["CKPT_HARNESS_ATTEMPT"] for r in recs)
    assert attempts.count("0") >= 6 and attempts.count("1") == 3, attempts


@pytest.mark.parametrize("how,ignore_term,result,termed", [
    # an exit: the others get a grace, then SIGTERM (rank 0 exits 0 on it), then SIGKILL (rank 2 ignores it)
    ("exit:3", "1", "exit 3", {"0", "2"}),
    # a crash: the others are SIGKILLed at once, no SIGTERM, no grace
    ("signal:9", "1", "signal 9", set()),
])
def test_when_one_process_fails_the_job_stops_and_nothing_is_left(tmp_path, how, ignore_term, result, termed):
    (tmp_path / "failer.py").write_text(FAILER)
    out = tmp_path / "out"
    # rank 0 exits on SIGTERM, rank 2 ignores it: the script decides per rank
    script = (tmp_path / "failer.py").read_text().replace(
        'ignore_term = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"',
        'ignore_term = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1" and os.environ["RANK"] != "0"')
    (tmp_path / "failer.py").write_text(script)
    p = scenario(tmp_path, [PYTHON, tmp_path / "failer.py", out, "1", how, ignore_term], 3)
    t0 = time.monotonic()
    harness("run", p, "--cache", tmp_path / "cache", "--json", tmp_path / "r.json")
    took = time.monotonic() - t0
    e = entry(tmp_path / "r.json")
    assert "the uninterrupted run failed (%s" % result in e["sentence"], e
    # every rank would sleep 60 s: the launcher stopped them (grace 1 s, SIGKILL 1 s after SIGTERM)
    assert took < 30, took
    assert {n[len("term-"):] for n in os.listdir(out) if n.startswith("term-")} == termed
    for n in os.listdir(out):
        if n.startswith("pid-"):
            pid, sid = map(int, (out / n).read_text().split())
            assert session_alive(sid) == [], (n, session_alive(sid))


def test_the_distributed_trainer_is_bitwise_the_one_process_trainer(tmp_path):
    def run(world, name, *extra):
        port = socket.socket()
        port.bind(("127.0.0.1", 0))
        env = dict(os.environ, WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port.getsockname()[1]))
        port.close()
        procs = [subprocess.Popen([PYTHON, str(TRAIN), "--steps", "40", "--seed", "3", "--ckpt",
                                   str(tmp_path / name), "--trajectory", str(tmp_path / (name + ".jsonl"))]
                                  + list(extra), env=dict(env, RANK=str(r)), stderr=subprocess.PIPE, text=True)
                 for r in range(world)]
        for pr in procs:
            assert pr.wait(timeout=120) == 0, pr.stderr.read()
        return [json.loads(line) for line in (tmp_path / (name + ".jsonl")).read_text().splitlines()]

    one = run(1, "one")
    for world in (2, 4):
        many = run(world, "w%d" % world)
        assert many[0]["world_size"] == world and many[0]["restored_from"] is None
        assert many[1:] == one[1:]
        for f in sorted((tmp_path / "one").iterdir()):
            assert (tmp_path / ("w%d" % world) / f.name).read_bytes() == f.read_bytes(), f.name
    # a checkpoint of 2 ranks, resumed by 2 ranks, bit for bit
    part = run(2, "r", "--stop-after", "25")
    assert part[-1] == {"event": "end", "status": "stopped", "steps": 25}
    rest = run(2, "r")
    assert rest[0]["restored_from"] == 20
    assert [r for r in rest[1:] if "step" in r and "event" not in r] == \
        [r for r in one if "step" in r and "event" not in r and r["step"] > 20]


def test_a_lost_peer_makes_the_other_rank_exit_without_an_end_record(tmp_path):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    env = dict(os.environ, WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port.getsockname()[1]))
    port.close()
    traj = tmp_path / "t.jsonl"
    argv = [PYTHON, str(TRAIN), "--steps", "100000", "--ckpt", str(tmp_path / "ck"), "--trajectory", str(traj)]
    zero = subprocess.Popen(argv, env=dict(env, RANK="0"), stderr=subprocess.PIPE, text=True)
    one = subprocess.Popen(argv, env=dict(env, RANK="1"), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while (not traj.exists() or traj.read_text().count("\n") < 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    one.send_signal(signal.SIGKILL)
    assert zero.wait(timeout=60) == 1
    err = zero.stderr.read()
    assert "train.py: rank 0: rank 1 is gone" in err, err
    recs = [json.loads(line) for line in traj.read_text().splitlines()]
    assert recs[0]["event"] == "start" and len(recs) >= 3
    assert not [r for r in recs if r.get("event") == "end"], recs[-1]
    one.wait(timeout=10)


def test_the_procs_scenarios_pass(tmp_path):
    for name in ("numpy-procs-kill-mid-save", "numpy-procs-power-loss-after-ack"):
        res = harness("run", SCENARIOS / (name + ".yaml"), "--keep", "--cache", tmp_path / "cache",
                      "--json", tmp_path / (name + ".json"))
        e = json.loads((tmp_path / (name + ".json")).read_text())["scenarios"][0]
        assert res.returncode == 0 and e["verdict"] == "PASS", res.stdout + res.stderr
        assert e["faults_fired"] == e["faults_planned"] == 1 and e["restored_from"] == [20], e
        work = Path(e["workdir"])
        # the fault fired in rank 0, through the shim: RANK reached it
        (fired,) = [json.loads(line) for line in (work / "faults.rank-0.jsonl").read_text().splitlines()]
        assert fired["rank"] == 0 and fired["path"].endswith("ckpt-00000030.bin.tmp")
        assert (work / "faults.rank-1.jsonl").read_text() == ""
        # the restart ran both ranks again, and they resumed together
        starts = [json.loads(line) for line in (work / "attempt-2.jsonl").read_text().splitlines()][:1]
        assert starts[0]["world_size"] == 2 and starts[0]["restored_from"] == 20
        subprocess.run(["rm", "-rf", str(work)])


def test_without_fsync_a_power_cut_loses_the_acknowledged_checkpoint_of_the_distributed_trainer(tmp_path):
    text = (SCENARIOS / "numpy-procs-power-loss-after-ack.yaml").read_text()
    assert '--keep, "3"]' in text and "launcher: procs" in text
    p = tmp_path / "nofsync.yaml"
    p.write_text(text.replace('--keep, "3"]', '--keep, "3", --no-fsync]')
                 .replace('"{scenario_dir}/../train.py"', '"%s"' % TRAIN))
    res = harness("run", p, "--cache", tmp_path / "cache", "--json", tmp_path / "r.json")
    e = entry(tmp_path / "r.json")
    assert res.returncode == 1 and e["verdict"] == "FAIL", e
    assert "step 20 had been committed and acknowledged" in e["sentence"] and "was lost" in e["sentence"], e


def test_procs_is_a_valid_launcher_up_to_its_limit(tmp_path):
    ok = scenario(tmp_path, [PYTHON, "x.py"], 2)
    res = harness("validate", ok)
    assert res.returncode == 0, res.stderr
    bad = tmp_path / "big.yaml"
    bad.write_text(ok.read_text().replace("world_size: 2", "world_size: 300"))
    res = harness("validate", bad)
    assert res.returncode == 2 and ":5:15:" in res.stderr and "launcher: procs starts at most 256" in res.stderr, \
        res.stderr


@pytest.mark.parametrize("sig,code", [(signal.SIGKILL, -9), (signal.SIGTERM, 143)])
def test_nothing_outlives_the_harness(tmp_path, sig, code):
    """Every process ignores SIGTERM and would sleep 60 s: a SIGTERMed harness
    stops them (SIGTERM passed on by the launcher, then SIGKILL of the
    session), a SIGKILLed one too (PR_SET_PDEATHSIG down the chain, and the
    job's guard)."""
    (tmp_path / "failer.py").write_text(FAILER)
    out = tmp_path / "out"
    p = scenario(tmp_path, [PYTHON, tmp_path / "failer.py", out, "none", "exit:0", "1"], 3)
    (tmp_path / "tmp").mkdir()        # what a killed harness leaves stays in the test's directory
    proc = subprocess.Popen([str(BIN / "ckpt-harness"), "run", str(p), "--cache", str(tmp_path / "cache")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TMPDIR=str(tmp_path / "tmp")))
    deadline = time.monotonic() + 60
    while (not out.exists() or len([n for n in os.listdir(out) if n.startswith("pid-")]) < 3) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    sids = {int((out / n).read_text().split()[1]) for n in os.listdir(out) if n.startswith("pid-")}
    assert len(sids) == 1 and all(session_alive(s) for s in sids)
    (sid,) = sids
    t0 = time.monotonic()
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == code
    while session_alive(sid) and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert session_alive(sid) == [], "still running %.1f s after the signal" % (time.monotonic() - t0)
    if sig == signal.SIGTERM:   # the launcher passed it on to every process
        assert {n for n in os.listdir(out) if n.startswith("term-")} == {"term-0", "term-1", "term-2"}


def test_rank_1_killed_while_it_restores_and_the_shim_knows_its_rank(tmp_path):
    """Rank 0 is killed mid-save in attempt 1; in attempt 2 rank 1 is killed
    while it reads the checkpoint both ranks restore from (a fault only the
    shim in rank 1, with RANK=1, can match); attempt 3 resumes from step 20."""
    text = (SCENARIOS / "numpy-procs-kill-mid-save.yaml").read_text()
    expect = "expect: {outcome: resume_bitwise, restored_from: 20}"
    assert expect in text
    p = tmp_path / "rank1.yaml"
    p.write_text(text.replace('"{scenario_dir}/../train.py"', '"%s"' % TRAIN).replace(
        expect, '  - when: {rank: 1, attempt: 2, op: read, path: "ckpt-00000020.bin"}\n    do: kill\n' + expect))
    res = harness("run", p, "--keep", "--cache", tmp_path / "cache", "--json", tmp_path / "r.json")
    e = json.loads((tmp_path / "r.json").read_text())["scenarios"][0]
    assert res.returncode == 0 and e["verdict"] == "PASS", res.stdout + res.stderr
    assert e["attempts"] == 3 and e["faults_fired"] == 2 and e["restored_from"][-1] == 20, e
    work = Path(e["workdir"])
    (fired,) = [json.loads(line) for line in (work / "faults.rank-1.jsonl").read_text().splitlines()]
    assert fired["rank"] == 1 and fired["attempt"] == 2 and fired["op"] == "read"
    # the launcher says which process failed first and that it stopped the other (which one is a race)
    log = (work / "attempt-2.log").read_text()
    assert "ckpt-harness: procs: rank " in log and "stopping the other 1" in log, log
    subprocess.run(["rm", "-rf", str(work)])
