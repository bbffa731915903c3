"""The CI gate through pytest: one test per scenario in scenarios/ci, plus
tests that the oracle can fail, that bad scenario files are refused with
their line, and that nothing the harness starts outlives it.

The suite runs once (ckpt-harness suite -j 2) and each test reads its
scenario's verdict from the JSON report, so a failure shows the oracle's
sentence.
"""
import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mpi import BIN, REPO

CI = REPO / "scenarios" / "ci"
HARNESS = BIN / "ckpt-harness"
SCENARIOS = sorted(p.stem for p in CI.glob("*.yaml"))


def harness(*args, timeout=900):
    return subprocess.run([str(HARNESS), *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def ci_report(tmp_path_factory):
    d = tmp_path_factory.mktemp("ci")
    res = harness("suite", CI, "-j", "2", "--json", d / "r.json", "--junit", d / "j.xml")
    report = json.loads((d / "r.json").read_text())
    return res, report, d


def test_ci_gate_has_at_least_25_scenarios():
    assert len(SCENARIOS) >= 25


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(ci_report, name):
    _, report, _ = ci_report
    entry = next(s for s in report["scenarios"] if s["name"] == name)
    assert entry["verdict"] == "PASS", entry["sentence"]
    assert entry["faults_fired"] == entry["faults_planned"] > 0


def test_suite_exit_code_reports_and_coverage(ci_report):
    res, report, d = ci_report
    assert res.returncode == 0, res.stdout + res.stderr
    assert report["summary"]["total"] == len(SCENARIOS) == report["summary"]["passed"]
    suites = ET.parse(d / "j.xml").getroot()
    cases = suites.findall("./testsuite/testcase")
    assert sorted(c.get("name") for c in cases) == SCENARIOS
    assert not suites.findall(".//failure")
    # the gate's faults hit every save phase and the restore and trainer phases
    hit = {k.split("/")[0] for k in report["coverage"]}
    for phase in ["save.prepare", "save.shard_write", "save.shard_sync", "save.barrier", "save.manifest_write",
                  "save.manifest_sync", "save.commit", "save.dir_sync", "save.latest", "save.retention",
                  "restore.read", "restore.verify", "train.step", "train.reduce"]:
        assert phase in hit, phase


def write(tmp_path, name, text):
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("component,words", [
    ("opt", "optimizer moments (opt) restored at step 30"),
    ("rng", "dropout RNG streams (rng) restored at step 30"),
    ("data", "data cursor (data) restored at step 30"),
    ("scaler", "loss scaler state (scaler) restored at step 30"),
    ("sched", "LR schedule state (sched) restored at step 30"),
])
def test_oracle_names_the_component_that_was_not_restored(tmp_path, component, words):
    p = write(tmp_path, "skip", f"""name: skip-{component}
trainer: {{preset: tiny, world_size: 4, steps: 60, test_skip_restore: {component}}}
faults:
  - when: {{rank: 2, step: 35, phase: train.step}}
    do: kill
expect: {{outcome: resume_bitwise}}
""")
    res = harness("run", p, "--json", tmp_path / "r.json", "--junit", tmp_path / "j.xml")
    assert res.returncode == 1, res.stdout
    entry = json.loads((tmp_path / "r.json").read_text())["scenarios"][0]
    assert entry["verdict"] == "FAIL"
    assert words in entry["sentence"]
    assert "from the uninterrupted run's state after step 30" in entry["sentence"]
    failure = ET.parse(tmp_path / "j.xml").getroot().find(".//failure")
    assert words in failure.get("message")


def test_a_fault_that_never_fires_is_an_error_not_a_pass(tmp_path):
    p = write(tmp_path, "never", """name: never-fires
trainer: {preset: tiny, world_size: 2, steps: 20}
faults:
  - when: {rank: 1, step: 10, phase: save.commit, op: rename, nth: 99}
    do: kill
expect: {outcome: resume_bitwise}
""")
    res = harness("run", p, "--json", tmp_path / "r.json")
    assert res.returncode == 1
    entry = json.loads((tmp_path / "r.json").read_text())["scenarios"][0]
    assert entry["verdict"] == "ERROR"
    assert "fault did not fire" in entry["sentence"] and "never.yaml:4" in entry["sentence"]


def test_wrong_expectation_fails(tmp_path):
    p = write(tmp_path, "wrong", """name: wrong-restore
trainer: {preset: tiny, world_size: 2, steps: 40}
faults:
  - when: {rank: 0, step: 25, phase: train.step}
    do: kill
expect: {outcome: resume_bitwise, restored_from: 10}
""")
    res = harness("run", p)
    assert res.returncode == 1
    assert "attempt 2, the first restart to get through its restore, restored step-00000020, but the scenario expects step 10" in res.stdout


def test_oracle_command(tmp_path):
    golden, attempt = tmp_path / "g.jsonl", tmp_path / "a.jsonl"
    subprocess.run(["true"])
    lines = ['{"event":"start","attempt":1,"world_size":1,"restored_from":null,"checkpoint":null}',
             '{"step":1,"loss":"0x3f800000","master":"00000000000000aa"}',
             '{"step":2,"loss":"0x3f000000","master":"00000000000000bb"}',
             '{"event":"end","status":"done","steps":2}']
    golden.write_text("\n".join(lines) + "\n")
    attempt.write_text("\n".join(lines) + "\n")
    ok = harness("oracle", golden, attempt)
    assert ok.returncode == 0 and "PASS" in ok.stdout
    attempt.write_text("\n".join(lines).replace('"0x3f000000"', '"0x3f000001"') + "\n")
    bad = harness("oracle", golden, attempt)
    assert bad.returncode == 1
    assert "step 2 (attempt 1) differs from the uninterrupted run in loss" in bad.stdout


@pytest.mark.parametrize("text,where,what", [
    ("name: a\ntrainer: {preset: tiny}\nfaults:\n  - when: {rank: 1, phase: save.shard_wrte}\n    do: kill\n"
     "expect: {outcome: resume_bitwise}\n", ":4:", "did you mean 'save.shard_write'"),
    ("name: a\ntrainer: {prest: tiny}\nexpect: {}\n", ":2:11:", "did you mean 'preset'"),
    ("name: a\ntrainer: {world_size: 3}\nexpect: {}\n", ":2:23:", "valid: 1, 2, 4, 8"),
    ("name: a\nfaults:\n  - when: {op: write}\n    do: {errno: EWHAT}\nexpect: {}\n", ":4:", "valid: EIO"),
    ("name: a\nfaults:\n  - when: {op: write}\n    do: {torn: 10}\nexpect: {}\n", ":4:", "then: kill"),
    ("name: a\nexpect: {outcome: clean_failure}\n", ":2:", "needs 'error'"),
    ("name: a\ntrainer: [1, 2\n", ":", "not valid YAML"),
])
def test_bad_scenario_files_exit_2_with_the_line(tmp_path, text, where, what):
    p = write(tmp_path, "bad", text)
    for cmd in ("validate", "run"):
        res = harness(cmd, p)
        assert res.returncode == 2, (cmd, res.stdout, res.stderr)
        assert f"{p}{where}" in res.stderr and what in res.stderr, res.stderr


def test_validate_accepts_every_shipped_scenario():
    res = harness("validate", CI, REPO / "scenarios" / "smoke")
    assert res.returncode == 0, res.stderr


def reftrain_processes():
    out = subprocess.run(["pgrep", "-f", "bin/reftrain"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_ctrl_c_leaves_nothing_running(tmp_path):
    p = write(tmp_path, "slow", """name: slow
trainer: {preset: small, world_size: 2, steps: 400}
faults:
  - when: {rank: 0, step: 300, phase: train.step}
    do: kill
expect: {outcome: resume_bitwise}
""")
    before = set(reftrain_processes())
    proc = subprocess.Popen([str(HARNESS), "run", str(p), "--cache", str(tmp_path / "cache")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not set(reftrain_processes()) - before:
        time.sleep(0.1)
    assert set(reftrain_processes()) - before, "the job never started"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    time.sleep(0.5)
    assert not set(reftrain_processes()) - before, "ranks outlived the harness"
