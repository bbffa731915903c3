"""The oracle on hand-made trajectories: every expectation checked against the
attempt it is about, and an expectation that could not be checked is an ERROR.

Guards against: checks that silently do not run. A restart that died during
restore (no start record) used to hide a wrong `restored_from` and
`max_lost_steps`; damage at rest used to switch the durability rule off for
the whole run.
"""
import json
import subprocess

import pytest

from mpi import BIN, REPO


def rec_step(s):
    return {"step": s, "loss": "0x%08x" % (0x3f800000 + s), "master": "%016x" % (0xaa00 + s)}


def start(attempt, restored=None):
    return {"event": "start", "attempt": attempt, "world_size": 1, "restored_from": restored,
            "checkpoint": None if restored is None else "step-%08d" % restored}


def write(path, records):
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    return path


def attempt(path, n, restored, first, last, commits=(), end="done", start_record=True):
    recs = [start(n, restored)] if start_record else []
    for s in range(first, last + 1):
        recs.append(rec_step(s))
        if s in commits:
            recs.append({"event": "committed", "step": s, "checkpoint": "step-%08d" % s})
    if end:
        recs.append({"event": "end", "status": end, "steps": last} if end != "failed"
                    else {"event": "end", "status": "failed", "error": "no valid checkpoint"})
    return write(path, recs)


@pytest.fixture
def golden(tmp_path):
    return attempt(tmp_path / "golden.jsonl", 0, None, 1, 40, commits=(10, 20, 30, 40))


def oracle(golden, *args):
    res = subprocess.run([str(BIN / "ckpt-harness"), "oracle", str(golden)] + [str(a) for a in args],
                         capture_output=True, text=True, timeout=60)
    return res.returncode, res.stdout + res.stderr


@pytest.fixture
def died_in_restore(tmp_path):
    """Attempt 1 crashes at 35 (30 acknowledged), attempt 2 dies in restore, attempt 3 restores 30."""
    a1 = attempt(tmp_path / "a1.jsonl", 1, None, 1, 35, commits=(10, 20, 30), end=None)
    a2 = write(tmp_path / "a2.jsonl", [])
    a3 = attempt(tmp_path / "a3.jsonl", 3, 30, 31, 40, commits=(40,))
    return a1, a2, a3


def test_restored_from_is_checked_on_the_first_restart_that_restored(golden, died_in_restore):
    rc, out = oracle(golden, *died_in_restore, "--restored-from", "30")
    assert rc == 0, out
    rc, out = oracle(golden, *died_in_restore, "--restored-from", "20")
    assert rc == 1 and "FAIL" in out, out
    assert "attempt 3, the first restart to get through its restore, restored step-00000030" in out


def test_lost_steps_are_counted_from_the_last_attempt_that_wrote_steps(golden, died_in_restore):
    assert oracle(golden, *died_in_restore, "--max-lost-steps", "5")[0] == 0
    rc, out = oracle(golden, *died_in_restore, "--max-lost-steps", "4")
    assert rc == 1 and "attempt 3 lost 5 steps (step 35 was written, step 30 restored)" in out, out


def test_per_attempt_expectations(golden, died_in_restore):
    assert oracle(golden, *died_in_restore, "--restored-from", "3:30", "--max-lost-steps", "3:5")[0] == 0
    rc, out = oracle(golden, *died_in_restore, "--restored-from", "3:20")
    assert rc == 1 and "attempt 3 restored step-00000030, but the scenario expects step 20" in out, out
    rc, out = oracle(golden, *died_in_restore, "--restored-from", "3:none")
    assert rc == 1 and "expects it to start fresh" in out, out


def test_an_expectation_about_an_attempt_without_start_record_is_an_error(golden, died_in_restore):
    rc, out = oracle(golden, *died_in_restore, "--restored-from", "2:30")
    assert rc == 1 and out.startswith("ERROR") and "attempt 2 never wrote its start record" in out, out
    rc, out = oracle(golden, *died_in_restore, "--max-lost-steps", "2:10")
    assert rc == 1 and out.startswith("ERROR"), out


def test_an_expectation_about_an_attempt_that_never_ran_is_an_error(golden, died_in_restore):
    rc, out = oracle(golden, *died_in_restore, "--restored-from", "4:30")
    assert rc == 1 and out.startswith("ERROR") and "ended after 3 attempts" in out, out


def test_a_restart_restored_at_the_last_step_has_finished(golden, tmp_path):
    """A crash after the last step's checkpoint (in retention, say): the restart
    restores step 40 of 40 and has nothing left to do. That is a finished run,
    not one "stopped at step 0" (found by crashstates --scenario)."""
    a1 = attempt(tmp_path / "a1.jsonl", 1, None, 1, 40, commits=(10, 20, 30, 40), end=None)
    a2 = attempt(tmp_path / "a2.jsonl", 2, 40, 41, 40)
    rc, out = oracle(golden, a1, a2)
    assert rc == 0, out
    # restored at the last step but ended without saying done: still not finished
    a3 = attempt(tmp_path / "a3.jsonl", 2, 40, 41, 40, end=None)
    rc, out = oracle(golden, a1, a3)
    assert rc == 1 and "did not finish" in out, out


def test_a_programs_own_components_are_compared_and_named(tmp_path):
    """A program's restored digests are compared whatever it calls its
    components (not only reftrain's names), and named by those names."""
    def steps(first, last):
        return [dict(rec_step(s), ema="%016x" % (0xe0 + s)) for s in range(first, last + 1)]
    gold = write(tmp_path / "g.jsonl", [start(0)] + steps(1, 40) + [{"event": "end", "status": "done", "steps": 40}])
    a1 = write(tmp_path / "a1.jsonl", [start(1)] + steps(1, 25) + [{"event": "committed", "step": 20}])
    for ema, want in (("%016x" % (0xe0 + 20), None), ("%016x" % 1, "component ema restored at step 20")):
        r = dict(start(2, 20), restored={"ema": ema, "master": "%016x" % (0xaa00 + 20)})
        a2 = write(tmp_path / "a2.jsonl", [r] + steps(21, 40) + [{"event": "end", "status": "done", "steps": 40}])
        rc, out = oracle(gold, a1, a2)
        if want is None:
            assert rc == 0, out
        else:
            assert rc == 1 and want in out and "differs from the uninterrupted run" in out, out
            assert "bf16" not in out and "master" not in out, out


def test_restored_from_without_any_restart_is_an_error(golden, tmp_path):
    only = attempt(tmp_path / "a1.jsonl", 1, None, 1, 40, commits=(10, 20, 30, 40))
    rc, out = oracle(golden, only, "--restored-from", "30")
    assert rc == 1 and out.startswith("ERROR") and "no restart got through its restore" in out, out
    rc, out = oracle(golden, only, "--max-lost-steps", "3")
    assert rc == 1 and out.startswith("ERROR"), out
    assert oracle(golden, only)[0] == 0


def lost_newest(tmp_path):
    """Attempt 1 acknowledged 10, 20 and 30 and crashed at 35; attempt 2 restored 20."""
    a1 = attempt(tmp_path / "a1.jsonl", 1, None, 1, 35, commits=(10, 20, 30), end=None)
    a2 = attempt(tmp_path / "a2.jsonl", 2, 20, 21, 40, commits=(30, 40))
    return a1, a2


def test_an_acknowledged_generation_must_survive(golden, tmp_path):
    rc, out = oracle(golden, *lost_newest(tmp_path))
    assert rc == 1 and "step 30 had been committed and acknowledged" in out, out


def test_damage_exempts_only_the_damaged_generation(golden, tmp_path):
    runs = lost_newest(tmp_path)
    # damage to step 30 after its acknowledgement: falling back to 20 is right
    assert oracle(golden, *runs, "--damaged", "30@2")[0] == 0
    # damage to another generation does not excuse losing step 30
    rc, out = oracle(golden, *runs, "--damaged", "10@2")
    assert rc == 1 and "step 30 had been committed and acknowledged" in out, out
    # damage that only the next attempt would see excuses nothing now
    rc, out = oracle(golden, *runs, "--damaged", "30@3")
    assert rc == 1, out


def test_retention_may_remove_generations_beyond_keep(golden, tmp_path):
    """keep 2: with 30 damaged, 20 is the newest that must survive; with keep 1, none must."""
    a1 = attempt(tmp_path / "a1.jsonl", 1, None, 1, 35, commits=(10, 20, 30), end=None)
    a2 = attempt(tmp_path / "a2.jsonl", 2, 10, 11, 40, commits=(20, 30, 40))
    rc, out = oracle(golden, a1, a2, "--damaged", "30@2", "--keep", "2")
    assert rc == 1 and "step 20 had been committed and acknowledged before the crash and was never damaged" in out
    assert oracle(golden, a1, a2, "--damaged", "30@2", "--keep", "1")[0] == 0


def test_a_refused_restore_that_loses_an_acknowledged_generation_fails(golden, tmp_path):
    a1 = attempt(tmp_path / "a1.jsonl", 1, None, 1, 35, commits=(10, 20, 30), end=None)
    a2 = attempt(tmp_path / "a2.jsonl", 2, None, 0, -1, end="failed", start_record=False)
    rc, out = oracle(golden, a1, a2, "--clean-failure", "no valid checkpoint")
    assert rc == 1 and "attempt 2 refused to resume" in out and "step 30" in out, out
    # every generation damaged after its acknowledgement: a clean failure is right
    args = [a for d in (10, 20, 30) for a in ("--damaged", "%d@2" % d)]
    assert oracle(golden, a1, a2, "--clean-failure", "no valid checkpoint", *args)[0] == 0


@pytest.mark.parametrize("args,what", [
    (["--restored-from", "1:30"], "must be 2 to 16"),
    (["--restored-from", "x"], "expected STEP or ATTEMPT:STEP"),
    (["--max-lost-steps", "3:none"], "expected STEP"),
    (["--damaged", "30"], "STEP@ATTEMPT"),
    (["--keep", "0"], "--keep"),
    (["--frobnicate", "1"], "unknown option"),
])
def test_oracle_options_are_checked(golden, died_in_restore, args, what):
    rc, out = oracle(golden, *died_in_restore, *args)
    assert rc == 2 and what in out, out


# ---- the same checks on real runs ------------------------------------------

def ci_scenario(name):
    return REPO / "scenarios" / "ci" / (name + ".yaml")


@pytest.mark.parametrize("name,good,lost", [("second-crash-during-restore", 30, 2),
                                            ("kill-during-restore-verify-rank3", 50, None)])
def test_a_restart_that_died_in_restore_does_not_hide_a_wrong_expectation(tmp_path, name, good, lost):
    """Attempt 2 dies in restore, so the expectations are about attempt 3.

    (A kill at the start of step K may cost K-R-1 or K-R steps: rank 0 may or
    may not have written step K-1's record before the job went down.)"""
    text = ci_scenario(name).read_text()
    assert "restored_from: %d" % good in text
    cases = [("restored_from: %d" % (good - 10), "but the scenario expects step %d" % (good - 10))]
    if lost is not None:
        cases.append(("restored_from: %d, max_lost_steps: %d" % (good, lost),
                      "more than the %d the scenario allows" % lost))
    for wrong, words in cases:
        p = tmp_path / (name + ".yaml")
        p.write_text(text.replace("restored_from: %d" % good, wrong))
        res = subprocess.run([str(BIN / "ckpt-harness"), "run", str(p), "--json", str(tmp_path / "r.json")],
                             capture_output=True, text=True, timeout=600)
        entry = json.loads((tmp_path / "r.json").read_text())["scenarios"][0]
        assert res.returncode == 1 and entry["verdict"] == "FAIL", entry
        assert "attempt 3" in entry["sentence"] and words in entry["sentence"], entry["sentence"]


def test_a_restore_whose_reads_were_failed_may_fall_back(golden, tmp_path):
    """The scenario made attempt 2's reads fail: refusing or falling back is fair there."""
    runs = lost_newest(tmp_path)
    assert oracle(golden, *runs, "--restore-faulted", "2")[0] == 0
    assert oracle(golden, *runs, "--restore-faulted", "3")[0] == 1
