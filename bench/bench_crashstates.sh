#!/usr/bin/env bash
# Crash-state exploration speed: states checked per second for the save of
# step 20 of tiny on 4 ranks (one recording run, then in-process restore-only
# checks), and the recording run's share of the total.
#   bench/bench_crashstates.sh            (run after a build in build/)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d "${TMPDIR:-/tmp}/bench-cs.XXXXXX")
trap 'rm -rf "$out"' EXIT
"$repo/build/bin/ckpt-harness" crashstates --preset tiny --world-size 4 --step 20 \
	--json "$out/c.json" --out "$out/found" >/dev/null
/usr/bin/python3 - "$out/c.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"crashstates_states_checked={r['states_checked']}")
print(f"crashstates_operations={r['operations']}")
print(f"crashstates_states_per_second={r['states_per_second']:.1f}")
print(f"crashstates_recording_seconds={r['recording_seconds']:.2f}")
print(f"crashstates_checking_seconds={r['seconds']:.2f}")
PY
