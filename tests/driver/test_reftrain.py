"""End-to-end properties of reftrain on real Open MPI jobs.

Guards against: a trainer whose bits depend on the run, the world size or
Open MPI's algorithm choice; records missing fields the oracle reads; a
loss scaler that never skips (then "scaler not saved" bugs stay invisible).
"""
import json

import pytest

from mpi import reftrain

STEP_FIELDS = ["step", "loss", "lr", "grad_norm", "loss_scale", "skipped", "epoch", "warmup"]
COMPONENTS = ["params", "master", "opt", "rng", "data", "sched", "scaler", "user"]
ARGS = ["--preset", "tiny", "--steps", "120", "--seed", "7"]


def run(tmp_path_factory, np, *args, mca=()):
    path = tmp_path_factory.mktemp("traj") / "t.jsonl"
    res = reftrain(np, path, *args, mca=mca)
    assert res.returncode == 0, res.stderr
    return path.read_bytes()


def records(data):
    return [json.loads(line) for line in data.decode().splitlines()]


def step_lines(data):
    return [line for line in data.decode().splitlines() if line.startswith('{"step"')]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return run(tmp_path_factory, 4, *ARGS)


def test_rerun_is_byte_identical(reference, tmp_path_factory):
    assert run(tmp_path_factory, 4, *ARGS) == reference


@pytest.mark.parametrize("np", [1, 2, 8])
def test_world_size_does_not_change_step_records(reference, tmp_path_factory, np):
    other = run(tmp_path_factory, np, *ARGS)
    assert step_lines(other) == step_lines(reference)
    assert records(other)[0]["world_size"] == np


@pytest.mark.parametrize("algorithm", [1, 3, 4, 6])
def test_forced_allreduce_algorithm_does_not_change_bits(reference, tmp_path_factory, algorithm):
    mca = [("coll_tuned_use_dynamic_rules", 1), ("coll_tuned_allreduce_algorithm", algorithm)]
    assert run(tmp_path_factory, 4, *ARGS, mca=mca) == reference


def test_another_seed_gives_another_trajectory(reference, tmp_path_factory):
    other = step_lines(run(tmp_path_factory, 4, "--preset", "tiny", "--steps", "120", "--seed", "8"))
    ours = step_lines(reference)
    assert len(other) == len(ours) == 120
    assert all(a != b for a, b in zip(ours, other))


def test_every_record_has_every_field(reference):
    recs = records(reference)
    start, steps, end = recs[0], recs[1:-1], recs[-1]
    assert start["event"] == "start" and start["attempt"] == 1 and start["world_size"] == 4
    assert start["restored_from"] is None and start["checkpoint"] is None
    assert len(start["config_hash"]) == 16
    assert end == {"event": "end", "status": "done", "steps": 120}
    assert [r["step"] for r in steps] == list(range(1, 121))
    for r in steps:
        assert list(r) == STEP_FIELDS + COMPONENTS
        for key in ("loss", "lr", "grad_norm", "loss_scale"):
            assert len(r[key]) == 10 and r[key].startswith("0x"), r
            int(r[key], 16)
        for c in COMPONENTS:
            assert len(r[c]) == 16
            int(r[c], 16)


def test_state_components_all_change_over_training(reference):
    steps = records(reference)[1:-1]
    for c in ["params", "master", "opt", "rng", "data", "sched", "user"]:
        assert len({r[c] for r in steps}) > 100, c
    assert len({r["scaler"] for r in steps}) > 5


def test_tiny_has_overflow_skips_that_back_off_the_scale(reference):
    steps = records(reference)[1:-1]
    skipped = [r for r in steps if r["skipped"]]
    assert skipped, "tiny must exercise the loss scaler's skip path"
    for r in skipped:
        after = steps[r["step"]]            # the record of step + 1
        assert int(after["loss_scale"], 16) < int(r["loss_scale"], 16)
        assert after["master"] != r["master"] or after["skipped"]
        before = steps[r["step"] - 2]
        assert r["master"] == before["master"], "a skipped step must not update the weights"
    assert len({r["loss_scale"] for r in steps}) >= 3, "the scale must also grow"


def test_loss_goes_down(reference):
    import struct
    steps = records(reference)[1:-1]
    loss = [struct.unpack("<f", struct.pack("<I", int(r["loss"], 16)))[0] for r in steps]
    assert sum(loss[-10:]) < 0.5 * sum(loss[:10])


def test_digest_every_k(tmp_path_factory):
    recs = records(run(tmp_path_factory, 2, "--preset", "tiny", "--steps", "12", "--digest-every", "5"))
    with_digests = [r["step"] for r in recs[1:-1] if "master" in r]
    assert with_digests == [5, 10]


@pytest.mark.parametrize("args,message", [
    (["--stpes", "3"], "did you mean '--steps'"),
    (["--preset", "medium"], "valid: tiny, small, large"),
    (["--steps", "-4"], "--steps"),
    (["--resume", "sometimes"], "auto or never"),
])
def test_bad_command_line_exits_2_with_a_reason(tmp_path, args, message):
    res = reftrain(2, tmp_path / "t.jsonl", *args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert not (tmp_path / "t.jsonl").exists()


def test_world_size_must_divide_virtual_workers(tmp_path):
    res = reftrain(3, tmp_path / "t.jsonl", "--steps", "3")
    assert res.returncode == 2
    assert "valid world sizes: 1 2 4 8" in res.stderr
