#!/usr/bin/env bash
# Crash-state exploration speed: states checked per second for the save of
# step 20 of tiny on 4 ranks (one recording run, then in-process restore-only
# checks), and the recording run's share of the total.
#
# Two configurations in the same run, each ROUNDS times (default 3):
#   baseline: -j 1, states materialized under the work directory (the disk):
#             exactly how crashstates checked states before it went parallel;
#   default:  two checking processes per online CPU, states materialized on
#             /dev/shm (tmpfs) when it has room.
# The set of states is a function of the recording (how the 4 ranks'
# operations interleave), so each round reports its own count; the checks
# per state are the same in both configurations.
#   bench/bench_crashstates.sh [ROUNDS]     (run after a build in build/)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
out=$(mktemp -d "${TMPDIR:-/tmp}/bench-cs.XXXXXX")
trap 'rm -rf "$out"' EXIT
for r in $(seq 1 "$rounds"); do
	CKPT_HARNESS_SCRATCH="$out" "$repo/build/bin/ckpt-harness" crashstates --preset tiny --world-size 4 --step 20 \
		-j 1 --json "$out/base-$r.json" --out "$out/found" >/dev/null
	"$repo/build/bin/ckpt-harness" crashstates --preset tiny --world-size 4 --step 20 \
		--json "$out/fast-$r.json" --out "$out/found" >/dev/null
done
/usr/bin/python3 - "$out" "$rounds" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(kind):
    return [json.load(open(os.path.join(out, f"{kind}-{r}.json"))) for r in range(1, rounds + 1)]
base, fast = load("base"), load("fast")
for name, runs in (("baseline", base), ("default", fast)):
    rates = [r["states_per_second"] for r in runs]
    print(f"crashstates_{name}_states_per_second_median={statistics.median(rates):.1f}"
          f" (min {min(rates):.1f}, max {max(rates):.1f}, rounds {len(rates)})")
    print(f"crashstates_{name}_states_checked={','.join(str(r['states_checked']) for r in runs)}")
print(f"crashstates_operations={base[0]['operations']}")
print(f"crashstates_recording_seconds_median={statistics.median(r['recording_seconds'] for r in base + fast):.2f}")
print(f"crashstates_speedup_ratio={statistics.median(r['states_per_second'] for r in fast) / statistics.median(r['states_per_second'] for r in base):.2f}")
print(f"cpus={os.cpu_count()}")
PY
