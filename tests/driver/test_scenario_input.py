"""Bad scenario files (issue 9): every one exits 2 through `validate` and
`run` with file:line:column, what is wrong and what is valid; never a crash,
a hang, or a silently ignored key. Also the per-attempt expectations and the
open.cleanup phase, which must be accepted.

Nothing here launches a job: `run` refuses a bad file before it starts one.
"""
import os
import subprocess

import pytest

from mpi import BIN

HARNESS = BIN / "ckpt-harness"
T = "trainer: {preset: tiny, world_size: 2, steps: 40, checkpoint: {every: 10, keep: 3}}\n"
KILL1 = "  - when: {rank: 0, step: 25, phase: train.step}\n    do: kill\n"


def harness(*args, timeout=60):
    return subprocess.run([str(HARNESS), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def write(tmp_path, text, name="bad"):
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def refused(p, where, *what):
    for cmd in ("validate", "run"):
        res = harness(cmd, p)
        assert res.returncode == 2, (cmd, res.returncode, res.stdout, res.stderr)
        assert f"{p}{where}" in res.stderr, (cmd, res.stderr)
        for w in what:
            assert w in res.stderr, (cmd, w, res.stderr)


BAD = {
    # duplicate keys, at any level: the second is the error, naming the first
    "duplicate-top-level-faults": (
        "name: a\n" + T + "faults:\n" + KILL1 + "faults: []\nexpect: {outcome: resume_bitwise}\n",
        ":6:1:", "duplicate key 'faults' (first at line 3, column 1)"),
    "duplicate-nested": (
        "name: a\ntrainer: {steps: 40, steps: 50}\nexpect: {}\n",
        ":2:22:", "duplicate key 'steps' (first at line 2, column 11)"),
    "duplicate-in-when": (
        "name: a\n" + T + "faults:\n  - when: {rank: 0, step: 25, phase: train.step, rank: 1}\n    do: kill\n"
        "expect: {}\n", ":4:50:", "duplicate key 'rank'"),
    # an action flag that is not true
    "kill-false": (
        "name: a\n" + T + "faults:\n  - when: {rank: 0, step: 25, phase: train.step}\n    do: {kill: false}\n"
        "expect: {}\n", ":5:16:", "kill: 'false' is not valid; valid: kill: true"),
    # keys whose value would be ignored
    "error-with-resume-bitwise": (
        "name: a\n" + T + "faults:\n" + KILL1 + "expect: {outcome: resume_bitwise, error: boom}\n",
        ":6:35:", "'error' goes with outcome: clean_failure only"),
    "error-with-default-outcome": (
        "name: a\n" + T + "faults:\n" + KILL1 + "expect: {error: boom}\n",
        ":6:10:", "'error' goes with outcome: clean_failure only"),
    "short-without-op-write": (
        "name: a\n" + T + "faults:\n  - when: {rank: 0, step: 20, phase: save.shard_write}\n    do: {short: 64}\n"
        "expect: {}\n", ":5:9:", "short acts on a write; valid: when: {..., op: write}"),
    "torn-on-fsync": (
        "name: a\n" + T + "faults:\n  - when: {rank: 0, step: 20, phase: save.shard_sync, op: fsync}\n"
        "    do: {torn: 10, then: kill}\nexpect: {}\n", ":4:59:", "torn acts on a write"),
    "path-on-a-phase-point": (
        "name: a\n" + T + "faults:\n  - when: {step: 20, phase: save.commit, op: phase, path: LATEST}\n"
        "    do: kill\nexpect: {}\n", ":4:53:", "a phase point has no file"),
    "path-with-newline": (
        "name: a\n" + T + "faults:\n  - when: {step: 20, phase: save.commit, op: rename, path: \"a\\nb\"}\n"
        "    do: kill\nexpect: {}\n", ":4:60:", "path is a glob on a file name"),
    # faults that can never fire
    "attempt-beyond-max-attempts": (
        "name: a\n" + T + "max_attempts: 2\nfaults:\n" + KILL1 +
        "  - when: {rank: 0, phase: restore.read, op: read, attempt: 3}\n    do: kill\nexpect: {}\n",
        ":7:61:", "attempt: '3' is not valid; expected a whole number from 1 to 2"),
    "attempt-beyond-max-attempts-stated-after": (
        "name: a\n" + T + "faults:\n" + KILL1 +
        "  - when: {rank: 0, phase: restore.read, op: read, attempt: 3}\n    do: kill\nexpect: {}\nmax_attempts: 2\n",
        ":6:61:", "from 1 to 2"),
    "attempt-that-never-runs": (
        "name: a\n" + T + "faults:\n  - when: {rank: 0, step: 20, phase: save.shard_write, op: write}\n"
        "    do: {errno: EIO}\n  - when: {rank: 0, phase: restore.read, attempt: 2}\n    do: kill\nexpect: {}\n",
        ":6:51:", "attempt 2, which never runs: nothing in attempt 1 can crash the job"),
    "train-phase-with-io-op": (
        "name: a\n" + T + "faults:\n  - when: {rank: 0, step: 25, phase: train.step, op: write}\n    do: kill\n"
        "expect: {}\n", ":4:54:", "makes no I/O call", "valid: op: phase, or no op"),
    "train-phase-with-errno": (
        "name: a\n" + T + "faults:\n  - when: {rank: 0, step: 25, phase: train.reduce}\n    do: {errno: EIO}\n"
        "expect: {}\n", ":5:9:", "take kill, power_loss, node_loss or delay_ms only"),
    "restore-read-in-attempt-1": (
        "name: a\n" + T + "faults:\n  - when: {rank: 0, phase: restore.read, op: read}\n    do: kill\nexpect: {}\n",
        ":4:28:", "restore.read never happens in attempt 1", "valid: attempt: 2 or later"),
    "restore-verify-attempt-1-stated": (
        "name: a\n" + T + "faults:\n  - when: {rank: 0, phase: restore.verify, attempt: 1}\n    do: kill\n"
        "expect: {}\n", ":4:53:", "restore.verify never happens in attempt 1"),
    "restore-scan-on-rank-1": (
        "name: a\n" + T + "faults:\n" + KILL1 + "  - when: {rank: 1, phase: restore.scan, attempt: 2}\n    do: kill\n"
        "expect: {}\n", ":6:18:", "restore.scan runs on rank 0 only"),
    "restore-read-step-without-save": (
        "name: a\n" + T + "faults:\n" + KILL1 + "  - when: {step: 15, phase: restore.read, attempt: 2}\n    do: kill\n"
        "expect: {}\n", ":6:18:", "no generation of step 15 to restore"),
    "step-beyond-steps": (
        "name: a\n" + T + "faults:\n  - when: {rank: 0, step: 50, phase: train.step}\n    do: kill\nexpect: {}\n",
        ":4:27:", "from 0 to 40"),
    "save-step-not-a-multiple-of-every": (
        "name: a\n" + T + "faults:\n  - when: {rank: 0, step: 25, phase: save.commit}\n    do: kill\nexpect: {}\n",
        ":4:27:", "there is no save at step 25", "a multiple of 10"),
    "save-step-0": (
        "name: a\n" + T + "faults:\n  - when: {rank: 0, step: 0, phase: save.commit}\n    do: kill\nexpect: {}\n",
        ":4:27:", "never happens at step 0"),
    "rank-beyond-world-size": (
        "name: a\n" + T + "faults:\n  - when: {rank: 2, step: 25, phase: train.step}\n    do: kill\nexpect: {}\n",
        ":4:18:", "from 0 to 1"),
    "after-attempt-beyond-max-attempts": (
        "name: a\n" + T + "max_attempts: 2\nfaults:\n" + KILL1 +
        "  - when: {after_attempt: 2}\n    do: {delete: newest/manifest.json}\nexpect: {}\n",
        ":7:27:", "from 1 to 1"),
    "damage-after-an-attempt-that-cannot-crash": (
        "name: a\n" + T + "faults:\n  - when: {after_attempt: 1}\n    do: {delete: newest/manifest.json}\n"
        "expect: {}\n", ":4:27:", "damage after attempt 1 never strikes"),
    "open-cleanup-at-a-step": (
        "name: a\n" + T + "faults:\n  - when: {step: 10, phase: open.cleanup}\n    do: kill\nexpect: {}\n",
        ":4:18:", "open.cleanup runs before any step"),
    "test-skip-restore-without-a-restart": (
        "name: a\ntrainer: {steps: 40, test_skip_restore: opt}\nexpect: {}\n",
        ":2:41:", "test_skip_restore acts on a restore, but there is no restart"),
    # expectations that cannot be checked or are impossible
    "restored-from-without-a-crash": (
        "name: a\n" + T + "expect: {restored_from: 20}\n", ":3:10:", "restored_from can never be checked"),
    "restored-from-not-a-save": (
        "name: a\n" + T + "faults:\n" + KILL1 + "expect: {restored_from: 25}\n",
        ":6:25:", "valid: a step with a save: a multiple of 10 from 10 to 40"),
    "restored-from-with-one-attempt": (
        "name: a\n" + T + "max_attempts: 1\nfaults:\n" + KILL1 + "expect: {restored_from: 20}\n",
        ":7:10:", "needs a restart, but max_attempts is 1"),
    "per-attempt-key-1": (
        "name: a\n" + T + "faults:\n" + KILL1 + "expect: {restored_from: {1: 20}}\n",
        ":6:26:", "attempt '1' is not valid; valid: a restart, 2 to 4"),
    "per-attempt-key-beyond-max-attempts": (
        "name: a\n" + T + "faults:\n" + KILL1 + "expect: {max_lost_steps: {3: 5}}\nmax_attempts: 2\n",
        ":6:27:", "valid: a restart, 2 to 2"),
    "per-attempt-key-not-a-number": (
        "name: a\n" + T + "faults:\n" + KILL1 + "expect: {restored_from: {second: 20}}\n",
        ":6:26:", "attempt 'second' is not valid"),
    "per-attempt-value-out-of-range": (
        "name: a\n" + T + "faults:\n" + KILL1 + "expect: {max_lost_steps: {2: 41}}\n",
        ":6:30:", "'41' is not valid for attempt 2; valid: 0 to 40"),
    "per-attempt-none-for-max-lost": (
        "name: a\n" + T + "faults:\n" + KILL1 + "expect: {max_lost_steps: {2: none}}\n",
        ":6:30:", "'none' is not valid for attempt 2"),
    "per-attempt-duplicate": (
        "name: a\n" + T + "faults:\n" + KILL1 + "expect: {restored_from: {2: 20, 2: none}}\n",
        ":6:33:", "duplicate key '2'"),
    "per-attempt-same-number-twice": (
        "name: a\n" + T + "faults:\n" + KILL1 + "expect: {restored_from: {2: 20, 02: none}}\n",
        ":6:33:", "attempt 2 is stated twice"),
    # tiered storage: the drain phases need checkpoint.tiered, which needs the built-in synchronous libckpt
    "drain-phase-without-tiered": (
        "name: a\n" + T + "faults:\n  - when: {rank: 0, step: 20, phase: drain.write}\n    do: kill\nexpect: {}\n",
        ":4:38:", "drain.write is a phase of tiered storage", "tiered: true"),
    "tiered-with-async": (
        "name: a\ntrainer: {steps: 40, checkpoint: {every: 10, async: true, tiered: true}}\nexpect: {}\n",
        ":2:67:", "checkpoint.tiered needs the built-in libckpt backend without async: true"),
    "tiered-not-a-boolean": (
        "name: a\ntrainer: {steps: 40, checkpoint: {every: 10, tiered: yes}}\nexpect: {}\n",
        ":2:54:", "checkpoint.tiered is true or false"),
    "per-attempt-attempt-that-never-runs": (
        "name: a\n" + T + "faults:\n" + KILL1 + "expect: {restored_from: {3: 20}}\n",
        ":6:26:", "attempt 3 never runs: nothing in attempt 2 can crash the job"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_scenario_is_refused_with_its_position(tmp_path, case):
    text, where, *what = BAD[case]
    refused(write(tmp_path, text), where, *what)


GOOD = {
    "kill-true": "name: a\n" + T + "faults:\n  - when: {rank: 0, step: 25, phase: train.step}\n    do: {kill: true}\n"
                 "expect: {}\n",
    "open-cleanup": "name: a\n" + T + "faults:\n  - when: {rank: 0, phase: open.cleanup, op: unlink}\n    do: kill\n"
                    "expect: {}\n",
    "drain-phases-tiered": "name: a\ntrainer: {steps: 40, checkpoint: {every: 10, tiered: true}}\nfaults:\n"
                           "  - when: {rank: 1, step: 20, phase: drain.sync, op: fsync}\n    do: power_loss\n"
                           "  - when: {rank: 0, step: 30, phase: drain.commit, op: rename}\n    do: kill\nexpect: {}\n",
    "per-attempt": "name: a\n" + T + "faults:\n" + KILL1 +
                   "  - when: {rank: 1, phase: restore.read, op: read, attempt: 2}\n    do: kill\n"
                   "  - when: {rank: 0, step: 35, phase: train.step, attempt: 3}\n    do: kill\n"
                   "expect: {restored_from: {2: 20, 3: 20, 4: none}, max_lost_steps: {3: 15}}\n",
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_good_scenario_is_accepted(tmp_path, case):
    res = harness("validate", write(tmp_path, GOOD[case]))
    assert res.returncode == 0, res.stderr
    assert "1 scenarios valid" in res.stdout or "valid" in res.stdout


def test_a_file_over_1_mib_is_refused_before_it_is_parsed(tmp_path):
    p = tmp_path / "big.yaml"
    with open(p, "w") as f:
        f.write("name: a\nexpect: {}\ndescription: [")
        f.write("1, " * (10 * 1024 * 1024 // 3))
        f.write("1]\n")
    for cmd in ("validate", "run"):
        res = harness(cmd, p)
        assert res.returncode == 2, (cmd, res.stderr)
        assert f"{p}:1:1:" in res.stderr and "at most 1048576 bytes" in res.stderr, res.stderr


def test_too_many_values_are_refused(tmp_path):
    p = write(tmp_path, "name: a\nexpect: {}\ndescription: [" + "1, " * 20000 + "1]\n")
    refused(p, ":3:", "more than 10000 values")


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    p = tmp_path / "fifo.yaml"
    os.mkfifo(p)
    res = harness("validate", p, timeout=20)
    assert res.returncode == 2, res.stderr
    assert f"{p}:1:1: not a regular file" in res.stderr


def long_dir(tmp_path, total):
    """A directory whose path leaves 100 to 250 characters for a file name, for a total of `total`."""
    d = str(tmp_path)
    while len(d) + 201 < total - 100:
        d = os.path.join(d, "d" * 200)
    os.makedirs(d)
    return d


def test_a_4000_character_path_with_a_yaml_error_is_reported_not_a_crash(tmp_path):
    d = long_dir(tmp_path, 4000)
    name = "s" * (4000 - len(d) - 1 - len(".yaml")) + ".yaml"
    p = os.path.join(d, name)
    assert len(p) == 4000
    with open(p, "w") as f:
        f.write("name: a\ntrainer: [1, 2\n")
    for cmd in ("validate", "run"):
        res = harness(cmd, p)
        assert res.returncode == 2, (cmd, res.returncode, res.stderr[-300:])
        # the message keeps what is wrong; the path may be shortened from the left
        assert "not valid YAML" in res.stderr, res.stderr[-300:]
        assert name + ":3:1:" in res.stderr or name + ":2:" in res.stderr, res.stderr[-300:]


def test_a_path_longer_than_4095_is_refused(tmp_path):
    res = harness("validate", "/tmp/" + "x/" * 2100 + "s.yaml")
    assert res.returncode == 2 and "longer than 4095 characters" in res.stderr, res.stderr[-300:]


def test_a_long_key_keeps_the_valid_list(tmp_path):
    # libyaml takes a plain key up to 1024 characters; a longer one is explicit ("? KEY")
    p = write(tmp_path, "name: a\n? " + "k" * 5000 + "\n: 1\nexpect: {}\n")
    refused(p, ":2:3:", "unknown key 'kkkk", "...' in the scenario; valid: name, description, trainer")


def test_a_long_value_keeps_the_valid_list(tmp_path):
    p = write(tmp_path, "name: a\ntrainer: {preset: " + "p" * 5000 + "}\nexpect: {}\n")
    refused(p, ":2:19:", "unknown preset 'pppp", "valid: tiny, small, large")
