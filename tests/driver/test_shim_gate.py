"""The gate without cooperation: reftrain built with FIU_ENABLE=OFF (no libfiu
point anywhere) and every fault brought by the LD_PRELOAD fault shim.

Guards against: a shim that only works on our toy victims, and a harness whose
verdicts depend on libckpt announcing its phases. Every scenario of
scenarios/ci that does not name a libckpt phase, and every scenario of
scenarios/shim (libckpt's phases named by file and call), must give the same
verdict under the shim as under libfiu; a scenario that names a libckpt phase
is SKIP under the shim, with the reason, and never counts as a pass.
"""
import json
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest

from mpi import BIN, REPO

CI, SHIM = REPO / "scenarios" / "ci", REPO / "scenarios" / "shim"
NOFIU = REPO / "build-nofiu"
LIBCKPT_PHASE = re.compile(r"phase: (save|restore|open|drain)\.")


def needs_libckpt_phase(path):
    return bool(LIBCKPT_PHASE.search(path.read_text()))


@pytest.fixture(scope="session")
def nofiu():
    """The FIU_ENABLE=OFF build (scripts/test makes it; built here if missing)."""
    subprocess.run(["cmake", "-S", REPO, "-B", NOFIU, "-G", "Ninja", "-DFIU_ENABLE=OFF"], check=True,
                   capture_output=True)
    subprocess.run(["cmake", "--build", NOFIU, "--target", "reftrain", "ckpt-harness", "ckpt-fault-shim"],
                   check=True, capture_output=True)
    nm = subprocess.run(["nm", "-D", NOFIU / "bin" / "reftrain"], capture_output=True, text=True).stdout
    assert "fiu_" not in nm, "the FIU_ENABLE=OFF reftrain still links libfiu"
    return NOFIU / "bin" / "ckpt-harness"


def suite(harness, out, *args):
    res = subprocess.run([str(harness), "suite", CI, SHIM, "-j", "2", "--json", out / "r.json",
                          "--junit", out / "j.xml", *map(str, args)], capture_output=True, text=True, timeout=1800)
    return res, {s["name"]: s for s in json.loads((out / "r.json").read_text())["scenarios"]}


@pytest.fixture(scope="session")
def both(nofiu, tmp_path_factory):
    a, b = tmp_path_factory.mktemp("fiu"), tmp_path_factory.mktemp("shim")
    return suite(BIN / "ckpt-harness", a), suite(nofiu, b), b


def test_same_verdicts_under_the_shim_without_libfiu(both):
    (fres, fiu), (sres, shim), _ = both
    assert fres.returncode == 0, fres.stdout[-3000:]
    assert sres.returncode == 0, sres.stdout[-3000:]
    ran = 0
    for path in sorted(CI.glob("*.yaml")) + sorted(SHIM.glob("*.yaml")):
        name = next(n for n, s in shim.items() if s["file"].endswith("/" + path.name))
        if needs_libckpt_phase(path):
            assert shim[name]["verdict"] == "SKIP", (name, shim[name]["sentence"])
            assert "names libckpt's phase" in shim[name]["sentence"]
            assert shim[name]["attempts"] == 0
            continue
        ran += 1
        assert shim[name]["verdict"] == fiu[name]["verdict"] == "PASS", (name, shim[name]["sentence"])
        assert shim[name]["faults_fired"] == shim[name]["faults_planned"] > 0, name
        # the same restore points: the shim's faults struck the same calls
        assert shim[name]["restored_from"] == fiu[name]["restored_from"], name
    # the libckpt-phase-free part of the gate, and its by-path twins, are most of it
    assert ran >= 40


def test_skip_is_reported_everywhere_and_never_as_a_pass(both):
    _, (sres, shim), out = both
    skipped = [s for s in shim.values() if s["verdict"] == "SKIP"]
    summary = json.loads((out / "r.json").read_text())["summary"]
    assert summary["skipped"] == len(skipped) > 0
    assert summary["passed"] + summary["skipped"] == summary["total"]
    assert f"{len(skipped)} skipped" in sres.stdout
    suite_el = ET.parse(out / "j.xml").getroot().find("testsuite")
    assert suite_el.get("skipped") == str(len(skipped))
    assert len(suite_el.findall("testcase/skipped")) == len(skipped)


def test_shim_faults_are_logged_as_calls_not_libckpt_phases(both):
    _, (_, shim), _ = both
    cov = {c for s in shim.values() for c in s["coverage"]}
    assert not any(c.startswith(("save.", "restore.")) for c in cov), cov
    assert {"/write", "/rename", "/fsync", "/read"} <= cov, cov


def test_libfiu_injection_is_refused_in_a_build_without_it(nofiu):
    res = subprocess.run([str(nofiu), "run", CI / "kill-commit-rank0.yaml", "--inject", "fiu"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2
    assert "no libfiu points" in res.stderr


def test_inject_shim_in_the_libfiu_build_skips_a_libckpt_phase(tmp_path):
    res = subprocess.run([str(BIN / "ckpt-harness"), "run", CI / "kill-commit-rank0.yaml", "--inject", "shim",
                          "--json", tmp_path / "r.json"], capture_output=True, text=True, timeout=120)
    entry = json.loads((tmp_path / "r.json").read_text())["scenarios"][0]
    assert res.returncode == 0 and entry["verdict"] == "SKIP", res.stdout
    assert "save.commit" in entry["sentence"]
    bad = subprocess.run([str(BIN / "ckpt-harness"), "run", CI / "kill-commit-rank0.yaml", "--inject", "preload"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "expected fiu or shim" in bad.stderr


def test_crash_states_from_the_shims_undo_record(nofiu, tmp_path):
    """The shim records every change under the root, so the crash states of a
    save come out of a build with no libfiu: at least libckpt's own record
    (it also sees the journal's appends, which libckpt leaves out) and no
    violation."""
    res = subprocess.run([str(nofiu), "crashstates", "--world-size", "2", "--json", tmp_path / "s.json", "--out",
                          tmp_path / "found"], capture_output=True, text=True, timeout=600)
    ref = subprocess.run([str(BIN / "ckpt-harness"), "crashstates", "--world-size", "2", "--json", tmp_path / "f.json",
                          "--out", tmp_path / "found-fiu"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and ref.returncode == 0, res.stdout + res.stderr + ref.stderr
    shim, fiu = json.loads((tmp_path / "s.json").read_text()), json.loads((tmp_path / "f.json").read_text())
    assert shim["violations"] == 0
    assert shim["operations"] > fiu["operations"] > 0
    assert shim["states_checked"] >= fiu["states_checked"]
