"""Crash states of any program, by replay: `ckpt-harness crashstates --scenario`.

Guards against: a crash-state exploration that only knows libckpt's layout.
For a program of the user's, every change its run made under the root (from
the shim's undo record) is replayed as a crash right at that call (kill,
power cut, torn write), each replay judged by the oracle. The numpy trainer
that fsyncs survives every state; the same trainer without its fsyncs, and
reftrain's naive backend, do not, and each violation is written out as a
scenario that reproduces it.
"""
import json
import os
import subprocess

from mpi import BIN, REPO

NUMPY = REPO / "examples" / "numpy_trainer"
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def harness(*args, timeout=900):
    return subprocess.run([str(BIN / "ckpt-harness"), *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def numpy_scenario(tmp_path, *flags):
    """The numpy trainer for 20 steps, a save every 10 (two saves); no fault: the exploration places them."""
    command = ["/usr/bin/python3", str(NUMPY / "train.py"), "--steps", "{steps}", "--seed", "{seed}", "--ckpt",
               "{ckpt_dir}", "--every", "10", "--keep", "3", *flags]
    p = tmp_path / "numpy.yaml"
    p.write_text("name: numpy-saves\ntrainer:\n  command: %s\n  launcher: single\n  steps: 20\n"
                 "  checkpoint_root: \"{ckpt_dir}\"\nexpect: {outcome: resume_bitwise}\n" % json.dumps(command))
    return p


def explore(tmp_path, scenario, *args):
    res = harness("crashstates", "--scenario", scenario, "--json", tmp_path / "cs.json", "--out", tmp_path / "found",
                  "--cache", tmp_path / "cache", *args)
    return res, json.loads((tmp_path / "cs.json").read_text())


def test_a_program_that_syncs_survives_every_crash_state(tmp_path):
    res, cs = explore(tmp_path, numpy_scenario(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert cs["mode"] == "replay" and cs["violations"] == 0 and cs["unreached"] == 0, cs
    # two saves: the temporary file's writes, its fsync, the rename, the root's fsync, each crashed
    assert cs["changes_recorded"] >= 8 and cs["states_checked"] >= 2 * cs["changes_recorded"]
    kinds = {c["state"].split(" at ")[0] for c in cs["cases"]}
    assert kinds == {"A kill", "A power cut", "A torn write and a kill"}
    assert {c["state"].split(" at ")[1].split(" of ")[0] for c in cs["cases"]} >= {"write", "fsync", "rename"}


def test_without_its_fsyncs_a_power_cut_after_the_rename_loses_the_acknowledged_checkpoint(tmp_path):
    res, cs = explore(tmp_path, numpy_scenario(tmp_path, "--no-fsync"))
    assert res.returncode == 1, res.stdout
    assert cs["violations"] > 0 and cs["unreached"] == 0, cs
    bad = [c for c in cs["cases"] if c["verdict"] == "FAIL"]
    assert all(c["state"].startswith("A power cut") for c in bad), bad
    assert any("had been committed and acknowledged" in c["sentence"] for c in bad), bad
    # each violation is a scenario that reproduces it
    again = harness("run", bad[0]["scenario"], "--cache", tmp_path / "cache")
    assert again.returncode == 1 and "FAIL" in again.stdout, again.stdout


def test_reftrains_naive_backend_loses_state_at_a_kill_inside_its_save(tmp_path):
    p = tmp_path / "naive.yaml"
    p.write_text("name: naive-save\ntrainer: {preset: tiny, world_size: 2, steps: 30, ckpt_backend: naive, "
                 "checkpoint: {every: 10, keep: 3}}\nexpect: {outcome: resume_bitwise}\n")
    res, cs = explore(tmp_path, p, "--step", "20", "--max-states", "6")
    assert res.returncode == 1, res.stdout + res.stderr[-2000:]
    assert cs["violations"] > 0, cs
    assert all("step 20" in c["state"] for c in cs["cases"])
    assert any(c["verdict"] == "FAIL" and "rank-" in c["sentence"] and ".ckpt" in c["sentence"]
               for c in cs["cases"]), cs["cases"]


def test_bad_use_is_refused(tmp_path):
    res = harness("crashstates", "--scenario", numpy_scenario(tmp_path), "--step", "10")
    assert res.returncode == 2 and "announces its steps" in res.stderr
    res = harness("crashstates", "--max-states", "3")
    assert res.returncode == 2 and "goes with --scenario" in res.stderr
    res = harness("crashstates", "--scenario", tmp_path / "missing.yaml")
    assert res.returncode == 2


def test_sweep_fails_each_recorded_call_of_a_program(tmp_path):
    """sweep --scenario: the same recording, each call failed with the errno
    once and from then on. The numpy trainer either carries on (the save is
    retried at the next step) or stops saying why; both are right, and only a
    lost acknowledgement or a resume that is not bit for bit would count."""
    res = harness("sweep", "--scenario", numpy_scenario(tmp_path), "--errno", "ENOSPC", "--max-states", "8", "--json",
                  tmp_path / "sw.json", "--out", tmp_path / "found", "--cache", tmp_path / "cache")
    sw = json.loads((tmp_path / "sw.json").read_text())
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert sw["errno"] == "ENOSPC" and sw["violations"] == 0 and sw["unreached"] == 0, sw
    assert sw["changes_explored"] == 8 and sw["states_checked"] == 16
    kinds = {c["state"].split(" at ")[0] for c in sw["cases"]}
    assert kinds == {"A transient error", "A persistent error"}
    # creating the root fails: the trainer stops, saying why, which is right
    assert any(c["verdict"] == "STOPPED" and "mkdir" in c["state"] for c in sw["cases"]), sw["cases"]
