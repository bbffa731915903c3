"""The mutation gate's reach probes (ckpt_mutant_reached, ckpt/fault.h).

Guards against: a gate verdict taken from the baseline for a seeded bug whose
site the scenario did run. The gate skips running scenario S against mutant M
when the baseline run of S never logged M's name; that is sound only if every
place where M's code differs calls the probe in the unmutated build. Here: each
source that tests CKPT_MUTANT_<NAME> probes <name> (or the exception says where
instead, and why), no probe names a bug that does not exist, and real reftrain
jobs log the save path's bugs on every save, the restore path's only after a
restore (the verify and fallback ones only after damage), and a feature's bugs
only with that feature on.
"""
import os
import re
from pathlib import Path

import pytest

import mpi
from mpi import BIN, REPO
from test_shim import fault_line

# the trees the top CMakeLists.txt searches for a mutant's sources
TREES = ("ckpt", "reference_trainer", "harness", "fakes")
PROBE = re.compile(r'ckpt_mutant_reached(?:_durability|_points)?\("([^"]*)"')

# (file, mutant) -> the file that probes it instead: files whose mutant code runs nothing by itself
ELSEWHERE = {
    # the declaration and the definition of a function only the mutant calls; its one call is probed
    ("ckpt/src/chunks.h", "base_deleted_with_gen"): "ckpt/src/ckpt.c",
    ("ckpt/src/chunks.c", "base_deleted_with_gen"): "ckpt/src/ckpt.c",
    # reftrain_core links no libckpt: reftrain_sampler_reload's one caller probes it
    ("reference_trainer/sampler.c", "shuffle_seed_not_saved"): "reference_trainer/train.c",
}


def mutants():
    """CKPT_MUTANTS of the top CMakeLists.txt, read as scripts/mutants reads it."""
    text = (REPO / "CMakeLists.txt").read_text()
    m = re.search(r"^set\(CKPT_MUTANTS\b(.*?)\)", text, re.S | re.M)
    assert m, "no set(CKPT_MUTANTS ...) in CMakeLists.txt"
    names = m.group(1).split()
    assert len(names) == len(set(names)) and names
    return names


def sources():
    out = {}
    for tree in TREES:
        for p in sorted((REPO / tree).rglob("*.[ch]")):
            out[p.relative_to(REPO).as_posix()] = p.read_text(errors="replace")
    return out


def probes(text):
    return set(PROBE.findall(text))


def test_every_file_that_tests_a_mutant_probes_it():
    src = sources()
    missing = []
    for name in mutants():
        macro = re.compile(r"CKPT_MUTANT_%s([^A-Z0-9_]|$)" % name.upper(), re.M)
        users = [f for f, text in src.items() if macro.search(text)]
        assert users, f"{name}: no source tests CKPT_MUTANT_{name.upper()}"
        for f in users:
            where = ELSEWHERE.get((f, name), f)
            if name not in probes(src[where]):
                missing.append(f"{f}: {name}" + (f" (probed in {where})" if where != f else ""))
    assert not missing, "sites without a ckpt_mutant_reached probe:\n" + "\n".join(missing)


def test_exceptions_are_still_needed():
    src = sources()
    for (f, name) in ELSEWHERE:
        assert f in src and re.search(r"CKPT_MUTANT_%s\b" % name.upper(), src[f]), \
            f"{f} no longer tests {name}: drop it from ELSEWHERE"
        assert name not in probes(src[f]), f"{f} probes {name} itself: drop it from ELSEWHERE"


def test_every_probe_names_a_mutant():
    known = set(mutants())
    wrong = sorted((f, n) for f, text in sources().items() for n in probes(text) if n not in known)
    assert not wrong, f"probes naming no mutant in CKPT_MUTANTS: {wrong}"


# ---- what real jobs reach -----------------------------------------------------

ARGS = ["--preset", "tiny", "--seed", "3", "--keep", "3"]

EVERY_OPEN = {"rng_not_saved", "data_cursor_not_saved", "loss_scaler_not_saved", "adam_moments_not_saved"}
EVERY_SAVE = {"retention_deletes_newest", "alert_counts_wait", "ack_before_save"}
# with 2 ranks: rank 1 (workers 4-7) differs; a lone rank 0 never does
MULTI_RANK = {"worker_state_by_rank"}
# on every save, but only where a power cut, a crash state or a fault at their points could show them
DURABILITY = {"skip_file_fsync", "skip_dir_fsync", "latest_in_place", "commit_without_barrier"}
RESTORED = {"master_from_bf16", "sched_off_by_one", "cleanup_deletes_committed"}
DAMAGED = {"no_verify_on_restore", "no_fallback"}
FAULTED = {"ignore_short_write", "ignore_fsync_error"}
FEATURES = {
    # with no chunk store the retention bugs only add calls: reached where a fault could see them
    "incremental": {"chunk_hash_wrong_bytes", "chunk_not_verified", "delta_wrong_base", "gc_before_commit",
                    "base_deleted_with_gen"},
    "async": {"async_no_snapshot", "async_staging_reused", "async_ack_at_enqueue", "async_error_dropped",
              "async_no_fence"},
    "sealed": {"seal_nonce_reuse", "seal_ad_unbound", "seal_mac_after_use"},
    "tiered": {"drain_ack_early", "fast_retention_undrained", "restore_prefers_fast"},
    "resharded": {"reshard_wrong_slices"},
    "refused": {"world_refused_silently"},
}
FEATURE_ANY = set().union(*FEATURES.values())


def job(tmp_path, name, np_, *args, every=10, status=0, plan=None, undo=False):
    """Run reftrain, a checkpoint every `every` steps; the set of names its processes logged."""
    log = tmp_path / f"{name}.reach"
    argv = [BIN / "reftrain", "--trajectory", tmp_path / f"{name}.jsonl", *ARGS, "--ckpt-every", every, *args]
    env = ["-x", f"CKPT_REACH_LOG={log}"]
    if undo:
        env += ["-x", f"CKPT_UNDO_LOG={tmp_path / 'undo'}"]
    if plan:
        (tmp_path / "plan").write_text(plan)
        env += ["-x", f"CKPT_FAULT_PLAN={tmp_path / 'plan'}", "-x", f"CKPT_FAULT_LOG={tmp_path / 'faults'}"]
    res = mpi.run_mpi(np_, argv, mpirun_args=env)
    assert res.returncode == status, res.stderr
    return set(log.read_text().split()) if log.exists() else set()


def flip(path, offset=-7):
    b = bytearray(path.read_bytes())
    b[offset] ^= 0x01
    path.write_bytes(bytes(b))


def check(got, reached=(), unreached=()):
    assert not set(reached) - got, "not logged: %s" % sorted(set(reached) - got)
    assert not set(unreached) & got, "logged: %s" % sorted(set(unreached) & got)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A fresh run (saves 10, 20), its resume (restores 20, saves 30), and a resume past a damaged step 30."""
    d = tmp_path_factory.mktemp("reach")
    ck = d / "ck"
    runs = {"fresh": job(d, "fresh", 2, "--steps", "30", "--ckpt-dir", ck, "--stop-after", "25"),
            "resumed": job(d, "resumed", 2, "--steps", "30", "--ckpt-dir", ck, "--resume", "auto")}
    flip(ck / "step-00000030" / "rank-00001.safetensors")
    runs["damaged"] = job(d, "damaged", 2, "--steps", "30", "--ckpt-dir", ck, "--resume", "auto")
    return runs


def test_a_fresh_run_reaches_the_save_path_only(plain):
    # never restored: the shuffle generator is still at its seed when reftrain_sampler_reload runs
    # no fault plan and no undo record: nothing could tell a skipped sync from a done one
    check(plain["fresh"], EVERY_OPEN | EVERY_SAVE | MULTI_RANK,
          RESTORED | DAMAGED | FAULTED | FEATURE_ANY | DURABILITY | {"shuffle_seed_not_saved"})


def test_a_resume_reaches_the_restore_path_but_not_its_damage_handling(plain):
    # step 20 is in the first epoch: the restored shuffle generator is the seed's
    check(plain["resumed"], EVERY_OPEN | EVERY_SAVE | RESTORED,
          DAMAGED | FAULTED | FEATURE_ANY | {"shuffle_seed_not_saved"})


def test_a_resume_past_the_first_epoch_reaches_the_shuffle_site(tmp_path):
    ck = tmp_path / "ck"
    job(tmp_path, "first", 2, "--steps", "200", "--ckpt-dir", ck, "--stop-after", "150", every=100)
    check(job(tmp_path, "again", 2, "--steps", "200", "--ckpt-dir", ck, "--resume", "auto", every=100),
          {"shuffle_seed_not_saved"})


def test_a_damaged_generation_reaches_verify_and_fallback(plain):
    check(plain["damaged"], DAMAGED | RESTORED, FAULTED | FEATURE_ANY)


def test_a_lone_rank_resharding_reaches_reshard_and_no_multi_rank_site(tmp_path):
    ck = tmp_path / "ck"
    job(tmp_path, "two", 2, "--steps", "30", "--ckpt-dir", ck, "--stop-after", "25")
    check(job(tmp_path, "one", 1, "--steps", "30", "--ckpt-dir", ck, "--resume", "auto", undo=True),
          {"reshard_wrong_slices"} | RESTORED | EVERY_SAVE | (DURABILITY - {"commit_without_barrier"}),
          MULTI_RANK | DAMAGED | FAULTED | {"commit_without_barrier"})


def test_a_refused_world_size_reaches_only_its_refusal(tmp_path):
    # 3 ranks cannot share 8 virtual workers: refused before the checkpoint is opened
    check(job(tmp_path, "three", 3, "--steps", "30", "--ckpt-dir", tmp_path / "ck", status=2, undo=True),
          {"world_refused_silently"}, EVERY_OPEN | EVERY_SAVE | MULTI_RANK | DURABILITY)


def key(tmp_path):
    k = tmp_path / "key"
    k.write_bytes(os.urandom(32))
    k.chmod(0o600)
    return k


def fast_dir(tmp_path):
    return tmp_path / "fast"


@pytest.mark.parametrize("feature,extra,reached", [
    ("incremental", ["--ckpt-incremental"], {"chunk_hash_wrong_bytes", "gc_before_commit"}),
    ("async", ["--ckpt-async"], {"async_no_snapshot", "async_ack_at_enqueue"}),
    ("sealed", ["--ckpt-key-file", key], {"seal_nonce_reuse", "seal_ad_unbound"}),
    ("tiered", ["--ckpt-fast-dir", fast_dir], {"drain_ack_early"}),
])
def test_a_feature_reaches_its_own_sites_only(tmp_path, feature, extra, reached):
    args = [a(tmp_path) if callable(a) else a for a in extra]
    got = job(tmp_path, feature, 2, "--steps", "30", "--ckpt-dir", tmp_path / "ck", *args)
    # no fault, no damage, no failed save: the error and verify handling stay unreached
    check(got, EVERY_SAVE | reached, (FEATURE_ANY - FEATURES[feature]) | DAMAGED | FAULTED | DURABILITY |
          {"async_error_dropped", "chunk_not_verified", "delta_wrong_base"})


@pytest.mark.parametrize("fault,reached", [
    (fault_line(op="fsync", rank=1, step=10, err="EIO"), "ignore_fsync_error"),
    (fault_line(op="write", rank=1, step=10, action="short", arg=10), "ignore_short_write"),
])
def test_an_io_fault_reaches_its_error_handling_site_only(tmp_path, fault, reached):
    if "FIU_ENABLE:BOOL=OFF" in (mpi.BUILD / "CMakeCache.txt").read_text():
        pytest.skip("this build has no libfiu points (FIU_ENABLE=OFF)")
    # rank 1's save of step 10: the fsync fails (the save with it), the write comes back short (and is resumed)
    got = job(tmp_path, "faulted", 2, "--steps", "30", "--ckpt-dir", tmp_path / "ck", plan=fault)
    assert (tmp_path / "faults.rank-1.jsonl").exists(), "the fault never fired"
    # the fault is rank 1's: rank 0's LATEST could not show a difference
    check(got, EVERY_SAVE | {reached}, (FAULTED - {reached}) | DAMAGED | RESTORED | FEATURE_ANY | {"latest_in_place"})


# ---- durability sites: reached only where something could tell ----------------

def test_an_undo_record_reaches_every_durability_site(tmp_path):
    # power cuts and crash states are decided from the undo record: a skipped sync shows there
    check(job(tmp_path, "undo", 2, "--steps", "30", "--ckpt-dir", tmp_path / "ck", undo=True),
          EVERY_SAVE | DURABILITY)


def need_fiu():
    if "FIU_ENABLE:BOOL=OFF" in (mpi.BUILD / "CMakeCache.txt").read_text():
        pytest.skip("this build has no libfiu points (FIU_ENABLE=OFF)")


def test_a_plan_that_cannot_act_on_a_sync_point_reaches_no_durability_site(tmp_path):
    need_fiu()
    # a delay between the saves of steps 10, 20 and 30: no rule of the plan could match a point of a save
    plan = fault_line(phase="train.step", op="phase", rank=1, step=25, action="delay", arg=1)
    got = job(tmp_path, "between", 2, "--steps", "30", "--ckpt-dir", tmp_path / "ck", plan=plan)
    assert (tmp_path / "faults.rank-1.jsonl").exists(), "the fault never fired"
    check(got, EVERY_SAVE, DURABILITY)


def test_a_plan_that_could_act_on_a_sync_point_reaches_its_sites(tmp_path):
    need_fiu()
    # rank 1's fsyncs of step 20 are watched: its skipped file sync and its deferred shard sync would
    # change which call the delay hits; rank 0's LATEST is nobody's business
    plan = fault_line(op="fsync", rank=1, step=20, nth=3, action="delay", arg=1)
    got = job(tmp_path, "fsync", 2, "--steps", "30", "--ckpt-dir", tmp_path / "ck", plan=plan)
    check(got, EVERY_SAVE | {"skip_file_fsync", "commit_without_barrier"}, {"latest_in_place"})


def test_a_rule_past_its_last_firing_watches_nothing(tmp_path):
    need_fiu()
    # any call of rank 1's shard_sync phase at step 20, once: it fires at the phase point, which
    # commit_without_barrier skips; the file sync after it is past the rule's last firing, so
    # skipping that sync would show nowhere
    plan = fault_line(phase="save.shard_sync", rank=1, step=20, times=1, action="delay", arg=1)
    got = job(tmp_path, "phase", 2, "--steps", "30", "--ckpt-dir", tmp_path / "ck", plan=plan)
    assert (tmp_path / "faults.rank-1.jsonl").exists(), "the fault never fired"
    check(got, EVERY_SAVE | {"commit_without_barrier"}, {"skip_file_fsync", "skip_dir_fsync", "latest_in_place"})
