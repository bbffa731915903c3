"""Resume coverage: the trainer state transitions restored runs cross.

Guards against: a gate whose restarts all restore state from the first
epoch, before warmup ends or before any retention deletion, so a restore bug
that only shows after such a transition passes it. The harness reports, per
scenario and per suite, which transitions the restored attempts crossed; the
CI scenarios below cross them, and a data cursor that restores wrong only
after an epoch boundary (CKPT_MUTANT=shuffle_seed_not_saved) passes the older
scenarios but fails epoch-boundary-restarts.
"""
import json
import subprocess

import pytest

from mpi import BIN, REPO, reftrain

CI = REPO / "scenarios" / "ci"
HARNESS = BIN / "ckpt-harness"
TRANSITIONS = ["epoch_boundary", "overflow_skip", "warmup_end", "accum_boundary", "retention_deletion", "resave"]
# every transition is crossed by the CI gate
NOT_IN_CI_YET = set()
# the CI scenarios that between them cross every transition reftrain has
SUBSET = ["epoch-boundary-restarts", "bitflip-at-step-boundary", "accum-window-restart"]


def suite(bin_dir, tmp_path, names):
    out = tmp_path / "r.json"
    res = subprocess.run([str(bin_dir / "ckpt-harness"), "suite", *[str(CI / f"{n}.yaml") for n in names],
                          "-j", "2", "--json", str(out)], capture_output=True, text=True, timeout=900)
    return res, json.loads(out.read_text())


@pytest.fixture(scope="module")
def subset_report(tmp_path_factory):
    return suite(BIN, tmp_path_factory.mktemp("tr"), SUBSET)


def test_suite_summary_lists_every_transition_with_the_scenarios_that_crossed_it(subset_report):
    res, report = subset_report
    assert res.returncode == 0, res.stdout + res.stderr
    summary = report["summary"]["transitions"]
    assert sorted(summary) == sorted(TRANSITIONS)
    for name in TRANSITIONS:
        if name in NOT_IN_CI_YET:
            assert summary[name] == [], name
        else:
            assert summary[name], f"no restored run in {SUBSET} crossed {name}"
    assert sorted(report["summary"]["transitions_restored_after"]) == sorted(TRANSITIONS)


def test_terminal_summary_says_every_transition_was_crossed(subset_report):
    res, _ = subset_report
    assert "every transition was crossed by a restored run" in res.stdout, res.stdout
    assert "transitions no restored run crossed" not in res.stdout


def test_accum_scenario_restores_inside_a_window_and_crosses_its_update(subset_report):
    _, report = subset_report
    entry = next(s for s in report["scenarios"] if s["name"] == "accum-window-restart")
    got = {(t["transition"], t["how"], t["attempt"], t["restored_from"], t["step"]) for t in entry["transitions"]}
    assert ("accum_boundary", "across", 2, 10, 12) in got
    assert ("warmup_end", "across", 2, 10, 11) in got


def test_accum_scenario_fails_when_the_partial_gradient_is_not_restored(tmp_path):
    text = (CI / "accum-window-restart.yaml").read_text().replace("accum_steps: 3,", "accum_steps: 3, test_skip_restore: accum,")
    (tmp_path / "s.yaml").write_text(text)
    res = subprocess.run([str(HARNESS), "run", str(tmp_path / "s.yaml"), "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stdout
    entry = json.loads((tmp_path / "r.json").read_text())["scenarios"][0]
    # the oracle names the component at the restored step, before any step runs on it
    assert entry["verdict"] == "FAIL", entry
    assert "accumulated gradient (accum) restored at step 10" in entry["sentence"], entry["sentence"]


def test_epoch_scenario_crosses_the_boundary_and_restores_a_later_epoch(subset_report):
    _, report = subset_report
    entry = next(s for s in report["scenarios"] if s["name"] == "epoch-boundary-restarts")
    got = {(t["transition"], t["how"], t["attempt"], t["restored_from"], t["step"]) for t in entry["transitions"]}
    # tiny: 4096 samples, 8 readers, 8 samples a step each: epoch 1 starts at step 65
    assert ("epoch_boundary", "across", 2, 60, 65) in got
    assert ("epoch_boundary", "restored_after", 3, 70, 65) in got
    # the last attempt saves step 80, so retention deletes step 50 after a restore
    assert ("retention_deletion", "across", 3, 70, 50) in got


def test_only_what_a_restored_run_trained_through_counts(tmp_path):
    res, report = suite(BIN, tmp_path, ["clean-failure-unreadable-checkpoints", "kill-between-checkpoints-rank2"])
    assert res.returncode == 0, res.stdout
    by_name = {s["name"]: s for s in report["scenarios"]}
    # its restart restores nothing (every read fails): no restored run, nothing crossed
    assert by_name["clean-failure-unreadable-checkpoints"]["transitions"] == []
    # restores step 30 and trains 31..60: the skipped steps 37 and 38, no epoch boundary, warmup long over
    kinds = {(t["transition"], t["how"]) for t in by_name["kill-between-checkpoints-rank2"]["transitions"]}
    assert ("overflow_skip", "across") in kinds
    assert ("warmup_end", "restored_after") in kinds
    assert ("epoch_boundary", "across") not in kinds and ("warmup_end", "across") not in kinds


@pytest.fixture(scope="module")
def shuffle_mutant_bin():
    build = REPO / "build-mutant-shuffle_seed_not_saved"
    subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), "-G", "Ninja",
                    "-DCKPT_MUTANT=shuffle_seed_not_saved"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "reftrain", "ckpt-harness"], check=True,
                   capture_output=True)
    return build / "bin"


def test_shuffle_seed_not_saved_is_caught_only_after_an_epoch_boundary(shuffle_mutant_bin, tmp_path):
    # restores from the first epoch (step 30, step 60 crossing into epoch 1) are right on the mutant ...
    res, report = suite(shuffle_mutant_bin, tmp_path, ["kill-between-checkpoints-rank2", "epoch-boundary-restarts"])
    verdicts = {s["name"]: s for s in report["scenarios"]}
    assert verdicts["kill-between-checkpoints-rank2"]["verdict"] == "PASS"
    # ... the restore of epoch-1 state (step 70) is not, and the oracle names the data cursor
    bad = verdicts["epoch-boundary-restarts"]
    assert res.returncode == 1
    assert bad["verdict"] == "FAIL"
    assert "data cursor" in bad["sentence"] and "70" in bad["sentence"], bad["sentence"]


def steps_of(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith('{"step"')]


def test_step_records_say_where_the_transitions_are(tmp_path):
    res = reftrain(4, tmp_path / "t.jsonl", "--preset", "tiny", "--steps", "70")
    assert res.returncode == 0, res.stderr
    by_step = {r["step"]: r for r in steps_of(tmp_path / "t.jsonl")}
    # tiny: warmup is 10 steps, an epoch is 4096 / 8 readers / 8 samples = 64 steps
    assert [s for s in by_step if by_step[s]["warmup"]] == list(range(1, 11))
    assert [s for s in by_step if by_step[s]["epoch"] == 1] == list(range(65, 71))
    assert all("micro" not in r for r in by_step.values())


def test_accum_steps_resume_inside_a_window_is_bitwise(tmp_path):
    """With --accum-steps 3 the save of step 10 falls inside the window 10-12:
    its partial gradient ("accum") must be saved, or the update at 12 differs."""
    common = ["--preset", "tiny", "--steps", "20", "--accum-steps", "3", "--resume", "auto"]
    assert reftrain(4, tmp_path / "u.jsonl", *common, "--ckpt-dir", tmp_path / "u").returncode == 0
    assert reftrain(4, tmp_path / "a1.jsonl", *common, "--ckpt-dir", tmp_path / "r", "--stop-after", "11").returncode == 0
    assert reftrain(4, tmp_path / "a2.jsonl", *common, "--ckpt-dir", tmp_path / "r").returncode == 0
    golden = steps_of(tmp_path / "u.jsonl")
    assert [r["micro"] for r in golden[:6]] == [0, 1, 2, 0, 1, 2]
    assert golden[8]["skipped"] and not golden[7]["skipped"]       # step 9 ends the window holding overflow step 9
    assert all(r["grad_norm"] == "0x00000000" for r in golden if r["micro"] != 2)   # no update inside a window
    resumed = steps_of(tmp_path / "a2.jsonl")
    assert resumed[0]["step"] == 11 and "accum" in resumed[0]
    assert resumed == golden[10:]
    # and leaving the accumulated gradient out is seen at once
    assert reftrain(4, tmp_path / "b1.jsonl", *common, "--ckpt-dir", tmp_path / "s", "--stop-after", "11").returncode == 0
    assert reftrain(4, tmp_path / "b2.jsonl", *common, "--ckpt-dir", tmp_path / "s",
                    "--test-skip-restore", "accum").returncode == 0
    assert steps_of(tmp_path / "b2.jsonl")[0]["accum"] != golden[10]["accum"]
