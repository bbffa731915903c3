#!/usr/bin/env python3
"""reftrain throughput: steps per second of tiny and small at 1, 2 and 4 ranks,
and the cost of per-step component digests as a ratio against the same run
without digests, measured in this run. Prints name=value lines.

    python3 bench/bench_reftrain.py [--repeat N]

Timing is reftrain's own (--stats: the step loop, not MPI start-up).
"""
import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "driver"))
from mpi import reftrain  # noqa: E402

STEPS = {"tiny": 2000, "small": 12}


def steps_per_second(np, preset, digest_every, repeat):
    best = 0.0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            res = reftrain(np, Path(d) / "t.jsonl", "--preset", preset, "--steps", STEPS[preset],
                           "--digest-every", digest_every, "--stats", timeout=600)
        if res.returncode != 0:
            sys.exit("reftrain failed: " + res.stderr)
        m = re.search(r"steps_per_second=([0-9.]+)", res.stderr)
        best = max(best, float(m.group(1)))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per point; the best is kept")
    args = ap.parse_args()
    for preset in ("tiny", "small"):
        for np in (1, 2, 4):
            never = steps_per_second(np, preset, 0, args.repeat)
            every = steps_per_second(np, preset, 1, args.repeat)
            print(f"reftrain_{preset}_np{np}_steps_per_second={never:.2f}")
            print(f"reftrain_{preset}_np{np}_digest_every_step_steps_per_second={every:.2f}")
            print(f"reftrain_{preset}_np{np}_digest_cost_ratio={never / every:.3f}", flush=True)


if __name__ == "__main__":
    main()
