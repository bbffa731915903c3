"""Save alerts, ckpt-tool stats and the catalog (README "Save telemetry,
alerts and the catalog"), end to end through reftrain.

Guards against: alert records changing the oracle's bit-for-bit verdict (they
depend on timing), a journal that stats follows out of the root or blocks
on, and manifests that lose the experiment or code version labels.
"""
import json
import os
import subprocess

import pytest

from mpi import BIN, run_mpi

BASE = ["--preset", "tiny", "--steps", "20", "--seed", "1", "--ckpt-every", "5", "--keep", "10"]


def reftrain(np_, traj, ckdir, *extra, base=BASE, **env):
    xs = []
    for k, v in env.items():
        xs += ["-x", f"{k}={v}"]
    return run_mpi(np_, [BIN / "reftrain", "--trajectory", traj, *base, "--ckpt-dir", ckdir, *extra], mpirun_args=xs,
                   env=dict(os.environ, **env))


def tool(*args):
    return subprocess.run([str(BIN / "ckpt-tool"), *map(str, args)], capture_output=True, text=True, timeout=60)


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_stats_and_catalog_of_a_run(tmp_path):
    res = reftrain(2, tmp_path / "t.jsonl", tmp_path / "ck", CKPT_EXPERIMENT="lr-sweep-3")
    assert res.returncode == 0, res.stderr
    st = json.loads(tool("stats", tmp_path / "ck", "--json").stdout)
    assert [g["step"] for g in st["generations"]] == [5, 10, 15, 20]
    assert all(g["ranks"] == 2 and g["result"] == "ok" and g["bytes"] > 0 for g in st["generations"])
    assert [(r["rank"], r["saves"], r["failed"]) for r in st["ranks"]] == [(0, 4, 0), (1, 4, 0)]
    assert st["alerts"] == [] and st["malformed_lines"] == 0
    text = tool("stats", tmp_path / "ck").stdout
    assert "median_seconds" in text and "0 alerts" in text
    ls = json.loads(tool("ls", tmp_path / "ck", "--json").stdout)["generations"]
    assert [g["step"] for g in ls] == [20, 15, 10, 5]
    newest = ls[0]
    assert newest["status"] == "valid" and newest["world_size"] == 2
    assert "restore" in newest["tags"] and "LATEST" in newest["tags"]
    assert newest["labels"]["experiment"] == "lr-sweep-3"
    assert newest["labels"]["code_version"]            # the commit built from
    assert len(newest["config_hash"]) == 16
    assert newest["own_bytes"] == newest["bytes"] and newest["shared_bytes"] == 0
    show = tool("show", tmp_path / "ck" / "step-00000020").stdout
    assert "experiment     lr-sweep-3" in show


# many saves: with ratio 1 a judged save alerts when it is slower than its median, about half of them
MANY = ["--preset", "tiny", "--steps", "40", "--seed", "1", "--ckpt-every", "2", "--keep", "3"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_alert_records_never_change_the_oracle_verdict(tmp_path, mode):
    # thresholds no save can stay under for long: judged saves slower than their median alert
    hair = "window=3,warmup=2,k=0.000001,floor=0.000000001,ratio=1"
    extra = ["--ckpt-async"] if mode == "async" else []
    assert reftrain(2, tmp_path / "quiet.jsonl", tmp_path / "ck1", *extra, base=MANY).returncode == 0
    res = reftrain(2, tmp_path / "loud.jsonl", tmp_path / "ck2", *extra, base=MANY, CKPT_ALERT=hair)
    assert res.returncode == 0, res.stderr
    alerts = [r for r in records(tmp_path / "loud.jsonl") if r.get("event") == "alert"]
    assert alerts and {a["metric"] for a in alerts} <= {"duration", "throughput"}
    assert not [r for r in records(tmp_path / "quiet.jsonl") if r.get("event") == "alert"]
    ora = subprocess.run([str(BIN / "ckpt-harness"), "oracle", tmp_path / "quiet.jsonl", tmp_path / "loud.jsonl"],
                         capture_output=True, text=True, timeout=60)
    assert ora.returncode == 0, ora.stdout + ora.stderr
    # rank 0's journal has the same alerts (a background save's too: written when it is reported)
    st = json.loads(tool("stats", tmp_path / "ck2", "--json").stdout)
    assert len(st["alerts"]) == len(alerts)
    # each alert record comes before the acknowledgement of its save
    recs = records(tmp_path / "loud.jsonl")
    for i, r in enumerate(recs):
        if r.get("event") == "alert":
            assert any(x.get("event") == "committed" and x.get("step") == r["step"] for x in recs[i + 1:])


def test_a_bad_alert_setting_is_refused(tmp_path):
    res = reftrain(1, tmp_path / "t.jsonl", tmp_path / "ck", CKPT_ALERT="window=2")
    assert res.returncode != 0
    assert "alert" in (res.stderr + (tmp_path / "t.jsonl").read_text()).lower()
    res = reftrain(1, tmp_path / "t2.jsonl", tmp_path / "ck2", CKPT_ALERT="windw=5")
    assert res.returncode != 0 and "CKPT_ALERT" in res.stderr


def test_stats_reads_the_journal_as_untrusted(tmp_path):
    root = tmp_path / "root"
    (root / "journal").mkdir(parents=True)
    j = root / "journal"
    (j / "rank-00000.jsonl").write_text(
        '{"event":"save","step":10,"result":0,"bytes":1048576,"seconds":0.5,"own_seconds":0.25}\n'
        'not json\n' + "x" * 70000 + "\n")
    os.mkfifo(j / "rank-00001.jsonl")                      # would block a plain open
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"event":"save","step":20,"result":0,"bytes":1,"seconds":1}\n')
    (j / "rank-00002.jsonl").symlink_to(outside)           # never followed
    res = tool("stats", root, "--json")
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert [g["step"] for g in st["generations"]] == [10]
    assert st["generations"][0]["mib_per_s"] == 4.0         # own seconds, not waiting for peers
    assert st["malformed_lines"] == 2 and st["skipped_files"] == 2
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "journal").symlink_to(j)
    res = tool("stats", linked)
    assert res.returncode == 2 and "link is never followed" in res.stderr
    assert tool("stats", tmp_path / "nothing").returncode == 2


HARNESS = BIN / "ckpt-harness"
STREAK = """name: eio-streak-%s
trainer: {preset: tiny, world_size: 4, steps: 40, checkpoint: {every: 5, keep: 3}}
faults:
  - when: {rank: 2, step: 20, phase: save.shard_sync, op: fsync}
    do: {errno: EIO, times: 3}
  - when: {rank: 2, step: 25, phase: save.shard_sync, op: fsync}
    do: {errno: EIO, times: 3}
  - when: {rank: 2, step: 30, phase: save.shard_sync, op: fsync}
    do: {errno: EIO, times: 3}
expect: {outcome: resume_bitwise, alerts: [%s]}
"""


def test_three_failed_saves_in_a_row_alert_on_the_failing_rank(tmp_path):
    ok, wrong = tmp_path / "ok.yaml", tmp_path / "wrong.yaml"
    ok.write_text(STREAK % ("ok", "{rank: 2, metric: failures}"))
    wrong.write_text(STREAK % ("wrong", "{rank: 1, metric: failures}"))
    res = subprocess.run([str(HARNESS), "suite", ok, wrong, "-j", "2", "--json", tmp_path / "r.json",
                          "--html", tmp_path / "r.html"],
                         capture_output=True, text=True, timeout=300)
    verdicts = {s["file"].rsplit("/", 1)[1]: s for s in json.loads((tmp_path / "r.json").read_text())["scenarios"]}
    assert verdicts["ok.yaml"]["verdict"] == "PASS", verdicts["ok.yaml"]["sentence"]
    assert verdicts["wrong.yaml"]["verdict"] == "FAIL"
    assert "rank 2, failures, step 30" in verdicts["wrong.yaml"]["sentence"]
    assert res.returncode == 1
    # the report plots each rank's saves from the journal and rings the alert (no script)
    page = (tmp_path / "r.html").read_text()
    assert "Save time per rank" in page and '<circle class="alert" data-rank="2"' in page
    assert '<circle class="save failed" data-rank="2"' in page and "<script" not in page


def test_expect_alerts_is_validated(tmp_path):
    base = "name: v\ntrainer: {preset: tiny, world_size: 4, steps: 20}\nexpect: {alerts: %s}\n"
    for value, words in [("{rank: 1}", "alerts is a list"), ("[{rank: 4}]", "from 0 to 3"),
                         ("[{rank: 1, metric: durtion}]", "did you mean 'duration'"),
                         ("[{metric: duration}]", "needs its rank"), ("[{rank: 1, when: 2}]", "unknown key 'when'")]:
        p = tmp_path / "v.yaml"
        p.write_text(base % value)
        res = subprocess.run([str(HARNESS), "validate", p], capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and f"{p}:3:" in res.stderr and words in res.stderr, (value, res.stderr)
    p.write_text("name: v\ntrainer: {preset: tiny, world_size: 2, steps: 20, checkpoint: {async: true}}\n"
                 "expect: {alerts: [{rank: 1}]}\n")
    res = subprocess.run([str(HARNESS), "validate", p], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "synchronous saves" in res.stderr
