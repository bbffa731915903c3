"""Power loss: what kill -9 never shows.

Guards against: a checkpoint whose durability rests on the page cache (a
missing fsync of a directory after creating or renaming into it). The power
loss scenarios pass on the real build; on a build with the directory fsyncs
compiled out (CKPT_MUTANT=skip_dir_fsync) they must fail, naming the loss.
"""
import json
import subprocess

import pytest

from mpi import BIN, REPO

SCENARIOS = sorted(p for p in (REPO / "scenarios" / "ci").glob("power-loss-*.yaml"))


@pytest.fixture(scope="module")
def mutant_bin():
    build = REPO / "build-mutant-skip_dir_fsync"
    subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), "-G", "Ninja", "-DCKPT_MUTANT=skip_dir_fsync"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    return build / "bin"


def test_there_are_power_loss_scenarios():
    assert len(SCENARIOS) >= 3


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.stem)
def test_missing_directory_fsync_is_caught(mutant_bin, tmp_path, scenario):
    res = subprocess.run([str(mutant_bin / "ckpt-harness"), "run", str(scenario), "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stdout + res.stderr
    entry = json.loads((tmp_path / "r.json").read_text())["scenarios"][0]
    assert entry["verdict"] == "FAIL"
    assert "restored nothing (fresh start)" in entry["sentence"] or "was lost" in entry["sentence"]


def test_undo_record_is_written_only_when_armed(tmp_path):
    """Without CKPT_UNDO_LOG, libckpt keeps no undo record (no cost, no files)."""
    res = subprocess.run([str(BIN / "ckpt-harness"), "run", str(REPO / "scenarios" / "ci" / "kill-commit-rank0.yaml"),
                          "--work", str(tmp_path / "w")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout
    assert not list((tmp_path / "w").glob("undo-*"))


def crashstates(bin_dir, tmp_path, *extra):
    out = tmp_path / "found"
    res = subprocess.run([str(bin_dir / "ckpt-harness"), "crashstates", "--preset", "tiny", "--world-size", "4",
                          "--step", "20", "--json", str(tmp_path / "c.json"), "--out", str(out), *extra],
                         capture_output=True, text=True, timeout=600)
    return res, json.loads((tmp_path / "c.json").read_text()), out


def test_crashstates_on_correct_code_finds_no_violation(tmp_path):
    res, report, out = crashstates(BIN, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert report["states_checked"] >= 50
    assert report["violations"] == 0
    assert not list(out.glob("*.yaml"))


def test_crashstates_finds_a_missing_directory_fsync_and_the_scenario_reproduces_it(mutant_bin, tmp_path):
    res, report, out = crashstates(mutant_bin, tmp_path)
    assert res.returncode == 1
    assert report["violations"] > 0
    found = sorted(out.glob("crashstate-*.yaml"))
    assert found
    # the written scenario is valid, reproduces the failure on the mutant, and passes on correct code
    assert subprocess.run([str(BIN / "ckpt-harness"), "validate", str(found[0])]).returncode == 0
    bad = subprocess.run([str(mutant_bin / "ckpt-harness"), "run", str(found[0])], capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 1, bad.stdout
    good = subprocess.run([str(BIN / "ckpt-harness"), "run", str(found[0])], capture_output=True, text=True,
                          timeout=600)
    assert good.returncode == 0, good.stdout


def test_sweep_fails_every_io_call_of_a_save_and_finds_nothing_on_correct_code(tmp_path):
    """Nth-operation sweep on real jobs: rank 1 of 2, every call, transient and persistent."""
    res = subprocess.run([str(BIN / "ckpt-harness"), "sweep", "--preset", "tiny", "--world-size", "2", "--step", "20",
                          "--rank", "1", "--json", str(tmp_path / "s.json"), "--out", str(tmp_path / "found")],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["failures"] == 0
    modes = {(c["mode"], c["nth"]) for c in report["cases"]}
    transient = {n for m, n in modes if m == "transient"}
    persistent = {n for m, n in modes if m == "persistent"}
    # a rank's shard save is at least open, a header and tensor writes, fsync, close
    assert transient == persistent and len(transient) >= 8
    assert transient == set(range(1, len(transient) + 1))
