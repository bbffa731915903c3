#!/usr/bin/env bash
# Incremental checkpoints against full ones (see bench_incr.c): bytes a delta
# save writes with 10% of the parameters changing, over a full save's
# (target <= 1/6), and the restore time of a generation 10 deltas deep over a
# full generation's (target <= 1.3), ratios from one run.
#   bench/bench_incr.sh [MiB] [ROUNDS] [CHUNK_KiB]     (run after a build in build/)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/bench-incr.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$repo/build/bin/bench_incr" "$work/run" "${1:-256}" "${2:-5}" "${3:-1024}"
