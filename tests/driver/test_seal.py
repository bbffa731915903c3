"""Sealed checkpoints (issue 14) end to end: reftrain --ckpt-key-file, ckpt-tool
with and without the key, the known limitation of the plain format, and the
scenario keys (checkpoint.encrypt, overwrite/from, recompute, expect.refused).

Guards against: a key file others can read being used, a sealed generation
that a reader without the key reports as merely "damaged" (no reason), the
plain format's weakness going unnoticed, and scenario keys that are not checked.
"""
import json
import os
import subprocess

from mpi import BIN, REPO, reftrain

HARNESS = BIN / "ckpt-harness"
ARGS = ["--preset", "tiny", "--steps", "20", "--seed", "3", "--ckpt-every", "10"]
T = "trainer: {preset: tiny, world_size: 2, steps: 40, checkpoint: {every: 10, keep: 3%s}}\n"
KILL = "  - when: {rank: 0, step: 35, phase: train.step}\n    do: kill\n"


def run(*args, env=None, timeout=120):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def key(tmp_path, mode=0o600):
    k = tmp_path / "key"
    k.write_bytes(os.urandom(32))
    k.chmod(mode)
    return k


def test_sealed_run_and_ckpt_tool_with_and_without_the_key(tmp_path):
    k, ck = key(tmp_path), tmp_path / "ck"
    res = reftrain(2, tmp_path / "t.jsonl", *ARGS, "--ckpt-dir", ck, "--ckpt-key-file", k)
    assert res.returncode == 0, res.stderr
    assert (ck / "step-00000020" / "manifest.json").read_bytes()[:8] == b"CKPTSEAL"
    res = run(BIN / "ckpt-tool", "verify", ck / "step-00000020")
    assert res.returncode == 1 and "needs its key" in res.stdout + res.stderr
    res = run(BIN / "ckpt-tool", "verify", ck / "step-00000020", env={"CKPT_KEY_FILE": str(k)})
    assert res.returncode == 0, res.stdout + res.stderr
    k.chmod(0o640)                                        # a key others may read is not used, and it says so
    res = run(BIN / "ckpt-tool", "verify", ck / "step-00000020", env={"CKPT_KEY_FILE": str(k)})
    assert res.returncode == 1 and "mode 0640" in res.stdout + res.stderr
    k.chmod(0o600)
    # and a job without the key refuses every generation, saying why
    res = reftrain(2, tmp_path / "u.jsonl", *ARGS, "--ckpt-dir", ck, "--resume", "auto")
    assert res.returncode != 0
    end = json.loads((tmp_path / "u.jsonl").read_text().splitlines()[-1])
    assert "needs its key" in end["error"]


def test_reftrain_refuses_a_key_file_others_can_read(tmp_path):
    k = key(tmp_path, 0o644)
    res = reftrain(2, tmp_path / "t.jsonl", *ARGS, "--ckpt-dir", tmp_path / "ck", "--ckpt-key-file", k)
    assert res.returncode != 0
    end = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[-1])
    assert "mode 0644" in end["error"] and "chmod 600" in end["error"]
    assert not list((tmp_path / "ck").glob("step-*"))
    res = run(BIN / "reftrain", "--trajectory", tmp_path / "x", *ARGS, "--ckpt-dir", tmp_path / "ck",
              "--ckpt-key-file", key(tmp_path), "--ckpt-backend", "naive")
    assert res.returncode == 2 and "built-in libckpt backend" in res.stderr


def test_plain_format_limitation_is_a_failing_scenario(tmp_path):
    """Without a key a flipped bit with recomputed hashes is restored: the scenario must FAIL."""
    report = tmp_path / "r.json"
    res = run(HARNESS, "run", REPO / "scenarios/limits/plain-bitflip-recomputed-hashes.yaml", "--json", report)
    assert res.returncode == 1, res.stdout + res.stderr
    sc = json.loads(report.read_text())["scenarios"][0]
    assert sc["verdict"] == "FAIL" and sc["restored_from"][0] == 30      # the tampered generation taken
    # the same tampering with a key: refused, restore falls back
    text = (REPO / "scenarios/limits/plain-bitflip-recomputed-hashes.yaml").read_text()
    text = text.replace("keep: 3}", "keep: 3, encrypt: true}").replace(
        "max_lost_steps: 15}", 'max_lost_steps: 15, refused: "authentication failed"}')
    (tmp_path / "sealed.yaml").write_text(text)
    res = run(HARNESS, "run", tmp_path / "sealed.yaml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_scenario_keys_are_validated(tmp_path):
    cases = [
        (T % ", encrypt: maybe" + "expect: {outcome: resume_bitwise}\n", "checkpoint.encrypt is true or false"),
        (T % ", encrypt: true, incremental: true" + "expect: {outcome: resume_bitwise}\n", "without incremental"),
        (T % "" + "faults:\n" + KILL + "  - when: {after_attempt: 1}\n    do: {overwrite: newest/manifest.json}\n"
         "expect: {outcome: resume_bitwise}\n", "overwrite needs 'from'"),
        (T % "" + "faults:\n" + KILL + "  - when: {after_attempt: 1}\n"
         "    do: {overwrite: newest/manifest.json, from: newest/rank-*.safetensors}\n"
         "expect: {outcome: resume_bitwise}\n", "no glob"),
        (T % "" + "faults:\n" + KILL + "  - when: {after_attempt: 1}\n"
         "    do: {delete: newest/manifest.json, recompute: true}\nexpect: {outcome: resume_bitwise}\n",
         "recompute goes with bitflip"),
        (T % "" + "expect: {outcome: resume_bitwise, refused: authentication}\n", "there is no restart"),
    ]
    for i, (text, words) in enumerate(cases):
        p = tmp_path / f"bad{i}.yaml"
        p.write_text(f"name: bad{i}\n" + text)
        res = run(HARNESS, "validate", p)
        assert res.returncode == 2 and words in res.stderr, (text, res.stderr)
        assert f"bad{i}.yaml:" in res.stderr
