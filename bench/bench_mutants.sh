#!/usr/bin/env bash
# The full mutation matrix: every mutant against every CI scenario and the
# crash-state exploration (scripts/mutants --full), its wall time, where the
# time goes (builds, crash states, suites), and, as the baseline from the same
# run, the unmutated build's own check: the matrix costs about (mutants + 1)
# of those, so matrix_over_baseline_ratio shows what the per-mutant overhead is.
# mutant_cells_inferred: mutant x scenario cells whose verdict came from the
# baseline's reach records (the mutant's sites never reached there) instead
# of a run; --no-reach runs them all, for the figure without inference.
#   bench/bench_mutants.sh [--shim] [--disk] [--no-reach] [-j N]   (target: matrix_seconds < 300 on 2 cores)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d "${TMPDIR:-/tmp}/bench-mutants.XXXXXX")
trap 'rm -rf "$out"' EXIT
# a fresh golden cache: every mutant's uninterrupted runs are computed in this run, none come from an
# earlier gate of the same tree (the compiler cache is the gate's own, build-mutants/.ccache)
export XDG_CACHE_HOME="$out/xdg"
"$repo/scripts/mutants" --full --json "$out/m.json" "$@" >"$out/m.txt" 2>&1 || {
	tail -30 "$out/m.txt" >&2
	echo "bench_mutants: the gate failed (a survivor or a failing baseline); figures below still stand" >&2
}
/usr/bin/python3 - "$out/m.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rows = r["mutants"]
tot = {k: sum((m["seconds"] or {}).get(k, 0) for m in rows) for k in ("build", "crashstates", "suite")}
base = r["baseline_seconds"] or {}
print(f"mutants={len(rows)}")
print(f"killed={sum(m['killed'] for m in rows)}")
print(f"baseline_pass={r['baseline_pass']}")
print(f"matrix_seconds={r['seconds']}")
print(f"mutant_cells_inferred={r.get('inferred_cells', 0)}")
for k, v in tot.items():
    print(f"mutants_{k}_seconds={v:.1f}")
b = sum(base.values())
print(f"baseline_seconds={b:.1f} (build {base.get('build', 0)}, crashstates {base.get('crashstates', 0)}, suite {base.get('suite', 0)})")
if b:
    print(f"matrix_over_baseline_ratio={r['seconds'] / b:.2f}")
print(f"catchers_per_mutant_median={sorted(len(m['killed_by']) for m in rows)[len(rows) // 2]}")
PY
