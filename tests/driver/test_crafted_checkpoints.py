"""Crafted checkpoints against real reftrain jobs and ckpt-tool (issue 9).

Guards against: restored values that crash or poison the trainer (a data
cursor out of range, a generation at step 2^63-1), and a ckpt-tool that
disagrees with restore (files or dangling links named step-N called valid,
non-canonical names tagged for restore, FIFOs that block, long paths cut at
512 bytes, terminal escapes printed raw). Each crafted generation is resealed
(sizes, hashes and the manifest checksum recomputed) so that only the crafted
part is wrong. Each test failed on the code before the fix.
"""
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import xxhash

from mpi import BIN, reftrain

BASE = ["--preset", "tiny", "--steps", "60", "--seed", "3", "--ckpt-every", "10", "--keep", "3"]


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def step_lines(path, first=1):
    return [line for line in Path(path).read_text().splitlines()
            if line.startswith('{"step"') and json.loads(line)["step"] >= first]


def run(np_, traj, ckdir, *extra):
    return reftrain(np_, traj, *BASE, "--ckpt-dir", ckdir, *extra)


def tool(*args, timeout=30):
    return subprocess.run([str(BIN / "ckpt-tool"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def reseal(gen):
    """Recompute every shard's size and xxh3 and the manifest's checksum."""
    m = json.loads((gen / "manifest.json").read_text())
    m.pop("checksum")
    for f in m["files"]:
        raw = (gen / f["name"]).read_bytes()
        f["size"] = len(raw)
        f["xxh3"] = "%016x" % xxhash.xxh3_64_intdigest(raw)
    body = json.dumps(m, separators=(",", ":"))[:-1] + ","
    text = body + '"checksum":"%016x"}\n' % xxhash.xxh3_64_intdigest(body.encode())
    (gen / "manifest.json").write_text(text)


def shard_parts(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_shard(path, header, data):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def set_u64(gen, rank, tensor, index, value):
    path = gen / ("rank-%05d.safetensors" % rank)
    header, data = shard_parts(path)
    begin = header[tensor]["data_offsets"][0]
    data = bytearray(data)
    data[begin + 8 * index:begin + 8 * index + 8] = struct.pack("<Q", value)
    write_shard(path, header, bytes(data))


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden")
    res = run(4, d / "g.jsonl", d / "ck")
    assert res.returncode == 0, res.stderr
    return d


@pytest.fixture
def stopped_at_35(tmp_path):
    """Generations 10, 20, 30 of a 4-rank job stopped at step 35."""
    ck = tmp_path / "ck"
    res = run(4, tmp_path / "a1.jsonl", ck, "--stop-after", "35")
    assert res.returncode == 0, res.stderr
    return ck


def resume(tmp_path, ck):
    res = run(4, tmp_path / "a2.jsonl", ck, "--resume", "auto", "--attempt", "2")
    assert res.returncode == 0, res.stderr
    return records(tmp_path / "a2.jsonl")


def test_data_cursor_out_of_range_is_refused_not_a_crash(golden, tmp_path, stopped_at_35):
    gen = stopped_at_35 / "step-00000030"
    for r in range(4):
        set_u64(gen, r, "data.cursor", 1, 1 << 40)     # the position within the epoch
    reseal(gen)
    assert tool("verify", gen).returncode == 0, "the hashes hold: only the value is wrong"
    recs = resume(tmp_path, stopped_at_35)
    assert recs[0]["restored_from"] == 20
    assert [f["checkpoint"] for f in recs[0]["fallbacks"]] == ["step-00000030"]
    assert "data cursor position 1099511627776" in recs[0]["fallbacks"][0]["why"]
    assert step_lines(tmp_path / "a2.jsonl") == step_lines(golden / "g.jsonl", 21)


def test_generation_past_the_last_step_is_refused(golden, tmp_path, stopped_at_35):
    huge = 2 ** 63 - 1
    gen = stopped_at_35 / ("step-%08d" % huge)
    shutil.copytree(stopped_at_35 / "step-00000030", gen)
    m = json.loads((gen / "manifest.json").read_text())
    m["step"] = huge
    (gen / "manifest.json").write_text(json.dumps(m, separators=(",", ":")))
    for r in range(4):
        path = gen / ("rank-%05d.safetensors" % r)
        header, data = shard_parts(path)
        header["__metadata__"]["step"] = str(huge)
        write_shard(path, header, data)
    reseal(gen)
    assert tool("verify", gen).returncode == 0
    recs = resume(tmp_path, stopped_at_35)
    assert recs[0]["restored_from"] == 30
    assert "past this run's last step 60" in recs[0]["fallbacks"][0]["why"]
    assert step_lines(tmp_path / "a2.jsonl") == step_lines(golden / "g.jsonl", 31)
    assert records(tmp_path / "a2.jsonl")[-1] == {"event": "end", "status": "done", "steps": 60}


def ls_rows(root):
    res = tool("ls", root)
    assert res.returncode == 0, res.stderr
    return {line.split()[0]: line for line in res.stdout.splitlines()[1:]}


def test_tool_never_calls_a_file_or_dangling_link_valid(stopped_at_35):
    (stopped_at_35 / "step-00000099").write_text("not a generation")
    os.symlink("/nonexistent/elsewhere", stopped_at_35 / "step-00000098")
    rows = ls_rows(stopped_at_35)
    assert "INVALID" in rows["step-00000099"] and "restore" not in rows["step-00000099"]
    assert "INVALID" in rows["step-00000098"] and "symbolic link" in rows["step-00000098"]
    assert "restore" in rows["step-00000030"]
    assert tool("verify", stopped_at_35 / "step-00000098").returncode == 1


def test_tool_tags_what_restore_takes_not_a_non_canonical_name(stopped_at_35):
    os.rename(stopped_at_35 / "step-00000030", stopped_at_35 / "step-000000030")
    rows = ls_rows(stopped_at_35)
    assert "step-000000030" not in rows, "restore never looks at it"
    assert "restore" in rows["step-00000020"]
    v = tool("verify", stopped_at_35 / "step-000000030")
    assert v.returncode == 1 and "not a generation name restore takes" in v.stdout


def test_tool_does_not_block_on_fifos(stopped_at_35):
    (stopped_at_35 / "LATEST").unlink()
    os.mkfifo(stopped_at_35 / "LATEST")
    (stopped_at_35 / "step-00000030" / "manifest.json").unlink()
    os.mkfifo(stopped_at_35 / "step-00000030" / "manifest.json")
    (stopped_at_35 / "step-00000020" / "rank-00002.safetensors").unlink()
    os.mkfifo(stopped_at_35 / "step-00000020" / "rank-00002.safetensors")
    rows = ls_rows(stopped_at_35)        # a blocked tool times out here
    assert "not a regular file" in rows["step-00000030"]
    assert "not a regular file" in rows["step-00000020"]
    assert "restore" in rows["step-00000010"]
    v = tool("verify", stopped_at_35 / "step-00000020")
    assert v.returncode == 1 and "rank-00002.safetensors: " in v.stdout


def test_tool_handles_roots_longer_than_512_bytes(stopped_at_35, tmp_path):
    deep = tmp_path
    while len(str(deep)) < 700:
        deep = deep / ("d" * 60)
    deep.mkdir(parents=True)
    shutil.move(str(stopped_at_35), str(deep / "ck"))
    rows = ls_rows(deep / "ck")
    assert rows["step-00000030"].endswith("valid")
    assert tool("verify", deep / "ck" / "step-00000030").returncode == 0


def test_tool_escapes_control_characters_from_disk(stopped_at_35):
    gen = stopped_at_35 / "step-00000030"
    m = json.loads((gen / "manifest.json").read_text())
    m["tensors"][0]["name"] = "evil\x1b]0;owned\x07\x1b[2J"
    (gen / "manifest.json").write_text(json.dumps(m, separators=(",", ":")))
    reseal(gen)
    for args in (("show", gen), ("verify", gen), ("ls", stopped_at_35)):
        out = tool(*args)
        assert "\x1b" not in out.stdout + out.stderr and "\x07" not in out.stdout + out.stderr, args
    assert "evil\\x1b]0;owned\\x07\\x1b[2J" in tool("show", gen).stdout


def test_tool_does_not_follow_a_symlinked_shard(stopped_at_35, tmp_path):
    gen = stopped_at_35 / "step-00000030"
    outside = tmp_path / "outside.safetensors"
    shutil.copy(gen / "rank-00001.safetensors", outside)
    (gen / "rank-00001.safetensors").unlink()
    os.symlink(outside, gen / "rank-00001.safetensors")
    v = tool("verify", gen)
    assert v.returncode == 1
    assert "rank-00001.safetensors: " in v.stdout and "symbolic link" in v.stdout
    assert str(outside.stat().st_size) not in v.stdout
