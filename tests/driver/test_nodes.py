"""Many nodes (issue 12): trainer.nodes, when: {node: N}, node_loss, and the
launchers behind launch.h: mpirun with a hostfile of simulated nodes, and
srun under a local Slurm (scripts/slurm-local, started and stopped by this
module's fixture).
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mpi import BIN, REPO

HARNESS = BIN / "ckpt-harness"
NODE_EXEC = BIN / "ckpt-node-exec"
SMOKE = REPO / "scenarios" / "smoke"
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def harness(*args, timeout=300, env=None):
    return subprocess.run([str(HARNESS), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env or ENV)


T2 = "trainer: {preset: tiny, world_size: 4, nodes: 2, steps: 40, checkpoint: {every: 10, keep: 3}}\n"

BAD = {
    "nodes-not-dividing": ("name: a\ntrainer: {world_size: 4, nodes: 3}\nexpect: {}\n", ":2:33:",
                           "nodes divides world_size (4)"),
    "node-out-of-range": ("name: a\n" + T2 + "faults:\n  - when: {node: 2, step: 25, phase: train.step}\n"
                          "    do: kill\nexpect: {}\n", ":4:18:", "valid: 0 to 1"),
    "rank-not-on-node": ("name: a\n" + T2 + "faults:\n  - when: {node: 1, rank: 0, step: 25, phase: train.step}\n"
                         "    do: kill\nexpect: {}\n", ":4:27:", "rank 0 is on node 0, not node 1"),
    "node-loss-without-node": ("name: a\n" + T2 + "faults:\n  - when: {step: 25, phase: train.step}\n"
                               "    do: node_loss\nexpect: {}\n", ":4:11:", "say which, when: {node: N"),
    "node-loss-with-rank": ("name: a\n" + T2 + "faults:\n  - when: {node: 1, rank: 2, step: 25, phase: train.step}\n"
                            "    do: node_loss\nexpect: {}\n", ":4:21:", "it takes no rank"),
    "node-loss-one-node": ("name: a\ntrainer: {world_size: 4, steps: 40}\nfaults:\n"
                           "  - when: {node: 0, step: 25, phase: train.step}\n    do: node_loss\nexpect: {}\n",
                           ":5:9:", "replace: true"),
    "replace-without-node-loss": ("name: a\n" + T2 + "faults:\n  - when: {node: 1, step: 25, phase: train.step}\n"
                                  "    do: {kill: true, replace: true}\nexpect: {}\n", ":5:22:",
                                  "'replace' goes with node_loss only"),
    "node-loss-bad-replace": ("name: a\n" + T2 + "faults:\n  - when: {node: 1, step: 25, phase: train.step}\n"
                              "    do: {node_loss: true, replace: maybe}\nexpect: {}\n", ":5:36:",
                              "replace is true"),
    "nodes-with-single": ("name: a\ntrainer: {command: [x], launcher: single, nodes: 2}\nexpect: {}\n", ":2:50:",
                          "nodes divides world_size (1)"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_nodes__validation_errors_name_file_line_column(tmp_path, name):
    text, where, what = BAD[name]
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    for cmd in ("validate", "run"):
        res = harness(cmd, p, timeout=60)
        assert res.returncode == 2, (cmd, res.stdout, res.stderr)
        assert f"{p}{where}" in res.stderr, (cmd, res.stderr)
        assert what in res.stderr, (cmd, res.stderr)


def test_nodes__cli_refuses_nodes_that_do_not_divide_world_size(tmp_path):
    res = harness("run", SMOKE / "kill-rank1-torn-shard.yaml", "--nodes", "3", timeout=60)
    assert res.returncode == 2 and "--nodes 3 does not divide" in res.stderr, res.stderr
    res = harness("run", SMOKE / "kill-rank1-torn-shard.yaml", "--launcher", "pbs", timeout=60)
    assert res.returncode == 2 and "expected mpirun or srun" in res.stderr, res.stderr


def node_env(*assign):
    out = subprocess.run([str(NODE_EXEC), *assign, "--", "env"], capture_output=True, text=True, timeout=10,
                         env={"PATH": os.environ["PATH"]})
    return out.returncode, dict(l.split("=", 1) for l in out.stdout.splitlines() if "=" in l), out.stderr


def test_node_exec__block_mapping_and_lost_nodes():
    base = ("CKPT_HARNESS_RANKS_PER_NODE=2", "CKPT_HARNESS_NODE_ROOT=/r")
    rc, env, _ = node_env("RANK=3", "CKPT_HARNESS_NODE_LIST=0,1", *base)
    assert rc == 0 and env["CKPT_HARNESS_NODE"] == "1" and env["CKPT_HARNESS_NODE_DIR"] == "/r/node-1"
    assert env["CKPT_HARNESS_NODES"] == "2"
    # node 1 lost without a replacement: ranks 2 and 3 now run on node 2
    rc, env, _ = node_env("RANK=3", "CKPT_HARNESS_NODE_LIST=0,2", *base)
    assert rc == 0 and env["CKPT_HARNESS_NODE"] == "2"
    # torchrun's per-node variables
    rc, env, _ = node_env("RANK=3", "CKPT_HARNESS_NODE_LIST=0,1", "CKPT_HARNESS_TORCHRUN_ENV=1", *base)
    assert (env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"], env["GROUP_RANK"], env["GROUP_WORLD_SIZE"]) == ("1", "2", "1", "2")
    # a rank the launcher put on the wrong simulated host refuses to run
    rc, _, err = node_env("RANK=3", "CKPT_HARNESS_NODE_LIST=0,1", "CKPT_HARNESS_SIM_HOSTS=1",
                          "CKPT_HARNESS_HOST=simnode-0", *base)
    assert rc == 126 and "belongs on simnode-1" in err
    # trainer.command's per-rank placeholders; one process (launcher: single) has no rank variable
    out = subprocess.run([str(NODE_EXEC), "CKPT_HARNESS_DEFAULT_RANK=0", "CKPT_HARNESS_NODE_LIST=0", *base, "--",
                          "echo", "n={node}", "d={node_dir}/x"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout.split() == ["n=0", "d=/r/node-0/x"], out


def test_nodes__placeholders_of_command_are_accepted(tmp_path):
    p = tmp_path / "ph.yaml"
    p.write_text("name: ph\ntrainer: {command: [prog, --local, \"{node_dir}\", --node, \"{node}\"], launcher: procs, "
                 "world_size: 2, nodes: 2}\nexpect: {}\n")
    res = harness("validate", p, timeout=60)
    assert res.returncode == 0, res.stderr


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One golden cache for the module: the uninterrupted runs are the same for every test here."""
    return tmp_path_factory.mktemp("golden-cache")


def verdicts(path):
    return {s["name"]: s["verdict"] for s in json.loads(Path(path).read_text())["scenarios"]}


def test_hostfile__smoke_suite_on_two_simulated_nodes(tmp_path, cache):
    res = harness("suite", SMOKE, "--nodes", "2", "-j", "2", "--json", tmp_path / "r.json", "--cache",
                  cache)
    assert res.returncode == 0, res.stdout + res.stderr
    v = verdicts(tmp_path / "r.json")
    assert len(v) == 8 and set(v.values()) == {"PASS"}, v


def test_node_fault__fires_on_that_nodes_ranks_only(tmp_path, cache):
    """A delay (every matching rank fires and lives on to log it) on node 1: ranks 2 and 3 exactly."""
    p = tmp_path / "delay-node1.yaml"
    p.write_text("name: delay-node1\n" + T2 + "faults:\n  - when: {node: 1, step: 25, phase: train.step}\n"
                 "    do: {delay_ms: 1}\nexpect: {outcome: resume_bitwise}\n")
    work = tmp_path / "work"
    res = harness("run", p, "--work", work, "--keep", "--cache", cache)
    assert res.returncode == 0, res.stdout + res.stderr
    fired = {int(f.name.split("rank-")[1].split(".")[0]) for f in work.glob("faults.rank-*.jsonl") if f.stat().st_size}
    assert fired == {2, 3}, fired
    assert sorted(d.name for d in (work / "ckpt.nodes").iterdir()) == ["node-0", "node-1"]


def test_node_loss__replaced_node_resumes_bitwise(tmp_path, cache):
    work = tmp_path / "work"
    res = harness("run", REPO / "scenarios" / "ci" / "node-loss-during-save-replaced.yaml", "--work", work, "--keep",
                  "--cache", cache)
    assert res.returncode == 0, res.stdout + res.stderr
    log = (work / "nodes.log").read_text()
    assert "node 1 lost" in log and "a replacement node takes its place" in log
    assert (work / "ckpt.nodes" / "node-1").is_dir()
    start = json.loads((work / "attempt-2.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 4 and start["restored_from"] == 20


def test_node_loss__without_replacement_resumes_resharded_on_fewer_ranks(tmp_path, cache):
    work = tmp_path / "work"
    res = harness("run", REPO / "scenarios" / "ci" / "node-loss-shrink-resumes.yaml", "--work", work, "--keep",
                  "--cache", cache)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the next attempt runs without it" in (work / "nodes.log").read_text()
    assert not (work / "ckpt.nodes" / "node-1").exists()
    start = json.loads((work / "attempt-2.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2 and start["restored_from"] == 30, start
    journal = (work / "ckpt" / "journal" / "rank-00001.jsonl").read_text()
    assert '"event":"reshard","checkpoint":"step-00000030","from":4,"to":2' in journal


def test_node_loss__to_a_world_size_that_does_not_divide_the_workers_is_refused_cleanly(tmp_path, cache):
    work = tmp_path / "work"
    res = harness("run", REPO / "scenarios" / "nodes" / "node-loss-to-3-ranks-refused.yaml", "--work", work,
                  "--keep", "--cache", cache)
    assert res.returncode == 0, res.stdout + res.stderr
    end = json.loads((work / "attempt-2.jsonl").read_text().splitlines()[-1])
    assert end["status"] == "failed" and "valid world sizes: 1 2 4 8" in end["error"], end


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster (scripts/slurm-local) needs root")
    for tool in ("slurmctld", "slurmd", "munged", "srun", "scancel"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing: install slurm-wlm and munge (scripts/common.sh SLURM_PACKAGES)")
    d = tmp_path_factory.mktemp("slurm")
    script = REPO / "scripts" / "slurm-local"
    up = subprocess.run([str(script), "start", str(d)], capture_output=True, text=True, timeout=60)
    try:
        assert up.returncode == 0, up.stderr
        yield dict(ENV, SLURM_CONF=str(d / "slurm.conf"))
    finally:
        subprocess.run([str(script), "stop", str(d)], timeout=60)


def test_srun__smoke_suite_under_local_slurm(tmp_path, slurm, cache):
    res = harness("suite", SMOKE, "--launcher", "srun", "-j", "2", "--json", tmp_path / "r.json", "--cache",
                  cache, env=slurm)
    assert res.returncode == 0, res.stdout + res.stderr
    v = verdicts(tmp_path / "r.json")
    assert len(v) == 8 and set(v.values()) == {"PASS"}, v
    jobs = subprocess.run(["scontrol", "show", "jobs"], capture_output=True, text=True, env=slurm).stdout
    assert jobs.count("JobName=ckpt-harness-") >= 16, jobs      # every attempt went through srun
    left = subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=slurm).stdout
    assert left.strip() == "", left                              # nothing outlives the harness


@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_srun__stopped_harness_leaves_no_step_behind(tmp_path, slurm, cache, sig):
    """Ctrl-C (exit 130) or SIGKILL while a step hangs in an injected delay: the step is cancelled, no rank is left.

    After a SIGKILL nothing of the harness runs: its guard process cancels the step (srun, killed with it,
    cannot), and the step's tasks are slurmd's children, outside every session the harness owns.
    """
    import signal
    import time
    p = tmp_path / "hang.yaml"
    p.write_text("name: hang-srun\ntrainer: {preset: tiny, world_size: 4, steps: 60, checkpoint: {every: 10, keep: 3}}\n"
                 "faults:\n  - when: {rank: 1, step: 7, phase: train.step}\n    do: {delay_ms: 600000}\n"
                 "expect: {outcome: resume_bitwise}\n")
    work = tmp_path / "work"
    proc = subprocess.Popen([str(HARNESS), "run", str(p), "--launcher", "srun", "--work", str(work), "--cache",
                             str(cache)], env=slurm, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = work / "attempt-1.log"
        for _ in range(600):
            if log.exists() and "FAULT" in log.read_text():
                break
            time.sleep(0.1)
        assert "FAULT" in log.read_text(), "the delay never started"
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (130 if sig == "SIGINT" else -signal.SIGKILL), (proc.returncode, out, err)
    left = "?"
    for _ in range(150):             # the guard works after the harness is gone: give it 15 s
        left = subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=slurm).stdout.strip()
        ranks = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout.strip()
        if not left and not ranks:
            break
        time.sleep(0.1)
    assert left == "" and ranks == "", (left, ranks)
