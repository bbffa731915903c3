"""libckpt end to end, on real mpirun jobs with real files.

Guards against: shards another reader cannot parse, a resume that is not bit
for bit, a damaged newest generation being used, retention that does not
hold, and ckpt-tool missing damage.
"""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xxhash

import safetensors_layout as st
from mpi import BIN, reftrain

BASE = ["--preset", "tiny", "--steps", "60", "--seed", "3", "--ckpt-every", "10", "--keep", "3"]


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def step_lines(path, first=1):
    out = []
    for line in Path(path).read_text().splitlines():
        if line.startswith('{"step"') and json.loads(line)["step"] >= first:
            out.append(line)
    return out


def run(np_, traj, ckdir, *extra):
    res = reftrain(np_, traj, *BASE, "--ckpt-dir", ckdir, *extra)
    return res


def tool(*args):
    return subprocess.run([str(BIN / "ckpt-tool"), *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden")
    res = run(4, d / "g.jsonl", d / "ck")
    assert res.returncode == 0, res.stderr
    return d


def test_golden_commits_every_ten_steps_and_keeps_three(golden):
    committed = [r["step"] for r in records(golden / "g.jsonl") if r.get("event") == "committed"]
    assert committed == [10, 20, 30, 40, 50, 60]
    gens = sorted(p.name for p in (golden / "ck").iterdir() if p.name.startswith("step-"))
    assert gens == ["step-00000040", "step-00000050", "step-00000060"]
    assert (golden / "ck" / "LATEST").read_text() == "step-00000060\n"


def per_rank(value, rank):
    return value[rank] if isinstance(value, list) else value


def test_shards_read_by_an_independent_parser(golden):
    gen = golden / "ck" / "step-00000060"
    manifest = json.loads((gen / "manifest.json").read_text())
    assert manifest["schema_version"] == 2
    assert manifest["step"] == 60 and manifest["world_size"] == 4
    master = np.zeros(3364, dtype=np.float32)
    covered = 0
    params = None
    for f in manifest["files"]:
        raw = (gen / f["name"]).read_bytes()
        assert len(raw) == f["size"]
        assert "%016x" % xxhash.xxh3_64_intdigest(raw) == f["xxh3"]
        meta, tensors = st.read(gen / f["name"])
        assert meta == {"rank": str(f["rank"]), "world_size": "4", "step": "60", "format": "libckpt/1"}
        assert set(tensors) == {"params.bf16", "master.fp32", "opt.exp_avg", "opt.exp_avg_sq", "opt.step",
                                "rng.dropout", "data.cursor", "sched.state", "scaler.state", "user.blob"}
        # schema_version 2: the layout once; per-rank values are one integer or a list in rank order
        entry = next(t for t in manifest["tensors"] if t["name"] == "master.fp32")
        goff = per_rank(entry["global_offset"], f["rank"])
        part = tensors["master.fp32"]
        assert per_rank(entry["local_elems"], f["rank"]) == len(part)
        master[goff:goff + len(part)] = part
        covered += len(part)
        if params is None:
            params = tensors["params.bf16"]
        else:
            assert np.array_equal(params, tensors["params.bf16"]), "working weights are replicated"
    assert covered == 3364, "the master shards tile the parameter vector"
    # step 60 was not skipped, so the bf16 working weights are the rounded master weights
    assert np.array_equal(st.bf16_round(master), params)


def test_manifest_checksum_is_checkable_without_libckpt(golden):
    text = (golden / "ck" / "step-00000050" / "manifest.json").read_bytes()
    cut = text.rindex(b'"checksum":"')
    assert "%016x" % xxhash.xxh3_64_intdigest(text[:cut]) == text[cut + 12:cut + 28].decode()


def test_stopped_at_35_resumes_bit_for_bit(golden, tmp_path):
    res = run(4, tmp_path / "a1.jsonl", tmp_path / "ck", "--stop-after", "35")
    assert res.returncode == 0, res.stderr
    assert records(tmp_path / "a1.jsonl")[-1] == {"event": "end", "status": "stopped", "steps": 35}
    res = run(4, tmp_path / "a2.jsonl", tmp_path / "ck", "--resume", "auto", "--attempt", "2")
    assert res.returncode == 0, res.stderr
    start = records(tmp_path / "a2.jsonl")[0]
    assert start["attempt"] == 2 and start["restored_from"] == 30 and start["checkpoint"] == "step-00000030"
    assert start["fallbacks"] == []
    # the restored state is the uninterrupted run's state after step 30, component by component
    g30 = json.loads(step_lines(golden / "g.jsonl", 30)[0])
    assert start["restored"] == {k: g30[k] for k in start["restored"]}
    assert step_lines(tmp_path / "a2.jsonl") == step_lines(golden / "g.jsonl", 31)


def flip(path, offset=-7):
    b = bytearray(path.read_bytes())
    b[offset] ^= 0x01
    path.write_bytes(bytes(b))


def test_damaged_newest_falls_back_resaves_and_keeps_three(golden, tmp_path):
    ck = tmp_path / "ck"
    assert run(4, tmp_path / "a1.jsonl", ck, "--stop-after", "35").returncode == 0
    damaged = ck / "step-00000030" / "rank-00001.safetensors"
    flip(damaged)
    v = tool("verify", ck / "step-00000030")
    assert v.returncode == 1
    assert "rank-00001.safetensors" in v.stdout and "contents damaged" in v.stdout

    res = run(4, tmp_path / "a2.jsonl", ck, "--resume", "auto", "--attempt", "2")
    assert res.returncode == 0, res.stderr
    recs = records(tmp_path / "a2.jsonl")
    assert recs[0]["restored_from"] == 20
    assert [f["checkpoint"] for f in recs[0]["fallbacks"]] == ["step-00000030"]
    assert "rank-00001.safetensors" in recs[0]["fallbacks"][0]["why"]
    assert step_lines(tmp_path / "a2.jsonl") == step_lines(golden / "g.jsonl", 21)
    assert {"event": "committed", "step": 30, "checkpoint": "step-00000030"} in recs
    assert tool("verify", ck / "step-00000060").returncode == 0
    gens = sorted(p.name for p in ck.iterdir() if p.name.startswith("step-"))
    assert gens == ["step-00000040", "step-00000050", "step-00000060"]


@pytest.mark.parametrize("damage,what", [
    (lambda g: flip(g / "rank-00002.safetensors"), "rank-00002.safetensors: xxh3"),
    (lambda g: flip(g / "rank-00000.safetensors", 12), "rank-00000.safetensors: xxh3"),
    (lambda g: open(g / "rank-00003.safetensors", "r+b").truncate(64), "rank-00003.safetensors: size 64"),
    (lambda g: (g / "rank-00001.safetensors").unlink(), "rank-00001.safetensors: missing"),
    (lambda g: flip(g / "manifest.json", 30), "manifest.json: manifest checksum mismatch"),
    (lambda g: (g / "manifest.json").unlink(), "manifest.json: missing"),
])
def test_verify_names_each_kind_of_damage(golden, tmp_path, damage, what):
    gen = tmp_path / "step-00000050"
    shutil.copytree(golden / "ck" / "step-00000050", gen)
    assert tool("verify", gen).returncode == 0
    damage(gen)
    v = tool("verify", gen)
    assert v.returncode == 1, v.stdout
    assert what in v.stdout
    assert "DAMAGED" in v.stdout


def test_tool_ls_and_show(golden, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(golden / "ck", ck)
    flip(ck / "step-00000060" / "rank-00003.safetensors")
    ls = tool("ls", ck)
    assert ls.returncode == 0
    rows = {line.split()[0]: line for line in ls.stdout.splitlines()[1:]}
    assert "INVALID" in rows["step-00000060"] and "LATEST" in rows["step-00000060"]
    assert "restore" in rows["step-00000050"] and rows["step-00000050"].endswith("valid")
    show = tool("show", ck / "step-00000040")
    assert show.returncode == 0 and "world_size     4" in show.stdout and "master.fp32" in show.stdout
    assert tool("verify", ck / "nope").returncode == 2
    assert tool("frobnicate", ck).returncode == 2


def test_other_world_size_restores_resharded(golden, tmp_path):
    """Elastic resume: the 4-rank generation restored on 2 ranks holds the state the 4-rank run had."""
    ck = tmp_path / "ck"
    shutil.copytree(golden / "ck", ck)
    res = run(2, tmp_path / "a.jsonl", ck, "--resume", "auto")
    assert res.returncode == 0, res.stderr
    start = records(tmp_path / "a.jsonl")[0]
    assert start["world_size"] == 2 and start["restored_from"] == 60, start
    at60 = [r for r in records(golden / "g.jsonl") if r.get("step") == 60][0]
    for comp, digest in start["restored"].items():
        assert at60[comp] == digest, comp
    assert tool("verify", ck / "step-00000060").returncode == 0, "nothing was touched"


def test_every_generation_damaged_fails_cleanly(golden, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(golden / "ck", ck)
    for gen in ("step-00000040", "step-00000050", "step-00000060"):
        flip(ck / gen / "rank-00000.safetensors")
    res = run(4, tmp_path / "a.jsonl", ck, "--resume", "auto")
    assert res.returncode == 1
    end = records(tmp_path / "a.jsonl")[-1]
    assert end["status"] == "failed" and "none of the 3 generations" in end["error"]
