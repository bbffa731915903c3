"""Incremental checkpoints end to end: reftrain --ckpt-incremental on real mpirun jobs.

Guards against: an incremental save that breaks a crash state a full save
survives (every power-loss and kill state of a delta save, chunk files
included, must restore the acknowledged step or the one before), a plain save
whose format changed, `ckpt-tool ls` that cannot say what a generation
shares, and options or scenario keys that are accepted when they mean
nothing.
"""
import json
import os
import subprocess
from pathlib import Path

from mpi import BIN, reftrain

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
BASE = ["--preset", "tiny", "--steps", "30", "--ckpt-every", "10", "--keep", "3", "--frozen", "50"]


def tool(*args):
    return subprocess.run([str(BIN / "ckpt-tool"), *map(str, args)], capture_output=True, text=True)


def harness(*args, timeout=600):
    return subprocess.run([str(BIN / "ckpt-harness"), *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def manifest(gen):
    return json.loads((gen / "manifest.json").read_text())


def test_crashstates_cover_an_incremental_save(tmp_path):
    # the save of step 20 is a delta of step 10's: new chunks, reused ones, a recipe; one rank keeps it short
    res = harness("crashstates", "--incremental", "--world-size", "1", "--step", "20", "--json", tmp_path / "c.json",
                  "--out", tmp_path / "found")
    report = json.loads((tmp_path / "c.json").read_text())
    assert res.returncode == 0, res.stdout + res.stderr
    assert report["violations"] == 0, report["violation_list"][:3]
    assert report["operations"] >= 20 and report["states_checked"] >= 5 * report["operations"], report


def test_incremental_saves_chunks_and_plain_saves_keep_version_2(tmp_path):
    plain = reftrain(2, tmp_path / "p.jsonl", *BASE, "--ckpt-dir", tmp_path / "plain")
    inc = reftrain(2, tmp_path / "i.jsonl", *BASE, "--ckpt-dir", tmp_path / "inc", "--ckpt-incremental",
                   "--ckpt-full-every", "2")
    assert plain.returncode == 0 and inc.returncode == 0, plain.stderr + inc.stderr
    assert manifest(tmp_path / "plain" / "step-00000030")["schema_version"] == 2
    assert not (tmp_path / "plain" / "chunks").exists()
    m = {s: manifest(tmp_path / "inc" / f"step-000000{s}") for s in (10, 20, 30)}
    assert [(m[s]["schema_version"], m[s]["chain_depth"], m[s]["chain_base"]) for s in (10, 20, 30)] == \
        [(3, 0, 10), (3, 1, 10), (3, 0, 30)]
    assert sorted(p.name for p in (tmp_path / "inc" / "step-00000020").iterdir()) == \
        ["manifest.json", "rank-00000.chunks", "rank-00001.chunks"]
    # the same trajectory either way: checkpointing changes nothing that is trained
    steps = [[ln for ln in Path(f).read_text().splitlines() if ln.startswith('{"step"')]
             for f in (tmp_path / "p.jsonl", tmp_path / "i.jsonl")]
    assert steps[0] == steps[1] and len(steps[0]) == 30

    # ls: 10 and 20 share the frozen half (one chain), 30 starts a chain of its own
    ls = tool("ls", tmp_path / "inc")
    assert ls.returncode == 0, ls.stderr
    head, *rows = ls.stdout.splitlines()
    assert head.split()[3:6] == ["bytes", "own", "shared"]
    cols = {r.split()[0]: [int(x) for x in r.split()[3:6]] for r in rows}
    for name, (total, own, shared) in cols.items():
        assert own + shared == total, (name, cols)
    assert cols["step-00000030"][2] == 0
    assert cols["step-00000020"][2] > 0 and cols["step-00000020"][2] == cols["step-00000010"][2]
    assert "valid" in ls.stdout and "INVALID" not in ls.stdout
    gen20 = tmp_path / "inc" / "step-00000020"
    assert tool("verify", gen20).returncode == 0
    assert "chain of step 10, depth 1" in tool("show", gen20).stdout

    # verify names a missing chunk (the last one of rank 1's recipe: it changes at every save, 20's own)
    recipe = (gen20 / "rank-00001.chunks").read_bytes()
    hlen = int.from_bytes(recipe[:8], "little")
    last = recipe[-16:].hex()
    assert (len(recipe) - 8 - hlen) % 16 == 0
    (tmp_path / "inc" / "chunks" / last[:2] / last).unlink()
    v = tool("verify", gen20)
    assert v.returncode == 1 and f"chunks/{last[:2]}/{last}" in v.stdout + v.stderr, v.stdout + v.stderr
    assert tool("verify", tmp_path / "inc" / "step-00000010").returncode == 0


def test_options_that_mean_nothing_without_incremental_are_refused(tmp_path):
    res = reftrain(1, tmp_path / "t.jsonl", *BASE, "--ckpt-dir", tmp_path / "ck", "--ckpt-full-every", "3")
    assert res.returncode == 2 and "needs --ckpt-incremental" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrainer: {preset: tiny, world_size: 2, steps: 20, checkpoint: {every: 10, full_every: 2}}\n"
                   "faults:\n  - when: {rank: 0, step: 15, phase: train.step}\n    do: kill\n")
    res = harness("validate", bad)
    assert res.returncode == 2 and "bad.yaml:2:" in res.stderr and "incremental: true" in res.stderr
    bad.write_text("name: x\ntrainer: {preset: tiny, world_size: 2, steps: 20, checkpoint: {every: 10}}\n"
                   "faults:\n  - when: {rank: 0, step: 10, phase: save.chunk_write}\n    do: kill\n")
    res = harness("validate", bad)
    assert res.returncode == 2 and "bad.yaml:4:" in res.stderr and "incremental" in res.stderr
