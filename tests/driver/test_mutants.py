"""The mutation gate, a subset for CI (the whole gate is scripts/mutants; see
the README for its kill matrix).

Guards against: a gate that passes everything. Two seeded bugs of different
kinds (a trainer component left out of the checkpoint; a restore that trusts
what it reads) must each be caught, and the unmutated build must pass.
"""
import json
import subprocess

from mpi import REPO

SUBSET = ["rng_not_saved", "no_verify_on_restore", "seal_ad_unbound"]


def test_mutation_gate_subset(tmp_path):
    res = subprocess.run([str(REPO / "scripts" / "mutants"), "--only", ",".join(SUBSET), "--json",
                          str(tmp_path / "m.json")], capture_output=True, text=True, timeout=1800)
    report = json.loads((tmp_path / "m.json").read_text())
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert report["baseline_pass"] is True
    assert [m["name"] for m in report["mutants"]] == SUBSET
    for m in report["mutants"]:
        assert m["killed"], m
    # caught for the right reason (each stops at its first catcher): the crash-state
    # exploration compares every restored component with the uninterrupted run's;
    # only a damaged generation shows a restore that does not verify
    rng = next(m for m in report["mutants"] if m["name"] == "rng_not_saved")
    assert rng["killed_by"] == ["crashstates"]
    verify = next(m for m in report["mutants"] if m["name"] == "no_verify_on_restore")
    assert "crashstates" not in verify["killed_by"]
    assert set(verify["killed_by"]) & {"bitflip-at-step-boundary", "bitflip-newest-shard"}
    # reach inference: a bug of sealed checkpoints is reached only by the seal-* scenarios, so the
    # others take the baseline's verdict without a run, and a sealed scenario still catches it; a
    # trainer component left out of every save is reached everywhere, so nothing is inferred
    seal = next(m for m in report["mutants"] if m["name"] == "seal_ad_unbound")
    assert seal["killed"] and all(n.startswith("seal-") for n in seal["killed_by"]), seal
    assert "kill-commit-rank0" in seal["inferred"] and not any(n.startswith("seal-") for n in seal["inferred"])
    assert rng["inferred"] == []
    assert report["inferred_cells"] == sum(len(m["inferred"]) for m in report["mutants"])


def test_unknown_mutant_is_refused():
    res = subprocess.run([str(REPO / "scripts" / "mutants"), "--only", "no_such_bug"], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 2
    assert "not a mutant" in res.stderr


def test_a_trainer_that_loses_state_on_a_plain_resume_is_named_before_any_fault(tmp_path):
    """The determinism gate also stops and resumes the trainer with no fault: a
    trainer that drops its RNG state fails there, with that reason, before any
    scenario's fault could be blamed."""
    build = REPO / "build-mutants" / "rng_not_saved"
    subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), "-G", "Ninja", "-DCKPT_MUTANT=rng_not_saved"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "reftrain", "ckpt-harness"], check=True,
                   capture_output=True)
    res = subprocess.run([str(build / "bin" / "ckpt-harness"), "suite",
                          str(REPO / "scenarios" / "ci" / "kill-commit-rank0.yaml"),
                          str(REPO / "scenarios" / "ci" / "kill-barrier-rank1.yaml"), "--json", str(tmp_path / "r.json"),
                          "--cache", str(tmp_path / "cache")], capture_output=True, text=True, timeout=600)
    first, second = json.loads((tmp_path / "r.json").read_text())["scenarios"]
    assert res.returncode == 1 and first["verdict"] == "FAIL", first
    assert "does not resume bit for bit even without a fault" in first["sentence"]
    assert "dropout RNG streams (rng)" in first["sentence"]
    # the finding is kept with the golden key (the same binaries and trainer): the next scenario
    # with that key fails the same way without running the three jobs again
    assert len(list((tmp_path / "cache").glob("*.failed"))) == 1
    assert second["verdict"] == "FAIL" and second["sentence"] == first["sentence"] and second["attempts"] == 0


SHIM_SUBSET = ["latest_in_place"]


def test_mutation_gate_without_libfiu_subset(tmp_path):
    """The gate without cooperation (scripts/mutants --shim): FIU_ENABLE=OFF
    builds, faults through the LD_PRELOAD shim only: LATEST rewritten in place
    shows in a torn write of the file named LATEST* (scenarios/shim), the
    baseline passes every scenario the shim can see and SKIPs the others.
    (The crash states from the shim's undo record: test_shim_gate.py.)"""
    res = subprocess.run([str(REPO / "scripts" / "mutants"), "--shim", "--only", ",".join(SHIM_SUBSET), "--json",
                          str(tmp_path / "m.json")], capture_output=True, text=True, timeout=2400)
    report = json.loads((tmp_path / "m.json").read_text())
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert report["inject"] == "shim" and report["baseline_pass"] is True
    by = {m["name"]: m for m in report["mutants"]}
    assert by["latest_in_place"]["killed"] and "crashstates" not in by["latest_in_place"]["killed_by"]
