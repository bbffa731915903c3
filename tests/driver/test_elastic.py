"""Bit-exact elastic resume (issue 14): restart: {ranks: [...]} in scenarios, its validation,
and a restart on another world size that libckpt reshards (scenarios/ci/elastic-*.yaml run in
the CI suite; here what the suite does not look at: the record of the reshard)."""
import json
import os
import subprocess

import pytest

from mpi import BIN, REPO

HARNESS = BIN / "ckpt-harness"
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def harness(*args, timeout=300):
    return subprocess.run([str(HARNESS), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)


T = "trainer: {preset: tiny, world_size: 4, steps: 40, checkpoint: {every: 10, keep: 3}}\n"
KILL = "faults:\n  - when: {rank: 0, step: 25, phase: train.step}\n    do: kill\n"

BAD = {
    "not-a-list": ("name: a\n" + T + "restart: {ranks: 2}\n" + KILL + "expect: {}\n", ":3:18:",
                   "restart.ranks is a list of 1 to 3 world sizes"),
    "too-many": ("name: a\nmax_attempts: 2\n" + T + "restart: {ranks: [2, 8]}\n" + KILL + "expect: {}\n", ":4:18:",
                 "list of 1 to 1 world sizes"),
    "zero-ranks": ("name: a\n" + T + "restart: {ranks: [0]}\n" + KILL + "expect: {}\n", ":3:19:",
                   "restart.ranks: '0' is not valid; valid: a world size from 1 to 64"),
    "unknown-key": ("name: a\n" + T + "restart: {rank: [2]}\n" + KILL + "expect: {}\n", ":3:11:", "ranks"),
    "no-crash": ("name: a\n" + T + "restart: {ranks: [2]}\nexpect: {}\n", ":3:10:",
                 "nothing in attempt 1 can crash the job"),
    "rank-not-in-attempt": ("name: a\n" + T + "restart: {ranks: [2]}\n" + KILL +
                            "  - when: {rank: 3, step: 30, phase: restore.read, attempt: 2}\n    do: kill\nexpect: {}\n",
                            ":7:18:", "rank 3 is not in attempt 2, which runs 2 ranks"),
    "with-nodes": ("name: a\ntrainer: {world_size: 4, nodes: 2, steps: 40}\nrestart: {ranks: [2]}\n" + KILL +
                   "expect: {}\n", ":3:10:", "on many nodes a node_loss without a replacement"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_restart_ranks__validation_errors_name_file_line_column(tmp_path, name):
    text, where, what = BAD[name]
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    res = harness("validate", p, timeout=60)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert f"{p}{where}" in res.stderr, res.stderr
    assert what in res.stderr, res.stderr


def test_restart_ranks__a_rank_only_a_later_attempt_has_is_valid(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text("name: a\n" + T + "restart: {ranks: [8]}\n" + KILL +
                 "  - when: {rank: 7, step: 30, phase: restore.read, attempt: 2}\n    do: kill\nexpect: {}\n")
    res = harness("validate", p, timeout=60)
    assert res.returncode == 0, res.stderr


def test_elastic__shrink_runs_on_fewer_ranks_and_libckpt_journals_the_reshard(tmp_path):
    work = tmp_path / "work"
    res = harness("run", REPO / "scenarios" / "ci" / "elastic-shrink-4-to-2.yaml", "--work", work, "--keep",
                  "--cache", tmp_path / "cache")
    assert res.returncode == 0, res.stdout + res.stderr
    first = json.loads((work / "attempt-1.jsonl").read_text().splitlines()[0])
    start = json.loads((work / "attempt-2.jsonl").read_text().splitlines()[0])
    assert first["world_size"] == 4 and start["world_size"] == 2 and start["restored_from"] == 30, start
    for rank in (0, 1):
        journal = (work / "ckpt" / "journal" / f"rank-{rank:05d}.jsonl").read_text()
        assert '"event":"reshard","checkpoint":"step-00000030","from":4,"to":2' in journal
