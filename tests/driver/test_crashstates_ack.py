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


def crashstates(bin_dir, tmp_path):
    res = subprocess.run([str(bin_dir / "ckpt-harness"), "crashstates", "--preset", "tiny", "--world-size", "4",
                          "--step", "20", "--json", str(tmp_path / "c.json"), "--out", str(tmp_path / "found")],
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
