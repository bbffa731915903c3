#!/usr/bin/env bash
# Chaos speed: `ckpt-harness chaos` runs per minute on the tiny preset (2
# ranks, 20 steps, a save every 5) at -j 2, against a baseline from the same
# run: the same trainer with no fault, run as a suite of copies at -j 2 (what
# any scenario costs here). chaos_overhead_ratio = baseline runs/min over
# chaos runs/min (1.0: a chaos run costs no more than a fault-free one).
# Target: chaos_runs_per_min >= 60 on 2 cores.
#   bench/bench_chaos.sh [RUNS]        (default 60; run after a build in build/)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-60}
bin="$repo/build/bin/ckpt-harness"
out=$(mktemp -d "${TMPDIR:-/tmp}/bench-chaos.XXXXXX")
trap 'rm -rf "$out"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
base=$(( runs / 3 > 4 ? runs / 3 : 4 ))
mkdir -p "$out/base"
for i in $(seq 1 "$base"); do
	cat >"$out/base/nofault-$i.yaml" <<YAML
name: nofault-$i
trainer: {preset: tiny, world_size: 2, steps: 20, checkpoint: {every: 5, keep: 2}}
expect: {outcome: resume_bitwise}
YAML
done
# the golden run once, outside both timings
"$bin" run "$out/base/nofault-1.yaml" --cache "$out/cache" >/dev/null
t0=$(date +%s.%N)
"$bin" suite "$out/base" -j 2 --cache "$out/cache" >/dev/null 2>&1
t1=$(date +%s.%N)
"$bin" chaos --seed 1 --runs "$runs" -j 2 --cache "$out/cache" --out "$out/found" --no-shrink \
	>"$out/chaos.txt" 2>"$out/chaos.err" || { cat "$out/chaos.txt" "$out/chaos.err" >&2; exit 1; }
t2=$(date +%s.%N)
/usr/bin/python3 - "$base" "$runs" "$t0" "$t1" "$t2" "$out/chaos.txt" <<'PY'
import re, sys
base, runs = int(sys.argv[1]), int(sys.argv[2])
t0, t1, t2 = map(float, sys.argv[3:6])
text = open(sys.argv[6]).read()
m = re.search(r"(\d+) runs, (\d+) failed, (\d+) errors", text)
base_rate = base * 60 / (t1 - t0)
chaos_rate = runs * 60 / (t2 - t1)
print(f"chaos_runs={runs}")
print(f"chaos_failed={m.group(2) if m else '?'}")
print(f"chaos_seconds={t2 - t1:.1f}")
print(f"chaos_runs_per_min={chaos_rate:.1f}")
print(f"baseline_nofault_runs_per_min={base_rate:.1f}")
print(f"chaos_overhead_ratio={base_rate / chaos_rate:.2f}")
PY
