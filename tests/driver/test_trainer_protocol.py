"""A program outside the C tree under the harness: the trainer protocol v1.

Guards against: a gate that can judge only its own checkpoint library. The
numpy example trainer (examples/numpy_trainer) checkpoints with plain
open/write/os.replace; the harness runs it from a scenario's
`trainer.command`, delivers faults through the LD_PRELOAD shim, and must tell
the trainer that makes its checkpoint durable from the same trainer without
its fsync calls.
"""
import json
import subprocess

import pytest

from mpi import BIN, REPO

SCENARIOS = REPO / "examples" / "numpy_trainer" / "scenarios"


def harness(*args):
    return subprocess.run([str(BIN / "ckpt-harness")] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=600)


def entry(path):
    return json.loads(path.read_text())["scenarios"][0]


def test_the_numpy_scenarios_pass(tmp_path):
    res = harness("suite", SCENARIOS, "--json", tmp_path / "r.json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["scenarios"]) >= 2
    for s in report["scenarios"]:
        assert s["verdict"] == "PASS" and s["faults_fired"] == s["faults_planned"] >= 1, s
        assert s["restored_from"] == [20], s


def test_without_fsync_a_power_cut_loses_the_acknowledged_checkpoint(tmp_path):
    text = (SCENARIOS / "numpy-power-loss-after-ack.yaml").read_text()
    assert '--keep, "3"]' in text
    p = tmp_path / "nofsync.yaml"
    # the scenario file lives elsewhere now: point {scenario_dir} at the example again
    p.write_text(text.replace('--keep, "3"]', '--keep, "3", --no-fsync]')
                 .replace('"{scenario_dir}/../train.py"', '"%s"' % (SCENARIOS.parent / "train.py")))
    res = harness("run", p, "--json", tmp_path / "r.json")
    e = entry(tmp_path / "r.json")
    assert res.returncode == 1 and e["verdict"] == "FAIL", e
    assert "step 20 had been committed and acknowledged" in e["sentence"] and "was lost" in e["sentence"], e


def test_a_kill_through_the_shim_fires_exactly_where_planned(tmp_path):
    res = harness("run", SCENARIOS / "numpy-kill-mid-save.yaml", "--keep", "--json", tmp_path / "r.json")
    e = entry(tmp_path / "r.json")
    assert res.returncode == 0, e
    fired = [json.loads(line) for line in
             (__import__("pathlib").Path(e["workdir"]) / "faults.rank-0.jsonl").read_text().splitlines()]
    assert len(fired) == 1 and fired[0]["op"] == "write" and fired[0]["nth"] == 3
    assert fired[0]["path"].endswith("ckpt-00000030.bin.tmp") and fired[0]["attempt"] == 1
    subprocess.run(["rm", "-rf", e["workdir"]])


BASE = """name: a
trainer:
  command: [/usr/bin/python3, train.py, --ckpt, "{ckpt_dir}"]
  launcher: single
%s
faults:
  - when: %s
    do: kill
expect: {outcome: resume_bitwise}
"""


@pytest.mark.parametrize("extra,when,where,what", [
    ("", "{step: 20, op: write}", ":7:", "announces it through the beacon"),
    ("", "{phase: save.shard_write}", ":7:", "announces it through the beacon"),
    ("  preset: tiny", "{op: write}", ":5:", "a setting of reftrain"),
    ("  world_size: 2", "{op: write}", ":5:", "launcher: single runs one process"),
    ("  checkpoint_root: /elsewhere", "{op: write}", ":5:", "the harness chooses the root"),
    ("  launcher: slurm", "{op: write}", ":", "valid: mpirun, single"),
])
def test_bad_trainer_commands_are_refused_with_the_line(tmp_path, extra, when, where, what):
    text = BASE % (extra, when)
    if "launcher: slurm" in extra:
        text = text.replace("  launcher: single\n", "")
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    res = harness("validate", p)
    assert res.returncode == 2, res.stdout + res.stderr
    assert where in res.stderr and what in res.stderr, res.stderr


def test_unknown_placeholder_is_refused(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(BASE.replace('"{ckpt_dir}"', '"{ckpt_root}"') % ("", "{op: write}"))
    res = harness("validate", p)
    assert res.returncode == 2 and ":3:" in res.stderr and "unknown placeholder" in res.stderr, res.stderr


def test_a_beacon_trainer_may_name_steps_and_phases(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text(BASE % ("  beacon: true", "{step: 20, phase: save.shard_write, op: write}"))
    res = harness("validate", p)
    assert res.returncode == 0, res.stderr


def test_an_io_error_may_end_a_foreign_programs_attempt(tmp_path):
    """reftrain survives an I/O error (it retries the save), so a restart after
    one can never happen there; a program of the user's may exit on it, so
    expectations about its restart are accepted."""
    text = (BASE % ("", "{op: write, path: \"ckpt-*\"}")).replace("    do: kill", "    do: {errno: EIO}")
    p = tmp_path / "eio.yaml"
    p.write_text(text.replace("expect: {outcome: resume_bitwise}", "expect: {outcome: resume_bitwise, restored_from: 10}"))
    res = harness("validate", p)
    assert res.returncode == 0, res.stderr
    ref = tmp_path / "reftrain.yaml"
    ref.write_text("name: a\nfaults:\n  - when: {op: write}\n    do: {errno: EIO}\n"
                   "expect: {outcome: resume_bitwise, restored_from: 10}\n")
    res = harness("validate", ref)
    assert res.returncode == 2 and "can never be checked" in res.stderr, res.stderr


def test_op_link_is_for_programs_under_the_shim_only(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text(BASE % ("", "{op: link}"))
    assert harness("validate", ok).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: a\nfaults:\n  - when: {op: link}\n    do: kill\nexpect: {outcome: resume_bitwise}\n")
    res = harness("validate", bad)
    assert res.returncode == 2 and ":3:16:" in res.stderr and "no link call" in res.stderr, res.stderr


def test_damage_at_rest_strikes_a_programs_own_checkpoint_names(tmp_path):
    """trainer.generations says what the program's checkpoints are called: the
    bit flip lands in its newest file (step 30), the harness traces it back to
    step 30, and the restart falling back to step 20 is not blamed on it."""
    res = harness("run", SCENARIOS / "numpy-bitflip-newest-at-rest.yaml", "--keep", "--json", tmp_path / "r.json")
    e = entry(tmp_path / "r.json")
    assert res.returncode == 0 and e["verdict"] == "PASS", e
    assert e["faults_fired"] == e["faults_planned"] == 2 and e["restored_from"] == [20], e
    log = (__import__("pathlib").Path(e["workdir"]) / "damage-after-1.log").read_text()
    assert log.startswith("bitflip ") and "/ckpt/ckpt-00000030.bin at byte 100" in log, log
    subprocess.run(["rm", "-rf", e["workdir"]])


def test_damage_at_rest_without_generations_is_refused(tmp_path):
    text = (SCENARIOS / "numpy-bitflip-newest-at-rest.yaml").read_text()
    p = tmp_path / "nogens.yaml"
    p.write_text(text.replace('  generations: "ckpt-*.bin"\n', ""))
    res = harness("validate", p)
    assert res.returncode == 2
    assert "nogens.yaml:17:" in res.stderr and "generations" in res.stderr, res.stderr


def wrapped(tmp_path, name, shell):
    """numpy-kill-mid-save with the trainer behind a shell wrapper (a program of the user's)."""
    w = tmp_path / f"{name}.sh"
    w.write_text("#!/bin/sh\n" + shell + '\nexec /usr/bin/python3 "%s" "$@"\n' % (SCENARIOS.parent / "train.py"))
    w.chmod(0o755)
    text = (SCENARIOS / "numpy-kill-mid-save.yaml").read_text()
    p = tmp_path / f"{name}.yaml"
    p.write_text(text.replace('/usr/bin/python3, "{scenario_dir}/../train.py"', '"%s"' % w)
                 .replace("name: numpy-kill-mid-save", "name: " + name))
    return p


def test_the_plain_resume_check_runs_on_a_program_of_the_users(tmp_path):
    """The harness asks the program to stop (CKPT_HARNESS_STOP_AFTER) one step
    after its first acknowledged checkpoint and resumes it with no fault: a
    program that loses its checkpoints across a plain restart FAILs there,
    before any fault is blamed; one that honours the request and resumes
    bitwise passes with no note; one that ignores it is told the check did
    not run."""
    honest = harness("run", SCENARIOS / "numpy-kill-mid-save.yaml", "--cache", tmp_path / "c1")
    assert honest.returncode == 0 and "did not run" not in honest.stderr, honest.stdout + honest.stderr
    # wipes its checkpoints before the second run of the plain resume (attempt 2 of the check)
    lossy = wrapped(tmp_path, "lossy", '[ "$CKPT_HARNESS_ATTEMPT" = 2 ] && [ -z "$CKPT_FAULT_LOG" ] && '
                    'rm -rf "$CKPT_HARNESS_CKPT_DIR"/*')
    res = harness("run", lossy, "--cache", tmp_path / "c2", "--json", tmp_path / "r.json")
    e = entry(tmp_path / "r.json")
    assert res.returncode == 1 and e["verdict"] == "FAIL", e
    assert "does not resume bit for bit even without a fault" in e["sentence"], e
    assert "stopped cleanly after step 11" in e["sentence"], e
    deaf = wrapped(tmp_path, "deaf", "unset CKPT_HARNESS_STOP_AFTER")
    res = harness("run", deaf, "--cache", tmp_path / "c3")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ran to the end although asked to stop after step 11" in res.stderr
    assert "plain stop-and-resume check did not run" in res.stderr
