#!/usr/bin/env bash
# The harness's speed on the CI gate: scenarios per minute with -j 1 and -j 2,
# and its own overhead as a ratio: suite wall time (-j 1) over the sum of the
# bare mpirun launches it made (1.0 = no overhead beyond the jobs themselves).
# The golden cache is warmed first, as in any CI run after the first.
#   bench/bench_harness.sh            (run after a build in build/)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
h="$repo/build/bin/ckpt-harness"
out=$(mktemp -d "${TMPDIR:-/tmp}/bench-harness.XXXXXX")
trap 'rm -rf "$out"' EXIT
"$h" suite "$repo/scenarios/ci" -j 2 >/dev/null 2>&1 || true      # warm the golden cache
for j in 1 2; do
	"$h" suite "$repo/scenarios/ci" -j "$j" --json "$out/r$j.json" >/dev/null 2>&1
	/usr/bin/python3 - "$out/r$j.json" "$j" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["summary"]
j = sys.argv[2]
print(f"harness_ci_scenarios={r['total']}")
print(f"harness_j{j}_suite_seconds={r['seconds']:.1f}")
print(f"harness_j{j}_scenarios_per_minute={60 * r['total'] / r['seconds']:.1f}")
if j == "1":
    print(f"harness_j1_launch_seconds={r['launch_seconds']:.1f}")
    print(f"harness_overhead_ratio={r['seconds'] / r['launch_seconds']:.3f}")
PY
done
