"""ckpt-harness chaos and from-journal.

Guards against: a chaos run whose plans depend on the clock or on -j (a
failure it finds would not come back), a correct build that chaos calls
broken (a plan with no right outcome), a failure that is found but not
shrunk to a scenario that replays, and a crashed job's journal that puts
the reproduced crash somewhere else than where the job died.
"""
import json
import re
import subprocess

import pytest

from mpi import BIN, REPO

HARNESS = BIN / "ckpt-harness"
# the trainer acknowledges a save before it is durable: a crash inside the save loses an acknowledged step.
# Its build folder is test_crashstates_ack.py's, so CI builds it once for both.
MUTANT = "ack_before_save"


def harness(*args, timeout=300, bin_dir=BIN):
    return subprocess.run([str(bin_dir / "ckpt-harness"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def plans(seed, *extra):
    res = harness("chaos", "--seed", seed, *extra, "--plans")
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_chaos_on_correct_code_finds_nothing(tmp_path):
    res = harness("chaos", "--seed", 5, "--runs", 6, "-j", 2, "--json", tmp_path / "r.json", "--junit",
                  tmp_path / "r.xml", "--out", tmp_path / "found", "--cache", tmp_path / "cache")
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"seed 5: 6 runs, 0 failed, 0 errors", res.stdout), res.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert [s["name"] for s in report["scenarios"]] == [f"chaos-5-{i}" for i in range(6)]
    assert all(s["verdict"] == "PASS" for s in report["scenarios"]), report
    assert "<testsuite" in (tmp_path / "r.xml").read_text()
    # the progress says what fired and where
    assert "fault kinds fired:" in res.stdout and "phase/op pairs hit" in res.stdout
    assert not (tmp_path / "found").exists()


def test_the_same_seed_draws_the_same_plans_and_a_run_alone_draws_its_own():
    a, b = plans(9, "--runs", 12), plans(9, "--runs", 12)
    assert a == b
    assert a != plans(10, "--runs", 12)
    # run 7's plan is a function of (seed, 7) only: drawn alone it is the same
    runs = re.split(r"^# run \d+\n", a, flags=re.M)[1:]
    assert len(runs) == 12
    alone = re.split(r"^# run \d+\n", plans(9, "--run", 7), flags=re.M)[1:]
    assert alone == [runs[7]]
    # every plan names its seed and run, and validates
    assert "name: chaos-9-7" in runs[7]


def test_node_loss_is_drawn_for_a_trainer_on_several_nodes_and_correct_code_survives_it(tmp_path):
    """node_loss: every rank of one node killed and its local directory wiped, a replacement node in the
    next attempt; drawn only when the trainer runs on 2 or more nodes."""
    base = REPO / "scenarios" / "ci" / "node-loss-during-save-replaced.yaml"
    text = plans(5, "--runs", 12, "--faults", "node_loss,kill", "--scenario", base)
    assert "do: {node_loss: true, replace: true}" in text and re.search(r"when: \{attempt: 1, node: [01],", text)
    # on one node there is nothing to lose: the kind is not drawn
    assert "node_loss" not in plans(5, "--runs", 12, "--faults", "node_loss,kill")
    res = harness("chaos", "--seed", 5, "--runs", 12, "-j", 2, "--faults", "node_loss,kill", "--scenario", base,
                  "--out", tmp_path / "found", "--cache", tmp_path / "cache")
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"seed 5: 12 runs, 0 failed, 0 errors", res.stdout), res.stdout
    fired = int(re.search(r"node_loss=(\d+)", res.stdout).group(1))
    assert fired > 0, res.stdout


def test_a_drawn_plan_replays_through_run(tmp_path):
    text = re.split(r"^# run \d+\n", plans(9, "--run", 3), flags=re.M)[1]
    (tmp_path / "p.yaml").write_text(text)
    res = harness("validate", tmp_path / "p.yaml")
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("args, words", [
    (["--runs", "0"], "--runs"),
    (["--runs", "3", "--budget", "1m"], "once"),
    ([], "how many runs"),
    (["--budget", "soon"], "--budget"),
    (["--runs", "2", "--faults", "kill,meteor"], "meteor"),
    (["--runs", "2", "--world-size", "3"], "divide"),
    (["--runs", "2", "--scenario", "/nonexistent.yaml"], "cannot read"),
    (["--runs", "2", "--bogus"], "unknown option"),
    (["--runs", "2", "-j", "0"], "-j"),
])
def test_bad_command_lines_exit_2(args, words):
    res = harness("chaos", *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert words in res.stderr


@pytest.fixture(scope="module")
def mutant_bin():
    build = REPO / f"build-mutant-{MUTANT}"
    subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), "-G", "Ninja", f"-DCKPT_MUTANT={MUTANT}"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "reftrain", "ckpt-harness"], check=True,
                   capture_output=True)
    return build / "bin"


def test_chaos_finds_a_mutant_and_shrinks_it_to_a_scenario_that_replays(mutant_bin, tmp_path):
    cache = tmp_path / "cache"
    res = harness("chaos", "--seed", 1, "--runs", 6, "--first", "-j", 2, "--faults", "kill",
                  "--shrink-budget", 4, "--out", tmp_path / "found", "--cache", cache, bin_dir=mutant_bin, timeout=600)
    assert res.returncode == 1, res.stdout + res.stderr
    found = re.search(r"^found (\S+) planned=(\d+) fired=(\d+) shrunk=(\d+) fails=3/3", res.stdout, re.M)
    assert found, res.stdout + res.stderr
    path, shrunk = found.group(1), int(found.group(4))
    assert 1 <= shrunk <= 2
    text = open(path).read()
    assert "# Found by ckpt-harness chaos --seed 1, run" in text
    assert "--faults kill --preset tiny --world-size 2" in text
    assert "The failure: " in text and "acknowledged" in text
    # the shrunk file replays with the same verdict on the mutant, and passes on the correct build
    again = harness("run", path, "--cache", cache, "--json", tmp_path / "r.json", bin_dir=mutant_bin)
    assert again.returncode == 1, again.stdout + again.stderr
    assert json.loads((tmp_path / "r.json").read_text())["scenarios"][0]["verdict"] == "FAIL"
    good = harness("run", path, "--cache", tmp_path / "cache-good")
    assert good.returncode == 0, good.stdout + good.stderr


CRASHES = [
    # (fault of the crashed job, rank, step, phase, the op the kill lands on, --rank or None)
    ("{rank: 0, step: 10, phase: save.manifest_sync, op: fsync, nth: 1}", 0, 10, "save.manifest_sync", "fsync", None),
    ("{rank: 1, step: 10, phase: save.shard_write, op: write, nth: 2}", 1, 10, "save.shard_write", "write", 1),
]


@pytest.mark.parametrize("when, rank, step, phase, op, force", CRASHES)
def test_from_journal_puts_the_crash_where_the_job_died(tmp_path, when, rank, step, phase, op, force):
    crashed = tmp_path / "crashed.yaml"
    crashed.write_text(f"""name: crashed
trainer: {{preset: tiny, world_size: 2, steps: 20, checkpoint: {{every: 5, keep: 2}}}}
max_attempts: 1
faults:
  - when: {when}
    do: kill
expect: {{outcome: resume_bitwise}}
""")
    cache = tmp_path / "cache"
    job = harness("run", crashed, "--work", tmp_path / "job", "--cache", cache)
    assert "did not finish" in job.stdout, job.stdout + job.stderr
    extra = ["--rank", force] if force is not None else []
    fj = harness("from-journal", tmp_path / "job" / "ckpt", "-o", tmp_path / "repro.yaml", *extra)
    assert fj.returncode == 0, fj.stderr
    text = (tmp_path / "repro.yaml").read_text()
    assert f"rank: {rank}, step: {step}, op: any" in text, text
    rep = harness("run", tmp_path / "repro.yaml", "--work", tmp_path / "replay", "--cache", cache)
    # it crashed and resumed bit for bit (libckpt is correct): the crash point is the same call
    assert rep.returncode == 0, rep.stdout + rep.stderr
    fired = [json.loads(l) for l in (tmp_path / "replay" / f"faults.rank-{rank}.jsonl").read_text().splitlines()]
    assert len(fired) == 1
    assert (fired[0]["rank"], fired[0]["step"], fired[0]["phase"], fired[0]["op"]) == (rank, step, phase, op)
    original = json.loads((tmp_path / "job" / f"faults.rank-{rank}.jsonl").read_text().splitlines()[0])
    assert fired[0]["path"].rsplit("/", 1)[1] == original["path"].rsplit("/", 1)[1]
    # the same call, not only the same kind of call: attempt 1 of the replay journaled as many calls
    again = harness("from-journal", tmp_path / "replay" / "ckpt", "--attempt", 1, "--rank", rank)
    when = [l for l in again.stdout.splitlines() if "when:" in l]
    assert when == [l for l in text.splitlines() if "when:" in l], again.stdout + again.stderr


def test_from_journal_refuses_what_is_not_a_journal(tmp_path):
    (tmp_path / "root").mkdir()
    res = harness("from-journal", tmp_path / "root")
    assert res.returncode == 2 and "journal" in res.stderr
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root" / "journal").symlink_to(tmp_path / "elsewhere")
    res = harness("from-journal", tmp_path / "root")
    assert res.returncode == 2 and "not a link" in res.stderr
    (tmp_path / "root" / "journal").unlink()
    (tmp_path / "root" / "journal").mkdir()
    (tmp_path / "root" / "journal" / "rank-00000.jsonl").write_text('garbage\n{"event":"open"\n' + "x" * 20000 + "\n")
    res = harness("from-journal", tmp_path / "root")
    assert res.returncode == 2 and "open" in res.stderr


def test_under_the_shim_plans_name_calls_not_libckpt_phases():
    text = plans(4, "--runs", 20, "--inject", "shim")
    phases = set(re.findall(r"phase: ([a-z._]+)", text))
    assert phases <= {"train.step", "train.reduce"}, phases
    assert re.search(r"op: (open|write|fsync|rename|close|mkdir|unlink|read)", text)


def test_chaos_runs_a_program_under_the_trainer_protocol(tmp_path):
    base = REPO / "examples" / "numpy_trainer" / "scenarios" / "numpy-kill-mid-save.yaml"
    res = harness("chaos", "--seed", 2, "--runs", 3, "--scenario", base, "--json", tmp_path / "r.json",
                  "--out", tmp_path / "found", "--cache", tmp_path / "cache")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 runs, 0 failed, 0 errors" in res.stdout
    # its command, with {scenario_dir} spelled out: a plan written elsewhere still finds the program
    text = plans(2, "--run", 0, "--scenario", base)
    assert str(base.parent.resolve()) + "/../train.py" in text


def test_from_journal_reproduces_every_attempt_of_a_job_that_crashed_twice(tmp_path):
    crashed = tmp_path / "crashed.yaml"
    crashed.write_text("""name: crashed-twice
trainer: {preset: tiny, world_size: 2, steps: 20, checkpoint: {every: 5, keep: 2}}
max_attempts: 2
faults:
  - when: {rank: 0, step: 10, phase: save.manifest_sync, op: fsync}
    do: kill
  - when: {attempt: 2, rank: 0, step: 15, phase: save.commit, op: rename}
    do: kill
expect: {outcome: resume_bitwise}
""")
    cache = tmp_path / "cache"
    job = harness("run", crashed, "--work", tmp_path / "job", "--cache", cache)
    assert "after 2 attempts it stopped" in job.stdout, job.stdout + job.stderr
    fj = harness("from-journal", tmp_path / "job" / "ckpt", "-o", tmp_path / "repro.yaml")
    assert fj.returncode == 0, fj.stderr
    rep = harness("run", tmp_path / "repro.yaml", "--work", tmp_path / "replay", "--cache", cache)
    assert rep.returncode == 0, rep.stdout + rep.stderr

    def points(d):
        lines = (d / "faults.rank-0.jsonl").read_text().splitlines()
        return [(j["attempt"], j["step"], j["phase"], j["op"], j["path"].rsplit("/", 1)[1])
                for j in map(json.loads, lines)]
    assert points(tmp_path / "replay") == points(tmp_path / "job")
