#!/usr/bin/env python3
"""Background saves (reftrain --ckpt-async) against synchronous ones and against
no checkpointing, measured in this run. Prints name=value lines.

    python3 bench/bench_async.py [--np N] [--presets small,large] [--repeat R]

Per preset, three reftrain runs of the same steps on N ranks (default 2): no
checkpoints, a synchronous save every E steps, a background save every E
steps. From libckpt's journal (rank 0):

  async_blocking_ratio_P   training-thread time per background save (its
                           ckpt_save_async call plus every poll and wait while
                           it was in flight: `blocked_seconds` of async_done;
                           the median over saves, leaving out the last one,
                           which the final wait before the end record
                           finishes)
                           over the time of a synchronous save of the same
                           state (`seconds` of the save event); target <= 0.05
  async_throughput_ratio_P steps per second with a background save every E
                           steps over steps per second without checkpoints
                           (reftrain --stats, the step loop including the
                           final wait); target >= 0.95 when the disk keeps up
  sync_throughput_ratio_P  the same for synchronous saves, for comparison
  async_snapshot_ratio_P   the part of the copy made by the call itself (the
                           stages reftrain does not defer: schedule, scaler,
                           RNG, data cursor; the model and optimizer are
                           copied by the writer while the next step computes)
                           over the synchronous save
  async_P_polls_per_save   step boundaries the slowest save was in flight for
                           (E must exceed it, or a save waits for the last)

With --repeat R each run is repeated and the best throughput (and the median
per-save times) kept: this machine's load drifts between runs.
"""
import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "driver"))
from mpi import reftrain  # noqa: E402

# steps and the save interval per preset: a few saves, each finished before the next one (a background
# save is in flight for about 5 step boundaries: one per collective of the save protocol, see
# ckpt/async.h), so that a new save never waits for the previous one when the disk keeps up
PLAN = {"tiny": (200, 20), "small": (48, 12), "large": (24, 8)}


def journal(ck, event):
    lines = (Path(ck) / "journal" / "rank-00000.jsonl").read_text().splitlines()
    return [j for j in map(json.loads, lines) if j.get("event") == event]


def one(np, preset, mode):
    steps, every = PLAN[preset]
    with tempfile.TemporaryDirectory() as d:
        ck = Path(d) / "ck"
        args = ["--preset", preset, "--steps", steps, "--stats"]
        if mode != "none":
            args += ["--ckpt-dir", ck, "--ckpt-every", every, "--keep", 2]
        if mode == "async":
            args += ["--ckpt-async"]
        res = reftrain(np, Path(d) / "t.jsonl", *args, timeout=3600)
        if res.returncode != 0:
            sys.exit(f"reftrain ({preset}, {mode}) failed: {res.stderr}")
        sps = float(re.search(r"steps_per_second=([0-9.]+)", res.stderr).group(1))
        per_save = []
        if mode == "sync":
            per_save = [j["seconds"] for j in journal(ck, "save") if j["result"] == 0]
        elif mode == "async":
            done = journal(ck, "async_done")
            if any(j["result"] != 0 for j in done):
                sys.exit(f"a background save failed: {done}")
            # the last save is finished by the wait before the end record: a cost at exit, not per save
            per_save = [j["blocked_seconds"] for j in done if j["step"] != steps]
            final_wait = [j["blocked_seconds"] for j in done if j["step"] == steps]
            per_save = per_save or final_wait
            snaps = [j["seconds"] for j in journal(ck, "async_snapshot") if j["result"] == 0]
            polls = [j["polls"] for j in done if j["step"] != steps]
            per_save = (per_save, snaps, polls)
        return sps, per_save


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--presets", default="small,large")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    for preset in args.presets.split(","):
        if preset not in PLAN:
            sys.exit(f"--presets: '{preset}' is not one of {', '.join(PLAN)}")
        best = {}
        saves = {"sync": [], "async": []}
        snaps, polls = [], []
        for _ in range(args.repeat):
            for mode in ("none", "sync", "async"):
                sps, per_save = one(args.np, preset, mode)
                best[mode] = max(best.get(mode, 0.0), sps)
                if mode == "async":
                    per_save, snap, poll = per_save
                    snaps.extend(snap)
                    polls.extend(poll)
                saves.get(mode, []).extend(per_save)
        sync_save = statistics.median(saves["sync"])
        async_blocked = statistics.median(saves["async"])
        steps, every = PLAN[preset]
        print(f"async_{preset}_steps={steps}")
        print(f"async_{preset}_save_every={every}")
        print(f"async_{preset}_sync_save_seconds={sync_save:.6f}")
        print(f"async_{preset}_blocked_seconds_per_save={async_blocked:.6f}")
        print(f"async_{preset}_snapshot_seconds={statistics.median(snaps):.6f}")
        print(f"async_{preset}_polls_per_save={max(polls) if polls else 0}")
        print(f"async_blocking_ratio_{preset}={async_blocked / sync_save:.4f}")
        # the copy alone: the floor of the blocking (the rest is the polls' agreement rounds)
        print(f"async_snapshot_ratio_{preset}={statistics.median(snaps) / sync_save:.4f}")
        print(f"async_{preset}_steps_per_second_none={best['none']:.4f}")
        print(f"async_{preset}_steps_per_second_sync={best['sync']:.4f}")
        print(f"async_{preset}_steps_per_second_async={best['async']:.4f}")
        print(f"sync_throughput_ratio_{preset}={best['sync'] / best['none']:.4f}")
        print(f"async_throughput_ratio_{preset}={best['async'] / best['none']:.4f}", flush=True)


if __name__ == "__main__":
    main()
