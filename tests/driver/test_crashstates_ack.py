"""crashstates judges what the trainer acknowledged, not only generations.

Guards against: a trainer that acknowledges a save (its `committed` record)
before the save is durable. libckpt's own operations are then flawless, so
checking generations alone passes it; but a power cut after the
acknowledgement loses an acknowledged step. reftrain notes each
acknowledgement on the undo record's clock ($CKPT_ACK_LOG), crashstates
places it among the save's operations, and every crash state after it must
restore the acknowledged step. CKPT_MUTANT=ack_before_save writes the
`committed` record before calling ckpt_save.
"""
import json
import subprocess

import pytest

from mpi import BIN, REPO


@pytest.fixture(scope="module")
def mutant_bin():
    build = REPO / "build-mutant-ack_before_save"
    subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), "-G", "Ninja", "-DCKPT_MUTANT=ack_before_save"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "reftrain", "ckpt-harness"], check=True,
                   capture_output=True)
    return build / "bin"


def crashstates(bin_dir, tmp_path, *extra):
    res = subprocess.run([str(bin_dir / "ckpt-harness"), "crashstates", "--preset", "tiny", "--world-size", "4",
                          "--step", "20", "--json", str(tmp_path / "c.json"), "--out", str(tmp_path / "found"),
                          *extra],
                         capture_output=True, text=True, timeout=600)
    return res, json.loads((tmp_path / "c.json").read_text())


def test_clean_build_acknowledges_after_the_save_and_has_no_violation(tmp_path):
    res, report = crashstates(BIN, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert report["violations"] == 0
    # the acknowledgement was recorded, after the save's own operations began
    assert isinstance(report["acknowledged_after_ops"], int)
    assert 0 < report["acknowledged_after_ops"] <= report["operations"]


def test_acknowledging_before_the_save_is_durable_is_a_violation(mutant_bin, tmp_path):
    res, report = crashstates(mutant_bin, tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert report["acknowledged_after_ops"] == 0
    assert report["violations"] > 0
    whys = [v["why"] for v in report["violation_list"]]
    assert any(w.startswith("the trainer acknowledged step 20 before it was durable: a power cut after the "
                            "acknowledgement restored step 10") for w in whys), whys
    # a crash before any of the save's operations already loses the acknowledged step
    assert any(v["after_ops"] == 0 for v in report["violation_list"])


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_the_verdicts_do_not_depend_on_how_many_processes_check(mutant_bin, tmp_path, jobs):
    """States are checked by -j processes; the report is in state order whoever checked each."""
    res, report = crashstates(mutant_bin, tmp_path, "-j", jobs)
    assert res.returncode == 1, res.stdout + res.stderr
    v = report["violation_list"]
    assert v and report["violations"] == len(v)
    # in the order the states were enumerated: by crash point, from before the save's first operation
    assert [x["after_ops"] for x in v] == sorted(x["after_ops"] for x in v)
    assert v[0]["after_ops"] == 0 and v[0]["state"] == "crash"
    found = sorted(p.name for p in (tmp_path / "found").iterdir())
    assert found == [f"crashstate-{i:03d}.yaml" for i in range(1, min(20, len(v)) + 1)]


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_a_bad_job_count_is_refused(tmp_path, value):
    res = subprocess.run([str(BIN / "ckpt-harness"), "crashstates", "-j", value, "--out", str(tmp_path / "f")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert f"-j: '{value}' is not valid; expected a whole number from 1 to 64" in res.stderr
    assert not (tmp_path / "f").exists()
