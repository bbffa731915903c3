"""PyTorch under the harness: examples/torch, scenarios/torch, scenarios/field.

Guards against: a gate that can judge only its own checkpoint library and not
the checkpoint code most people run. The data-parallel PyTorch trainer
(examples/torch/train.py, two Gloo ranks with torchrun's environment) must
pass the harness's determinism gate and every scenario in scenarios/torch
with the atomic writer (DESIGN.md's save protocol); the torch-save writer
(torch.save to a temporary name, os.replace) and the dcp writer (torch 1.13's
distributed checkpoint) must fail exactly where their checkpoints are not
durable or not checked, with sentences naming the cause;
the field findings about PyTorch 1.13.1 must keep being seen; and a writer
that forgets a piece of state must fail the plain stop-and-resume check,
naming it.
"""
import json
import re
import subprocess

import pytest

from mpi import BIN, REPO

PYTHON = "/usr/bin/python3"
EXAMPLE = REPO / "examples" / "torch"
SCENARIOS = REPO / "scenarios" / "torch"
FIELD = REPO / "scenarios" / "field"
ATOMIC_ONLY = sorted(p.name for p in SCENARIOS.glob("*.yaml") if "\n# writers: atomic" in "\n" + p.read_text())


def test_torch_and_skorch_are_installed():
    """scripts/test installs python3-torch and python3-skorch; without them every test here fails, never skips."""
    res = subprocess.run([PYTHON, "-c", "import torch, skorch"], capture_output=True, text=True)
    assert res.returncode == 0, "python3-torch / python3-skorch missing (scripts/common.sh installs them): " + res.stderr


def harness(*args):
    return subprocess.run([str(BIN / "ckpt-harness")] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=1200)


def report(path):
    return {s["name"]: s for s in json.loads(path.read_text())["scenarios"]}


def drop_workdirs(entries):
    for e in entries.values():
        if e.get("workdir"):
            subprocess.run(["rm", "-rf", e["workdir"]])


def writer_scenarios(writer, out, *files):
    res = subprocess.run([PYTHON, str(EXAMPLE / "writer_scenarios.py"), writer, str(out)] + [str(f) for f in files],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res


def test_the_atomic_writer_passes_every_torch_scenario(tmp_path):
    res = harness("suite", SCENARIOS, "-j", "2", "--json", tmp_path / "r.json")
    got = report(tmp_path / "r.json")
    drop_workdirs(got)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(got) == len(list(SCENARIOS.glob("*.yaml"))) >= 20
    for name, s in got.items():
        assert s["verdict"] == "PASS" and s["faults_fired"] == s["faults_planned"] >= 1, s
    # the determinism gate ran its plain stop-and-resume check on this trainer (it honours CKPT_HARNESS_STOP_AFTER)
    assert "check did not run" not in res.stderr, res.stderr
    # kills, torn writes, power cuts and damage made the restarts restore what the scenarios say
    assert got["torch-power-loss-after-save"]["restored_from"] == [30]
    assert got["torch-bitflip-newest-at-rest"]["restored_from"] == [20]


# The other writers' verdicts: everything passes except what their checkpoints lack.
LOST_20 = "attempt 2 restored nothing (a fresh start), but step 20 had been committed and acknowledged before the crash"
LOST_30 = "attempt 2 restored nothing (a fresh start), but step 30 had been committed and acknowledged before the crash"
FAILS = {
    "torch-save": {
        # torch.save and os.replace, never an fsync: the power cut drops the acknowledged step 20 and step 30
        "torch-power-loss-inside-save-torch-save": LOST_20,
        "torch-power-loss-after-save-torch-save": LOST_30,
        # torch.load takes the checkpoint with a flipped bit: no fallback to step 20
        "torch-bitflip-newest-at-rest-torch-save":
            "attempt 2, the first restart to get through its restore, restored ckpt-00000030.pt, but the scenario "
            "expects step 20",
    },
    "dcp": {
        # every file fsynced, no directory ever: the checkpoint directories vanish at the power cut
        "torch-power-loss-inside-save-dcp": LOST_20,
        "torch-power-loss-after-save-dcp": LOST_30,
        # no checksum: load_state_dict takes the flipped bit
        "torch-bitflip-newest-at-rest-dcp":
            "attempt 2, the first restart to get through its restore, restored dcp-00000030, but the scenario "
            "expects step 20",
    },
}


@pytest.mark.parametrize("writer", sorted(FAILS))
def test_another_writer_fails_exactly_where_its_checkpoints_are_not_durable_or_not_checked(tmp_path, writer):
    res = writer_scenarios(writer, tmp_path / "s")
    left_out = sorted(re.findall(r"^(\S+\.yaml): left out for %s" % writer, res.stderr, re.M))
    assert left_out == ATOMIC_ONLY and len(left_out) >= 5, res.stderr
    res = harness("suite", tmp_path / "s", "-j", "2", "--json", tmp_path / "r.json")
    got = report(tmp_path / "r.json")
    drop_workdirs(got)
    assert res.returncode == 1, res.stdout + res.stderr
    assert len(got) == len(list(SCENARIOS.glob("*.yaml"))) - len(ATOMIC_ONLY)
    for name, s in got.items():
        assert s["faults_fired"] == s["faults_planned"], s
        if name in FAILS[writer]:
            assert s["verdict"] == "FAIL" and FAILS[writer][name] in s["sentence"], s
        else:
            assert s["verdict"] == "PASS", s
    assert set(FAILS[writer]) <= set(got)


@pytest.mark.parametrize("scenario,sentence", [
    ("torch-save-power-cut-loses-acknowledged.yaml",
     "attempt 2 restored nothing (a fresh start), but step 30 had been committed and acknowledged before the "
     "crash: a durable checkpoint was lost"),
    ("torch-load-accepts-flipped-bit.yaml",
     "component opt restored at step 30 (attempt 2, ckpt-00000030.pt) differs from the uninterrupted "
     "run's state after step 30"),
    ("dcp-power-cut-loses-acknowledged.yaml",
     "attempt 2 restored nothing (a fresh start), but step 30 had been committed and acknowledged before the "
     "crash: a durable checkpoint was lost"),
    # (a program's components are named by the program's own names)
    ("dcp-load-accepts-flipped-bit.yaml",
     "component params restored at step 30 (attempt 2, dcp-00000030) differs from the uninterrupted run's state "
     "after step 30"),
    ("skorch-checkpoint-loses-rng-and-lr-schedule.yaml",
     "the trainer does not resume bit for bit even without a fault (stopped cleanly after step 11 and resumed), so "
     "no fault verdict can count: components sched and rng restored at step 10 (attempt 2, history.json) differ"),
])
def test_the_field_findings_about_pytorch_are_still_seen(tmp_path, scenario, sentence):
    res = harness("run", FIELD / scenario, "--json", tmp_path / "r.json")
    (e,) = report(tmp_path / "r.json").values()
    drop_workdirs({0: e})
    assert res.returncode == 1 and e["verdict"] == "FAIL", e
    if "even without a fault" in sentence:
        assert e["faults_fired"] == 0, e       # the determinism gate stopped it before any fault
    else:
        assert e["faults_fired"] == e["faults_planned"] >= 1, e
    assert sentence in e["sentence"], e


@pytest.mark.parametrize("component,name", [("rng", "component rng"), ("data", "component data")])
def test_a_writer_that_forgets_a_component_fails_the_plain_resume_naming_it(tmp_path, component, name):
    text = (SCENARIOS / "torch-kill-train-step.yaml").read_text()
    old = '"{scenario_dir}/../../examples/torch/train.py", --writer, atomic,'
    assert old in text
    p = tmp_path / "forget.yaml"
    p.write_text(text.replace(old, '"%s", --writer, atomic, --test-forget, %s,' % (EXAMPLE / "train.py", component)))
    res = harness("run", p, "--json", tmp_path / "r.json")
    (e,) = report(tmp_path / "r.json").values()
    drop_workdirs({0: e})
    assert res.returncode == 1 and e["verdict"] == "FAIL", e
    assert "the trainer does not resume bit for bit even without a fault" in e["sentence"], e
    assert name in e["sentence"] and "restored at step 10" in e["sentence"], e


def test_writer_scenarios_rewrites_the_writer_the_names_and_the_damage_targets(tmp_path):
    writer_scenarios("torch-save", tmp_path, SCENARIOS / "torch-bitflip-newest-at-rest.yaml",
                     SCENARIOS / "torch-kill-save-dir-sync.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["torch-bitflip-newest-at-rest-torch-save.yaml"]
    text = (tmp_path / "torch-bitflip-newest-at-rest-torch-save.yaml").read_text()
    assert "--writer, torch-save," in text and "atomic" not in text
    assert '"%s"' % (EXAMPLE / "train.py") in text and "{scenario_dir}" not in text
    assert 'generations: "ckpt-????????.pt"' in text and "bitflip: newest/ckpt-*.pt," in text
    assert "\nname: torch-bitflip-newest-at-rest-torch-save\n" in text
    res = harness("validate", tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
