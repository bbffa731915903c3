"""ckpt-harness --reach: the mutation gate's reach records (scripts/mutants).

Guards against: a record that misses a process of the scenario (the golden
runs are computed once and shared, so their reach must reach every scenario
that uses them) or that claims to be complete when it is not (a golden cached
before --reach: then "*"). Either would let the gate skip a scenario that
could have caught a mutant.
"""
import subprocess

from mpi import BIN

HARNESS = BIN / "ckpt-harness"
SCEN = BIN.parents[1] / "scenarios" / "ci"


def suite(tmp_path, *args):
    return subprocess.run([str(HARNESS), "suite", *map(str, args)], capture_output=True, text=True, timeout=600)


def lines(path):
    return set(path.read_text().split())


def test_reach_records_per_scenario_with_the_uninterrupted_runs(tmp_path):
    reach, cache = tmp_path / "reach", tmp_path / "cache"
    reach.mkdir()
    res = suite(tmp_path, SCEN / "kill-commit-rank0.yaml", SCEN / "seal-truncated-shard.yaml", "-j", "2",
                "--reach", reach, "--cache", cache)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    plain, sealed = lines(reach / "kill-commit-rank0.reach"), lines(reach / "seal-truncated-shard.reach")
    # every save reaches these; a restore after the kill reaches the restore path
    assert {"ack_before_save", "retention_deletes_newest", "rng_not_saved", "master_from_bf16"} <= plain
    # a kill (no power cut, no fault at a sync) cannot tell a skipped sync from a done one
    assert not {"skip_file_fsync", "skip_dir_fsync", "latest_in_place", "commit_without_barrier"} & plain
    assert not any(n.startswith("seal_") for n in plain) and "*" not in plain
    assert {"seal_ad_unbound", "seal_nonce_reuse"} <= sealed
    # each golden keeps its own record, which every scenario using it gets
    goldens = sorted(cache.glob("*.reach"))
    assert len(goldens) == 2 and all(lines(g) for g in goldens)
    for g in goldens:
        assert lines(g) <= plain or lines(g) <= sealed


def test_a_golden_cached_without_a_record_makes_the_record_incomplete(tmp_path):
    reach, cache = tmp_path / "reach", tmp_path / "cache"
    reach.mkdir()
    assert suite(tmp_path, SCEN / "kill-commit-rank0.yaml", "--cache", cache).returncode == 0
    assert not list(cache.glob("*.reach"))
    res = suite(tmp_path, SCEN / "kill-commit-rank0.yaml", "--reach", reach, "--cache", cache)
    assert res.returncode == 0, res.stderr[-2000:]
    # the uninterrupted runs were not recorded: the gate must count every bug as reached
    assert "*" in lines(reach / "kill-commit-rank0.reach")


def test_reach_needs_a_directory(tmp_path):
    res = suite(tmp_path, SCEN / "kill-commit-rank0.yaml", "--reach", tmp_path / "missing")
    assert res.returncode == 2
    assert "--reach" in res.stderr and "not a directory" in res.stderr


def test_golden_from_reuses_the_baselines_golden_only_for_a_bug_it_never_reached(tmp_path):
    reach, base = tmp_path / "reach", tmp_path / "base"
    reach.mkdir()
    scen = SCEN / "kill-commit-rank0.yaml"
    assert suite(tmp_path, scen, "--reach", reach, "--cache", base).returncode == 0
    refs = list(base.glob("cfg-*.ref"))
    assert len(refs) == 1 and (base / (refs[0].read_text().strip() + ".reach")).exists()
    golden = lines(base / (refs[0].read_text().strip() + ".reach"))
    assert "rng_not_saved" in golden and "skip_file_fsync" not in golden

    def run_with(mutant, cache):
        res = suite(tmp_path, scen, "--cache", cache, "--golden-from", f"{base}:{mutant}", "--json",
                    tmp_path / "r.json")
        assert res.returncode == 0, res.stderr[-2000:]
        return sorted(p.name for p in cache.glob("*.jsonl")) if cache.exists() else []

    # never reached by the uninterrupted runs: taken from the baseline, nothing computed
    assert run_with("skip_file_fsync", tmp_path / "c1") == []
    # reached: computed with this build
    assert len(run_with("rng_not_saved", tmp_path / "c2")) == 1
    # an incomplete record ("*") reuses nothing
    (base / (refs[0].read_text().strip() + ".reach")).write_text("*\n")
    assert len(run_with("skip_file_fsync", tmp_path / "c3")) == 1


def test_golden_from_needs_a_cache_and_a_name(tmp_path):
    for bad in ("nocolon", f"{tmp_path}:", f"{tmp_path / 'missing'}:x"):
        res = suite(tmp_path, SCEN / "kill-commit-rank0.yaml", "--golden-from", bad)
        assert res.returncode == 2 and "--golden-from" in res.stderr, (bad, res.stderr)
